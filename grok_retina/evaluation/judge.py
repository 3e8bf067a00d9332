"""The rubric judge: any OpenAI-compatible chat endpoint grades reports with the 8-item rubric.

Transport is Stage I's `OpenAITeacher` client (bounded concurrency, JSON mode, exponential backoff with
full jitter honouring ``Retry-After`` on 408/409/429/5xx, timeouts and malformed bodies). On top of it, a
reply that is not valid rubric JSON is re-asked up to ``max_retries`` times with the validation error fed
back. A sample that still fails is recorded with the reason and never stops the others; after a fatal
endpoint error (401/403/404: bad key, model or URL) the remaining samples are recorded as failed unsent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from grok_retina.teachers.base import TeacherError
from grok_retina.teachers.openai_teacher import OpenAITeacher

from .rubric import RETRY_TEMPLATE, RUBRIC_NAMES, Judgement, JudgementError, build_judge_messages, parse_judgement_text


@dataclass(frozen=True)
class JudgeSample:
    """One report to grade, with what the judge grades it against."""

    report: str
    reference: str | None = None
    biomarkers: Mapping[str, object] | None = None
    label: str | None = None
    id: str | None = None


@dataclass
class JudgeUsage:
    """Judge calls, HTTP requests (with transport retries), tokens and rejected replies; per sample or in total."""

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    invalid_replies: int = 0

    def __iadd__(self, other: "JudgeUsage") -> "JudgeUsage":
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self


@dataclass(frozen=True)
class JudgeOutcome:
    """A sample's validated judgement, or ``None`` with the reason it failed."""

    index: int
    id: str | None
    judgement: Judgement | None
    error: str | None
    usage: JudgeUsage

    @property
    def attempts(self) -> int:
        """Judge calls made for this sample (1 + re-asks after invalid replies)."""
        return self.usage.calls


@dataclass
class RubricJudge:
    """Grades reports with the rubric through ``model`` at ``base_url`` (default OpenAI; key from
    ``$OPENAI_API_KEY``, any key for a local server).

    ``max_retries`` re-asks after an invalid reply; ``transport_retries`` retries a failed request;
    ``concurrency`` bounds requests in flight; ``timeout`` is seconds per request.
    """

    model: str
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    max_retries: int = 3
    transport_retries: int = 5
    timeout: float = 120.0
    usage: JudgeUsage = field(default_factory=JudgeUsage)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (re-asks after an invalid reply), got {self.max_retries}.")
        self._transport = OpenAITeacher(
            self.model,
            self.base_url,
            self.api_key,
            concurrency=self.concurrency,
            max_retries=self.transport_retries,
            timeout=self.timeout,
        )
        self._fatal: str | None = None

    async def judge_many(
        self, samples: Sequence[JudgeSample], on_outcome: Callable[[JudgeOutcome], None] | None = None
    ) -> list[JudgeOutcome]:
        """Grade every sample (outcomes in input order); ``on_outcome`` gets each outcome as soon as it is known
        (to record it). Bad inputs (an invalid biomarker) raise before any request."""
        prompts = [build_judge_messages(s.report, s.reference, s.biomarkers, s.label) for s in samples]
        self._fatal = None
        gate = asyncio.Semaphore(self.concurrency)

        async def judge_one(index: int, sample: JudgeSample, prompt: list[dict]) -> JudgeOutcome:
            outcome = await self._judge(gate, index, sample.id, prompt)
            if on_outcome is not None:
                on_outcome(outcome)
            return outcome

        try:
            return list(await asyncio.gather(*(judge_one(i, s, p) for i, (s, p) in enumerate(zip(samples, prompts)))))
        finally:
            await self._transport.aclose()  # its connection belongs to this event loop

    async def _judge(
        self, gate: asyncio.Semaphore, index: int, sample_id: str | None, prompt: list[dict]
    ) -> JudgeOutcome:
        usage = JudgeUsage()
        judgement, error = None, ""
        messages = prompt
        while usage.calls <= self.max_retries:
            try:
                async with gate:
                    if self._fatal:
                        error = f"not sent: {self._fatal}"
                        break
                    usage.calls += 1
                    text, transport = await self._transport.complete(messages)
            except TeacherError as exc:  # transport retries are exhausted
                usage.requests += exc.usage.requests
                error = f"request failed: {exc}"
                if exc.fatal:
                    self._fatal = str(exc)
                break
            usage.requests += transport.requests
            usage.prompt_tokens += transport.prompt_tokens
            usage.completion_tokens += transport.completion_tokens
            try:
                judgement = parse_judgement_text(text)
                break
            except JudgementError as exc:
                usage.invalid_replies += 1
                error = f"invalid judgement after {usage.calls} attempt{'s' if usage.calls > 1 else ''}: {exc}"
                feedback = RETRY_TEMPLATE.format(error=exc, n=len(RUBRIC_NAMES))
                messages = [
                    *prompt,
                    {"role": "assistant", "content": text or ""},
                    {"role": "user", "content": feedback},
                ]
        self.usage += usage
        return JudgeOutcome(index, sample_id, judgement, None if judgement else error, usage)


def summarise_judgements(outcomes: Sequence[JudgeOutcome]) -> dict:
    """Mean score per rubric item and of the total over judged samples, failures with reasons, per-sample
    detail and the usage of these outcomes."""
    judged = [o.judgement for o in outcomes if o.judgement is not None]
    summary: dict = {"n": len(outcomes), "judged": len(judged), "failed": len(outcomes) - len(judged)}
    for name in RUBRIC_NAMES:
        summary[name] = sum(j.scores[name] for j in judged) / len(judged) if judged else None
    summary["total"] = sum(j.total for j in judged) / len(judged) if judged else None
    summary["failures"] = [{"index": o.index, "id": o.id, "reason": o.error} for o in outcomes if o.judgement is None]
    summary["per_sample"] = [
        {
            "index": o.index,
            "id": o.id,
            "attempts": o.attempts,
            **(o.judgement.to_dict() if o.judgement else {"error": o.error}),
        }
        for o in outcomes
    ]
    usage = JudgeUsage()
    for outcome in outcomes:
        usage += outcome.usage
    summary["usage"] = asdict(usage)
    return summary
