"""Stage III: build GROK from its components, train it with TRL SFT + PEFT LoRA, merge and save it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import AutoTokenizer, TrainerCallback
from trl import ModelConfig, ScriptArguments

from modeling_grok import GrokForConditionalGeneration, GrokProcessor
from modeling_grok.configuration_aligner import schema_normalisation
from modeling_grok.configuration_grok import VIT_LARGE_PATCH16_224, VIT_TINY_TEST
from modeling_grok.modeling_aligner import OCT_TOWER_CONFIG
from processing.biomarkers import BIOMARKER_NAMES

from .diagnosis_questions import with_diagnosis_questions
from .smollm2 import smollm2_gguf
from .tiny_backbone import tiny_text_model, train_tokenizer
from .training import GrokSFTConfig, GrokSFTTrainer, grok_lora_config

TOWER_PRESETS = {"vit_large": VIT_LARGE_PATCH16_224, "tiny": VIT_TINY_TEST}


@dataclass
class GrokComponentArguments:
    """Where GROK's parts come from when not continuing from a saved GROK (``--model_name_or_path``)."""

    text_model: str = field(
        default="Qwen/Qwen2-7B-Instruct",
        metadata={"help": "Causal LM: a Hub id or path, 'smollm2' (the packaged GGUF) or 'tiny' (a small Qwen2 "
                          "trained from scratch with a tokenizer fitted to the dataset)."},
    )
    text_model_gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside text_model."})
    towers: str = field(default="vit_large", metadata={"help": "Tower preset: vit_large (RETFound/RetiZero) or tiny."})
    cfp_encoder: str | None = field(default=None, metadata={"help": "RetiZero / timm CFP checkpoint (Hub id or path)."})
    oct_encoder: str | None = field(
        default=None,
        metadata={"help": "RETFound checkpoint, or a Stage II aligned tower folder (its tower config is read from it)."},
    )
    tokens_per_image: int | None = field(default=None, metadata={"help": "Pool each image to this many tokens."})
    projector_type: str = field(default="mlp2x_gelu")
    biomarker_tokens: int = field(
        default=0,
        metadata={"help": "Feed the biomarker vector to the LM as this many projected tokens besides the prompt text "
                          "(0: text only, the paper's model)."},
    )
    tiny_vocab_size: int = field(default=2048, metadata={"help": "Tokenizer size for text_model='tiny'."})
    merged_output_dir: str | None = field(default=None, metadata={"help": "Final model folder (default OUTPUT/final)."})
    write_rank_checksums: bool = field(default=False, metadata={"help": "Each rank writes a checksum of its weights."})


def biomarker_token_config(num_tokens: int) -> dict:
    """`GrokConfig` kwargs for ``num_tokens`` biomarker tokens over the schema's 37 biomarkers ({} for none)."""
    if not num_tokens:
        return {}
    center, scale = schema_normalisation(list(BIOMARKER_NAMES))
    return {"num_biomarker_tokens": num_tokens, "biomarker_names": list(BIOMARKER_NAMES),
            "biomarker_center": center, "biomarker_scale": scale}


def load_sft_dataset(script_args: ScriptArguments) -> DatasetDict:
    """A Stage I dataset: a `save_to_disk` folder (Dataset or DatasetDict) or a Hub id."""
    name = script_args.dataset_name
    if name is None:
        raise ValueError("--dataset_name is required: a Stage I output folder (grok-retina instruct --out) or a Hub id.")
    data = load_from_disk(name) if Path(name).is_dir() else load_dataset(name, script_args.dataset_config)
    split = script_args.dataset_train_split
    if isinstance(data, Dataset):
        data = DatasetDict({split: data})
    if split not in data:
        raise ValueError(
            f"{name} has no split {split!r} to train on; it has {list(data)}. Pass one with --dataset_train_split."
        )
    missing = {"prompt", "completion", "images"} - set(data[split].column_names)
    if missing:
        raise ValueError(
            f"{name} lacks columns {sorted(missing)}; Stage III expects the prompt-completion format written by "
            "`grok-retina instruct`."
        )
    return data


def _chat_texts(dataset: Dataset, limit: int = 2000) -> list[str]:
    """The texts a tiny tokenizer is fitted on: the instruction and the first ``limit`` conversations."""
    from .prompts import DIAGNOSIS_QUESTION, STUDENT_INSTRUCTION, STUDENT_SYSTEM_PROMPT

    texts = [STUDENT_SYSTEM_PROMPT, STUDENT_INSTRUCTION, DIAGNOSIS_QUESTION]
    for row in dataset.select(range(min(limit, len(dataset)))):
        for message in row["prompt"] + row["completion"]:
            texts += [block["text"] for block in message["content"] if block.get("type") == "text" and block.get("text")]
    return texts


def build_model_and_processor(
    model_args: ModelConfig, components: GrokComponentArguments, train_dataset: Dataset | None = None
) -> tuple[GrokForConditionalGeneration, GrokProcessor]:
    """A saved GROK (``model_args.model_name_or_path``) or one assembled by `from_components`."""
    if model_args.model_name_or_path:
        model = GrokForConditionalGeneration.from_pretrained(model_args.model_name_or_path, dtype=model_args.dtype)
        return model, GrokProcessor.from_pretrained(model_args.model_name_or_path)
    if components.towers == "vit_large":
        for field_name in ("cfp_encoder", "oct_encoder"):
            if getattr(components, field_name) is None:
                raise ValueError(
                    f"--{field_name} is required with --towers vit_large: the towers are frozen, so one left at its "
                    "random initialisation stays random. Pass its checkpoint (RetiZero .pth for the CFP, RETFound "
                    "Hub id or .pth, or a Stage II aligned tower folder, for the OCT), or --towers tiny for a CPU run."
                )
    tower = dict(TOWER_PRESETS[components.towers])
    aligned_config = Path(components.oct_encoder or "") / OCT_TOWER_CONFIG
    oct_tower = json.loads(aligned_config.read_text()) if aligned_config.is_file() else tower
    config_kwargs = {
        "cfp_vision_config": tower,
        "oct_vision_config": oct_tower,
        "tokens_per_image": components.tokens_per_image,
        "projector_type": components.projector_type,
        **biomarker_token_config(components.biomarker_tokens),
    }
    text_kwargs: dict = {"dtype": model_args.dtype} if model_args.dtype not in (None, "auto") else {}
    if components.text_model == "tiny":
        if train_dataset is None:
            raise ValueError("text_model='tiny' fits its tokenizer to the training data; pass train_dataset.")
        tokenizer = train_tokenizer(_chat_texts(train_dataset), vocab_size=components.tiny_vocab_size)
        text_model = tiny_text_model(tokenizer)
    elif components.text_model == "smollm2":
        text_model, gguf_file = smollm2_gguf()
        text_kwargs["gguf_file"] = gguf_file
        tokenizer = AutoTokenizer.from_pretrained(text_model, gguf_file=gguf_file)
    else:
        text_model = components.text_model
        if components.text_model_gguf_file:
            text_kwargs["gguf_file"] = components.text_model_gguf_file
        tokenizer = AutoTokenizer.from_pretrained(text_model, **{k: v for k, v in text_kwargs.items() if k == "gguf_file"})
    model = GrokForConditionalGeneration.from_components(
        text_model=text_model,
        cfp_encoder=components.cfp_encoder,
        oct_encoder=components.oct_encoder,
        tokenizer=tokenizer,
        text_model_kwargs=text_kwargs,
        **config_kwargs,
    )
    return model, GrokProcessor.from_config(tokenizer, model.config)


class RankChecksumCallback(TrainerCallback):
    """At the end of training each process writes a SHA-256 of its trainable weights (DDP sync check)."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().float().cpu().numpy().tobytes())
        Path(args.output_dir, f"rank{args.process_index}_checksum.txt").write_text(digest.hexdigest())


def save_merged(model, processor: GrokProcessor, out_dir: str | os.PathLike) -> Path:
    """Merge LoRA into the weights and save model + processor atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def run_sft(
    script_args: ScriptArguments,
    training_args: GrokSFTConfig,
    model_args: ModelConfig,
    components: GrokComponentArguments,
) -> Path:
    """Train GROK on a Stage I dataset and return the merged model folder."""
    data = load_sft_dataset(script_args)
    train = data[script_args.dataset_train_split]
    evaluation = data.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    model, processor = build_model_and_processor(model_args, components, train)
    model.freeze_vision_towers()
    if training_args.diagnosis_questions:
        train = with_diagnosis_questions(train)
    peft_config = (
        grok_lora_config(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout)
        if model_args.use_peft else None
    )
    trainer = GrokSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[RankChecksumCallback()] if components.write_rank_checksums else None,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    final = Path(components.merged_output_dir or Path(training_args.output_dir) / "final")
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        save_merged(trainer.accelerator.unwrap_model(trainer.model), processor, final)
    trainer.accelerator.wait_for_everyone()
    return final



__all__ = [
    "GrokComponentArguments", "biomarker_token_config", "build_model_and_processor", "load_sft_dataset", "run_sft", "save_merged",
]
