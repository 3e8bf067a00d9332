"""recipes/sft_grok.py end to end on CPU: merge, resume, adapter == merged, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import PeftModel

from grok_retina.prompts import build_student_messages
from modeling_grok import GrokForConditionalGeneration, GrokProcessor
from processing.biomarkers import BIOMARKERS
from recipes import sft_grok
from tests.tiny_components import fundus_image, oct_image, tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A saved tiny GROK and a Stage-I-format dataset (prompt, completion, images) of 16 rows."""
    root = tmp_path_factory.mktemp("sft")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    rows = {"prompt": [], "completion": [], "images": []}
    for i in range(16):
        values = {b.name: (b.normal[0] if i % 2 else b.normal[1]) for b in BIOMARKERS[:3]}
        rows["prompt"].append(build_student_messages(values, has_cfp=True, has_oct=True))
        rows["completion"].append([{"role": "assistant", "content": [{"type": "text", "text": f"Conclusion: {'Normal' if i % 2 else 'Glaucoma'}."}]}])
        rows["images"].append([fundus_image(seed=i), oct_image(seed=i)])
    Dataset.from_dict(rows).save_to_disk(root / "data")
    return root


def _args(ws, out, *extra):
    return [
        "--model_name_or_path", str(ws / "base"), "--dataset_name", str(ws / "data"), "--output_dir", str(out),
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--projector_lr", "1e-3",
        "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true", "--seed", "0",
        "--save_strategy", "steps", "--save_steps", "3", "--max_length", "null", "--dataloader_num_workers", "0",
        *extra,
    ]


def _losses(out):
    state = json.loads(max(Path(out).glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])).read_text())
    return state["global_step"], {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


def test_lora_recipe_merges_keeps_towers_and_matches_adapter(workspace, tmp_path):
    out = tmp_path / "lora"
    sft_grok.main(_args(workspace, out, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--max_steps", "3"))
    base = GrokForConditionalGeneration.from_pretrained(workspace / "base").eval()
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(out / "final").eval()
    for key, value in base.state_dict().items():
        if "_tower." in key:
            assert torch.equal(merged.state_dict()[key], value), key
    changed = [k for k, v in base.state_dict().items() if not torch.equal(merged.state_dict()[k], v)]
    assert changed and all(".language_model." in k or "_projector." in k for k in changed)
    adapter = PeftModel.from_pretrained(GrokForConditionalGeneration.from_pretrained(workspace / "base"), out / "checkpoint-3").eval()
    processor = GrokProcessor.from_pretrained(out / "final")
    row = Dataset.load_from_disk(workspace / "data")[0]
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[row["images"]], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapter(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_resume_continues_step_count_and_loss_curve(workspace, tmp_path):
    """A 6-step run checkpointed at step 3, resumed from that checkpoint, repeats steps 4-6 exactly."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    sft_grok.main(_args(workspace, full, "--max_steps", "6"))
    sft_grok.main(_args(workspace, resumed, "--max_steps", "6", "--resume_from_checkpoint", str(full / "checkpoint-3")))
    step_full, losses_full = _losses(full)
    step_resumed, losses_resumed = _losses(resumed)
    assert step_full == step_resumed == 6
    assert sorted(losses_resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert losses_resumed[step] == pytest.approx(losses_full[step], rel=1e-4), step


@pytest.mark.slow
def test_two_processes_end_with_the_same_weights(workspace, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/configs/accelerate_cpu_2proc.yaml"),
        str(ROOT / "recipes/sft_grok.py"), *_args(workspace, out, "--max_steps", "3", "--write_rank_checksums", "true",
                                               "--per_device_train_batch_size", "2"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    checksums = [(out / f"rank{r}_checksum.txt").read_text() for r in (0, 1)]
    assert checksums[0] == checksums[1]
    assert (out / "final" / "model.safetensors").is_file()


def test_a_missing_train_split_is_named(tmp_path):
    from datasets import DatasetDict
    from trl import ScriptArguments

    from grok_retina.sft import load_sft_dataset

    DatasetDict(train=Dataset.from_dict({"prompt": ["p"]})).save_to_disk(tmp_path / "data")
    args = ScriptArguments(dataset_name=str(tmp_path / "data"), dataset_train_split="training")
    with pytest.raises(ValueError, match=r"no split 'training' to train on; it has \['train'\].*--dataset_train_split"):
        load_sft_dataset(args)
