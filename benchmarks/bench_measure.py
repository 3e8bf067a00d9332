"""Stage 0 speed: seconds per OCT B-scan and per fundus photograph (wall and CPU, one process).

    python benchmarks/bench_measure.py [--n 10] [--out benchmarks/results/measure_timing.json]

The timing part of `recipes.measure_report` (which also writes it into ``measure.json`` with the accuracy
figures), on its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recipes.measure_report import timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="images of each kind")
    parser.add_argument("--out", default="benchmarks/results/measure_timing.json")
    args = parser.parse_args()
    result = timings(args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
