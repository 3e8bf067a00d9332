"""``grok-retina data``: make a phantom dataset, or validate a manifest of your own data.

    grok-retina data phantom --n 1000 --out data/phantom [--seed 0] [--format arrow|parquet] [--num_proc 2]
    grok-retina data validate my_data/manifest.csv [--strict]

``phantom`` writes a `datasets.DatasetDict` (train, validation split by patient) with `save_to_disk`
(``arrow``) or as ``data/{split}-00000-of-0000N.parquet`` files (``parquet``, the Hub's layout); both load
with `processing.grok_dataset.load_grok_dataset`. The output appears only when complete: it is written
to a temporary folder beside ``--out`` and renamed into place. ``validate`` prints every problem with its
row and field and exits with 1 when there are any (2 for a file that cannot be read at all).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator, Literal

from transformers import HfArgumentParser

logger = logging.getLogger(__name__)


@dataclass
class PhantomArguments:
    """Options of ``grok-retina data phantom``."""

    out: str = field(metadata={"help": "Output folder (must not exist unless --overwrite)."})
    n: int = field(default=1000, metadata={"help": "Number of CFP + OCT pairs (two eyes per patient)."})
    seed: int = field(default=0, metadata={"help": "Phantom seed: the same seed gives the same data."})
    format: Literal["arrow", "parquet"] = field(
        default="arrow", metadata={"help": "save_to_disk folder or Parquet files."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes rendering in parallel."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of patients in the validation split (0: none)."})
    cfp_size: int = field(default=512, metadata={"help": "Fundus photo side in pixels."})
    oct_height: int = field(default=496, metadata={"help": "B-scan height in pixels."})
    oct_width: int = field(default=512, metadata={"help": "B-scan width in pixels (the scan spans 6 mm)."})
    missing_rate: float = field(default=0.0, metadata={"help": "Share of biomarkers reported missing."})
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest Arrow/Parquet shard."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --out folder."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the dataset to this Hub repo id."})


@dataclass
class ValidateArguments:
    """Options of ``grok-retina data validate MANIFEST``."""

    strict: bool = field(default=False, metadata={"help": "Stop at the first problem."})
    on_out_of_range: Literal["reject", "flag"] = field(
        default="reject", metadata={"help": "Out-of-range biomarkers are problems (reject) or only flagged (flag)."}
    )
    extra_columns: list[str] = field(default_factory=list, metadata={"help": "Columns kept as extra labels."})
    check_images: bool = field(default=True, metadata={"help": "Open every image to check that it decodes."})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grok-retina data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    commands.add_parser("phantom", dataclass_types=PhantomArguments, help="Generate a phantom dataset.")
    validate = commands.add_parser("validate", dataclass_types=ValidateArguments, help="Check a CSV/JSONL manifest.")
    validate.add_argument("manifest", help="Path of the .csv or .jsonl manifest.")
    return parser


def _dataclass(cls, namespace: argparse.Namespace):
    return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


@contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside ``out`` that becomes ``out`` only if the block completes."""
    out = out.expanduser().resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(trash)
            work.rename(out)
            shutil.rmtree(trash)
        else:
            work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_phantom(args: PhantomArguments):
    """Render, split by patient and write the phantom dataset; returns the DatasetDict."""
    from datasets import DatasetDict

    from processing.grok_dataset import split_by_patient
    from processing.phantom import RetinaPhantom

    phantom = RetinaPhantom(
        seed=args.seed,
        cfp_size=args.cfp_size,
        oct_size=(args.oct_height, args.oct_width),
        missing_rate=args.missing_rate,
    )
    out = Path(args.out).expanduser().resolve()
    with (
        atomic_directory(out, args.overwrite) as work,
        tempfile.TemporaryDirectory(prefix=f".{out.name}.cache-", dir=out.parent) as cache,
    ):
        dataset = phantom.to_dataset(args.n, num_proc=args.num_proc, cache_dir=cache)
        splits = (
            split_by_patient(dataset, args.val_fraction, seed=args.seed)
            if args.val_fraction > 0
            else DatasetDict(train=dataset)
        )
        if args.format == "arrow":
            splits.save_to_disk(str(work), max_shard_size=args.max_shard_size, num_proc=args.num_proc)
        else:
            _to_parquet(splits, work / "data", args.max_shard_size)
    logger.info("Wrote %s (%s).", out, ", ".join(f"{k}: {len(v)}" for k, v in splits.items()))
    if args.push_to_hub:
        splits.push_to_hub(args.push_to_hub)
    return splits


def _to_parquet(splits, folder: Path, max_shard_size: str) -> None:
    """``{split}-0000k-of-0000N.parquet`` files, the layout the Hub and `datasets.load_dataset` read."""
    from datasets.utils.py_utils import convert_file_size_to_int

    folder.mkdir(parents=True)
    limit = convert_file_size_to_int(max_shard_size)
    for name, split in splits.items():
        shards = max(1, math.ceil(split.data.nbytes / limit))
        for k in range(shards):
            split.shard(shards, k, contiguous=True).to_parquet(str(folder / f"{name}-{k:05d}-of-{shards:05d}.parquet"))


def validate(manifest: str, args: ValidateArguments) -> int:
    from processing.grok_dataset import ManifestError, validate_manifest

    try:
        report = validate_manifest(
            manifest,
            strict=args.strict,
            on_out_of_range=args.on_out_of_range,
            extra_columns=args.extra_columns,
            check_images=args.check_images,
        )
    except ManifestError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    namespace = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if namespace.command == "phantom":
        try:
            make_phantom(_dataclass(PhantomArguments, namespace))
        except (FileExistsError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    return validate(namespace.manifest, _dataclass(ValidateArguments, namespace))


if __name__ == "__main__":
    sys.exit(main())
