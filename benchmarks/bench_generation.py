"""Generation: prefill latency and decode tokens/s of GROK against its bare language model.

    python benchmarks/bench_generation.py [--presets tiny medium] [--batches 1 4 8] [--new_tokens 64] \
        [--repeats N] [--threads 1] [--out benchmarks/results/generation.json] [--quick]

GROK's prompt is text + a CFP and an OCT image's placeholders (2 x N tokens); the bare LM (the same module
GROK wraps, so the same weights) gets a text prompt of the same total length. Rows of a batch differ in length
by a few tokens and are left-padded. Greedy, ``min_new_tokens = max_new_tokens``, so both generate the same
count. A forward hook on the (shared) LM head stamps every step: prefill = time to the first token's logits
(GROK's includes both towers), decode tokens/s = batch / the median time between stamps (one decode step; the
median keeps a burst of load from another process on a shared machine out of a run's figure; the overall rate,
batch x (new tokens - 1) / (last stamp - first stamp), is saved beside it). The variants alternate in one process.

A third variant, ``grok_unregistered``, is the same GROK model with its class's auto-class registration (what
makes `save_pretrained` write the remote-code files, and what transformers sets on any model loaded as remote
code) lifted during the call: `generate` then skips the signature check it runs on every step of a remote-code
model, so its gap to ``grok`` is that check's cost. The target figure is ``grok``, what users run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, timing  # noqa: E402
from benchmarks.bench_train_step import (  # noqa: E402
    PRESETS, Preset, build_grok, image_token_ids, text_model, token_layout)

PAD_STEP = 3  # row i of a batch is 3 * (i % 4) tokens shorter than the longest
# Image tokens per image: the tiny towers' 16; the medium towers' 196 pooled to 49 (7 x 7), which keeps a
# batch-8 prefill of the 135M LM within a CPU budget (decode speed barely depends on the prompt length).
TOKENS_PER_IMAGE = {"tiny": 16, "medium": 49}
REPEATS = {"tiny": 20, "medium": 3}


def prompts(preset: Preset, batch: int, pad_id: int, image_tokens: int) -> dict[str, dict[str, torch.Tensor]]:
    """Left-padded GROK and text-only prompts of equal lengths, row by row."""
    ids, kinds = token_layout(dataclasses.replace(preset, batch=batch), image_tokens, seed=batch)
    cfp_id, oct_id = image_token_ids(preset)
    grok_ids = torch.where(kinds == 1, cfp_id, torch.where(kinds == 2, oct_id, ids))
    mask = torch.ones_like(ids)
    for row in range(batch):  # left padding replaces the start of the leading text, never image tokens
        pad = PAD_STEP * (row % 4)
        ids[row, :pad] = grok_ids[row, :pad] = pad_id
        mask[row, :pad] = 0
    size = preset.tower["img_size"]
    pixels = torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    return {
        "lm": {"input_ids": ids, "attention_mask": mask},
        "grok": {"input_ids": grok_ids, "attention_mask": mask, "pixel_values_cfp": pixels[0],
                 "pixel_values_oct": pixels[1]},
    }


@torch.inference_mode()
def generate_timed(model, inputs: dict[str, torch.Tensor], new_tokens: int, pad_id: int) -> dict[str, float]:
    """Generate ``new_tokens`` greedily, stamping the end of every LM-head call (one per forward)."""
    stamps: list[float] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=pad_id)
    finally:
        hook.remove()
    batch, steps = inputs["input_ids"].shape[0], [b - a for a, b in zip(stamps, stamps[1:])]
    return {"prefill_s": stamps[0] - start, "decode_tokens_per_s": batch / statistics.median(steps),
            "decode_tokens_per_s_overall": batch * len(steps) / (stamps[-1] - stamps[0])}


@contextlib.contextmanager
def unregistered(model):
    """``model``'s class without its auto-class registration (restored on exit)."""
    cls = type(model)
    registered = cls._auto_class
    cls._auto_class = None
    try:
        yield
    finally:
        cls._auto_class = registered


def run_preset(name: str, batches: list[int], new_tokens: int, repeats: int | None) -> list[dict]:
    preset, tokens, repeats = PRESETS[name], TOKENS_PER_IMAGE[name], repeats or REPEATS[name]
    lm = text_model(preset).eval()
    grok = build_grok(preset, lm, tokens).eval()  # wraps lm's own modules: same weights
    pad_id = 0
    rows = []
    for batch in batches:
        inputs = prompts(preset, batch, pad_id, tokens)

        def grok_unregistered(inputs=inputs) -> dict[str, float]:
            with unregistered(grok):
                return generate_timed(grok, inputs["grok"], new_tokens, pad_id)

        variants = {"lm": lambda inputs=inputs: generate_timed(lm, inputs["lm"], new_tokens, pad_id),
                    "grok": lambda inputs=inputs: generate_timed(grok, inputs["grok"], new_tokens, pad_id),
                    "grok_unregistered": grok_unregistered}
        runs = timing.alternate(variants, repeats=repeats, warmup=1)
        prefill = {m: timing.column(r, "prefill_s") for m, r in runs.items()}
        decode = {m: timing.column(r, "decode_tokens_per_s") for m, r in runs.items()}
        rows.append({
            "preset": name, "batch": batch, "prompt_tokens": inputs["lm"]["input_ids"].shape[1],
            "image_tokens": 2 * tokens, "new_tokens": new_tokens, "repeats": repeats,
            "prefill_s": {m: timing.summarize(v) for m, v in prefill.items()},
            "decode_tokens_per_s": {m: timing.summarize(v) for m, v in decode.items()},
            "decode_grok_over_lm": timing.ratio(decode["grok"], decode["lm"]),
            "decode_grok_unregistered_over_lm": timing.ratio(decode["grok_unregistered"], decode["lm"]),
            "prefill_grok_over_lm": timing.ratio(prefill["grok"], prefill["lm"]),
            "runs": runs,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "medium"], choices=sorted(PRESETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, help=f"alternating rounds (default: {REPEATS})")
    timing.add_common_args(parser, "benchmarks/results/generation.json", "tiny preset, batch 1 and 4, 8 tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.batches, args.new_tokens, args.repeats = ["tiny"], [1, 4], 8, 2
    torch.set_num_threads(args.threads)
    started = timing.machine()
    rows = [row for name in args.presets for row in run_preset(name, args.batches, args.new_tokens, args.repeats)]
    record = timing.save(args.out, {"benchmark": "generation", "results": rows}, started)
    print(report.render("generation", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
