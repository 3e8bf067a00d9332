"""A teacher behind any OpenAI-compatible chat-completions endpoint (OpenAI, Azure, vLLM, TGI, Ollama...).

Async with a bounded number of requests in flight; the client's own retries are off and replaced by
exponential backoff with full jitter that honours ``Retry-After``; JSON mode; token and cost accounting.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import itertools
import json
import os
import random
import time

import openai
from PIL.Image import Image

from ..prompts import ReportFormatError, parse_teacher_answer, render_report
from .base import Teacher, TeacherError, TeacherFormatError, TeacherOutput, TeacherSample, Usage

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404})  # bad key, no access, unknown model or URL: stop the whole run
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped
MAX_IMAGE_SIDE = 1024  # images are downscaled to this longest side before base64 encoding


def _retry_after(error: Exception) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms`` or ``retry-after``: seconds or an HTTP date)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        raw = headers.get("retry-after")
        if raw is None:
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            date = email.utils.parsedate_to_datetime(raw)
            return max(0.0, date.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(error: Exception) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error.message}"
    if isinstance(error, json.JSONDecodeError):
        return f"malformed response body ({error.msg})"
    return f"{type(error).__name__}: {error}"


def image_data_url(image: Image) -> str:
    """A base64 data URL of ``image`` (JPEG for colour, PNG for grey), downscaled to `MAX_IMAGE_SIDE`."""
    image = image.copy()
    image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    buffer = io.BytesIO()
    if image.mode == "L":
        image.save(buffer, format="PNG")
        mime = "image/png"
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


class OpenAITeacher(Teacher):
    """Stage I teacher over the ``openai`` client.

    Args:
        model: model name; defaults to ``$GROK_TEACHER_MODEL``.
        base_url: endpoint, e.g. ``http://localhost:8000/v1``; defaults to ``$OPENAI_BASE_URL``, then OpenAI.
        api_key: defaults to ``$OPENAI_API_KEY``; with a custom ``base_url`` and no key, "EMPTY" (vLLM style).
        concurrency: requests in flight at most.
        max_retries: retries per request on 408/409/429/5xx, timeouts, connection errors and malformed bodies.
        timeout: seconds per request.
        send_images: attach the CFP and the central B-scan (base64) for vision models.
        price_per_1k_input / price_per_1k_output: USD per 1000 prompt / completion tokens, for the cost line.
        backoff_base / backoff_max: the full-jitter backoff waits uniform(0, min(max, base * 2**attempt)) s.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        send_images: bool = False,
        price_per_1k_input: float | None = None,
        price_per_1k_output: float | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        super().__init__()
        self.model = model or os.environ.get("GROK_TEACHER_MODEL")
        if not self.model:
            raise ValueError("OpenAITeacher needs a model: pass model=... (--model) or set GROK_TEACHER_MODEL.")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or ("EMPTY" if self.base_url else None)
        if not self.api_key:
            raise ValueError(
                "OpenAITeacher needs an API key: pass api_key=... or set OPENAI_API_KEY "
                "(for a local server, set --base_url and any key works)."
            )
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError(
                f"Need concurrency >= 1, max_retries >= 0 and timeout > 0; got {concurrency}, {max_retries}, {timeout}."
            )
        self.name = f"openai:{self.model}"
        self.needs_images = send_images
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.price_per_1k_input, self.price_per_1k_output = price_per_1k_input, price_per_1k_output
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._client: openai.AsyncOpenAI | None = None
        self._slots: asyncio.Semaphore | None = None

    def _connect(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        if self._client is None:  # created inside the running event loop, released by aclose()
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=0
            )
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._client, self._slots

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = self._slots = None

    def backoff(self, attempt: int, error: Exception) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): ``Retry-After`` if given, else full jitter."""
        server_says = _retry_after(error)
        if server_says is not None:
            return min(server_says, MAX_RETRY_AFTER)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _count(self, usage: Usage, **counts: int) -> None:
        for target in (usage, self.usage):
            for key, value in counts.items():
                setattr(target, key, getattr(target, key) + value)

    async def complete(self, messages: list[dict]) -> tuple[str | None, Usage]:
        client, slots = self._connect()
        usage = Usage()
        for attempt in itertools.count():
            self._count(usage, requests=1, retries=int(attempt > 0))
            try:
                async with slots:
                    response = await client.chat.completions.create(
                        model=self.model, messages=messages, response_format={"type": "json_object"}
                    )
            except openai.APIStatusError as error:
                if error.status_code in FATAL_STATUSES:
                    raise TeacherError(f"{self.name}: {_describe(error)}; check the key, model and base URL.",
                                       usage, fatal=True) from error
                failure, retryable = error, error.status_code in RETRY_STATUSES
            except (openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError) as error:
                failure, retryable = error, True  # timeouts, refused connections, malformed bodies
            else:
                if response.usage is not None:
                    self._count(usage, prompt_tokens=response.usage.prompt_tokens or 0,
                                completion_tokens=response.usage.completion_tokens or 0)
                return (response.choices[0].message.content if response.choices else None), usage
            if not retryable or attempt == self.max_retries:
                raise TeacherError(self._gave_up(failure, attempt), usage) from failure
            await asyncio.sleep(self.backoff(attempt, failure))

    def _gave_up(self, error: Exception, attempt: int) -> str:
        return f"{self.name}: no answer after {attempt + 1} request(s); last error {_describe(error)}."

    async def generate(self, sample: TeacherSample, feedback: str | None = None) -> TeacherOutput:
        image_urls = None
        if self.needs_images:
            image_urls = {m: image_data_url(img) for m, img in (("cfp", sample.cfp), ("oct", sample.oct)) if img}
        content, usage = await self.complete(self.messages(sample, feedback, image_urls))
        try:
            answer = parse_teacher_answer(content)
        except ReportFormatError as error:
            raise TeacherFormatError(str(error), usage, content) from None
        return TeacherOutput(answer, render_report(answer), usage)

    def cost(self, usage: Usage | None = None) -> float | None:
        """USD for ``usage`` (default: everything so far); None without prices."""
        if self.price_per_1k_input is None or self.price_per_1k_output is None:
            return None
        u = usage or self.usage
        return (u.prompt_tokens * self.price_per_1k_input + u.completion_tokens * self.price_per_1k_output) / 1000

    def summary(self) -> str:
        u, cost = self.usage, self.cost()
        shown = f"${cost:.4f}" if cost is not None else "n/a (pass price_per_1k_input/output)"
        return (
            f"teacher {self.name}: {u.requests} requests ({u.retries} retries), {u.prompt_tokens:,} prompt + "
            f"{u.completion_tokens:,} completion tokens, cost {shown}"
        )
