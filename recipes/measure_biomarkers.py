"""``grok-retina biomarkers``: stage 0, measure the biomarkers of a dataset from its images.

    grok-retina biomarkers --dataset dme-dr --out data/dme-dr-measured [--overlays overlays/] [--num_proc 2] \
        [--assume_oct_axial_um_per_px 6.1 --assume_oct_lateral_um_per_px 10.6]

``--dataset`` is anything `processing.sources.load_source` reads: ``phantom:N[:seed]``, ``dme-dr``, a
`save_to_disk` folder, a manifest (.csv/.jsonl), Parquet or a Hub id. Each row's CFP and central B-scan
(``oct[0]``) are measured with `processing.measure.measure_biomarkers`, using the row's eye and pixel
scales. A row without a scale is measured in pixels only (µm biomarkers stay None with the reason), unless an
``--assume_*_um_per_px`` option gives a scale for such rows: an *assumption* (the real DME/DR set documents
no device), used only where the row has none, written into the row's scale column and logged. Only missing
biomarkers are filled (given ones are kept unless ``--overwrite``); what stays missing
gets its reason. Added columns:

- ``biomarker_quality``: {oct, oct_flag, cfp, cfp_flag} (score in [0, 1], None when not measured);
- ``biomarker_reasons``: JSON object, name -> why the value is still missing;
- ``biomarkers_measured``: names whose value was filled by measurement;
- ``fluid_intraretinal``, ``fluid_subretinal`` (booleans), ``fluid_*_area_px`` and ``fluid_*_area_mm2``;
- ``biomarker_extra``: JSON object of the other measurements (vessel density, pixel thicknesses and calibres,
  box-counting dimensions, fovea position).

The rows are measured in chunks of ``--chunk_rows``, each saved beside ``--out`` (``.OUT.chunks/``) as it
completes: a run that stops is resumed by the same command (same options), which skips the finished chunks.
The output is written to a temporary folder beside ``--out`` and renamed into place when complete; the chunks
are then removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from transformers import HfArgumentParser

logger = logging.getLogger(__name__)

FLUID_COLUMNS = ("intraretinal", "subretinal")
SCALE_COLUMNS = ("oct_axial_um_per_px", "oct_lateral_um_per_px", "cfp_um_per_px")


@dataclass
class MeasureArguments:
    """Options of ``grok-retina biomarkers``."""

    dataset: str = field(metadata={"help": "phantom:N[:seed], dme-dr, a save_to_disk folder, a manifest, Parquet or a Hub id."})
    out: str = field(metadata={"help": "Output folder (save_to_disk); must not exist."})
    overlays: str | None = field(default=None, metadata={"help": "Folder for one overlay PNG per image, for checking."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes measuring in parallel."})
    chunk_rows: int = field(default=256, metadata={"help": "Rows measured and saved together: a stopped run resumes "
                                                           "from the last saved chunk."})
    overwrite: bool = field(default=False, metadata={"help": "Replace given biomarker values by measured ones."})
    assume_oct_axial_um_per_px: float | None = field(
        default=None, metadata={"help": "Assumed OCT axial scale (µm per pixel) for rows that have none; µm "
                                        "thicknesses are then only as right as this assumption."})
    assume_oct_lateral_um_per_px: float | None = field(
        default=None, metadata={"help": "Assumed OCT lateral scale (µm per pixel) for rows that have none; it "
                                        "places the 1, 3 and 6 mm ETDRS regions."})
    assume_cfp_um_per_px: float | None = field(
        default=None, metadata={"help": "Assumed fundus scale (µm per pixel) for rows that have none (disc "
                                        "diameter)."})

    def __post_init__(self) -> None:
        for name in SCALE_COLUMNS:
            value = getattr(self, f"assume_{name}")
            if value is not None and not value > 0:
                raise ValueError(f"--assume_{name} must be a positive number of µm per pixel, got {value}.")
        if self.chunk_rows < 1:
            raise ValueError(f"--chunk_rows must be at least 1, got {self.chunk_rows}.")

    def assumed_scales(self) -> dict[str, float]:
        """Scale column -> the assumed value, for the options given."""
        return {name: getattr(self, f"assume_{name}") for name in SCALE_COLUMNS if getattr(self, f"assume_{name}")}

    def shaping_options(self) -> dict:
        """The options that decide what a chunk holds: a resumed run must give the same."""
        return {"dataset": self.dataset, "overwrite": self.overwrite, "chunk_rows": self.chunk_rows, **{f"assume_{k}": v for k, v in self.assumed_scales().items()}}


def new_features(features):
    """``features`` plus the columns this recipe adds."""
    from datasets import Features, List, Value

    extra = {
        "biomarker_quality": {"oct": Value("float32"), "oct_flag": Value("string"), "cfp": Value("float32"), "cfp_flag": Value("string")},
        "biomarker_reasons": Value("string"),
        "biomarkers_measured": List(Value("string")),
        "biomarker_extra": Value("string"),
        **{f"fluid_{kind}": Value("bool") for kind in FLUID_COLUMNS},
        **{f"fluid_{kind}_area_px": Value("float32") for kind in FLUID_COLUMNS},
        **{f"fluid_{kind}_area_mm2": Value("float32") for kind in FLUID_COLUMNS},
    }
    return Features({**{k: v for k, v in features.items() if k not in extra}, **extra})


def _save_overlays(folder: Path, row_id: str, result: dict, oct_image, cfp_image) -> None:
    """``ID_oct.png`` / ``ID_cfp.png``, the id percent-encoded where it holds characters a file name cannot."""
    from processing.measure import cfp_overlay, oct_overlay

    measured, stem = result["measurements"], quote(row_id, safe="")
    if measured["oct"] is not None:
        oct_overlay(oct_image, measured["oct"]).save(folder / f"{stem}_oct.png")
    if measured["cfp"] is not None:
        cfp_overlay(cfp_image, measured["cfp"]).save(folder / f"{stem}_cfp.png")


def measure_row(row: dict, overwrite: bool = False, overlays: str | None = None,
                assumed_scales: dict[str, float] | None = None) -> dict:
    """The row with missing biomarkers filled and the measurement columns added; ``assumed_scales`` (scale
    column -> µm per pixel) stand in for the row's missing scales and are written into those columns."""
    from processing.measure import measure_biomarkers

    octs = row.get("oct") or []
    scales = {name: row.get(name) for name in SCALE_COLUMNS}
    assumed = {name: value for name, value in (assumed_scales or {}).items() if scales[name] is None}
    scales.update(assumed)
    try:
        result = measure_biomarkers(cfp=row.get("cfp"), oct=octs[0] if octs else None, eye=row.get("eye"), **scales)
    except Exception as error:  # name the row: the dataset may be long
        raise RuntimeError(f"row id={row.get('id')!r}: {type(error).__name__}: {error}") from error
    given = dict(row.get("biomarkers") or {})
    filled, measured_names = dict(given), []
    for name, value in result["biomarkers"].items():
        if value is not None and (overwrite or given.get(name) is None):
            filled[name] = value
            measured_names.append(name)
    reasons = {name: why for name, why in result["reasons"].items() if filled.get(name) is None}
    quality = result["quality"]
    extra = result["extra"]
    if overlays:
        try:
            _save_overlays(Path(overlays), str(row.get("id")), result, octs[0] if octs else None, row.get("cfp"))
        except OSError as error:
            raise RuntimeError(f"row id={row.get('id')!r}: writing its overlays to {overlays}: {error}") from error
    out = {
        "biomarkers": filled,
        "biomarker_quality": {
            kind + suffix: (quality[kind] or {}).get(key)
            for kind in ("oct", "cfp") for suffix, key in (("", "score"), ("_flag", "flag"))
        },
        "biomarker_reasons": json.dumps(reasons, ensure_ascii=False, sort_keys=True),
        "biomarkers_measured": measured_names,
        "biomarker_extra": json.dumps({k: v for k, v in extra.items() if not k.startswith(("intraretinal", "subretinal"))},
                                      ensure_ascii=False, sort_keys=True),
    }
    out.update({name: value for name, value in assumed.items() if name in row})
    for kind in FLUID_COLUMNS:
        out[f"fluid_{kind}"] = extra.get(f"{kind}_fluid")
        out[f"fluid_{kind}_area_px"] = extra.get(f"{kind}_fluid_area_px")
        out[f"fluid_{kind}_area_mm2"] = extra.get(f"{kind}_fluid_area_mm2")
    return out


def chunk_folder(out: Path) -> Path:
    """Where a run on ``out`` keeps its finished chunks until the output is complete."""
    return out.with_name(f".{out.name}.chunks")


def open_chunks(chunks: Path, options: dict) -> None:
    """Start ``chunks`` with the run's options, or check a stopped run's match them (else its chunks would mix)."""
    record = chunks / "options.json"
    if record.is_file():
        before = json.loads(record.read_text())
        differ = sorted(k for k in {*before, *options} if before.get(k) != options.get(k))
        if differ:
            raise ValueError(
                f"{chunks} holds a stopped run with other options ({', '.join(f'{k}: {before.get(k)!r}' for k in differ)}); "
                "rerun with the same options to resume it, or delete that folder to start over."
            )
        return
    chunks.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(".options.json.partial")
    partial.write_text(json.dumps(options, indent=2))
    os.replace(partial, record)


def measure_dataset(dataset, args: MeasureArguments, chunks: Path):
    """Every split of ``dataset`` (a Dataset or DatasetDict) measured chunk by chunk; each finished chunk is saved
    under ``chunks`` (see `open_chunks`) and reused when the same run is started again."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    splits = dataset if isinstance(dataset, DatasetDict) else DatasetDict(train=dataset)
    if args.overlays:
        Path(args.overlays).mkdir(parents=True, exist_ok=True)
    out = DatasetDict()
    for name, split in splits.items():
        starts = range(0, len(split), args.chunk_rows)
        done = [start for start in starts if (chunks / name / f"{start:09d}").is_dir()]
        if done:
            logger.info("%s: resuming, %d of %d chunks already measured", name, len(done), len(starts))
        parts = []
        for start in starts:
            folder = chunks / name / f"{start:09d}"
            if not folder.is_dir():
                rows = split.select(range(start, min(start + args.chunk_rows, len(split))))
                measured = rows.map(
                    measure_row,
                    fn_kwargs={"overwrite": args.overwrite, "overlays": args.overlays,
                               "assumed_scales": args.assumed_scales()},
                    features=new_features(split.features),
                    num_proc=args.num_proc if args.num_proc and args.num_proc > 1 else None,
                    desc=f"measuring biomarkers ({name}, rows {start}-{start + len(rows) - 1} of {len(split)})",
                    load_from_cache_file=False,
                )
                partial = folder.with_name(f".{folder.name}.partial")
                shutil.rmtree(partial, ignore_errors=True)
                measured.save_to_disk(str(partial))
                partial.rename(folder)
            parts.append(load_from_disk(str(folder)))
        # an empty split has no chunk: it only gains the new columns
        out[name] = concatenate_datasets(parts) if parts else split.map(measure_row, features=new_features(split.features))
    return out if isinstance(dataset, DatasetDict) else out["train"]


def summary(dataset) -> str:
    """Rows, filled values per modality and quality flags, for the log."""
    from datasets import DatasetDict

    parts = dataset.values() if isinstance(dataset, DatasetDict) else [dataset]
    rows = sum(len(p) for p in parts)
    filled = Counter(name for p in parts for names in p["biomarkers_measured"] for name in names)
    flags = Counter(f"{kind}:{(q[kind + '_flag'] or 'not measured').split(':')[0]}" for p in parts
                    for q in p["biomarker_quality"] for kind in ("oct", "cfp"))
    most = ", ".join(f"{name} {count}" for name, count in filled.most_common())
    return f"{rows} rows; filled: {most or 'nothing'}; quality: {dict(sorted(flags.items()))}"


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(MeasureArguments, prog="grok-retina biomarkers", description=__doc__.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from processing.sources import load_source

    from .data import atomic_directory

    out = Path(args.out).expanduser().resolve()
    if out.exists():
        print(f"error: {out} already exists; choose another --out.", file=sys.stderr)
        return 2
    try:
        dataset = load_source(args.dataset)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: --dataset {args.dataset}: {error}", file=sys.stderr)
        return 2
    if args.assumed_scales():
        logger.warning("Assumed scales for rows without their own: %s (µm per pixel).", args.assumed_scales())
    chunks = chunk_folder(out)
    try:
        open_chunks(chunks, args.shaping_options())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    measured = measure_dataset(dataset, args, chunks)
    with atomic_directory(out) as work:
        measured.save_to_disk(str(work))
    shutil.rmtree(chunks)
    logger.info("Wrote %s: %s", out, summary(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
