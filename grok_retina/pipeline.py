"""Inference: `GrokPipeline` turns a CFP, an OCT and biomarkers into a grounded, verified report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from threading import Thread
from typing import Any, Iterator, Mapping, Sequence

import torch
from transformers import TextIteratorStreamer

from modeling_grok import GrokForConditionalGeneration, GrokProcessor
from modeling_grok.modeling_grok import MULTIMODAL_INPUT_KEYS
from processing.biomarkers import validate_biomarkers

from .guideline import Assessment, assess_all
from .prompts import build_diagnosis_messages, build_student_messages
from .report_parsing import parse_label
from .verifier import VerificationResult, verify_report


@dataclass
class GrokReport:
    """A generated report and what it says, checked against the biomarkers it was given."""

    text: str
    label: str | None
    assessments: dict[str, Assessment]
    verification: VerificationResult
    biomarkers: dict[str, float | None]
    biomarker_source: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "assessments": {k: vars(a) for k, a in self.assessments.items()},
            "verification": {**self.verification.scores(), "passed": self.verification.passed,
                             "fabricated": [vars(c) for c in self.verification.fabricated]},
            "biomarkers": self.biomarkers,
            "biomarker_source": self.biomarker_source,
        }


@dataclass
class GrokDiagnosis:
    """The model's short answer to the diagnosis question and the label it names (None if it names none)."""

    text: str
    label: str | None


class GrokPipeline:
    """``GrokPipeline.from_pretrained(path_or_hub_id)(cfp=..., oct=..., biomarkers=...)`` -> `GrokReport`.

    Lists of inputs run as one left-padded batch. Biomarkers left out are measured from the images
    (`processing.measure`) when ``measure_missing`` is set; measured values are marked in ``biomarker_source``.
    ``acquisition`` (``eye``, ``oct_axial_um_per_px``, ``oct_lateral_um_per_px``, ``cfp_um_per_px``) lets the
    measurement report µm thicknesses and tell nasal from temporal; without it only ratios are measured.
    """

    def __init__(
        self,
        model: GrokForConditionalGeneration,
        processor: GrokProcessor,
        max_new_tokens: int = 512,
        measure_missing: bool = True,
    ):
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.max_new_tokens = max_new_tokens
        self.measure_missing = measure_missing

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | None = None, dtype: torch.dtype | str | None = None, **kwargs
    ) -> "GrokPipeline":
        model = GrokForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype or "auto")
        processor = GrokProcessor.from_pretrained(name_or_path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), processor, **kwargs)

    def _biomarkers(
        self, cfp: Any, oct: Any, given: Mapping[str, object] | None, measure: bool | None = None,
        acquisition: Mapping[str, object] | None = None,
    ) -> tuple[dict, dict[str, str]]:
        values = validate_biomarkers(given)
        source = {name: "given" for name, value in values.items() if value is not None}
        measure = self.measure_missing if measure is None else measure
        if measure and (cfp is not None or oct is not None) and None in values.values():
            from processing.measure import measure_biomarkers

            measured = measure_biomarkers(cfp=cfp, oct=oct, **dict(acquisition or {}))
            for name, value in measured["biomarkers"].items():
                if values.get(name) is None and value is not None:
                    values[name], source[name] = float(value), "measured"
        return values, source

    def _prompt(self, cfp: Any, oct: Any, biomarkers: dict, question: bool = False) -> tuple[str, list]:
        """GROK's prompt text (up to the answer) and its images for one sample: the report request, or with
        ``question`` the short diagnosis question."""
        has_cfp, has_oct = cfp is not None, oct is not None
        messages = (build_diagnosis_messages(has_cfp, has_oct) if question
                    else build_student_messages(biomarkers, has_cfp=has_cfp, has_oct=has_oct))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, [image for image in (cfp, oct) if image is not None]

    def _inputs(self, samples: list[tuple[Any, Any, dict]], question: bool = False) -> dict[str, torch.Tensor]:
        texts, images = zip(*(self._prompt(cfp, oct, biomarkers, question) for cfp, oct, biomarkers in samples))
        inputs = self.processor(
            text=list(texts), images=list(images), biomarkers=[values for _, _, values in samples],
            return_tensors="pt", padding=True,
        )
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def report(self, text: str, biomarkers: dict, source: dict[str, str] | None = None, label: str | None = None) -> GrokReport:
        """Parse and verify a generated ``text`` against ``biomarkers`` (and a known ``label``, if any)."""
        return GrokReport(
            text=text,
            label=parse_label(text),
            assessments=assess_all(biomarkers),
            verification=verify_report(text, biomarkers, label=label),
            biomarkers=biomarkers,
            biomarker_source=source or {},
        )

    @torch.inference_mode()
    def __call__(
        self,
        cfp: Any | Sequence[Any] = None,
        oct: Any | Sequence[Any] = None,
        biomarkers: Mapping[str, object] | Sequence[Mapping[str, object] | None] | None = None,
        batch: bool | None = None,
        measure: bool | None = None,
        acquisition: Mapping[str, object] | None = None,
        **generate_kwargs,
    ) -> GrokReport | list[GrokReport]:
        prepared = self._prepare(cfp, oct, biomarkers, batch, measure, acquisition)
        texts = self._generate(prepared, **{"max_new_tokens": self.max_new_tokens, **generate_kwargs})
        reports = [self.report(text, values, source) for text, (_, _, values, source) in zip(texts, prepared)]
        return reports if self._is_batch(cfp, biomarkers, batch) else reports[0]

    @torch.inference_mode()
    def diagnose(
        self,
        cfp: Any | Sequence[Any] = None,
        oct: Any | Sequence[Any] = None,
        biomarkers: Mapping[str, object] | Sequence[Mapping[str, object] | None] | None = None,
        batch: bool | None = None,
        measure: bool | None = None,
        acquisition: Mapping[str, object] | None = None,
        max_new_tokens: int = 24,
    ) -> GrokDiagnosis | list[GrokDiagnosis]:
        """The model's answer to the short diagnosis question (`prompts.DIAGNOSIS_QUESTION`: images and biomarker
        tokens, no biomarker table), for a model trained with diagnosis questions (``diagnosis_questions``).
        Inputs and batching as for a report."""
        prepared = self._prepare(cfp, oct, biomarkers, batch, measure, acquisition)
        texts = self._generate(prepared, question=True, max_new_tokens=max_new_tokens)
        answers = [GrokDiagnosis(text, parse_label(text)) for text in texts]
        return answers if self._is_batch(cfp, biomarkers, batch) else answers[0]

    def _generate(self, prepared: list[tuple], question: bool = False, **generate_kwargs) -> list[str]:
        """Greedy (unless told otherwise) answers for `_prepare`'s samples, stripped: reports, or with ``question``
        the short diagnosis answers."""
        inputs = self._inputs([(c, o, values) for c, o, values, _ in prepared], question=question)
        output = self.model.generate(**inputs, **{"do_sample": False, **generate_kwargs})
        texts = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [text.strip() for text in texts]

    @staticmethod
    def _is_batch(cfp: Any, biomarkers: Any, batch: bool | None) -> bool:
        # an OCT volume is a list too, so only cfp or biomarkers lists mean a batch
        return isinstance(cfp, (list, tuple)) or isinstance(biomarkers, (list, tuple)) if batch is None else batch

    def _prepare(
        self, cfp: Any, oct: Any, biomarkers: Any, batch: bool | None, measure: bool | None,
        acquisition: Mapping[str, object] | None,
    ) -> list[tuple[Any, Any, dict, dict[str, str]]]:
        """Per sample: the CFP, the OCT, the biomarkers to use (given, or measured) and their sources."""
        if self._is_batch(cfp, biomarkers, batch):
            count = len(next(x for x in (cfp, biomarkers, oct) if isinstance(x, (list, tuple))))
            cfps, octs, marks = (list(x) if isinstance(x, (list, tuple)) else [x] * count for x in (cfp, oct, biomarkers))
            if not len(cfps) == len(octs) == len(marks):
                raise ValueError("cfp, oct and biomarkers lists must have the same length (None for a missing item).")
        else:
            cfps, octs, marks = [cfp], [oct], [biomarkers]
        return [(c, o, *self._biomarkers(c, o, b, measure, acquisition)) for c, o, b in zip(cfps, octs, marks)]

    @torch.inference_mode()
    def continuation_logprobs(
        self, continuations: Sequence[str], cfp: Any = None, oct: Any = None,
        biomarkers: Mapping[str, object] | None = None, prefix: str = "", measure: bool | None = None,
        acquisition: Mapping[str, object] | None = None,
    ) -> list[float]:
        """The summed log-probability of each of ``continuations`` as the model's answer after ``prefix`` (the
        start of the answer, e.g. a report up to its Conclusion) for one sample, e.g. to compare two
        conclusions. ``prefix`` should end in a newline (or be empty) so that it tokenises apart from what follows."""
        if not continuations:
            raise ValueError("continuations is empty; give at least one text to score.")
        values, _ = self._biomarkers(cfp, oct, biomarkers, measure, acquisition)
        text, images = self._prompt(cfp, oct, values)
        n = len(continuations)
        inputs = self.processor(text=[text + prefix] * n, images=[images] * n, biomarkers=[values] * n, return_tensors="pt")
        start = inputs["input_ids"].shape[1]
        tails = [self.processor.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        if not all(tails):
            raise ValueError("every continuation must have at least one token; got an empty text.")
        length = start + max(map(len, tails))
        pad = self.processor.tokenizer.pad_token_id or 0
        ids = torch.full((n, length), pad, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for row, tail in enumerate(tails):  # right padding: positions stay those of an unpadded sequence
            ids[row, :start] = inputs["input_ids"][row]
            ids[row, start : start + len(tail)] = torch.tensor(tail)
            mask[row, : start + len(tail)] = 1
        model_inputs = {k: v for k, v in inputs.items() if k in MULTIMODAL_INPUT_KEYS}
        model_inputs.update(input_ids=ids, attention_mask=mask)
        logits = self.model(**{k: v.to(self.model.device) for k, v in model_inputs.items()}).logits.float()
        logprobs = torch.log_softmax(logits[:, start - 1 : -1], dim=-1)
        targets = ids[:, start:].to(logprobs.device)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask[:, start:].to(logprobs.device)
        return picked.sum(dim=1).tolist()

    def stream(
        self, cfp: Any = None, oct: Any = None, biomarkers: Mapping[str, object] | None = None,
        measure: bool | None = None, acquisition: Mapping[str, object] | None = None,
        timeout: float | None = 600.0, **generate_kwargs,
    ) -> Iterator[str]:
        """Yield the report's text as it is generated; build the `GrokReport` with `report` at the end.

        Generation runs in a worker thread; an error there ends the stream and is re-raised here.
        ``timeout`` bounds the wait for each chunk.
        """
        values, _ = self._biomarkers(cfp, oct, biomarkers, measure, acquisition)
        inputs = self._inputs([(cfp, oct, values)])
        streamer = TextIteratorStreamer(
            self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout
        )
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **generate_kwargs}

        errors: list[Exception] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, streamer=streamer, **kwargs)
            except Exception as error:  # re-raised in the caller's thread once the stream ends
                errors.append(error)
            finally:
                streamer.end()  # a second end after a normal generate only queues what nobody reads

        thread = Thread(target=generate, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise errors[0]

    def biomarkers_for(
        self, cfp: Any = None, oct: Any = None, biomarkers: Mapping[str, object] | None = None,
        measure: bool | None = None, acquisition: Mapping[str, object] | None = None,
    ) -> tuple[dict, dict[str, str]]:
        """The biomarkers a call would use (given ones validated, missing ones measured) and their sources."""
        return self._biomarkers(cfp, oct, biomarkers, measure, acquisition)
