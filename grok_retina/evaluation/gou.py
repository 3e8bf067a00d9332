"""The Grounded Ophthalmic Understanding benchmark over a model folder: generate reports, score them.

`evaluate_model` appends every generated report and judge result to JSONL files in its output folder as they
are produced (`RunRecords`), so a run that stops is resumed by running it again with the same folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from processing.labels import LABELS, dr_dme_diagnosis, dr_dme_names

from ..prompts import DIAGNOSIS_CONCLUSION, REPORT_SECTIONS
from ..report_parsing import parse_dr_grade, text_before_conclusion
from .ablation import MODALITY_SETTINGS, AblationResult, run_modality_ablation
from .benchmark import evaluate_reports
from .classification import diagnosis_metrics
from .conditioning import conditioning_gap
from .dme_dr import dr_dme_baselines
from .judge import JudgeOutcome, JudgeSample, JudgeUsage, RubricJudge
from .report import EvaluationResult, atomic_write_text
from .rubric import Judgement

DME_PROBE = f"{REPORT_SECTIONS[2]}: {DIAGNOSIS_CONCLUSION}"  # the two conclusions scored for DME
RUN_FILE = "run.json"
REPORTS_FILE = "generated_reports.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"


@dataclass
class GOUSample:
    """One benchmark case: the images, the biomarkers, the true label, a reference report and, in a graded
    set, the true DR grade ("0", "NPDR", "PDR"; None when ungraded) and DME status ("no", "yes")."""

    id: str
    cfp: Any
    oct: Any
    biomarkers: dict | None
    label: str
    reference: str | None
    dr_grade: str | None = None
    dme: str | None = None


def _label_name(value: Any) -> str:
    return LABELS[value] if isinstance(value, int) else str(value)


def samples_from_dataset(dataset: Iterable[dict]) -> list[GOUSample]:
    """Cases from a Stage I dataset (prompt / completion / images) or a GROK dataset (cfp / oct / report),
    with the ``dr_grade`` / ``dme`` columns when present."""
    samples = []
    for index, row in enumerate(dataset):
        if "images" in row and "prompt" in row:
            order = [b["modality"] for m in row["prompt"] for b in m["content"] if b.get("type") == "image"]
            images = dict(zip(order, row["images"]))
            reference = row["completion"][0]["content"][0]["text"] if row.get("completion") else None
            cfp, oct = images.get("cfp"), images.get("oct")
        else:
            scans = row.get("oct") or []
            cfp, oct, reference = row.get("cfp"), (scans[0] if scans else None), row.get("report")
        dr_grade, dme = dr_dme_names(row.get("dr_grade"), row.get("dme"))
        samples.append(GOUSample(str(row.get("id", index)), cfp, oct, row.get("biomarkers"), _label_name(row["label"]),
                                 reference, dr_grade, dme))
    return samples


def dme_likelihood_scores(
    pipeline, samples: Sequence[GOUSample], reports: Sequence[str], modalities: Iterable[str] = ("cfp", "oct"),
) -> list[float]:
    """Per sample, log P(DME conclusion) - log P(no-DME conclusion) under the model: two `DME_PROBE`
    conclusions naming the DR grade the report states (`parse_dr_grade`) with and without DME, scored after
    the prompt, the shown images and the report's text before its Conclusion."""
    modalities = set(modalities)
    scores = []
    for sample, report in tqdm(list(zip(samples, reports)), desc="DME likelihoods", unit="sample"):
        grade = parse_dr_grade(report)
        body = text_before_conclusion(report).strip()
        yes, no = pipeline.continuation_logprobs(
            [DME_PROBE.format(d=dr_dme_diagnosis(grade, status)) for status in ("yes", "no")],
            cfp=sample.cfp if "cfp" in modalities else None, oct=sample.oct if "oct" in modalities else None,
            biomarkers=sample.biomarkers, prefix=f"{body}\n" if body else "",
        )
        scores.append(yes - no)
    return scores


class ResumeError(ValueError):
    """An output folder whose records cannot be reused; the message names what differs and the fix."""


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file (none when it is absent); a last line cut short by a crash is cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    records = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ResumeError(
                f"{path}:{number} is not a JSON record ({error.msg}); delete {path} to redo the work it records."
            ) from None
    return records


def _append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append one JSON line per record, flushing after each line."""
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def _weights_fingerprint(model) -> str:
    """A hash of every parameter's name and first values: tells apart checkpoints saved at the same path."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        if param.device.type != "meta":
            digest.update(param.detach().reshape(-1)[:16].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class RunRecords:
    """The reports and judge results of one evaluation, appended to ``generated_reports.jsonl`` and
    ``judgements.jsonl`` in ``out_dir`` as they are produced, for a re-run with the same folder to reuse.

    ``run`` (the model, its weights, the generation length, the dataset and its samples) is written to
    ``run.json``; a folder whose ``run.json`` differs raises `ResumeError`. Only successful judgements are reused:
    failed ones are judged again.
    """

    def __init__(self, out_dir: str | Path, run: dict[str, Any]):
        self.out_dir = Path(out_dir)
        meta = self.out_dir / RUN_FILE
        fix = f"pass another output folder (--out) or delete {self.out_dir} to start over"
        if meta.is_file():
            recorded = json.loads(meta.read_text(encoding="utf-8"))
            differs = [f"{key} {recorded.get(key)!r} there, {value!r} now" for key, value in run.items()
                       if recorded.get(key) != value]
            if differs:
                raise ResumeError(
                    f"{self.out_dir} holds the records of another evaluation ({'; '.join(differs)}); {fix}."
                )
        elif any((self.out_dir / name).is_file() for name in (REPORTS_FILE, JUDGEMENTS_FILE)):
            raise ResumeError(f"{self.out_dir} has evaluation records but no {RUN_FILE} saying what made them; {fix}.")
        else:
            atomic_write_text(meta, json.dumps(run, indent=2, ensure_ascii=False) + "\n")
        self.reports = {(r["setting"], r["id"]): r["report"] for r in _read_jsonl(self.out_dir / REPORTS_FILE)}
        self.judgements = {r["key"]: r for r in _read_jsonl(self.out_dir / JUDGEMENTS_FILE) if r["judgement"]}

    def add_reports(self, setting: str, ids: Sequence[str], reports: Sequence[str]) -> None:
        records = [{"setting": setting, "id": i, "report": r} for i, r in zip(ids, reports)]
        _append_jsonl(self.out_dir / REPORTS_FILE, records)
        self.reports.update(((setting, i), r) for i, r in zip(ids, reports))

    def judgement(self, key: str, index: int, sample_id: str | None) -> JudgeOutcome | None:
        """The recorded successful judgement under ``key`` as the outcome of sample ``index``, else None."""
        record = self.judgements.get(key)
        if record is None:
            return None
        return JudgeOutcome(index, sample_id, Judgement(**record["judgement"]), None, JudgeUsage(**record["usage"]))

    def add_judgements(self, setting: str, keyed: Sequence[tuple[str, JudgeOutcome]]) -> None:
        records = [
            {"key": key, "setting": setting, "id": o.id,
             "judgement": dataclasses.asdict(o.judgement) if o.judgement else None, "error": o.error,
             "usage": dataclasses.asdict(o.usage)}
            for key, o in keyed
        ]
        _append_jsonl(self.out_dir / JUDGEMENTS_FILE, records)
        self.judgements.update((r["key"], r) for r in records if r["judgement"])


def _setting(modalities: Iterable[str]) -> str:
    """The records' name of a modality setting: "cfp+oct", "oct", "cfp"."""
    return "+".join(sorted(modalities))


@dataclass
class _RecordedJudge:
    """``judge`` grading only the reports of ``setting`` without a recorded judgement, each result recorded as it
    arrives; the rest come from ``records``."""

    judge: RubricJudge
    records: RunRecords
    setting: str

    @property
    def model(self) -> str:
        return self.judge.model

    async def judge_many(self, samples: Sequence[JudgeSample]) -> list[JudgeOutcome]:
        keys = [_fingerprint([self.judge.model, self.setting, s.id, s.report, s.reference, s.biomarkers, s.label])
                for s in samples]
        outcomes = [self.records.judgement(key, i, s.id) for i, (key, s) in enumerate(zip(keys, samples))]
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]

        def record(outcome: JudgeOutcome) -> None:
            i = todo[outcome.index]
            outcomes[i] = dataclasses.replace(outcome, index=i)
            self.records.add_judgements(self.setting, [(keys[i], outcomes[i])])

        if todo:
            await self.judge.judge_many([samples[i] for i in todo], on_outcome=record)
        return outcomes


def generate_reports(
    pipeline, samples: Sequence[GOUSample], modalities: Iterable[str] = ("cfp", "oct"), batch_size: int = 16,
    desc: str = "Generating reports", records: RunRecords | None = None,
) -> list[str]:
    """One report per sample with only ``modalities``' images shown to the model (batched, greedy). With
    ``records``, the reports recorded for these modalities are reused and each new batch's reports recorded."""
    modalities = set(modalities)
    setting = _setting(modalities)
    known = records.reports if records is not None else {}
    reports: list[str | None] = [known.get((setting, s.id)) for s in samples]
    todo = [i for i, report in enumerate(reports) if report is None]
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch"):
        batch = todo[start : start + batch_size]
        chunk = [samples[i] for i in batch]
        out = pipeline(
            cfp=[s.cfp if "cfp" in modalities else None for s in chunk],
            oct=[s.oct if "oct" in modalities else None for s in chunk],
            biomarkers=[s.biomarkers for s in chunk],
            batch=True,
        )
        texts = [report.text for report in out]
        if records is not None:
            records.add_reports(setting, [s.id for s in chunk], texts)
        for i, text in zip(batch, texts):
            reports[i] = text
    return reports


def diagnosis_answers(pipeline, samples: Sequence[GOUSample], batch_size: int = 16) -> list[str | None]:
    """The label each sample's answer to the short diagnosis question names (`GrokPipeline.diagnose`)."""
    labels: list[str | None] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="Diagnosis questions", unit="batch"):
        chunk = samples[start : start + batch_size]
        answers = pipeline.diagnose(cfp=[s.cfp for s in chunk], oct=[s.oct for s in chunk],
                                    biomarkers=[s.biomarkers for s in chunk], batch=True)
        labels += [answer.label for answer in answers]
    return labels


def evaluate_model(
    pipeline,
    samples: Sequence[GOUSample],
    *,
    model_name: str,
    dataset_name: str,
    split: str,
    out_dir: str | Path,
    judge: RubricJudge | None = None,
    ablation: bool = False,
    batch_size: int = 16,
    embeddings: bool = True,
    dme_likelihood: bool = True,
    conditioning_rows: Sequence[dict] | None = None,
    diagnosis_question: bool = False,
) -> tuple[EvaluationResult, AblationResult | None]:
    """Score ``pipeline`` on ``samples``; with ``ablation`` also OCT-only and CFP-only (written to ablation.*).

    Reports and judge results are recorded in ``out_dir`` as they are made (`RunRecords`); running again with
    the same ``out_dir`` reuses them, and raises `ResumeError` when they came from another model or dataset.

    When every sample has a DME status (a graded set), the ``dme`` and ``dr_grade`` sections are added (DME
    ROC AUC from `dme_likelihood_scores` when ``dme_likelihood``, else from the parsed call) and the trivial
    baselines on the same eyes are written to baselines.json / baselines.md. ``conditioning_rows`` (Stage I
    SFT rows) add the ``conditioning`` section: `conditioning_gap` of the model on them. ``diagnosis_question``
    (for a model trained with diagnosis questions) adds ``diagnosis_question``: the same diagnosis metrics for
    its short answers (`diagnosis_answers`).
    """
    ids = [s.id for s in samples]
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"sample ids {repeated[:5]} repeat; give the dataset an 'id' column with one value per row.")
    cases = [[s.id, s.label, s.reference, s.biomarkers, s.dr_grade, s.dme] for s in samples]
    records = RunRecords(out_dir, {
        "model": model_name, "model_weights": _weights_fingerprint(pipeline.model),
        "max_new_tokens": pipeline.max_new_tokens, "dataset": dataset_name, "split": split, "samples": len(samples),
        "samples_fingerprint": _fingerprint(cases),
    })
    labels = [s.label for s in samples]
    references = [s.reference for s in samples] if all(s.reference for s in samples) else None
    graded = bool(samples) and all(s.dme is not None for s in samples)
    biomarkers = [s.biomarkers for s in samples]
    dme, dr_grades = ([s.dme for s in samples], [s.dr_grade for s in samples]) if graded else (None, None)
    base = functools.partial(
        evaluate_reports, labels=labels, references=references, biomarkers=biomarkers,
        ids=ids, embeddings=embeddings, dme=dme, dr_grades=dr_grades,
    )

    def score(reports: list[str], modalities: frozenset[str]) -> dict[str, dict]:
        recorded = _RecordedJudge(judge, records, _setting(modalities)) if judge is not None else None
        if graded and dme_likelihood:
            dme_scores = dme_likelihood_scores(pipeline, samples, reports, modalities)
            return base(reports, judge=recorded, dme_scores=dme_scores)
        return base(reports, judge=recorded)

    settings = MODALITY_SETTINGS if ablation else {"CFP+OCT": MODALITY_SETTINGS["CFP+OCT"]}
    result = run_modality_ablation(
        lambda data, modalities: generate_reports(pipeline, data, modalities, batch_size,
                                                  desc=f"Reports ({_setting(modalities)})", records=records),
        list(samples),
        score,
        settings,
    )
    evaluation = EvaluationResult(
        model=model_name, dataset=dataset_name, split=split, sections=dict(result.sections["CFP+OCT"]),
        config={"n": len(samples), "judge": getattr(judge, "model", None), "ablation": ablation,
                "dme_likelihood": graded and dme_likelihood},
    )
    if conditioning_rows is not None:
        gap = conditioning_gap(pipeline.model, pipeline.processor, conditioning_rows, batch_size=batch_size)
        evaluation.sections["conditioning"] = gap.to_dict()
    if diagnosis_question:
        answered = diagnosis_answers(pipeline, samples, batch_size)
        evaluation.sections["diagnosis_question"] = {**diagnosis_metrics(answered, labels, LABELS), "predictions": answered}
    out_dir = Path(out_dir)
    evaluation.write(out_dir)
    if graded:
        write_baselines(dr_dme_baselines(labels, dme, dr_grades, biomarkers), out_dir, dataset_name, split)
    if ablation:
        atomic_write_text(out_dir / "ablation.json", json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        atomic_write_text(out_dir / "ablation.md", result.to_markdown() + "\n")
    return evaluation, (result if ablation else None)


def write_baselines(baselines: dict[str, dict[str, dict]], out_dir: str | Path, dataset_name: str, split: str) -> str:
    """Write ``baselines.json`` and ``baselines.md`` (one table per baseline) atomically; returns the markdown."""
    results = [EvaluationResult(model=f"baseline: {name}", dataset=dataset_name, split=split, sections=sections)
               for name, sections in baselines.items()]
    markdown = "\n".join(r.to_markdown() for r in results)
    out_dir = Path(out_dir)
    rows = json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False)
    atomic_write_text(out_dir / "baselines.json", rows + "\n")
    atomic_write_text(out_dir / "baselines.md", markdown)
    return markdown
