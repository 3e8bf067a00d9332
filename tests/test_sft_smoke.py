"""A few GrokSFTTrainer + PEFT LoRA steps through TRL's own vision-language collator and GrokProcessor."""

import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from peft import get_peft_model

from grok_retina.training import GrokSFTConfig, GrokSFTTrainer, grok_lora_config, trainable_parameter_report
from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor


def _dataset(n=8):
    rows = {"prompt": [], "completion": [], "images": []}
    for i in range(n):
        label = "Glaucoma" if i % 2 else "Normal"
        rows["prompt"].append(messages(True, True))
        rows["completion"].append([{"role": "assistant", "content": [{"type": "text", "text": f"Conclusion: {label}."}]}])
        rows["images"].append([fundus_image(seed=i), oct_image(seed=i)])
    return Dataset.from_dict(rows)


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages"])
def test_sft_lora_steps_train_only_lora_and_projectors(tmp_path, fmt):
    model, processor = tiny_model_and_processor()
    model.freeze_vision_towers()
    towers_before = {k: v.clone() for k, v in model.state_dict().items() if "_tower." in k}
    projector_before = model.model.cfp_projector.linear_1.weight.detach().clone()
    dataset = _dataset()
    if fmt == "messages":
        dataset = dataset.map(lambda r: {"messages": r["prompt"] + r["completion"]}, remove_columns=["prompt", "completion"])
    peft_model = get_peft_model(model, grok_lora_config(model, r=4, alpha=8))
    report = trainable_parameter_report(peft_model)
    assert report["towers"] == 0 and report["other"] == 0 and report["lora"] > 0 and report["projectors"] > 0
    args = GrokSFTConfig(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4, learning_rate=5e-3,
        projector_lr=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        max_length=None, dataloader_num_workers=0, assistant_only_loss=(fmt == "messages"),
    )
    trainer = GrokSFTTrainer(model=peft_model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    lrs = sorted({group["initial_lr"] for group in trainer.optimizer.param_groups})
    assert lrs == [1e-3, 5e-3]
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0]
    merged = peft_model.merge_and_unload()
    for key, value in towers_before.items():
        assert torch.equal(merged.state_dict()[key], value), key
    assert not torch.equal(merged.model.cfp_projector.linear_1.weight, projector_before)
