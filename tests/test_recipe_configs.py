"""Every YAML preset in recipes/configs parses with the recipe's own parser (no stale keys)."""

from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from grok_retina.sft import GrokComponentArguments
from grok_retina.training import GrokSFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def _parse(name, tmp_path):
    """Parse a preset here, on a CPU machine: bf16 (a GPU setting of the paper preset) is switched off."""
    parser = TrlParser((ScriptArguments, GrokSFTConfig, ModelConfig, GrokComponentArguments))
    return parser.parse_args_and_config(
        args=["--config", str(CONFIGS / name), "--dataset_name", "data", "--output_dir", str(tmp_path),
              "--bf16", "false", "--use_cpu", "true"]
    )


@pytest.mark.parametrize("name", ["sft_paper.yaml", "sft_tiny.yaml", "sft_smollm2.yaml"])
def test_sft_presets_parse(name, tmp_path):
    script, training, model, components = _parse(name, tmp_path)
    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert training.learning_rate == raw["learning_rate"] and training.projector_lr == raw["projector_lr"]
    assert components.text_model == raw["text_model"] and model.use_peft == raw["use_peft"]
    assert training.diagnosis_questions == raw.get("diagnosis_questions", False)
    assert training.train_sampling_strategy == raw.get("train_sampling_strategy", "random")
    assert training.gradient_checkpointing == raw.get("gradient_checkpointing", True)  # TRL's default: on


def test_paper_preset_is_the_papers_recipe(tmp_path):
    _, training, model, components = _parse("sft_paper.yaml", tmp_path)
    assert yaml.safe_load((CONFIGS / "sft_paper.yaml").read_text())["bf16"] is True
    assert (model.lora_r, model.lora_alpha) == (128, 256)
    assert (training.learning_rate, training.projector_lr, training.num_train_epochs) == (2e-4, 2e-5, 4)
    assert training.lr_scheduler_type == "cosine" and training.warmup_steps == pytest.approx(0.03)
    assert components.text_model == "Qwen/Qwen2-7B-Instruct" and components.towers == "vit_large"
    assert not training.diagnosis_questions  # the paper trains on reports only


@pytest.mark.parametrize("name", ["accelerate_ddp.yaml", "accelerate_fsdp.yaml", "accelerate_zero2.yaml", "accelerate_cpu_2proc.yaml"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.num_processes >= 2


def test_paper_preset_refuses_to_train_a_random_frozen_tower(tmp_path):
    """The paper preset names no CFP checkpoint (RetiZero is not on the Hub): building it without one fails, naming
    the flag, before anything is downloaded."""
    from grok_retina.sft import build_model_and_processor

    _, _, model, components = _parse("sft_paper.yaml", tmp_path)
    assert components.cfp_encoder is None and components.oct_encoder
    with pytest.raises(ValueError, match="--cfp_encoder is required with --towers vit_large"):
        build_model_and_processor(model, components)
    components.cfp_encoder, components.oct_encoder = "RetiZero.pth", None
    with pytest.raises(ValueError, match="--oct_encoder is required"):
        build_model_and_processor(model, components)
