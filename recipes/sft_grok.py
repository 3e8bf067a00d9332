"""Stage III: supervised fine-tuning of GROK with TRL's SFTTrainer and PEFT LoRA.

    grok-retina sft --config recipes/configs/sft_tiny.yaml --dataset_name outputs/instruct/dataset
    accelerate launch --config_file recipes/configs/accelerate_ddp.yaml recipes/sft_grok.py \
        --config recipes/configs/sft_paper.yaml --dataset_name ...
"""

from __future__ import annotations

from trl import ModelConfig, ScriptArguments, TrlParser

from grok_retina.sft import GrokComponentArguments, run_sft
from grok_retina.training import GrokSFTConfig


def main(argv: list[str] | None = None) -> int:
    parser = TrlParser((ScriptArguments, GrokSFTConfig, ModelConfig, GrokComponentArguments))
    script_args, training_args, model_args, components = parser.parse_args_and_config(args=argv)
    final = run_sft(script_args, training_args, model_args, components)
    print(f"Merged GROK saved to {final} (load with AutoModelForImageTextToText.from_pretrained).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
