"""Phantom generation throughput: CFP (512 px) + one OCT B-scan (496 x 512) pairs per second.

    python benchmarks/bench_phantom.py [--n 200] [--num_proc 2] [--out benchmarks/results/phantom.json]

Measures rendering alone (PIL images, as ``phantom[i]`` returns them) in one process and in ``--num_proc``
processes (timed inside the workers, after start-up), and the full `RetinaPhantom.to_dataset` path
(render, JPEG/PNG encode, Arrow write, start-up included) in one and in ``--num_proc`` processes. The
one-process runs also report pairs per CPU-second, which does not depend on what else the machine runs;
the load average is saved with the results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path


def _render(args: tuple[int, int, int]) -> float:
    """Render samples ``start..stop`` (after a warm-up) and return the seconds it took."""
    from processing.phantom import RetinaPhantom

    seed, start, stop = args
    phantom = RetinaPhantom(seed=seed)
    phantom.sample(start)  # warm-up outside the timing
    began = time.perf_counter()
    for index in range(start, stop):
        phantom.sample(index)
    return time.perf_counter() - began


def bench(n: int, num_proc: int, seed: int) -> dict:
    from datasets.utils.logging import disable_progress_bar

    from processing.phantom import RetinaPhantom

    disable_progress_bar()
    results: dict[str, float] = {}
    phantom = RetinaPhantom(seed=seed)
    phantom.sample(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(n):
        phantom.sample(index)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results["render_1proc_pairs_per_s"] = n / wall
    results["render_1proc_pairs_per_cpu_s"] = n / cpu

    chunks = [(seed, k * n // num_proc, (k + 1) * n // num_proc) for k in range(num_proc)]
    with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
        seconds = pool.map(_render, chunks)  # the workers run side by side: the slowest one sets the pace
    results[f"render_{num_proc}proc_pairs_per_s"] = n / max(seconds)

    for procs in (1, num_proc):
        with tempfile.TemporaryDirectory() as cache:
            wall, cpu = time.perf_counter(), time.process_time()
            RetinaPhantom(seed=seed).to_dataset(n, num_proc=procs, cache_dir=cache)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[f"dataset_{procs}proc_pairs_per_s"] = n / wall
            if procs == 1:
                results["dataset_1proc_pairs_per_cpu_s"] = n / cpu
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="pairs per measurement")
    parser.add_argument("--num_proc", "--num-proc", type=int, default=2, help="processes for the parallel runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/phantom.json", help="JSON file for the results")
    args = parser.parse_args(argv)

    results = bench(args.n, args.num_proc, args.seed)
    record = {
        "benchmark": "phantom generation (512 px CFP + one 496x512 OCT B-scan per pair)",
        "n": args.n,
        "num_proc": args.num_proc,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "results": {k: round(v, 2) for k, v in results.items()},
        "seconds_for_10000_pairs": round(10000 / results[f"dataset_{args.num_proc}proc_pairs_per_s"], 1),
    }
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:8.1f}")
    print(f"10,000 pairs to a dataset with {args.num_proc} processes: ~{record['seconds_for_10000_pairs']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, out)  # atomic: a reader never sees half a file
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
