"""Stage I runner: teacher reports for a GROK dataset, verified, stored resumably, and turned into a TRL
conversational prompt-completion dataset.

``OUT/records.jsonl`` holds one line per finished sample, keyed by ``id:prompt_sha256[:16]``; each line is
written with one ``os.write`` on an ``O_APPEND`` descriptor and fsynced, so a run killed at any moment loses at
most the samples in flight, and a resumed run never asks the teacher again for a finished sample. ``ok`` and
``dropped`` records are final; ``error`` records (the teacher gave no answer, e.g. the API was down) are
retried on resume. ``OUT/dataset`` is the result (`datasets.Dataset.save_to_disk`)::

    prompt      [{"role": "system", "content": [{"type": "text", ...}]},
                 {"role": "user", "content": [{"type": "image", "modality": "cfp"},
                                              {"type": "image", "modality": "oct"},
                                              {"type": "text", "text": <biomarkers + instruction>}]}]
    completion  [{"role": "assistant", "content": [{"type": "text", "text": <report>}]}]
    images      [cfp, central OCT B-scan]  (present ones, in placeholder order)
    id, label, biomarkers (+ patient_id, eye, age, dme, dr_grade when the source has them)

Arrow stores content blocks with a common schema, so a text block reads back with ``"modality": None`` and an
image block with ``"text": None``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Image, List, Value, load_from_disk
from tqdm.auto import tqdm

from processing.biomarkers import validate_biomarkers
from processing.labels import dr_dme_names, label_name

from .prompts import build_student_messages
from .teachers.base import Teacher, TeacherError, TeacherFormatError, TeacherSample, Usage
from .verifier import verify_report

RECORDS_FILE = "records.jsonl"
DATASET_DIR = "dataset"
FINAL_STATUSES = frozenset({"ok", "dropped"})
PASSTHROUGH_COLUMNS = ("id", "patient_id", "eye", "age", "label", "biomarkers", "dme", "dr_grade")

_CONTENT = List({"type": Value("string"), "text": Value("string"), "modality": Value("string")})
MESSAGES_FEATURE = List({"role": Value("string"), "content": _CONTENT})


class RecordStore:
    """The append-only JSONL of finished samples (see the module docstring). Holds an exclusive lock on the
    file so two runs cannot write the same output directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RuntimeError(
                f"{self.path} is used by another Stage I run; wait for it or choose another --out."
            ) from None
        self.records = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the last line was cut by a kill: drop it, its sample is simply not finished
            os.ftruncate(self._fd, end)
            data = data[:end]
        records = {}
        for number, line in enumerate(data.splitlines(), 1):
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                warnings.warn(f"{self.path}:{number} is not a record; ignoring it (its sample will be redone).",
                              stacklevel=2)
        return records

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        if os.write(self._fd, line) != len(line):
            raise OSError(f"short write to {self.path} (disk full?); free space and resume the run.")
        os.fsync(self._fd)
        self.records[record["key"]] = record

    def finished(self, key: str) -> bool:
        return self.records.get(key, {}).get("status") in FINAL_STATUSES

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class Job:
    """One sample to generate: its row ``index``, its record ``key`` and its teacher sample (no images)."""

    index: int
    key: str
    sample: TeacherSample


def plan_jobs(dataset: Dataset, teacher: Teacher, limit: int | None = None) -> list[Job]:
    """One job per row (the first ``limit``): its teacher sample (without images, with the ``dr_grade`` and
    ``dme`` columns when present) and its record key."""
    missing = [c for c in ("id", "biomarkers", "label") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks column(s) {missing}; Stage I needs id, biomarkers and label "
            "(see processing.grok_dataset.grok_features)."
        )
    rows = dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset
    columns = [c for c in ("id", "biomarkers", "label", "age", "dr_grade", "dme") if c in dataset.column_names]
    jobs, seen = [], set()
    for index, row in enumerate(rows.select_columns(columns).to_list()):
        sample_id = str(row["id"])
        if sample_id in seen:
            raise ValueError(f"Duplicate id {sample_id!r} in the dataset; ids must be unique for resumable runs.")
        seen.add(sample_id)
        label = label_name(row["label"])
        biomarkers = validate_biomarkers(row["biomarkers"], where=f"sample {sample_id}")
        dr_grade, dme = dr_dme_names(row.get("dr_grade"), row.get("dme"))
        sample = TeacherSample(sample_id, biomarkers, label, row.get("age"), dr_grade=dr_grade, dme=dme)
        jobs.append(Job(index, f"{sample_id}:{teacher.prompt_hash(sample)[:16]}", sample))
    return jobs


def _record(job: Job, status: str, usage: Usage, attempts: int, **fields: Any) -> dict[str, Any]:
    return {"key": job.key, "id": job.sample.id, "status": status, "report": fields.get("report"),
            "reason": fields.get("reason"), "usage": usage.to_dict(), "attempts": attempts,
            "scores": fields.get("scores")}


async def _process(job: Job, images: Dataset | None, teacher: Teacher) -> dict[str, Any]:
    """Ask the teacher, verify, ask once more with the findings if needed; the record to store."""
    sample = job.sample
    if images is not None:
        row = images[job.index]
        octs = row.get("oct") or []
        sample = dataclasses.replace(sample, cfp=row.get("cfp"), oct=octs[0] if octs else None)
    usage, feedback, reason, report = Usage(), None, None, None
    for attempt in (1, 2):
        try:
            output = await teacher.generate(sample, feedback)
        except TeacherFormatError as error:
            usage += error.usage
            reason = feedback = f"- The answer is not in the required JSON shape: {error}"
            continue
        except TeacherError as error:
            if error.fatal:
                raise
            usage += error.usage
            return _record(job, "error", usage, attempt, reason=str(error))
        usage += output.usage
        result = verify_report(output.text, sample.biomarkers, label=sample.label, age=sample.age,
                               dr_grade=sample.dr_grade, dme=sample.dme)
        if result.passed:
            return _record(job, "ok", usage, attempt, report=output.text, scores=result.scores())
        reason = feedback = result.findings()
        report = output.text
    return _record(job, "dropped", usage, 2, report=report, reason=reason)


async def _run(jobs: list[Job], dataset: Dataset, teacher: Teacher, store: RecordStore, concurrency: int,
               progress: bool) -> Counter:
    pending = iter([job for job in jobs if not store.finished(job.key)])
    images = None
    if teacher.needs_images:
        images = dataset.select_columns([c for c in ("cfp", "oct") if c in dataset.column_names])
    counts: Counter = Counter()
    bar = tqdm(total=len(jobs), initial=sum(store.finished(j.key) for j in jobs), unit="sample",
               desc=f"Stage I ({teacher.name})", disable=not progress)

    async def worker() -> None:
        for job in pending:  # one shared iterator: every job is taken by exactly one worker
            record = await _process(job, images, teacher)
            await asyncio.to_thread(store.append, record)  # fsync off the event loop
            counts[record["status"]] += 1
            bar.update(1)
            bar.set_postfix(counts, refresh=False)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await teacher.aclose()
        bar.close()
    return counts


def _build_dataset(dataset: Dataset, jobs: list[Job], store: RecordStore, out_dir: Path) -> Dataset:
    ok = [j for j in jobs if store.records.get(j.key, {}).get("status") == "ok"]
    reports = {j.index: store.records[j.key]["report"] for j in ok}
    indices = sorted(reports)
    source = dataset.select(indices)
    for column, feature in (("cfp", Image(decode=False)), ("oct", List(Image(decode=False)))):
        if column in source.column_names:
            source = source.cast_column(column, feature)
    keep = [c for c in PASSTHROUGH_COLUMNS if c in source.column_names]
    features = Features({**{c: source.features[c] for c in keep}, "prompt": MESSAGES_FEATURE,
                         "completion": MESSAGES_FEATURE, "images": List(Image())})

    def to_row(row: dict[str, Any], position: int) -> dict[str, Any]:
        cfp, octs = row.get("cfp"), row.get("oct") or []
        return {
            "prompt": build_student_messages(row["biomarkers"], has_cfp=cfp is not None, has_oct=bool(octs)),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": reports[indices[position]]}]}],
            "images": [image for image in (cfp, octs[0] if octs else None) if image is not None],
        }

    scratch = out_dir / f".build-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        built = source.map(to_row, with_indices=True, features=features, desc="Building the SFT dataset",
                           remove_columns=[c for c in source.column_names if c not in keep],
                           cache_file_name=str(scratch / "map.arrow"))
        built.save_to_disk(scratch / DATASET_DIR, num_shards=None if len(built) else 1)  # 0 shards cannot load
        final, old = out_dir / DATASET_DIR, out_dir / f".dataset-old-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(scratch / DATASET_DIR, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return load_from_disk(str(out_dir / DATASET_DIR))


def generate_instructions(
    dataset: Dataset,
    teacher: Teacher,
    out_dir: str | os.PathLike,
    concurrency: int = 8,
    limit: int | None = None,
    *,
    progress: bool = True,
) -> Dataset:
    """Run Stage I on ``dataset`` (columns id, biomarkers, label, and cfp/oct images) with ``teacher``.

    Resumes from ``out_dir/records.jsonl``, runs ``concurrency`` samples at a time, verifies each report
    (`verifier.verify_report`), retries a failed one once with the findings, drops it with the reason if it
    fails again, prints counts and the teacher's usage, and writes ``out_dir/dataset``. Returns that dataset.
    """
    out_dir = Path(out_dir)
    jobs = plan_jobs(dataset, teacher, limit)
    with RecordStore(out_dir / RECORDS_FILE) as store:
        counts = asyncio.run(_run(jobs, dataset, teacher, store, concurrency, progress))
        result = _build_dataset(dataset, jobs, store, out_dir)
    done = ", ".join(f"{counts[s]} {s}" for s in ("ok", "dropped", "error"))
    print(f"Stage I: {done} this run; {len(result)}/{len(jobs)} samples in {out_dir / DATASET_DIR}")
    print(teacher.summary())
    return result
