"""Stage II library: OCT B-scan / biomarker pairs as cached tensors and the contrastive alignment loop.

The loop runs under `accelerate.Accelerator` (``accelerate launch`` with any number of processes; each
process contrasts its own batch). Each epoch ends with a validation pass (mean cosine of matched pairs,
gathered over processes) and an atomic checkpoint (``checkpoint-<step>``: model, optimizer, scheduler,
RNG, epoch); the best checkpoint by validation cosine is kept. At the end the best weights are exported:
the aligner (``save_pretrained`` in ``output_dir``) and its OCT tower for GROK (``output_dir/oct_tower``).
A fresh run refuses an ``output_dir`` that holds an earlier run's checkpoints (``resume_from_checkpoint`` continues
it, ``overwrite_output_dir`` deletes them); a resumed run keeps ``metrics.jsonl`` up to its checkpoint and appends.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from modeling_grok.configuration_grok import VIT_LARGE_PATCH16_224
from modeling_grok.image_processing_grok import GrokOCTImageProcessor
from modeling_grok.modeling_aligner import GrokAligner

PHANTOM_CFP_SIZE = 64  # alignment never looks at the CFP: render it small
CACHE_VERSION = 1
CHECKPOINT_PREFIX = "checkpoint-"
OCT_TOWER_DIR = "oct_tower"  # the aligned (best) tower, for GROK
INITIAL_OCT_TOWER_DIR = "initial_oct_tower"  # the same tower before alignment: the probe's baseline
METRICS_FILE = "metrics.jsonl"

# A ViT small enough to align on CPU in minutes (timm kwargs, as GrokConfig's tower configs).
VIT_TINY_ALIGN = {
    "architecture": "vit_tiny_patch16_224",
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}

# --preset: the tower, the aligner's heads and the training defaults (command-line flags override them).
ALIGN_PRESETS: dict[str, dict] = {
    "paper": {  # GROK Stage II: RETFound ViT-L/16, AdamW lr 1e-4, batch 32, 50 epochs, temperature 0.5
        "oct_vision_config": VIT_LARGE_PATCH16_224,
        "projection_dim": 128,
        "hidden_dim": 512,
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 32,
        "num_train_epochs": 50,
    },
    "tiny": {  # CPU in minutes: a 2-block ViT at 64 px, a higher learning rate, fewer epochs, learned temperature
        "oct_vision_config": VIT_TINY_ALIGN,
        "projection_dim": 64,
        "hidden_dim": 128,
        "learn_temperature": True,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.05,
        "per_device_train_batch_size": 32,
        "num_train_epochs": 35,
    },
}


# --------------------------------------------------------------------------------------------- data


def load_pairs_source(source: str, split: str | None, split_flag: str):
    """A GROK `datasets.Dataset` from any `processing.sources.load_source` spec; a phantom's CFP, which
    alignment never looks at, is rendered small. A source with splits needs ``split`` (the option ``split_flag``):
    none is picked for the user, so that held-out data is never the training split by default."""
    from datasets import DatasetDict

    from processing.sources import load_source

    data = load_source(source, split=split, cfp_size=PHANTOM_CFP_SIZE)
    if isinstance(data, DatasetDict):
        raise ValueError(f"{source} has splits {list(data)}; choose one with {split_flag}.")
    return data


def biomarker_vector(values: dict | None, names: Sequence[str]) -> np.ndarray:
    """The biomarkers of one row in ``names`` order (float32), NaN where missing."""
    values = values or {}
    return np.array([np.nan if values.get(n) is None else float(values[n]) for n in names], dtype=np.float32)


@dataclass
class OCTPairs:
    """Central B-scans resized to the tower's input, grayscale in [0, 1] (float16, (N, S, S)), and the
    biomarker vectors (float32, (N, K), NaN where missing)."""

    scans: torch.Tensor
    biomarkers: torch.Tensor

    def __len__(self) -> int:
        return self.scans.shape[0]


def prepare_oct_pairs(
    dataset, image_size: int, names: Sequence[str], cache_dir: str | os.PathLike | None = None
) -> OCTPairs:
    """Run `GrokOCTImageProcessor` once over ``oct[0]`` of every row and read the biomarkers in ``names`` order.

    With ``cache_dir`` the tensors are stored as ``oct_pairs-<key>.pt``, the key hashing the dataset's
    fingerprint, the image size and the names, so epochs and later runs skip the image work.
    """
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(repr((CACHE_VERSION, dataset._fingerprint, int(image_size), list(names))).encode())
        cache_file = Path(cache_dir) / f"oct_pairs-{key.hexdigest()[:24]}.pt"
        if cache_file.is_file():
            return OCTPairs(**torch.load(cache_file, weights_only=True))
    # Zero mean / unit std: the processor's resized grayscale in [0, 1]; OCTPairDataset normalises per item.
    processor = GrokOCTImageProcessor(size=image_size, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    rows = dataset.select_columns(["id", "oct", "biomarkers"])
    scans = torch.empty(len(rows), image_size, image_size, dtype=torch.float16)
    biomarkers = np.empty((len(rows), len(names)), dtype=np.float32)
    for i, row in enumerate(rows):
        if not row["oct"]:
            raise ValueError(
                f"row {i} (id {row['id']!r}) has no OCT B-scan; drop such rows first, e.g. "
                "dataset.filter(lambda row: len(row['oct']) > 0)."
            )
        scans[i] = torch.from_numpy(processor.preprocess_one(row["oct"][0], f"oct of row {row['id']}")[0])
        biomarkers[i] = biomarker_vector(row["biomarkers"], names)
    pairs = OCTPairs(scans, torch.from_numpy(biomarkers))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(asdict(pairs), tmp)
        os.replace(tmp, cache_file)
    return pairs


class OCTPairDataset(Dataset):
    """``{"pixel_values": (3, S, S), "biomarkers": (K,)}`` items, normalised with the processor's mean/std."""

    def __init__(self, pairs: OCTPairs, image_mean: Sequence[float], image_std: Sequence[float]):
        self.pairs = pairs
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        gray = self.pairs.scans[index].float().unsqueeze(0)
        return {"pixel_values": (gray - self.mean) / self.std, "biomarkers": self.pairs.biomarkers[index]}


# ------------------------------------------------------------------------------------------ training


def use_cpu() -> bool:
    """Whether Accelerate must be told ``cpu=True``: asked for (``ACCELERATE_USE_CPU``), or a multi-process launch
    (torchrun's ``WORLD_SIZE``) on a machine without an accelerator, which Accelerate would otherwise run as
    independent single processes instead of one gloo group."""
    from accelerate.utils import parse_flag_from_env

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (launched and not torch.accelerator.is_available())


@dataclass
class AlignmentArguments:
    """Optimisation and checkpointing of `train_aligner` (defaults: the paper's Stage II)."""

    output_dir: str = field(default="outputs/align", metadata={"help": "Checkpoints, metrics.jsonl and exports."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (paper: 1e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Pairs per process and step (paper: 32)."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Pairs per process in validation."})
    num_train_epochs: int = field(default=50, metadata={"help": "Epochs (paper: 50)."})
    lr_scheduler_type: Literal["cosine", "constant"] = field(default="cosine", metadata={"help": "cosine or constant."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of the steps with a linear warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables it)."})
    seed: int = field(default=42, metadata={"help": "Seed of the initialisation and the data order."})
    logging_steps: int = field(default=20, metadata={"help": "Print every N steps (metrics.jsonl gets every step)."})
    save_total_limit: int = field(default=1, metadata={"help": "Checkpoints kept besides the best one."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest one in output_dir."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an output_dir holding an earlier run's checkpoints (deletes them)."},
    )

    def __post_init__(self):
        if self.per_device_train_batch_size < 2:
            raise ValueError("per_device_train_batch_size must be at least 2: a contrastive batch needs negatives.")
        if self.num_train_epochs < 1 or self.save_total_limit < 1 or self.logging_steps < 1:
            raise ValueError("num_train_epochs, save_total_limit and logging_steps must be at least 1.")


@dataclass
class AlignmentState:
    """Progress saved with each checkpoint: completed epochs, optimizer steps and the best checkpoint so far."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class AlignmentResult:
    """Where `train_aligner` put things, and the best validation cosine."""

    output_dir: Path
    oct_tower_dir: Path
    initial_oct_tower_dir: Path
    best_checkpoint: Path
    best_metric: float
    global_step: int
    seconds: float


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders in ``output_dir``, oldest step first (none if it does not exist)."""
    output_dir = Path(output_dir)
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_resume_checkpoint(resume: str, output_dir: Path) -> Path:
    """``resume`` as a checkpoint folder (``latest``: the newest ``checkpoint-<step>`` in ``output_dir``)."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint='latest' but {output_dir} holds no checkpoint-<step> folder.")
        return found[-1]
    path = Path(resume)
    if not (path / "alignment_state.json").is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r} is not a checkpoint folder written by train_aligner.")
    return path


def check_output_dir(args: AlignmentArguments) -> None:
    """Refuse a fresh run (no ``resume_from_checkpoint``) in an ``output_dir`` holding an earlier run's
    checkpoints, which it would delete along with that run's ``metrics.jsonl``, unless ``overwrite_output_dir``."""
    if args.resume_from_checkpoint is not None or args.overwrite_output_dir:
        return
    found = list_checkpoints(args.output_dir)
    if found:
        names = ", ".join(p.name for p in found)
        raise FileExistsError(
            f"output_dir {args.output_dir} already holds an earlier run's checkpoints ({names}); a fresh run would "
            "delete them and its metrics.jsonl. Pass --resume_from_checkpoint latest to continue that run, "
            "--overwrite_output_dir to start over (deleting them), or another --output_dir."
        )


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop the records of ``metrics.jsonl`` after ``step`` (a resumed run redoes those steps)."""
    from .evaluation.report import atomic_write_text

    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    complete = lines if not lines or lines[-1].endswith("\n") else lines[:-1]  # the last one torn by the stop
    kept = []
    for number, line in enumerate(complete, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON ({error}); repair or delete that line.") from None
        if record["step"] <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))


def _export_tower(model: GrokAligner, path: Path) -> None:
    """`GrokAligner.save_oct_tower` into a temporary folder, then renamed to ``path``."""
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_oct_tower(tmp)
    _replace_dir(tmp, path)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final`` (replacing it) with renames only."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


@torch.no_grad()
def validation_cosine(model: GrokAligner, loader, accelerator) -> dict[str, float]:
    """Mean cosine of matched (OCT, biomarker) embedding pairs and of all mismatched ones, over the whole set."""
    model.eval()
    image, biomarker = [], []
    for batch in loader:
        image.append(model.get_image_embeds(batch["pixel_values"]).float())
        biomarker.append(model.get_biomarker_embeds(batch["biomarkers"]).float())
    image = accelerator.gather_for_metrics(torch.cat(image))
    biomarker = accelerator.gather_for_metrics(torch.cat(biomarker))
    model.train()
    n = image.shape[0]
    matched = (image * biomarker).sum(-1)
    everything = image.sum(0) @ biomarker.sum(0)
    mismatched = (everything - matched.sum()) / max(n * n - n, 1)
    return {"val_cosine": float(matched.mean()), "val_cosine_mismatched": float(mismatched)}


def train_aligner(
    model: GrokAligner,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    args: AlignmentArguments,
) -> AlignmentResult:
    """Train ``model`` with AdamW on ``train_dataset``, validate every epoch on ``eval_dataset``, keep the best
    checkpoint by validation cosine and export it (see the module docstring for the folder layout)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import get_scheduler

    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    check_output_dir(args)
    accelerator = Accelerator(
        cpu=use_cpu(), dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed)
    )
    world = accelerator.num_processes
    if len(train_dataset) < args.per_device_train_batch_size * world:
        raise ValueError(
            f"The training set has {len(train_dataset)} pairs, fewer than one batch "
            f"({args.per_device_train_batch_size} x {world} processes); lower per_device_train_batch_size."
        )
    train_loader = DataLoader(train_dataset, batch_size=args.per_device_train_batch_size, shuffle=True, drop_last=True)
    eval_loader = DataLoader(eval_dataset, batch_size=args.per_device_eval_batch_size)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    steps_per_epoch = len(train_dataset) // (args.per_device_train_batch_size * world)
    total_steps = steps_per_epoch * args.num_train_epochs
    with_warmup = args.lr_scheduler_type == "constant" and args.warmup_ratio > 0
    scheduler = get_scheduler(
        "constant_with_warmup" if with_warmup else args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process and args.resume_from_checkpoint is None:
        for stale in list_checkpoints(output_dir):  # only with overwrite_output_dir (check_output_dir)
            shutil.rmtree(stale)
        # The unaligned baseline: the same tower, before any step (random init or the given RETFound).
        _export_tower(model, output_dir / INITIAL_OCT_TOWER_DIR)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    state = AlignmentState()
    # The scheduler is stepped by hand once per optimizer step, so it is checkpointed as a custom object.
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume_from_checkpoint is not None:
        checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, output_dir)
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"Resumed from {checkpoint}: epoch {state.epoch}, step {state.global_step}.")
    unwrapped: GrokAligner = accelerator.unwrap_model(model)

    log = None
    if accelerator.is_main_process:
        if args.resume_from_checkpoint is not None:
            _keep_metrics_until(output_dir / METRICS_FILE, state.global_step)
        log = (output_dir / METRICS_FILE).open("w" if args.resume_from_checkpoint is None else "a")
    model.train()
    for epoch in range(state.epoch, args.num_train_epochs):
        train_loader.set_epoch(epoch)
        for batch in train_loader:
            outputs = model(**batch)
            accelerator.backward(outputs.loss)
            if args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state.global_step += 1
            stats = torch.stack([outputs.loss.detach(), outputs.image_std.mean(), outputs.biomarker_std.mean()])
            loss, image_std, biomarker_std = accelerator.reduce(stats, reduction="mean").tolist()
            record = {
                "step": state.global_step,
                "epoch": epoch + 1,
                "loss": loss,
                "image_std": image_std,
                "biomarker_std": biomarker_std,
                "temperature": unwrapped.temperature,
                "lr": scheduler.get_last_lr()[0],
            }
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if state.global_step % args.logging_steps == 0:
                accelerator.print(
                    f"step {state.global_step}/{total_steps} epoch {epoch + 1} loss {loss:.4f} "
                    f"image_std {image_std:.4f} biomarker_std {biomarker_std:.4f} lr {record['lr']:.2e}"
                )
        metrics = validation_cosine(unwrapped, eval_loader, accelerator)
        state.epoch = epoch + 1
        name = f"{CHECKPOINT_PREFIX}{state.global_step}"
        if state.best_metric is None or metrics["val_cosine"] > state.best_metric:
            state.best_metric, state.best_checkpoint = metrics["val_cosine"], name
        if log is not None:  # before the checkpoint, so that each checkpoint's records are all in the log
            log.write(json.dumps({"step": state.global_step, "epoch": epoch + 1, **metrics}) + "\n")
            log.flush()
        _save_checkpoint(accelerator, output_dir, name, state, args.save_total_limit)
        accelerator.print(
            f"epoch {epoch + 1}/{args.num_train_epochs}: val_cosine {metrics['val_cosine']:.4f} "
            f"(mismatched {metrics['val_cosine_mismatched']:.4f}), best {state.best_metric:.4f} at {state.best_checkpoint}"
        )
    if log is not None:
        log.close()

    best = output_dir / state.best_checkpoint
    accelerator.load_state(str(best))
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir)
        _export_tower(unwrapped, output_dir / OCT_TOWER_DIR)
    accelerator.wait_for_everyone()
    return AlignmentResult(
        output_dir=output_dir,
        oct_tower_dir=output_dir / OCT_TOWER_DIR,
        initial_oct_tower_dir=output_dir / INITIAL_OCT_TOWER_DIR,
        best_checkpoint=best,
        best_metric=float(state.best_metric),
        global_step=state.global_step,
        seconds=time.perf_counter() - started,
    )


def _save_checkpoint(accelerator, output_dir: Path, name: str, state: AlignmentState, keep: int) -> None:
    """``accelerator.save_state`` into a temporary folder, renamed into place once complete; then the oldest
    checkpoints beyond ``keep`` (never the best one) are removed."""
    tmp = output_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "alignment_state.json").write_text(json.dumps(state.state_dict(), indent=2) + "\n")
        _replace_dir(tmp, output_dir / name)
        stale = [p for p in list_checkpoints(output_dir) if p.name not in (name, state.best_checkpoint)]
        for path in stale[: max(len(stale) - (keep - 1), 0)]:
            shutil.rmtree(path)
    accelerator.wait_for_everyone()
