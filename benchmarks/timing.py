"""Shared benchmark helpers: an alternating A/B runner, median and spread, peak memory, machine description.

Every comparison runs its variants interleaved in one process (A B B A A B ...), so that load from other
processes on a shared machine hits each variant alike; a summary is the median with the interquartile range
and the min-max of the repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping


def alternate(
    variants: Mapping[str, Callable[[], float | dict | None]], repeats: int, warmup: int = 1
) -> dict[str, list]:
    """Run each variant ``warmup`` times, then ``repeats`` rounds, reversing the order every other round.

    A variant returns its own measurement (seconds, or a dict of metrics) or None, in which case its wall
    time in seconds is recorded. Returns ``{name: [measurement per round]}``.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    results: dict[str, list] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            value = variants[name]()
            results[name].append(time.perf_counter() - start if value is None else value)
    return results


def add_common_args(parser: argparse.ArgumentParser, out: str, quick_help: str) -> None:
    """``--threads``, ``--quick`` and ``--out``, the same in every benchmark."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two threads are slowed far more "
                             "by other processes than one)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out, help="JSON file for the results")


def summarize(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values``."""
    ordered = sorted(values)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1],
            "n": len(ordered)}


def column(runs: list[dict], key: str) -> list[float]:
    """``[run[key] for run in runs]``: one metric out of dict measurements."""
    return [run[key] for run in runs]


def fmt(summary: Mapping[str, float], scale: float = 1.0, digits: int = 1) -> str:
    """``median [q1-q3]`` of a summary, each value times ``scale``."""
    m, q1, q3 = (summary[k] * scale for k in ("median", "q1", "q3"))
    return f"{m:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """Summary of the per-round ratios a/b (rounds are paired: they ran back to back)."""
    return summarize([x / y for x, y in zip(a, b)])


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (``VmHWM``; Linux >= 4.0), so what follows is measured alone."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib(kind: str = "VmHWM") -> float:
    """``VmHWM`` (peak resident set size since start or `reset_peak_rss`) or ``VmRSS`` (now), in MiB, from
    ``/proc/self/status``: unlike ``tracemalloc`` it sees torch's allocations, and unlike ``getrusage``'s max RSS
    it can be reset after the model is built."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {kind}")


def run_child(argv: list[str]) -> dict:
    """Run ``python argv...`` in a fresh process (so its max RSS is its own) and parse its last stdout line."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    """CPU model, cores, threads torch uses, torch/transformers versions and the load average now."""
    import torch
    import transformers

    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def save(path: str | os.PathLike, record: dict, started: dict) -> dict:
    """Write ``record`` with the machine (``started``: `machine()` at the start, plus the load average at the
    end) and the command line as JSON, atomically; returns what was written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "machine": {**started, "load_average_1min_end": round(os.getloadavg()[0], 2)},
              "command": "python " + " ".join(sys.argv)}
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, out)
    print(f"saved {out}")
    return record


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
