"""The Stage I teacher interface: one eye in, a report as validated JSON and as text out, with usage."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL.Image import Image

from processing.labels import check_dr_dme

from ..prompts import build_teacher_messages


@dataclass(frozen=True)
class TeacherSample:
    """What a teacher sees of one eye: validated biomarkers (all 37 keys, None when missing), the label name,
    and optionally the age, the DR grade ("0", "NPDR", "PDR"; None when ungraded) and DME status ("no",
    "yes") that the conclusion must state, the CFP and the central OCT B-scan."""

    id: str
    biomarkers: dict[str, float | None]
    label: str
    age: float | None = None
    cfp: Image | None = field(default=None, repr=False)
    oct: Image | None = field(default=None, repr=False)
    dr_grade: str | None = None
    dme: str | None = None

    def __post_init__(self) -> None:
        try:
            check_dr_dme(self.label, self.dr_grade, self.dme)
        except ValueError as error:
            raise ValueError(f"sample {self.id}: {error}") from None


@dataclass
class Usage:
    """Request and token counts (of one sample, or the running total of a teacher)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iadd__(self, other: Usage) -> Usage:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class TeacherOutput:
    """A teacher answer: the parsed JSON (`prompts.parse_teacher_answer`), its rendered report text and usage."""

    report_json: dict[str, Any]
    text: str
    usage: Usage


class TeacherError(RuntimeError):
    """The teacher gave no usable answer after its retries. ``fatal`` errors (bad key, unknown model) stop
    the run; others are recorded for the sample and retried when the run is resumed."""

    def __init__(self, message: str, usage: Usage | None = None, fatal: bool = False):
        super().__init__(message)
        self.usage = usage or Usage()
        self.fatal = fatal


class TeacherFormatError(TeacherError):
    """The teacher answered, but not in the JSON shape of the prompt; Stage I asks once more with the reason."""

    def __init__(self, message: str, usage: Usage | None = None, content: str | None = None):
        super().__init__(message, usage)
        self.content = content


class Teacher(ABC):
    """Writes the Stage I report of a `TeacherSample`. ``name`` identifies the teacher (and model) in the
    prompt hash; ``needs_images`` tells Stage I to load the images."""

    name: str = "teacher"
    needs_images: bool = False

    def __init__(self) -> None:
        self.usage = Usage()

    def messages(
        self, sample: TeacherSample, feedback: str | None = None, image_urls: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The chat messages of the teacher prompt for ``sample``."""
        return build_teacher_messages(
            sample.biomarkers, sample.label, age=sample.age, image_urls=image_urls, feedback=feedback,
            dr_grade=sample.dr_grade, dme=sample.dme,
        )

    def prompt_hash(self, sample: TeacherSample) -> str:
        """SHA-256 of the teacher name and the prompt (images as placeholders): a changed prompt, model or
        teacher gives a new key, so Stage I regenerates instead of reusing a stale record."""
        placeholders = {"cfp": "<cfp>", "oct": "<oct>"} if self.needs_images else None
        payload = json.dumps({"teacher": self.name, "messages": self.messages(sample, image_urls=placeholders)},
                             sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    @abstractmethod
    async def generate(self, sample: TeacherSample, feedback: str | None = None) -> TeacherOutput:
        """The report for ``sample``; ``feedback`` holds the verifier's findings on a previous answer.
        Raises `TeacherFormatError` for an answer of the wrong shape and `TeacherError` when no answer came."""

    async def aclose(self) -> None:
        """Release connections; Stage I calls it at the end of each run."""

    def summary(self) -> str:
        """One line of usage accounting, printed at the end of a run."""
        u = self.usage
        return f"teacher {self.name}: {u.requests} requests ({u.retries} retries)"
