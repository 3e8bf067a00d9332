"""Stage III SFT throughput and MFU: tokens/s of GROK's LoRA SFT step (forward + backward + AdamW) at a preset.

    python benchmarks/bench_sft_throughput.py [--preset tiny|medium|paper] [--device cpu|cuda] [--batch N] \
        [--text_tokens 800] [--steps N] [--warmup 2] [--dtype float32|bfloat16] [--[no-]gradient_checkpointing] \
        [--peak_tflops X] [--threads 1] \
        [--out benchmarks/results/sft_throughput.json] [--quick]

The `paper` preset is `recipes/configs/sft_paper.yaml`'s model and step on one GPU: Qwen2-7B-Instruct's shape
with two ViT-L/16 towers (196 tokens per image), bf16, LoRA r 128 / alpha 256 on every LM linear layer, the
projectors trained, per-device batch 4, gradient checkpointing. Weights are random (nothing is downloaded): a
step's time does not depend on their values. Each row is a Stage III report row: prompt text, the CFP and OCT
placeholders, the biomarker placeholders (presets with biomarker tokens), then the report, whose tokens alone
carry labels; ``--text_tokens`` (default 800, a report row's prompt + report in the quickstart's tokenizer)
is split a quarter prompt, three quarters report. The loss goes through TRL's fused LM head as `SFTTrainer`
computes it (log-probs in tiles; on a GPU only at labelled positions), where the installed TRL has it.

Tokens/s counts every token of the batch (text and image). MFU is the step's model FLOPs per second over the
device's peak: the FLOPs are counted by `torch.utils.flop_counter` on one row's forward + backward without
gradient checkpointing (so recomputed activations do not count, which makes it MFU rather than HFU; attention
is counted at its full square; ops the counter does not know, such as Triton kernels, count nothing, so MFU errs
low), times the batch. The peak is the vendor's dense bf16 figure for known GPUs
(``--peak_tflops`` for others) and, on a CPU, the best rate of a 2048 x 2048 matmul in the step's dtype on the
same threads, measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, timing  # noqa: E402
from benchmarks.bench_train_step import SMOLLM2_135M, VIT_SMALL_PATCH16_224  # noqa: E402
from modeling_grok import GrokConfig, GrokForConditionalGeneration  # noqa: E402
from modeling_grok.configuration_grok import (  # noqa: E402
    QWEN2_7B_INSTRUCT,
    QWEN2_TINY_TEST,
    VIT_LARGE_PATCH16_224,
    VIT_TINY_TEST,
)

try:
    from trl.trainer.utils import add_fused_lm_head  # SFTTrainer's loss path, in TRL releases that have it
except ImportError:
    add_fused_lm_head = None

# Dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s), matched against the CUDA device name in order.
GPU_PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                        ("A100", 312.0), ("L40S", 362.0), ("A10G", 125.0), ("L4", 121.0))


@dataclass
class Preset:
    """A model shape and the step it is measured with."""

    text: dict
    tower: dict
    batch: int
    lora_r: int
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    biomarker_tokens: int = 0
    steps: int = 5

    def config(self) -> GrokConfig:
        vocab = self.text["vocab_size"]
        kwargs = {}
        if self.biomarker_tokens:
            from grok_retina.sft import biomarker_token_config

            kwargs = biomarker_token_config(self.biomarker_tokens)
        return GrokConfig(text_config=dict(self.text), cfp_vision_config=dict(self.tower),
                          oct_vision_config=dict(self.tower), cfp_token_id=vocab - 3, oct_token_id=vocab - 2,
                          biomarker_token_id=vocab - 1, **kwargs)


PRESETS = {
    # the quickstart's shape: tiny LM and towers at 224 px, 16 biomarker tokens
    "tiny": Preset(text=QWEN2_TINY_TEST, tower={**VIT_TINY_TEST, "img_size": 224}, batch=4, lora_r=16,
                   biomarker_tokens=16, steps=10),
    "medium": Preset(text=SMOLLM2_135M, tower=VIT_SMALL_PATCH16_224, batch=1, lora_r=16, steps=3),
    "paper": Preset(text=QWEN2_7B_INSTRUCT, tower=VIT_LARGE_PATCH16_224, batch=4, lora_r=128, dtype="bfloat16",
                    gradient_checkpointing=True, steps=10),
}


def build(preset: Preset, device: torch.device):
    """GROK of the preset's shape with random weights on ``device`` in its dtype, towers frozen, LoRA (PEFT) on
    the LM as `grok_retina.training.grok_lora_config` sets it for the recipe."""
    from peft import get_peft_model

    from grok_retina.training import grok_lora_config

    dtype = getattr(torch, preset.dtype)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in the step's dtype: the paper preset is 15 GB in bf16
    try:
        torch.manual_seed(0)
        with device:
            model = GrokForConditionalGeneration(preset.config())
    finally:
        torch.set_default_dtype(default)
    model.freeze_vision_towers()
    if preset.gradient_checkpointing:
        set_checkpointing(model, True)
    if add_fused_lm_head is not None:  # what SFTTrainer patches in: the loss from log-probs in tiles, no full logits
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model = get_peft_model(model, grok_lora_config(model, r=preset.lora_r, alpha=2 * preset.lora_r))
    model.train()
    model.get_base_model().freeze_vision_towers()  # train() above switched the towers back to train mode
    return model


def set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing (non-reentrant, as TRL sets it) on or off (older transformers 5 releases name the
    methods ``gradient_checkpointing_*``)."""
    modern = hasattr(model, "activation_checkpointing_enable")
    if not on:
        (model.activation_checkpointing_disable if modern else model.gradient_checkpointing_disable)()
    elif modern:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing_on(model) -> bool:
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def report_rows(config: GrokConfig, batch: int, text_tokens: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` equal rows: prompt, CFP and OCT placeholders, biomarker placeholders, report (labelled)."""
    generator = torch.Generator().manual_seed(0)
    prompt = text_tokens // 4
    placeholders = [torch.full((config.num_image_tokens(m),), config.token_id(m)) for m in ("cfp", "oct")]
    if config.num_biomarker_tokens:
        placeholders.append(torch.full((config.num_biomarker_tokens,), config.biomarker_token_id))
    vocab = config.text_config.vocab_size - 3  # below the placeholder ids
    ids = torch.cat([torch.randint(0, vocab, (prompt,), generator=generator), *placeholders,
                     torch.randint(0, vocab, (text_tokens - prompt,), generator=generator)]).expand(batch, -1)
    labels = ids.clone()
    labels[:, : ids.shape[1] - (text_tokens - prompt)] = -100
    sizes = {m: config.image_size(m) for m in ("cfp", "oct")}
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
              "pixel_values_cfp": torch.randn(batch, 3, sizes["cfp"], sizes["cfp"], generator=generator),
              "pixel_values_oct": torch.randn(batch, 3, sizes["oct"], sizes["oct"], generator=generator)}
    if config.num_biomarker_tokens:
        inputs["biomarker_values"] = torch.tensor(config.biomarker_center).expand(batch, -1)
    return {k: v.to(device) for k, v in inputs.items()}


def sft_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss as `SFTTrainer.compute_loss` computes it: through TRL's fused LM head where TRL has one."""
    if add_fused_lm_head is None:
        return model(**inputs).loss
    return model(**inputs, fused_lm_head=True).loss


def autocast(device: torch.device, dtype: str):
    """bf16 autocast as the Trainer's ``bf16=True`` runs the recipe; nothing for float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()


def step_flops(model, inputs: dict[str, torch.Tensor], dtype: str) -> int:
    """Model FLOPs of one row's forward + backward, counted without gradient checkpointing (no recompute)."""
    from torch.utils.flop_counter import FlopCounterMode

    base = model.get_base_model()
    checkpointing = checkpointing_on(base)
    if checkpointing:
        set_checkpointing(base, False)
    row = {k: v[:1] for k, v in inputs.items()}
    try:
        with FlopCounterMode(display=False) as counter:
            with autocast(row["input_ids"].device, dtype):
                loss = sft_loss(model, row)
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        if checkpointing:
            set_checkpointing(base, True)
    return counter.get_total_flops()


def peak_tflops(device: torch.device, dtype: str, given: float | None) -> tuple[float, str]:
    """The device's peak TFLOP/s and where the figure comes from."""
    if given:
        return given, "--peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if dtype == "bfloat16":
            for key, value in GPU_PEAK_BF16_TFLOPS:
                if key in name:
                    return value, f"{name}: dense bf16 data-sheet peak"
        raise ValueError(f"No peak TFLOP/s known for {name!r} in {dtype}; pass --peak_tflops (its data-sheet figure).")
    size, a = 2048, torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    best = min(_seconds(lambda: a @ a) for _ in range(5))
    return 2 * size**3 / best / 1e12, f"best of 5 {size}x{size} {dtype} matmuls on {torch.get_num_threads()} thread(s)"


def _seconds(fn, device: torch.device | None = None) -> float:
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(preset_name: str, device: torch.device, batch: int | None, text_tokens: int, steps: int | None,
            warmup: int, peak: float | None, checkpointing: bool | None = None, dtype: str | None = None) -> dict:
    preset = PRESETS[preset_name]
    if preset_name == "paper" and device.type == "cpu":
        raise ValueError("--preset paper is the 8.3B-parameter model of sft_paper.yaml and needs a GPU (--device cuda, "
                         "about 25 GB plus activations); on a CPU use --preset medium or tiny.")
    batch, steps = batch or preset.batch, steps or preset.steps
    if checkpointing is not None:
        preset = dataclasses.replace(preset, gradient_checkpointing=checkpointing)
    if dtype is not None:
        preset = dataclasses.replace(preset, dtype=dtype)
    peak_value, peak_source = peak_tflops(device, preset.dtype, peak)  # before the model: an unknown GPU fails fast
    model = build(preset, device)
    inputs = report_rows(model.config, batch, text_tokens, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step() -> None:
        with autocast(device, preset.dtype):
            loss = sft_loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        timing.reset_peak_rss()
    times = [_seconds(step, device) for _ in range(steps)]
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else timing.rss_mib("VmHWM"))
    flops = step_flops(model, inputs, preset.dtype) * batch
    sequence = inputs["input_ids"].shape[1]
    return {
        "preset": preset_name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": preset.dtype, "batch": batch, "sequence": sequence, "text_tokens": text_tokens,
        "image_tokens": sum(model.config.num_image_tokens(m) for m in ("cfp", "oct")),
        "biomarker_tokens": model.config.num_biomarker_tokens, "lora_r": preset.lora_r,
        "gradient_checkpointing": preset.gradient_checkpointing,
        "loss": "TRL fused LM head" if add_fused_lm_head is not None else "the model's loss (full logits)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": steps, "step_s": timing.summarize(times),
        "tokens_per_s": timing.summarize([batch * sequence / t for t in times]),
        "samples_per_s": timing.summarize([batch / t for t in times]),
        "flops_per_step": flops, "achieved_tflops": timing.summarize([flops / t / 1e12 for t in times]),
        "peak_tflops": peak_value, "peak_source": peak_source,
        "mfu": timing.summarize([flops / t / 1e12 / peak_value for t in times]),
        "peak_memory_mib": memory,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
    }


def kept_results(path: str, new: dict) -> list[dict]:
    """The results already in ``path`` for other presets or devices (a GPU run does not erase the CPU rows), then
    ``new``."""
    old = json.loads(Path(path).read_text()).get("results", []) if Path(path).is_file() else []
    return [r for r in old if (r["preset"], r["device"]) != (new["preset"], new["device"])] + [new]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="rows per step (default: the preset's)")
    parser.add_argument("--text_tokens", type=int, default=800, help="prompt + report tokens per row")
    parser.add_argument("--steps", type=int, help="timed steps (default: the preset's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights and autocast (default: the "
                                                                        "preset's; bfloat16 for paper)")
    parser.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction,
                        help="activation checkpointing in the LM (default: the preset's; on for paper)")
    parser.add_argument("--peak_tflops", type=float, help="the device's peak TFLOP/s for MFU (default: known GPUs' "
                                                          "data sheet; on a CPU a matmul measured here)")
    timing.add_common_args(parser, "benchmarks/results/sft_throughput.json", "tiny preset, 2 steps, 64 text tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.steps, args.warmup, args.text_tokens = "tiny", 2, 1, 64
    if args.text_tokens < 4:
        raise ValueError(f"--text_tokens must be at least 4 (a prompt and a report), got {args.text_tokens}.")
    torch.set_num_threads(args.threads)
    started = timing.machine()
    result = measure(args.preset, torch.device(args.device), args.batch, args.text_tokens, args.steps, args.warmup,
                     args.peak_tflops, args.gradient_checkpointing, args.dtype)
    result["machine"], result["command"] = started, "python " + " ".join(sys.argv)
    record = timing.save(args.out, {"benchmark": "sft_throughput", "results": kept_results(args.out, result)},
                         started)
    print(report.render("sft_throughput", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
