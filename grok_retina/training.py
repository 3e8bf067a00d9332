"""Stage III training pieces: the SFT config with a projector learning rate, LoRA targets, the collator and
the trainer."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from peft import LoraConfig
from torch import nn
from torch.utils.data import SequentialSampler
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

PROJECTOR_MODULES = ("cfp_projector", "oct_projector", "biomarker_projector")


@dataclass
class GrokSFTConfig(SFTConfig):
    """`SFTConfig` plus GROK's projector learning rate (paper: LoRA 2e-4, projectors 2e-5)."""

    projector_lr: float | None = field(
        default=2e-5, metadata={"help": "Learning rate of the projectors: CFP, OCT and biomarkers (None: the main "
                                        "learning rate)."}
    )
    diagnosis_questions: bool = field(
        default=False,
        metadata={"help": "Train on one short diagnosis question per eye besides its report (pair with "
                          "train_sampling_strategy=group_by_length so questions and reports batch apart)."},
    )


def conversation_length(prompt: list[dict], completion: list[dict]) -> int:
    """Characters of text in a prompt-completion row (its length for `LengthBucketSampler`)."""
    return sum(len(block.get("text") or "") for message in prompt + completion for block in message["content"])


class LengthBucketSampler(torch.utils.data.Sampler[int]):
    """Batches of similar length in random order: each epoch shuffles the indices, sorts each run of
    ``50 * batch_size`` by length, cuts it into batches and shuffles all the batches. (transformers'
    `LengthGroupedSampler` keeps each run's batches sorted, so short and long batches come in long streaks.)"""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group: int = 50):
        self.lengths, self.batch_size, self.seed, self.group, self.epoch = list(lengths), batch_size, seed, group, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        run = self.group * self.batch_size
        batches = []
        for start in range(0, len(order), run):
            chunk = sorted(order[start : start + run], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter([index for batch in batches for index in batch])


def language_model_linear_targets(model: nn.Module) -> str:
    """A PEFT ``target_modules`` regex for every linear layer of GROK's language model (towers excluded)."""
    leaves = sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
         if isinstance(module, nn.Linear) and ".language_model." in f".{name}"}
    )
    if not leaves:
        raise ValueError("No linear layers found under `language_model`: is this a GrokForConditionalGeneration?")
    return rf".*language_model\..*\.({'|'.join(map(re.escape, leaves))})"


def grok_lora_config(model: nn.Module, r: int = 128, alpha: int = 256, dropout: float = 0.05) -> LoraConfig:
    """LoRA on all the LM's linear layers; the projectors train fully and are saved with the adapter."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=language_model_linear_targets(model),
        modules_to_save=[name for name in PROJECTOR_MODULES if getattr(model.model, name, None) is not None],
        task_type="CAUSAL_LM",
    )


@dataclass
class GrokDataCollator(DataCollatorForVisionLanguageModeling):
    """TRL's vision-language collator plus ``biomarker_values`` from each row's ``biomarkers`` column, for a
    processor whose model has biomarker tokens (``biomarker_num_tokens`` > 0)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        biomarkers = [example.pop("biomarkers", None) for example in examples]
        batch = super().torch_call(examples)
        if getattr(self.processor, "biomarker_num_tokens", 0):
            if any(values is None for values in biomarkers):
                raise ValueError(
                    "This model reads the biomarker vector (num_biomarker_tokens > 0): every row needs a 'biomarkers' "
                    "column (a mapping of schema names to values), as `grok-retina instruct` writes."
                )
            batch["biomarker_values"] = torch.tensor(self.processor.biomarker_values(biomarkers), dtype=torch.float32)
        return batch


class GrokSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose optimizer gives the projectors their own learning rate (towers stay frozen), whose
    collator passes each row's biomarker vector to models with biomarker tokens, and which batches by
    `LengthBucketSampler` under ``train_sampling_strategy="group_by_length"`` (lengths from the length column,
    else `conversation_length` of each prompt-completion row)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.data_collator) is DataCollatorForVisionLanguageModeling:  # TRL's default for image datasets
            collator = self.data_collator
            self.data_collator = GrokDataCollator(**{f.name: getattr(collator, f.name) for f in fields(collator)})

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = ("biomarkers", self.args.length_column_name)
        self._signature_columns = [*self._signature_columns, *(c for c in extra if c not in self._signature_columns)]

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        columns = getattr(dataset, "column_names", ())
        if self.args.train_sampling_strategy == "group_by_length" and (
            self.args.length_column_name in columns or {"prompt", "completion"} <= set(columns)
        ):
            lengths = (dataset[self.args.length_column_name] if self.args.length_column_name in columns
                       else [conversation_length(p, c) for p, c in zip(dataset["prompt"], dataset["completion"])])
            return LengthBucketSampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                       seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # transformers would group evaluation by length too, which needs input_ids rows; evaluation keeps its order
        if self.args.train_sampling_strategy == "group_by_length" and eval_dataset is not None:
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def create_optimizer(self, *args, **kwargs):
        projector_lr = getattr(self.args, "projector_lr", None)
        if self.optimizer is not None or projector_lr is None:
            return super().create_optimizer(*args, **kwargs)
        decay = set(self.get_decay_parameter_names(self.model))
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                is_projector = any(f"{p}." in name for p in PROJECTOR_MODULES)
                groups.setdefault((is_projector, name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if with_decay else 0.0,
                **({"lr": projector_lr} if is_projector else {}),
            }
            for (is_projector, with_decay), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


def trainable_parameter_report(model: nn.Module) -> dict[str, int]:
    """Trainable parameters by part: lora, projectors, towers (must be 0), other."""
    report = {"lora": 0, "projectors": 0, "towers": 0, "other": 0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = (
            "lora" if "lora_" in name
            else "projectors" if any(p in name for p in PROJECTOR_MODULES)
            else "towers" if "_tower." in name
            else "other"
        )
        report[part] += param.numel()
    return report

