"""The one dataset schema of grok-retina, users' manifests, and loading any GROK dataset.

Every recipe reads datasets with the columns of `grok_features`: ``id``, ``patient_id``, ``eye`` ("OD"/"OS"),
``cfp`` (image), ``oct`` (list of B-scans, the central foveal one first), ``biomarkers`` (the 37 of
`processing.biomarkers`, missing as None), ``label`` (ClassLabel over `processing.labels.LABELS`),
``report`` (optional text), the pixel scales ``oct_axial_um_per_px``, ``oct_lateral_um_per_px`` and
``cfp_um_per_px`` (None when unknown), and any extra columns (e.g. a DME grade).

A *manifest* brings users' own data in: a CSV or JSONL file with one row per eye visit and the columns

    id, patient_id, eye, cfp, oct, label, report, <biomarker name>..., <scale column>...

``cfp`` is an image path; ``oct`` one path or several separated by ``;`` (a JSON list in JSONL); paths are
relative to the manifest's folder. Biomarkers may also sit in a ``biomarkers`` JSON object. Empty
cells are missing values. `validate_manifest` lists every problem with its row (1 = first data row; the
CSV header is row 0) and field; `load_grok_dataset` refuses a manifest with problems. A biomarker outside
the schema's plausible range is an error by default; ``on_out_of_range="flag"`` keeps the row, sets the
value to None and records it in a ``flags`` column. Values are never clipped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np

from .biomarkers import BIOMARKER_NAMES, BIOMARKERS_BY_NAME, BiomarkerError, get_biomarker, validate_biomarkers
from .labels import LABELS

SCALE_COLUMNS: tuple[str, ...] = ("oct_axial_um_per_px", "oct_lateral_um_per_px", "cfp_um_per_px")
COLUMNS: tuple[str, ...] = ("id", "patient_id", "eye", "cfp", "oct", "biomarkers", "label", "report", *SCALE_COLUMNS)
REQUIRED_MANIFEST_COLUMNS: tuple[str, ...] = ("id", "patient_id", "cfp", "oct", "label")
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")
Eye = Literal["OD", "OS"]
# The one table of eye spellings (lower case; matched in any case), used by manifests, the DME/DR set and
# `processing.measure`.
EYE_ALIASES: dict[str, Eye] = {
    **dict.fromkeys(("od", "r", "re", "right"), "OD"),
    **dict.fromkeys(("os", "oi", "l", "le", "left"), "OS"),  # OI: ojo izquierdo
}
OutOfRange = Literal["reject", "flag"]
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_LOCAL_SUFFIXES: tuple[str, ...] = (*MANIFEST_SUFFIXES, ".json", ".parquet")
_LOCAL_PREFIXES: tuple[str, ...] = ("./", "../", "~", "/")


def grok_features(extra: Mapping[str, object] | None = None):
    """`datasets.Features` of a GROK dataset, plus the ``extra`` columns (name -> feature)."""
    from datasets import ClassLabel, Features, Image, List, Value

    features = {
        "id": Value("string"),
        "patient_id": Value("string"),
        "eye": Value("string"),
        "cfp": Image(),
        "oct": List(Image()),
        "biomarkers": {name: Value("float32") for name in BIOMARKER_NAMES},
        "label": ClassLabel(names=list(LABELS)),
        "report": Value("string"),
        **{name: Value("float32") for name in SCALE_COLUMNS},
    }
    clash = set(features) & set(extra or {})
    if clash:
        raise ValueError(f"Extra columns {sorted(clash)} would replace GROK columns; rename them.")
    return Features({**features, **(extra or {})})


def normalise_eye(eye: str | None) -> Eye | None:
    """'OD'/'OS' from any spelling in `EYE_ALIASES` (any case, e.g. OD, RE, right, OS, OI, LE, left); None stays
    None. Raises a ValueError naming the accepted spellings."""
    if eye is None:
        return None
    code = EYE_ALIASES.get(str(eye).strip().lower())
    if code is None:
        raise ValueError(
            f"eye {eye!r} is not an eye; use OD (right) or OS (left) (also accepted: {', '.join(EYE_ALIASES)})."
        )
    return code


class ManifestError(ValueError):
    """A manifest with problems; the message names each row and field."""


@dataclass(frozen=True)
class ManifestProblem:
    row: int  # 1-based data row; 0 is the CSV header
    field: str
    message: str

    def __str__(self) -> str:
        where = "header" if self.row == 0 else f"row {self.row}"
        return f"{where}, field {self.field!r}: {self.message}"


@dataclass
class ManifestReport:
    """Outcome of `validate_manifest`: rows read, problems, and flagged out-of-range values (``flag`` mode)."""

    path: Path
    n_rows: int = 0
    problems: list[ManifestProblem] = field(default_factory=list)
    flagged: list[ManifestProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"{self.path}: {self.n_rows} rows, {len(self.problems)} problem(s), {len(self.flagged)} flagged value(s)"
        )
        return "\n".join([head, *(f"  {p}" for p in self.problems), *(f"  flagged {p}" for p in self.flagged)])


class _Collector:
    """Gathers problems, or raises at the first one in strict mode."""

    def __init__(self, path: Path, strict: bool):
        self.path, self.strict, self.problems = path, strict, []

    def add(self, row: int, field_name: str, message: str) -> None:
        problem = ManifestProblem(row, field_name, message)
        if self.strict:
            raise ManifestError(f"{self.path}: {problem}")
        self.problems.append(problem)


def _read_rows(path: Path, problems: _Collector, extra_columns: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """(row number, raw record) of a CSV or JSONL manifest; a CSV header is checked once, as row 0, and a
    header without the required columns yields no rows."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            for name in header:
                if name not in COLUMNS and name not in extra_columns and name not in BIOMARKERS_BY_NAME:
                    problems.add(0, name, _unknown_column(name))
            missing = [name for name in REQUIRED_MANIFEST_COLUMNS if name not in header]
            for name in missing:
                problems.add(0, name, "required column is missing from the header.")
            if missing:
                return
            for number, record in enumerate(reader, start=1):
                if None in record:
                    problems.add(
                        number,
                        "<row>",
                        f"has {len(record.pop(None))} more cell(s) than the header; check the delimiters.",
                    )
                yield number, record
    else:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    problems.add(number, "<json>", f"is not valid JSON ({error.msg} at column {error.colno}).")
                    continue
                if not isinstance(record, dict):
                    problems.add(number, "<json>", "must be a JSON object with the manifest's keys.")
                    continue
                yield number, record


def _unknown_column(name: str) -> str:
    """The problem with a column that is neither a manifest column nor a biomarker (with the schema's hint)."""
    try:
        get_biomarker(name)
        hint = ""
    except BiomarkerError as error:
        hint = f"{error} "
    return f"{hint}To keep a column that is not a biomarker, pass extra_columns=[{name!r}]."


def _blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def _image(value: object, root: Path, row: int, name: str, problems: _Collector, check: bool) -> str | None:
    """Absolute path of an image cell, after checking that the file exists and decodes."""
    from PIL import Image, UnidentifiedImageError

    path = Path(str(value).strip()).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        problems.add(row, name, f"image file not found: {path} (paths are relative to the manifest's folder).")
        return None
    if check:
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            problems.add(row, name, f"unreadable image {path}: {error}")
            return None
    return str(path)


def _parse_row(
    number: int,
    raw: dict,
    root: Path,
    problems: _Collector,
    flagged: list[ManifestProblem],
    on_out_of_range: OutOfRange,
    extra_columns: Sequence[str],
    check_images: bool,
    csv_file: bool,
) -> dict:
    """One manifest record in the schema's form; problems go to ``problems``."""
    raw = dict(raw)
    values: dict[str, object] = {}
    nested = raw.pop("biomarkers", None)
    if isinstance(nested, str):  # a JSON object in a CSV cell
        try:
            nested = json.loads(nested) if nested.strip() else None
        except json.JSONDecodeError:
            pass
    if nested is not None and not isinstance(nested, dict):
        problems.add(number, "biomarkers", "must be a JSON object mapping biomarker names to numbers.")
        nested = None
    for key, value in raw.items():
        if key in BIOMARKERS_BY_NAME:
            values[key] = value
        elif key not in COLUMNS and key not in extra_columns and not csv_file:  # a CSV header is checked once
            problems.add(number, key, _unknown_column(key))
    for key, value in (nested or {}).items():  # the object holds biomarkers only, in a CSV cell as in JSONL
        try:
            get_biomarker(key)
        except BiomarkerError as error:
            problems.add(number, key, f"{error} (a key of the biomarkers object)")
            continue
        values[key] = value

    record: dict[str, object] = {}
    for name in ("id", "patient_id"):
        value = raw.get(name)
        if _blank(value):
            need = "a unique id" if name == "id" else "its patient id (used to split by patient)"
            problems.add(number, name, f"is empty; every row needs {need}.")
        record[name] = None if _blank(value) else str(value).strip()

    eye = raw.get("eye")
    record["eye"] = None
    if not _blank(eye):
        try:
            record["eye"] = normalise_eye(eye)
        except ValueError as error:
            problems.add(number, "eye", f"{error} Or leave it empty.")

    record["cfp"] = None
    if _blank(raw.get("cfp")):
        problems.add(number, "cfp", "is empty; give the colour fundus photo's path.")
    else:
        record["cfp"] = _image(raw["cfp"], root, number, "cfp", problems, check_images)

    oct_value = raw.get("oct")
    oct_paths = oct_value if isinstance(oct_value, list) else [] if _blank(oct_value) else str(oct_value).split(";")
    oct_paths = [p for p in oct_paths if not _blank(p)]
    if not oct_paths:
        problems.add(
            number, "oct", "is empty; give one OCT B-scan path or several separated by ';' (central B-scan first)."
        )
    record["oct"] = [_image(p, root, number, "oct", problems, check_images) for p in oct_paths]

    label = raw.get("label")
    by_name = {name.lower(): name for name in LABELS}
    record["label"] = None if _blank(label) else by_name.get(str(label).strip().lower())
    if record["label"] is None:
        problems.add(number, "label", f"{label!r} is not a GROK label; use one of {', '.join(LABELS)}.")

    record["report"] = None if _blank(raw.get("report")) else str(raw["report"])
    for name in SCALE_COLUMNS:
        value = raw.get(name)
        record[name] = None
        if _blank(value):
            continue
        try:
            record[name] = float(value)
            if not record[name] > 0 or math.isinf(record[name]):
                raise ValueError
        except (TypeError, ValueError):
            problems.add(
                number, name, f"{value!r} is not a positive number of µm per pixel; leave it empty when unknown."
            )

    record["biomarkers"], flags = _biomarkers(number, values, problems, flagged, on_out_of_range)
    for name in extra_columns:
        record[name] = None if _blank(raw.get(name)) else str(raw[name])
    if on_out_of_range == "flag":
        record["flags"] = flags
    return record


def _biomarkers(
    number: int,
    values: dict[str, object],
    problems: _Collector,
    flagged: list[ManifestProblem],
    on_out_of_range: OutOfRange,
) -> tuple[dict[str, float | None], list[str]]:
    """All 37 biomarkers of a row (missing as None) and its flags; bad values go to ``problems``."""
    biomarkers: dict[str, float | None] = dict.fromkeys(BIOMARKER_NAMES)
    flags = []
    for name, value in values.items():
        try:  # the schema's checks; its message starts with ``where``, which the problem already says
            checked = validate_biomarkers({name: value}, check_range=False, where="-")[name]
        except BiomarkerError as error:
            problems.add(number, name, str(error).removeprefix("-: "))
            continue
        low, high = get_biomarker(name).plausible
        if checked is not None and not low <= checked <= high:
            unit = get_biomarker(name).unit
            message = f"{checked:g} is outside the plausible range [{low:g}, {high:g}] {unit}".rstrip()
            if on_out_of_range == "reject":
                problems.add(number, name, f"{message}; check the unit and the measurement, or leave it empty.")
                continue
            flagged.append(ManifestProblem(number, name, f"{message}; set to None."))
            flags.append(f"{name}={checked:g} outside [{low:g}, {high:g}]")
            checked = None
        biomarkers[name] = checked
    return biomarkers, flags


def _manifest_records(
    path: str | os.PathLike,
    strict: bool,
    on_out_of_range: OutOfRange,
    extra_columns: Sequence[str],
    check_images: bool,
) -> tuple[ManifestReport, list[dict]]:
    path = Path(path)
    if on_out_of_range not in ("reject", "flag"):
        raise ValueError(f"on_out_of_range must be 'reject' or 'flag', got {on_out_of_range!r}.")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"{path}: a manifest is a .csv or .jsonl file.")
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found: {path}")
    problems = _Collector(path, strict)
    report = ManifestReport(path)
    records, seen_ids = [], {}
    csv_file = path.suffix.lower() == ".csv"
    for number, raw in _read_rows(path, problems, extra_columns):
        report.n_rows = number
        record = _parse_row(
            number, raw, path.parent, problems, report.flagged, on_out_of_range, extra_columns, check_images, csv_file
        )
        if record["id"] is not None:
            if record["id"] in seen_ids:
                problems.add(
                    number, "id", f"{record['id']!r} repeats row {seen_ids[record['id']]}; ids must be unique."
                )
            seen_ids.setdefault(record["id"], number)
        records.append(record)
    if not report.n_rows and not problems.problems:
        problems.add(0, "<file>", "the manifest has no rows.")
    report.problems = problems.problems
    return report, records


def validate_manifest(
    path: str | os.PathLike,
    *,
    strict: bool = False,
    on_out_of_range: OutOfRange = "reject",
    extra_columns: Sequence[str] = (),
    check_images: bool = True,
) -> ManifestReport:
    """Check a CSV/JSONL manifest: files exist and decode, labels and biomarker names are known, values lie
    in the plausible range, ids are unique. Returns every problem; ``strict`` raises `ManifestError` at the
    first one instead."""
    report, _ = _manifest_records(path, strict, on_out_of_range, extra_columns, check_images)
    return report


def load_manifest(
    path: str | os.PathLike, *, on_out_of_range: OutOfRange = "reject", extra_columns: Sequence[str] = ()
):
    """A manifest as a `datasets.Dataset` with `grok_features`; raises `ManifestError` listing all problems.

    Images are stored as paths and decoded on access.
    """
    from datasets import Dataset, List, Value

    report, records = _manifest_records(path, False, on_out_of_range, extra_columns, True)
    if not report.ok:
        shown = "\n  ".join(str(p) for p in report.problems[:20])
        more = f"\n  ... and {len(report.problems) - 20} more" if len(report.problems) > 20 else ""
        raise ManifestError(f"{report.path}: {len(report.problems)} problem(s):\n  {shown}{more}")
    extra = {name: Value("string") for name in extra_columns}
    if on_out_of_range == "flag":
        extra["flags"] = List(Value("string"))
    return Dataset.from_list(records, features=grok_features(extra))


def load_grok_dataset(
    source: str | os.PathLike,
    split: str | None = None,
    *,
    on_out_of_range: OutOfRange = "reject",
    extra_columns: Sequence[str] = (),
):
    """A GROK dataset from a manifest (.csv/.jsonl, or a folder holding ``manifest.csv``/``manifest.jsonl``),
    a `save_to_disk` folder, a Parquet file or folder, or a Hugging Face Hub id (with ``HF_HUB_OFFLINE=1``
    the local cache is used).

    Returns a `datasets.DatasetDict` when the source has named splits, else a `datasets.Dataset`; ``split``
    picks one split (a single dataset only answers to "train").
    """
    import datasets

    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        loaded = load_manifest(path, on_out_of_range=on_out_of_range, extra_columns=extra_columns)
    elif path.is_file() and path.suffix.lower() == ".parquet":
        loaded = datasets.Dataset.from_parquet(str(path))
    elif path.is_dir():
        manifests = [
            path / f"manifest{suffix}" for suffix in MANIFEST_SUFFIXES if (path / f"manifest{suffix}").is_file()
        ]
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif manifests:
            loaded = load_manifest(manifests[0], on_out_of_range=on_out_of_range, extra_columns=extra_columns)
        elif any(path.rglob("*.parquet")):
            loaded = datasets.load_dataset("parquet", data_dir=str(path))
        else:
            raise FileNotFoundError(
                f"{path} holds no GROK dataset: expected a save_to_disk folder, Parquet files or manifest.csv/.jsonl."
            )
    elif path.exists():
        raise ValueError(f"{path}: unsupported file type; give a .csv/.jsonl manifest, a .parquet file or a folder.")
    elif not _is_hub_id(str(source)):
        raise FileNotFoundError(
            f"No such file or folder: {path}; give a .csv/.jsonl manifest, a .parquet file, a dataset folder or a Hub "
            "id (name or owner/name)."
        )
    else:
        try:
            loaded = datasets.load_dataset(str(source))
        except Exception as error:  # the Hub's errors vary: name the two readings of ``source``
            raise FileNotFoundError(
                f"{source!r} is neither a local path nor a loadable Hub dataset ({type(error).__name__}: {error})."
            ) from error

    for part in loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]:
        missing = [c for c in COLUMNS if c not in part.column_names]
        if missing:
            raise ValueError(f"{source} is not a GROK dataset: columns {missing} are missing (see grok_features()).")
    return select_split(loaded, source, split)


def _is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a Hub dataset id (``name`` or ``owner/name``), not as a local path: a file
    suffix (.csv, .jsonl, .json, .parquet) or a leading ./ ../ ~ / make it local."""
    return (
        _HUB_ID.fullmatch(source) is not None
        and not source.lower().endswith(_LOCAL_SUFFIXES)
        and not source.startswith(_LOCAL_PREFIXES)
    )


def check_no_split(source: str | os.PathLike, split: str | None) -> None:
    """Raise a ValueError unless ``split`` suits a dataset without splits: None, or "train" for the whole set."""
    if split not in (None, "train"):
        raise ValueError(
            f"{source} has no splits, so no {split!r} split: drop the split (--split) to use the whole set, point "
            "at the held-out dataset instead, or make splits with split_by_patient()."
        )


def select_split(data, source: str | os.PathLike, split: str | None):
    """Split ``split`` of ``data`` (named ``source`` in errors): all of ``data`` when ``split`` is None; a single
    `datasets.Dataset` answers only to "train" (the whole set). Raises a ValueError naming the splits there are."""
    import datasets

    if split is None:
        return data
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; it has {list(data)}.")
        return data[split]
    check_no_split(source, split)
    return data


def split_by_patient(dataset, val_fraction: float = 0.2, seed: int = 0, stratify_by: str | None = "label"):
    """`datasets.DatasetDict` (train, validation) with every patient's rows in one split only.

    Patients are ordered by ``stratify_by`` (their first row's value) and then at random, and every
    ``1 / val_fraction``-th goes to validation, so each stratum is split in proportion.
    """
    from datasets import DatasetDict

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    patients = dataset["patient_id"]
    strata = dataset[stratify_by] if stratify_by else [0] * len(patients)
    first: dict[str, object] = {}
    for patient, stratum in zip(patients, strata):
        first.setdefault(patient, -1 if stratum is None else stratum)
    rng = np.random.default_rng(seed)
    names = list(first)
    order = np.lexsort((rng.random(len(names)), np.array([str(first[n]) for n in names])))
    offset = rng.random()
    position = np.empty(len(names))
    position[order] = np.arange(len(names))
    is_val = np.floor((position + 1) * val_fraction + offset) > np.floor(position * val_fraction + offset)
    validation = {name for name, v in zip(names, is_val) if v}
    val_rows = [i for i, p in enumerate(patients) if p in validation]
    train_rows = [i for i, p in enumerate(patients) if p not in validation]
    return DatasetDict(train=dataset.select(train_rows), validation=dataset.select(val_rows))
