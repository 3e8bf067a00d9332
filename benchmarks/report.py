"""Gather every `benchmarks/results/*.json` into one markdown report with the machine and the commands.

    python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/results/REPORT.md]

The train-step, generation and pooling results get their tables and the issue's target figures; Stage I
and phantom-generation results their own tables; any other JSON its top-level numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import fmt, machine, table  # noqa: E402

# (markdown, [(figure, target, measured, reached)]); reached None: could not be measured
Section = tuple[str, list[tuple[str, str, str, bool | None]]]


def _mark(reached: bool | None) -> str:
    return "not measurable" if reached is None else "yes" if reached else "**no**"


def train_step(data: dict) -> Section:
    rows, figures = [], []
    for r in data["results"]:
        for m in ("grok", "llava"):
            mem = r.get("memory", {}).get(m, {})
            rows.append([r["preset"], "GROK" if m == "grok" else "LLaVA", f"{r['batch']} x {r['sequence']}",
                         r["image_tokens_per_sample"], fmt(r["full_s"][m], 1000), fmt(r["image_path_s"][m], 1000),
                         fmt(r["text_only_s"][m], 1000), f"{mem['peak_rss_mib']:.0f}" if mem else "-",
                         f"{mem['step_peak_mib']:.0f}" if mem else "-"])
        for part, label in (("full", "train step"), ("image_path", "image path (towers + projectors)")):
            ratio = r[f"{part}_grok_over_llava"]
            figures.append((f"{label} GROK/LLaVA ({r['preset']})", "<= 1.0", fmt(ratio, digits=3),
                            ratio["median"] <= 1.0))
    md = table(["preset", "model", "batch x seq", "image tokens/sample", "fwd+bwd ms", "image path ms",
                "text-only control ms", "peak RSS MiB", "step peak MiB"], rows)
    lines = [f"- {r['preset']}: full step {fmt(r['full_grok_over_llava'], digits=3)} ("
             + ", ".join(f"{order.replace('_', ' ')} {fmt(v, digits=3)}"
                         for order, v in r["full_grok_over_llava_by_build_order"].items())
             + f"); image path {fmt(r['image_path_grok_over_llava'], digits=3)}; text-only control (identical "
             f"work) {fmt(r['text_only_grok_over_llava'], digits=3)}" for r in data["results"]]
    return md + "\n\nGROK/LLaVA, median [IQR] of paired rounds:\n\n" + "\n".join(lines), figures


def generation(data: dict) -> Section:
    rows, figures = [], []
    for r in data["results"]:
        rows.append([r["preset"], r["batch"], f"{r['prompt_tokens']} ({r['image_tokens']} img)",
                     fmt(r["prefill_s"]["lm"], 1000), fmt(r["prefill_s"]["grok"], 1000),
                     fmt(r["decode_tokens_per_s"]["lm"]),
                     fmt(r["decode_tokens_per_s"]["grok"]), fmt(r["decode_grok_over_lm"], digits=3),
                     fmt(r["decode_grok_unregistered_over_lm"], digits=3)])
        ratio = r["decode_grok_over_lm"]
        figures.append((f"decode GROK / LM ({r['preset']}, batch {r['batch']})", ">= 0.95",
                        fmt(ratio, digits=3), ratio["median"] >= 0.95))
    md = table(["preset", "batch", "prompt tokens", "LM prefill ms", "GROK prefill ms", "LM decode tok/s",
                "GROK decode tok/s", "GROK/LM decode", "same, class not registered for an auto class"], rows)
    md += ("\n\nDecode tok/s: batch / the median decode step of a run. The last column is GROK with transformers' "
           "per-step signature check for remote-code models skipped (its class unregistered for the run): the "
           "difference to GROK/LM is that check's cost, tens of microseconds, so visible at the tiny preset's ~1 ms "
           "steps only (elsewhere the column differs by noise).")
    return md, figures


def pooling(data: dict) -> Section:
    thr, quality, b = data["throughput"], data["quality"], data["budget"]
    kinds = ("report", "question", "mix")
    rows = [[t, " / ".join(f"{thr[t][k]['mean_tokens_per_sample']:.0f}" for k in kinds[:2]),
             *(fmt(thr[t][k]["samples_per_s"], digits=2) for k in kinds),
             *(fmt(thr[t][k]["speedup_over_196"], digits=2) for k in kinds)] for t in thr]
    md = table(["tokens/image", "tokens/sample (report / question)", "reports/s", "questions/s", "mix rows/s",
                "speed-up: reports", "speed-up: questions", "speed-up: mix"], rows)
    versus = data["macro_f1_vs_196"]
    rows = [[t, fmt(quality[t]["train_samples_per_s"], digits=2), fmt(quality[t]["heldout_loss"], digits=3),
             fmt(quality[t]["heldout_token_accuracy"], digits=3),
             f"{fmt(quality[t]['macro_f1'], digits=3)} ({quality[t]['macro_f1']['min']:.3f}-"
             f"{quality[t]['macro_f1']['max']:.3f})", fmt(quality[t]["chance_macro_f1"], digits=3),
             f"{quality[t]['unparsed']['median']:.0f}",
             "; ".join(f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
                       for d in versus.get(t, [])) or "-"] for t in quality]
    md += "\n\n" + table(["tokens/image", "trainer rows/s", "held-out report loss", "held-out token acc.",
                           "answers macro-F1 (min-max)", "chance", f"unparsed of {b['n_test']}",
                           "macro-F1 vs 196, points [95% CI] per seed"], rows)
    md += (f"\n\nSFT step: one batch of {b['batch']} rows per kind; mix = a batch of reports and a batch of their "
           f"diagnosis questions (Stage III's one question per eye). Quality per setting and seed: "
           f"{b['epochs']:g} epochs over the reports and diagnosis questions of {b['n_train']} phantom eyes, batch "
           f"{b['batch']}, {b['biomarker_tokens']} biomarker tokens; held-out metrics on {b['n_test']} eyes of other "
           f"patients, seeds {b['seeds']}; macro-F1 of the answers to the diagnosis question, chance by permuted "
           "labels, the difference to 196 tokens by a paired bootstrap over the same eyes.")
    median_drop = statistics.median(-d["difference"] for d in versus["49"])
    # the median may pass while one seed drops by more than a point beyond its bootstrap interval: the seeds
    # then disagree, and they cannot bound the drop (None: not measurable at this size)
    seed_drops = [d for d in versus["49"] if d["ci_high"] < -0.01]
    drop_reached = median_drop <= 0.01 and (None if seed_drops else True)
    loss = {t: quality[t]["heldout_loss"]["median"] for t in ("196", "49")}
    figures = [(f"SFT step throughput 49 vs 196 tokens/image ({name})", ">= 2x",
                fmt(thr["49"][kind]["speedup_over_196"], digits=2), thr["49"][kind]["speedup_over_196"]["median"] >= 2)
               for kind, name in (("mix", "Stage III mix"), ("report", "reports"), ("question", "diagnosis questions"))]
    figures += [
        ("macro-F1 drop 196 -> 49 (diagnosis answers)", "<= 1 point",
         f"{100 * median_drop:+.1f} points (196: {quality['196']['macro_f1']['median']:.3f}, 49: "
         f"{quality['49']['macro_f1']['median']:.3f}, chance {quality['196']['chance_macro_f1']['median']:.3f})"
         + "".join(f"; seed {d['seed']} drops {-100 * d['difference']:.1f} [{-100 * d['ci_high']:.1f}, "
                   f"{-100 * d['ci_low']:.1f}]" for d in seed_drops),
         drop_reached),
        ("held-out completion loss 196 -> 49 (lower is better)", "no higher", f"{loss['196']:.3f} -> {loss['49']:.3f}",
         loss["49"] <= loss["196"]),
    ]
    return md, figures


def sft_throughput(data: dict) -> Section:
    rows = []
    for r in data["results"]:
        extra = f" + {r['biomarker_tokens']} biomarker" if r["biomarker_tokens"] else ""
        rows.append([r["preset"], r["device"], r["dtype"], f"{r['batch']} x {r['sequence']}",
                     f"{r['image_tokens']} image{extra} + {r['text_tokens']} text",
                     f"r {r['lora_r']}" + (", checkpointing" if r["gradient_checkpointing"] else ""),
                     fmt(r["step_s"], 1000), fmt(r["tokens_per_s"], digits=0), fmt(r["samples_per_s"], digits=2),
                     f"{r['flops_per_step'] / 1e12:.3g}", fmt(r["achieved_tflops"], digits=3),
                     f"{r['peak_tflops']:.3g} ({r['peak_source']})", fmt(r["mfu"], 100, digits=1),
                     f"{r['peak_memory_mib']:.0f} ({r['peak_memory_kind']})"])
    md = table(["preset", "device", "dtype", "batch x seq", "tokens/row", "LoRA", "step ms", "tokens/s",
                "rows/s", "TFLOP/step", "TFLOP/s", "peak TFLOP/s", "MFU %", "peak memory MiB"], rows)
    losses = sorted({r.get("loss", "the model's loss (full logits)") for r in data["results"]})
    md += ("\n\nOne LoRA SFT step (forward + backward + AdamW) on report rows, towers frozen, projectors trained; "
           f"loss: {', '.join(losses)}. "
           "Model FLOPs counted by torch's FlopCounterMode without recomputation (attention at its full square); "
           "MFU = those FLOPs per second / the peak. Commands: "
           + "; ".join(f"`{r['command']}`" for r in data["results"] if "command" in r) + ".")
    paper = [r for r in data["results"] if r["preset"] == "paper" and r["device"] != "cpu"]
    measured = (f"{paper[-1]['tokens_per_s']['median']:.0f} tokens/s, MFU {100 * paper[-1]['mfu']['median']:.1f}% "
                f"({paper[-1]['device']})" if paper else "no GPU lent")
    return md, [("paper preset SFT tokens/s and MFU on a GPU", "measured", measured, True if paper else None)]


def stage1(data: dict) -> Section:
    rows = [[r["concurrency"], r["samples"], f"{r['requests_per_s']:.1f}", f"{r['samples_per_s']:.1f}"]
            for r in data["results"]]
    md = table(["concurrency", "samples", "requests/s", "samples/s end to end"], rows)
    figures = [(f"Stage I requests/s at concurrency {c}", f">= {t}", next(
        f"{r['requests_per_s']:.1f}" for r in data["results"] if str(r["concurrency"]) == str(c)), data["passed"])
        for c, t in data.get("target", {}).items()]
    return f"Server latency {data['latency_s'] * 1000:.0f} ms, median of {data['repeats']} runs.\n\n{md}", figures


def phantom(data: dict) -> Section:
    rows = [[name, f"{value:.1f}"] for name, value in data["results"].items()]
    md = table(["measure", "pairs/s"], rows)
    note = f"10,000 pairs to a dataset with {data['num_proc']} processes: ~{data['seconds_for_10000_pairs']:.0f} s."
    return f"{md}\n\n{note}", []


def measure(data: dict) -> Section:
    """`recipes.measure_report` (``timing_s`` inside) or `bench_measure.py` (the timings alone)."""
    timings = data.get("timing_s", data)
    rows = [[name, f"{t['wall']:.3f}", f"{t['cpu']:.3f}", f"{1 / t['wall']:.1f}"] for name, t in timings.items()
            if isinstance(t, dict) and "wall" in t]
    load = timings.get("machine", {}).get("load_average_1min", "?")
    md = table(["image", "wall s/image", "CPU s/image", "images/s"], rows)
    return f"{md}\n\nOne process, load average {load}; the accuracy figures are in the JSON file.", []


def stage2_probe(data: dict) -> Section:
    """`grok-retina align --also_probe` / `grok-retina probe`: the linear probe, unaligned vs aligned tower."""
    rows = []
    for key, name in (("overall_normalised", "overall, normal-range SD units"), ("overall", "overall, µm (pooled)")):
        before, after = data["towers"]["unaligned"][key], data["towers"]["aligned"][key]
        rows.append([name] + [f"{before[m]:.3f} -> {after[m]:.3f}" for m in ("mae", "rmse", "r2")]
                    + [f"{100 * data['mae_reduction'][key]:.1f} %"])
    md = table(["probe on held-out pairs", "MAE", "RMSE", "R²", "MAE reduction"], rows)
    return f"{data['n_train']} training / {data['n_test']} held-out pairs, unaligned -> aligned tower.\n\n{md}", []


GENERIC_ROWS = 25


def _flatten(data: dict, prefix: str = "") -> list[list]:
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str)) and key != "command":
            rows.append([f"{prefix}{key}", value])
    return rows


def generic(data: dict) -> Section:
    """The first numbers and strings, nested keys joined with dots."""
    rows = _flatten(data)
    more = f"\n\n({len(rows) - GENERIC_ROWS} more values in the file.)" if len(rows) > GENERIC_ROWS else ""
    return (table(["key", "value"], rows[:GENERIC_ROWS]) + more) if rows else "(no results)", []


RENDERERS: dict[str, tuple[str, Callable[[dict], Section]]] = {
    "train_step": ("Training step: GROK vs LLaVA (LoRA SFT, forward + backward)", train_step),
    "generation": ("Generation: GROK vs the bare language model", generation),
    "pooling": ("Image-token pooling: SFT throughput and phantom macro-F1", pooling),
    "sft_throughput": ("Stage III SFT throughput and MFU", sft_throughput),
    "stage1": ("Stage I throughput", stage1),
    "phantom": ("Phantom generation throughput", phantom),
    "measure": ("Stage 0 biomarker measurement speed", measure),
    "measure_timing": ("Stage 0 biomarker measurement speed (timings only)", measure),
    "stage2_probe": ("Stage II: biomarker probe on the aligned OCT tower", stage2_probe),
}


# Commands of the result files that do not record their own.
COMMANDS = {
    "stage1": "python benchmarks/bench_stage1.py",
    "phantom": "python benchmarks/bench_phantom.py",
    "measure": "python -m recipes.measure_report",
    "measure_timing": "python benchmarks/bench_measure.py",
    "stage2_probe": ("grok-retina align --preset tiny --dataset phantom:6000:0 --also_probe phantom:1000:1 "
                     "--output_dir outputs/align_tiny --probe_output_json benchmarks/results/stage2_probe.json"),
}


def render(name: str, data: dict) -> str:
    """The markdown table(s) of one result file's ``data`` (``name``: its stem)."""
    return RENDERERS.get(name, (name, generic))[1](data)[0]


def build_report(results: Path) -> str:
    files = sorted(results.glob("*.json"), key=lambda p: (list(RENDERERS).index(p.stem) if p.stem in RENDERERS
                                                           else len(RENDERERS), p.stem))
    sections, figures, machines = [], [], {}
    for path in files:
        data = json.loads(path.read_text())
        title, render = RENDERERS.get(path.stem, (path.stem, generic))
        md, found = render(data)
        figures += found
        command = data.get("command") or COMMANDS.get(path.stem)
        source = f"`{command}` -> `{path.as_posix()}`" if command else f"`{path.as_posix()}` (command not recorded)"
        loads = data.get("machine", {})
        load = (f" Load average (1 min) {loads['load_average_1min']} at the start, "
                f"{loads.get('load_average_1min_end', '?')} at the end; {loads.get('torch_threads', '?')} torch "
                f"thread(s)." if "load_average_1min" in loads else "")
        sections.append(f"## {title}\n\n{source}.{load}\n\n{md}\n")
        if "cpu" in loads:
            machines[path.stem] = loads
    here = next(iter(machines.values()), machine())
    header = [
        "# grok-retina benchmarks",
        "",
        f"Machine: {here['cpu']}, {here['cores']} cores (shared with other jobs), torch {here['torch']}, "
        f"transformers {here.get('transformers', '?')}, Python {here.get('python', '?')}. Timings are medians of "
        "alternating repetitions with the interquartile range in brackets; ratios are medians of per-round ratios.",
        "",
        "Each section names the command that wrote its JSON file; `python benchmarks/report.py` rebuilds this file "
        "from `benchmarks/results/*.json`.",
        "",
    ]
    if figures:
        header += ["## Target figures", "", table(["figure", "target", "measured (median [IQR])", "reached"],
                                                  [[f, t, m, _mark(ok)] for f, t, m, ok in figures]), ""]
    return "\n".join(header + sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--out", default="benchmarks/results/REPORT.md")
    args = parser.parse_args(argv)
    report = build_report(Path(args.results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
