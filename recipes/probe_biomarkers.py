"""Stage II benchmark: ridge linear probes of the OCT biomarkers on a frozen OCT tower, aligned vs unaligned.

    grok-retina probe --aligned outputs/align_tiny --train_dataset phantom:6000:0 --test_dataset phantom:1000:1
    grok-retina probe --aligned outputs/align/oct_tower --unaligned RETFound_oct_weights.pth \\
        --train_dataset DATA --test_dataset HELD_OUT --output_json benchmarks/results/stage2_probe.json

``--aligned`` is an alignment output folder (the baseline is then its ``initial_oct_tower``, the same
initialisation before alignment) or an ``oct_tower`` folder with ``--unaligned`` naming the baseline (a
tower folder or the RETFound checkpoint alignment started from). Prints a markdown table, saves JSON.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser


@dataclass
class ProbeArguments:
    aligned: str = field(metadata={"help": "Alignment output folder, or an aligned oct_tower folder."})
    train_dataset: str = field(metadata={"help": "Data the ridge probes are fit on (phantom:N[:seed] or a path)."})
    test_dataset: str = field(metadata={"help": "Held-out data the probes are scored on."})
    unaligned: str | None = field(
        default=None, metadata={"help": "Baseline tower folder or checkpoint; default <aligned>/initial_oct_tower."}
    )
    unaligned_format: Literal["auto", "retfound", "retizero", "timm"] = field(default="auto")
    train_split: str = field(default="train", metadata={"help": "Split of --train_dataset."})
    test_split: str | None = field(default=None, metadata={"help": "Split of --test_dataset, if it has splits (e.g. validation)."})
    biomarkers: list[str] | None = field(default=None, metadata={"help": "Targets (default: the aligner's)."})
    output_json: str | None = field(default=None, metadata={"help": "Results file (default <aligned>/probe.json)."})
    cache_dir: str = field(default="~/.cache/grok_retina/oct_pairs", metadata={"help": "Processed OCT cache."})
    batch_size: int = field(default=256, metadata={"help": "Images per embedding batch."})
    seed: int = field(default=0, metadata={"help": "Seed of the split that chooses each ridge penalty."})


def main(argv: list[str] | None = None) -> int:
    from grok_retina.alignment import load_pairs_source
    from grok_retina.probe import probe_aligned_vs_unaligned, save_probe_results

    (args,) = HfArgumentParser(ProbeArguments).parse_args_into_dataclasses(args=argv)
    try:
        train = load_pairs_source(args.train_dataset, args.train_split, "--train_split")
        test = load_pairs_source(args.test_dataset, args.test_split, "--test_split")
    except (FileNotFoundError, ValueError) as error:
        print(f"grok-retina probe: {error}", file=sys.stderr)
        return 2
    results = probe_aligned_vs_unaligned(
        args.aligned,
        args.unaligned,
        train,
        test,
        names=args.biomarkers,
        cache_dir=Path(args.cache_dir).expanduser(),
        unaligned_format=args.unaligned_format,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    save_probe_results(results, args.output_json or Path(args.aligned) / "probe.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
