"""Stage II: contrastive OCT-biomarker alignment of GROK's OCT tower (paper: AdamW, lr 1e-4, batch 32,
50 epochs, temperature 0.5; the best epoch by validation cosine is kept).

    grok-retina align --preset tiny --dataset phantom:6000:0 --output_dir outputs/align_tiny \\
        --also_probe phantom:1000:1
    accelerate launch --config_file recipes/configs/accelerate_ddp.yaml recipes/align_oct.py --preset paper \\
        --dataset DATA --oct_encoder RETFOUND_CHECKPOINT_OR_HUB_ID --output_dir outputs/align

Writes ``output_dir/oct_tower`` (load it into GROK with ``GrokForConditionalGeneration.from_components(...,
oct_encoder=output_dir/oct_tower, oct_vision_config=load_oct_vision_config(output_dir/oct_tower))``), the
aligner itself (``GrokAligner.from_pretrained(output_dir)``), ``initial_oct_tower`` (the baseline),
``metrics.jsonl`` and ``checkpoint-<step>`` folders (``--resume_from_checkpoint latest``). A fresh run refuses
an ``--output_dir`` holding an earlier run's checkpoints; ``--overwrite_output_dir`` deletes them instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from grok_retina.alignment import ALIGN_PRESETS, AlignmentArguments

DEFAULT_CACHE_DIR = "~/.cache/grok_retina/oct_pairs"


@dataclass
class AlignScriptArguments:
    dataset: str = field(metadata={"help": "phantom:N[:seed], a manifest, a save_to_disk folder, Parquet or a Hub id."})
    preset: Literal["paper", "tiny"] = field(default="paper", metadata={"help": "paper (ViT-L/16) or tiny (CPU)."})
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset to train on."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Validation data; default: --validation_fraction of --dataset's patients."}
    )
    eval_dataset_split: str | None = field(default=None, metadata={"help": "Split of --eval_dataset, if it has splits."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Patients held out for validation."})
    oct_encoder: str | None = field(
        default=None, metadata={"help": "RETFound checkpoint (file, folder or Hub id) to start from; default random."}
    )
    oct_encoder_format: Literal["auto", "retfound", "retizero", "timm"] = field(default="auto")
    projection_dim: int = field(default=128, metadata={"help": "Shared embedding width."})
    hidden_dim: int = field(default=512, metadata={"help": "Hidden width of the MLP heads."})
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature (paper: 0.5)."})
    learn_temperature: bool = field(default=False, metadata={"help": "Learn the temperature."})
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "Cache of the processed OCT tensors."})
    also_probe: str | None = field(
        default=None, metadata={"help": "Held-out data: after training, probe the aligned vs unaligned tower on it."}
    )
    also_probe_split: str | None = field(default=None, metadata={"help": "Split of --also_probe, if it has splits."})
    probe_output_json: str | None = field(default=None, metadata={"help": "Probe JSON (default output_dir/probe.json)."})


def parse_args(argv: list[str] | None) -> tuple[AlignScriptArguments, AlignmentArguments, dict]:
    """The two argument dataclasses, with ``--preset``'s values as defaults, and the preset's tower config."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(ALIGN_PRESETS), default="paper")
    preset = ALIGN_PRESETS[pre.parse_known_args(argv)[0].preset]
    parser = HfArgumentParser((AlignScriptArguments, AlignmentArguments))
    parser.set_defaults(**{k: v for k, v in preset.items() if k != "oct_vision_config"})
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return script_args, training_args, dict(preset["oct_vision_config"])


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState
    from transformers import set_seed

    from grok_retina.alignment import (
        OCTPairDataset,
        check_output_dir,
        load_pairs_source,
        prepare_oct_pairs,
        train_aligner,
        use_cpu,
    )
    from modeling_grok.configuration_aligner import GrokAlignerConfig
    from modeling_grok.image_processing_grok import GrokOCTImageProcessor
    from modeling_grok.modeling_aligner import GrokAligner
    from processing.grok_dataset import split_by_patient

    script_args, training_args, tower = parse_args(argv)
    check_output_dir(training_args)  # before the data work; train_aligner checks again
    distributed = PartialState(cpu=use_cpu())
    set_seed(training_args.seed)
    config = GrokAlignerConfig(
        oct_vision_config=tower,
        projection_dim=script_args.projection_dim,
        hidden_dim=script_args.hidden_dim,
        temperature=script_args.temperature,
        learn_temperature=script_args.learn_temperature,
    )
    processor = GrokOCTImageProcessor(size=int(config.oct_vision_config["img_size"]))
    cache_dir = Path(script_args.cache_dir).expanduser()
    try:
        sources = {
            "train": (script_args.dataset, script_args.dataset_split, "--dataset_split"),
            "eval": (script_args.eval_dataset, script_args.eval_dataset_split, "--eval_dataset_split"),
            "probe": (script_args.also_probe, script_args.also_probe_split, "--also_probe_split"),
        }
        with distributed.main_process_first():
            loaded = {name: load_pairs_source(*spec) for name, spec in sources.items() if spec[0] is not None}
    except (FileNotFoundError, ValueError) as error:
        print(f"grok-retina align: {error}", file=sys.stderr)
        return 2
    train_data = loaded["train"]
    if "eval" in loaded:
        eval_data = loaded["eval"]
    else:
        splits = split_by_patient(train_data, script_args.validation_fraction, seed=training_args.seed)
        train_data, eval_data = splits["train"], splits["validation"]
    with distributed.main_process_first():
        train_set, eval_set = (
            OCTPairDataset(prepare_oct_pairs(data, processor.size, config.biomarker_names, cache_dir),
                           processor.image_mean, processor.image_std)
            for data in (train_data, eval_data)
        )  # fmt: skip
    distributed.print(f"Aligning on {len(train_set)} pairs, validating on {len(eval_set)}.")

    model = GrokAligner(config)
    if script_args.oct_encoder is not None:
        model.load_oct_encoder(script_args.oct_encoder, script_args.oct_encoder_format)
    result = train_aligner(model, train_set, eval_set, training_args)
    distributed.print(
        f"Best validation cosine {result.best_metric:.4f} ({result.best_checkpoint.name}); aligned OCT tower in "
        f"{result.oct_tower_dir}; {result.seconds:.0f} s."
    )
    if script_args.also_probe is not None and distributed.is_main_process:
        from grok_retina.probe import probe_aligned_vs_unaligned, save_probe_results

        results = probe_aligned_vs_unaligned(
            result.output_dir, None, train_data, loaded["probe"], cache_dir=cache_dir
        )
        results["alignment"] = {"train_pairs": len(train_set), "best_val_cosine": result.best_metric,
                                "steps": result.global_step, "seconds": result.seconds}  # fmt: skip
        save_probe_results(results, script_args.probe_output_json or result.output_dir / "probe.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
