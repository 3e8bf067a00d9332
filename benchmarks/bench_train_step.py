"""LoRA SFT step (forward + backward): GROK against transformers' LLaVA with the same LM and image tokens.

    python benchmarks/bench_train_step.py [--presets tiny medium] [--repeats N] [--threads 1] \
        [--out benchmarks/results/train_step.json] [--quick]

Equal tokens: GROK gets a CFP and an OCT image per sample (2 x N image tokens through two towers);
LLaVA gets two images per sample through one CLIP tower of the same width, depth, patch and image size
(2 x N tokens too, the CLS token dropped as GROK drops it), so both put the same tokens into the same LM.
Both: towers frozen, LoRA (PEFT) on the same LM linear layers, projectors trained, the same batch and
sequence, the same LM weights, SDPA attention. Each round times, for both models, the full step, the image
path alone (towers + projectors forward, backward into the projectors) and a text-only control (the same
batch without images: identical work, so its ratio is the noise floor); everything alternates in one
process, half the rounds with each model built first (see `run_preset`). Peak memory
is measured in a fresh process per model: the peak RSS (``VmHWM``, reset after the model is built) during
warm-up + the timed steps, and that peak less the RSS before the first step (the step's own memory).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, timing  # noqa: E402
from modeling_grok import GrokConfig, GrokForConditionalGeneration  # noqa: E402
from modeling_grok.configuration_grok import QWEN2_TINY_TEST, VIT_TINY_TEST  # noqa: E402

# SmolLM2-135M-Instruct's shape (a Llama); random weights: step time does not depend on their values.
SMOLLM2_135M = {
    "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
}
# ViT-S/16 at 224 px: 12 blocks of width 384, 196 patch tokens.
VIT_SMALL_PATCH16_224 = {"architecture": "vit_small_patch16_224", "img_size": 224, "patch_size": 16,
                         "embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0}


@dataclass
class Preset:
    """A model size and the batch it is measured with."""

    tower: dict
    text: dict
    batch: int
    text_tokens: int
    repeats: int
    steps: int  # per timed repetition
    lora_r: int = 16

    @property
    def image_tokens(self) -> int:
        return (self.tower["img_size"] // self.tower["patch_size"]) ** 2


PRESETS = {
    "tiny": Preset(tower=dict(VIT_TINY_TEST), text=dict(QWEN2_TINY_TEST), batch=4, text_tokens=64, repeats=10, steps=5),
    "medium": Preset(tower=VIT_SMALL_PATCH16_224, text=SMOLLM2_135M, batch=2, text_tokens=64, repeats=6, steps=1),
}


def text_model(preset: Preset, seed: int = 0):
    """A randomly initialised causal LM of the preset's shape (SDPA attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(preset.text)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def image_token_ids(preset: Preset) -> tuple[int, int]:
    """Placeholder ids (the last two of the vocabulary; their embeddings are overwritten by image tokens)."""
    vocab = preset.text["vocab_size"]
    return vocab - 2, vocab - 1


def _adopt_lm(model, lm) -> None:
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()


def build_grok(preset: Preset, lm, tokens_per_image: int | None = None) -> GrokForConditionalGeneration:
    """GROK around ``lm`` (its decoder and head are adopted, not copied), as `from_components` assembles it."""
    cfp_id, oct_id = image_token_ids(preset)
    config = GrokConfig(text_config=lm.config, cfp_vision_config=dict(preset.tower),
                        oct_vision_config=dict(preset.tower), cfp_token_id=cfp_id, oct_token_id=oct_id,
                        tokens_per_image=tokens_per_image)
    torch.manual_seed(1)
    model = GrokForConditionalGeneration(config)
    _adopt_lm(model, lm)
    model.freeze_vision_towers()
    return model


def build_llava(preset: Preset, lm):
    """`LlavaForConditionalGeneration` around ``lm`` with a CLIP tower of the GROK tower's size (GELU MLP)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tower = preset.tower
    vision = CLIPVisionConfig(
        hidden_size=tower["embed_dim"], intermediate_size=int(tower["embed_dim"] * tower["mlp_ratio"]),
        num_hidden_layers=tower["depth"], num_attention_heads=tower["num_heads"], image_size=tower["img_size"],
        patch_size=tower["patch_size"], hidden_act="gelu", attn_implementation="sdpa",
    )
    config = LlavaConfig(vision_config=vision, text_config=lm.config, image_token_id=image_token_ids(preset)[0],
                         image_seq_length=preset.image_tokens, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(config)
    _adopt_lm(model, lm)
    model.model.vision_tower.requires_grad_(False).eval()
    return model


def with_lora(model, r: int):
    """PEFT LoRA on every linear layer of the LM (alpha = 2r, dropout 0.05); the projector(s) fully trained."""
    from peft import LoraConfig, get_peft_model

    from grok_retina.training import language_model_linear_targets

    projectors = ["cfp_projector", "oct_projector"] if isinstance(model, GrokForConditionalGeneration) else [
        "multi_modal_projector"]
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules=language_model_linear_targets(model),
                        modules_to_save=projectors, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def token_layout(preset: Preset, image_tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ids: half the text, the CFP placeholders, the OCT placeholders, the other half; and the
    modality of each position (0 text, 1 CFP, 2 OCT)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = preset.text["vocab_size"]
    head, tail = preset.text_tokens // 2, preset.text_tokens - preset.text_tokens // 2
    kinds = torch.cat([torch.zeros(head), torch.ones(image_tokens), torch.full((image_tokens,), 2),
                       torch.zeros(tail)]).long()
    ids = torch.randint(10, vocab - 10, (preset.batch, kinds.numel()), generator=generator)
    return ids, kinds.expand(preset.batch, -1)


def train_inputs(preset: Preset) -> dict[str, dict[str, torch.Tensor]]:
    """The same batch for GROK and LLaVA: ids, labels (-100 at image positions), pixels."""
    ids, kinds = token_layout(preset, preset.image_tokens)
    cfp_id, oct_id = image_token_ids(preset)
    size = preset.tower["img_size"]
    generator = torch.Generator().manual_seed(1)
    cfp, oct_ = (torch.randn(preset.batch, 3, size, size, generator=generator) for _ in range(2))
    labels = ids.masked_fill(kinds > 0, -100)
    grok_ids = torch.where(kinds == 1, cfp_id, torch.where(kinds == 2, oct_id, ids))
    llava_ids = torch.where(kinds > 0, cfp_id, ids)
    mask = torch.ones_like(ids)
    return {
        "grok": {"input_ids": grok_ids, "attention_mask": mask, "labels": labels, "pixel_values_cfp": cfp,
                 "pixel_values_oct": oct_},
        "llava": {"input_ids": llava_ids, "attention_mask": mask, "labels": labels,
                  "pixel_values": torch.stack([cfp, oct_], 1).flatten(0, 1)},  # each sample's two images, in order
    }


def text_inputs(preset: Preset) -> dict[str, torch.Tensor]:
    """The control: the same batch with text tokens in place of the image tokens and no pixels (identical
    work for GROK and LLaVA: what their ratio shows besides 1 is the noise floor)."""
    ids, _ = token_layout(preset, preset.image_tokens, seed=2)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def train_step(model, inputs: dict[str, torch.Tensor]) -> float:
    """Seconds of one forward + backward (gradients cleared beforehand, outside the timing)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(**inputs).loss.backward()
    return time.perf_counter() - start


def image_step(model, inputs: dict[str, torch.Tensor]) -> float:
    """Seconds of the image path alone: towers and projectors forward, backward into the projectors."""
    base = model.get_base_model()
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if isinstance(base, GrokForConditionalGeneration):
        features = base.model.get_image_features(inputs["pixel_values_cfp"], inputs["pixel_values_oct"])
        total = features["cfp"].sum() + features["oct"].sum()
    else:
        total = torch.cat(base.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output).sum()
    total.backward()
    return time.perf_counter() - start


def build_pair(preset: Preset, which: tuple[str, ...] = ("grok", "llava")) -> dict:
    lm = text_model(preset)
    builders = {"grok": build_grok, "llava": build_llava}
    models = {name: with_lora(builders[name](preset, copy.deepcopy(lm)), preset.lora_r).train() for name in which}
    for model in models.values():  # train() above switched the frozen towers back to train mode
        base = model.get_base_model()
        for tower in (getattr(base.model, name, None) for name in ("cfp_tower", "oct_tower", "vision_tower")):
            if tower is not None:
                tower.eval()
    return models


def memory_child(preset_name: str, model_name: str, threads: int) -> dict:
    """In a fresh process: peak RSS of warm-up + ``preset.steps`` steps of one model, in MiB."""
    torch.set_num_threads(threads)
    preset, steps = PRESETS[preset_name], PRESETS[preset_name].steps
    model = build_pair(preset, (model_name,))[model_name]
    inputs = train_inputs(preset)[model_name]
    timing.reset_peak_rss()  # building the model is not counted
    before = timing.rss_mib("VmRSS")
    for _ in range(steps + 1):
        train_step(model, inputs)
    peak = timing.rss_mib("VmHWM")
    return {"rss_before_step_mib": before, "peak_rss_mib": peak, "step_peak_mib": peak - before}


def run_preset(name: str, repeats: int | None, memory: bool, threads: int) -> dict:
    """Half the rounds with GROK built first, half with LLaVA built first. Which model is built first changes
    where its tensors land in memory, and it measurably changed the ratio in trials (medium, batch 1: 0.75 with
    GROK first, 1.01 with LLaVA first; identical ops and shapes in both profiles), so each order gets the
    same share of rounds and the ratio is also reported per order."""
    preset = PRESETS[name]
    repeats, steps = repeats or preset.repeats, preset.steps
    inputs, text = train_inputs(preset), text_inputs(preset)
    parts = {"full": lambda m, models: train_step(models[m], inputs[m]),
             "text_only": lambda m, models: train_step(models[m], text),
             "image_path": lambda m, models: image_step(models[m], inputs[m])}
    runs: dict[str, list[float]] = {}
    by_order = {}
    for index, order in enumerate((("grok", "llava"), ("llava", "grok"))):
        models = build_pair(preset, order)
        variants = {f"{m}/{part}": (lambda m=m, f=f: sum(f(m, models) for _ in range(steps)) / steps)
                    for m in order for part, f in parts.items()}
        half = timing.alternate(variants, repeats=(repeats + 1 - index) // 2, warmup=1)
        by_order[f"{order[0]}_built_first"] = timing.ratio(half["grok/full"], half["llava/full"])
        for key, values in half.items():
            runs.setdefault(key, []).extend(values)
        del models, variants
    result = {
        "preset": name, "batch": preset.batch, "sequence": inputs["grok"]["input_ids"].shape[1],
        "image_tokens_per_sample": 2 * preset.image_tokens, "tower": preset.tower, "text_config": preset.text,
        "lora_r": preset.lora_r, "repeats": repeats, "steps_per_repeat": steps,
        **{f"{part}_s": {m: timing.summarize(runs[f"{m}/{part}"]) for m in ("grok", "llava")} for part in parts},
        **{f"{part}_grok_over_llava": timing.ratio(runs[f"grok/{part}"], runs[f"llava/{part}"]) for part in parts},
        "full_grok_over_llava_by_build_order": by_order,
        "runs": runs,
    }
    if memory:
        script = str(Path(__file__).resolve())
        result["memory"] = {m: timing.run_child([script, "--memory-child", name, m, "--threads", str(threads)])
                            for m in ("grok", "llava")}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "medium"], choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, help="timed repetitions (default: the preset's)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory processes")
    parser.add_argument("--memory-child", nargs=2, metavar=("PRESET", "MODEL"), help=argparse.SUPPRESS)
    timing.add_common_args(parser, "benchmarks/results/train_step.json", "tiny preset, 2 repeats")
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, threads=args.threads)))
        return 0
    if args.quick:
        args.presets, args.repeats = ["tiny"], 2
    torch.set_num_threads(args.threads)
    started = timing.machine()
    results = [run_preset(name, args.repeats, args.memory, args.threads) for name in args.presets]
    record = timing.save(args.out, {"benchmark": "train_step", "results": results}, started)
    print(report.render("train_step", record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
