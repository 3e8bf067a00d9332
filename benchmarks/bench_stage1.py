"""Stage I throughput against a local OpenAI-compatible server that answers in 100 ms.

Runs `generate_instructions` with `OpenAITeacher` at concurrency 1, 8 and 32 (alternating, ``--repeats``
times), and reports the median requests/s (requests over the server's busy window: first arrival to last
answer) and end-to-end samples/s (including planning and writing the dataset). Target: >= 20 requests/s at 32.

    python benchmarks/bench_stage1.py [--latency 0.1] [--repeats 3] [--out benchmarks/results/stage1.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: tests/ holds the server

import datasets  # noqa: E402

from grok_retina.instruct import generate_instructions  # noqa: E402
from grok_retina.teachers import OpenAITeacher  # noqa: E402
from tests.fake_openai import FakeOpenAIServer  # noqa: E402
from tests.stage1_samples import GroundedResponder, make_dataset  # noqa: E402

CONCURRENCIES = (1, 8, 32)
TARGET = {32: 20.0}  # requests/s that must be reached at a concurrency


def run_once(dataset, responder, concurrency: int, latency: float) -> dict[str, float]:
    with FakeOpenAIServer(responder, latency=latency) as server, tempfile.TemporaryDirectory() as out:
        teacher = OpenAITeacher("fake-teacher", base_url=server.base_url, api_key="x", concurrency=concurrency)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-run summary lines
            result = generate_instructions(dataset, teacher, out, concurrency=concurrency, progress=False)
        wall = time.perf_counter() - start
        window = max(server.request_times) + latency - min(server.request_times)
        assert len(result) == len(dataset), "every sample must be accepted"
        return {"requests_per_s": len(server.requests) / window, "samples_per_s": len(dataset) / wall,
                "max_in_flight": server.max_in_flight}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server answer time in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6, help="samples per run = rounds x concurrency (min 12)")
    parser.add_argument("--out", default="benchmarks/results/stage1.json")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    data = {c: make_dataset(max(12, args.rounds * c), seed=c) for c in CONCURRENCIES}
    responders = {c: GroundedResponder(ds) for c, ds in data.items()}
    runs: dict[int, list[dict]] = {c: [] for c in CONCURRENCIES}
    for _ in range(args.repeats):
        for c in CONCURRENCIES:  # alternate so that load from other processes hits every setting alike
            runs[c].append(run_once(data[c], responders[c], c, args.latency))

    rows = []
    print(f"Stage I throughput, server latency {args.latency * 1000:.0f} ms, median of {args.repeats} runs")
    print(f"{'concurrency':>11} | {'samples':>7} | {'requests/s':>10} | {'samples/s e2e':>13} | {'max in flight':>13}")
    for c in CONCURRENCIES:
        rps = statistics.median(r["requests_per_s"] for r in runs[c])
        sps = statistics.median(r["samples_per_s"] for r in runs[c])
        flight = max(r["max_in_flight"] for r in runs[c])
        rows.append({"concurrency": c, "samples": len(data[c]), "requests_per_s": rps, "samples_per_s": sps,
                     "max_in_flight": flight, "runs": runs[c]})
        print(f"{c:>11} | {len(data[c]):>7} | {rps:>10.1f} | {sps:>13.1f} | {flight:>13}")

    failures = [f"concurrency {r['concurrency']}: {r['requests_per_s']:.1f} < {TARGET[r['concurrency']]} requests/s"
                for r in rows if r["concurrency"] in TARGET and r["requests_per_s"] < TARGET[r["concurrency"]]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"latency_s": args.latency, "repeats": args.repeats, "python": platform.python_version(),
                               "results": rows, "target": TARGET, "passed": not failures}, indent=2))
    print(f"saved {out}")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
