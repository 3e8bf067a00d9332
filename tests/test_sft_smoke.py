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


def test_biomarker_projector_trains_from_the_datasets_biomarkers_column(tmp_path):
    model, processor = tiny_model_and_processor(num_biomarker_tokens=2)
    model.freeze_vision_towers()
    name = processor.biomarker_names[0]
    dataset = _dataset().map(
        lambda r, i: {"prompt": messages(True, True, with_biomarkers=True), "biomarkers": {name: 250.0 + 10 * i}},
        with_indices=True,
    )
    peft_model = get_peft_model(model, grok_lora_config(model, r=4, alpha=8))
    before = peft_model.base_model.model.model.biomarker_projector.modules_to_save["default"].linear_1.weight.detach().clone()
    args = GrokSFTConfig(  # remove_unused_columns keeps its default: the trainer must keep the biomarkers column
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3, projector_lr=1e-3,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, max_length=None, dataloader_num_workers=0,
    )
    trainer = GrokSFTTrainer(model=peft_model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    merged = peft_model.merge_and_unload()
    assert not torch.equal(merged.model.biomarker_projector.linear_1.weight, before)
    assert trainable_parameter_report(peft_model)["projectors"] > 0
