"""GrokForConditionalGeneration on tiny random configs: round trips, generation, modality cases, errors."""

import pytest
import torch

from modeling_grok import GrokConfig, GrokForConditionalGeneration
from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor


@pytest.fixture(scope="module")
def parts():
    return tiny_model_and_processor()


def _inputs(processor, samples, seeds=None, **kwargs):
    """Chat-formatted inputs for (with_cfp, with_oct) samples; sample i's images use seeds[i]."""
    seeds = range(len(samples)) if seeds is None else seeds
    texts = [processor.apply_chat_template(messages(c, o), add_generation_prompt=True, tokenize=False) for c, o in samples]
    images = [
        [img for img, keep in ((fundus_image(seed=seed), c), (oct_image(seed=seed), o)) if keep]
        for seed, (c, o) in zip(seeds, samples)
    ]
    return processor(text=texts, images=images, return_tensors="pt", padding=True, **kwargs)


def test_save_load_round_trip_is_exact(parts, tmp_path):
    model, processor = parts
    inputs = _inputs(processor, [(True, True)])
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = GrokForConditionalGeneration.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(generated, reloaded.generate(**inputs, max_new_tokens=8, do_sample=False))


def test_auto_classes_resolve_grok(parts, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    model, processor = parts
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "GrokConfig"
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), GrokForConditionalGeneration)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), GrokForConditionalGeneration)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert (loaded.cfp_num_tokens, loaded.oct_token_id) == (processor.cfp_num_tokens, processor.oct_token_id)


def test_greedy_generation_same_with_and_without_cache(parts):
    model, processor = parts
    inputs = _inputs(processor, [(True, True)])
    with_cache = model.generate(**inputs, max_new_tokens=10, do_sample=False, use_cache=True)
    without = model.generate(**inputs, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


def test_batched_left_padded_generation_equals_one_by_one(parts):
    model, processor = parts
    processor.tokenizer.padding_side = "left"
    samples = [(True, True), (False, True), (True, False), (False, False)]
    batch = _inputs(processor, samples)
    batched = model.generate(**batch, max_new_tokens=6, do_sample=False)
    for i, sample in enumerate(samples):
        single = _inputs(processor, [sample], seeds=[i])
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)
        assert torch.equal(batched[i, -6:], alone[0, -6:]), sample


@pytest.mark.parametrize("with_cfp,with_oct", [(True, True), (True, False), (False, True), (False, False)])
def test_each_modality_case_runs_and_uses_its_images(parts, with_cfp, with_oct):
    model, processor = parts
    inputs = _inputs(processor, [(with_cfp, with_oct)])
    assert ("pixel_values_cfp" in inputs) == with_cfp and ("pixel_values_oct" in inputs) == with_oct
    with torch.no_grad():
        logits = model(**inputs).logits
        if with_cfp:  # another fundus changes the output: the image reaches the LM
            other = dict(inputs, pixel_values_cfp=torch.randn_like(inputs["pixel_values_cfp"]))
            assert not torch.allclose(logits, model(**other).logits)
    assert torch.isfinite(logits).all()


def test_oct_volume_tokens_are_the_mean_of_its_slices(parts):
    model, _ = parts
    slices = torch.randn(3, 3, 64, 64)
    volume = model.get_image_features(pixel_values_oct=slices, oct_slices_per_image=torch.tensor([3]))["oct"]
    each = model.get_image_features(pixel_values_oct=slices)["oct"]
    assert volume.shape == (1, 16, model.config.text_config.hidden_size)
    torch.testing.assert_close(volume[0], each.mean(0))


def test_token_pooling_reduces_tokens_per_image():
    model, processor = tiny_model_and_processor(tokens_per_image=4)
    features = model.get_image_features(pixel_values_cfp=torch.randn(2, 3, 64, 64))["cfp"]
    assert features.shape[:2] == (2, 4) and processor.cfp_num_tokens == 4
    with pytest.raises(ValueError, match="square number"):
        GrokConfig.tiny(tokens_per_image=5)


def test_loss_ignores_placeholder_positions(parts):
    model, processor = parts
    inputs = _inputs(processor, [(True, True)])
    labels = inputs["input_ids"].clone()
    loss = model(**inputs, labels=labels).loss
    masked = labels.masked_fill((labels == processor.cfp_token_id) | (labels == processor.oct_token_id), -100)
    assert torch.allclose(loss, model(**inputs, labels=masked).loss)


def test_placeholder_and_image_count_mismatch_is_a_clear_error(parts):
    model, processor = parts
    inputs = _inputs(processor, [(True, True)])
    with pytest.raises(ValueError, match="CFP placeholders and images do not match"):
        model(input_ids=inputs["input_ids"], pixel_values_oct=inputs["pixel_values_oct"])
    no_images = _inputs(processor, [(False, False)])
    with pytest.raises(ValueError, match="OCT placeholders and images do not match"):
        model(input_ids=no_images["input_ids"], pixel_values_oct=inputs["pixel_values_oct"])


def test_wrong_pixel_shape_is_a_clear_error(parts):
    model, processor = parts
    inputs = _inputs(processor, [(True, False)])
    with pytest.raises(ValueError, match=r"pixel_values_cfp must have shape \(num_images, 3, 64, 64\)"):
        model(input_ids=inputs["input_ids"], pixel_values_cfp=torch.randn(1, 3, 32, 32))


def test_text_config_must_be_a_causal_lm():
    with pytest.raises(ValueError, match="causal language model"):
        GrokConfig.tiny(text_config={"model_type": "vit"})


def test_paper_preset_matches_the_paper():
    config = GrokConfig.paper()
    assert config.text_config.hidden_size == 3584 and config.text_config.num_hidden_layers == 28
    for modality in ("cfp", "oct"):
        assert config.num_image_tokens(modality) == 196
        assert config.tower_config(modality)["embed_dim"] == 1024 and config.tower_config(modality)["depth"] == 24
    assert config.projector_type == "mlp2x_gelu"


def test_paper_preset_has_the_published_sizes_and_the_recipes_lora():
    from peft import get_peft_model

    from grok_retina.training import grok_lora_config

    with torch.device("meta"):  # shapes only: 8.3B parameters, no memory
        model = GrokForConditionalGeneration(GrokConfig.paper())
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model.model.language_model) + count(model.lm_head) == 7_615_616_512  # Qwen2-7B-Instruct
    assert count(model.model.cfp_tower) == count(model.model.oct_tower) == 303_301_632  # ViT-L/16, no head
    lora = get_peft_model(model, grok_lora_config(model))  # r 128 on every linear layer of the LM, nothing else
    text = model.config.text_config
    hidden, mlp = text.hidden_size, text.intermediate_size
    kv = text.num_key_value_heads * hidden // text.num_attention_heads
    per_layer = 128 * ((hidden + hidden) * 2 + (hidden + kv) * 2 + (hidden + mlp) * 3)  # q o, k v, gate up down
    lora_params = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    assert lora_params == text.num_hidden_layers * per_layer


@pytest.fixture(scope="module")
def biomarker_parts():
    return tiny_model_and_processor(num_biomarker_tokens=3)


def _biomarker_inputs(processor, biomarkers):
    text = processor.apply_chat_template(messages(True, True, with_biomarkers=True), add_generation_prompt=True, tokenize=False)
    return processor(text=[text] * len(biomarkers), images=[[fundus_image(), oct_image()]] * len(biomarkers),
                     biomarkers=biomarkers, return_tensors="pt", padding=True)


def test_biomarker_tokens_carry_the_vector_to_the_lm(biomarker_parts):
    model, processor = biomarker_parts
    inputs = _biomarker_inputs(processor, [{"central_subfield": 270.0, "cup_to_disc_ratio": 0.4}, {"central_subfield": 420.0}])
    assert int((inputs["input_ids"] == model.config.biomarker_token_id).sum()) == 2 * 3
    with torch.no_grad():
        output = model(**inputs)
    assert output.biomarker_hidden_states.shape == (2, 3, model.config.text_config.hidden_size)
    assert torch.isfinite(output.logits).all()  # missing values (NaN) take the learned missing value
    assert not torch.allclose(output.logits[0], output.logits[1])  # only the biomarkers differ between the rows
    labels = inputs["input_ids"].clone()
    masked = labels.masked_fill(labels == model.config.biomarker_token_id, -100)
    with torch.no_grad():
        assert torch.allclose(model(**inputs, labels=labels).loss, model(**inputs, labels=masked).loss)


def test_biomarker_generation_same_with_and_without_cache_and_after_reload(biomarker_parts, tmp_path):
    model, processor = biomarker_parts
    inputs = _biomarker_inputs(processor, [{"central_subfield": 300.0}])
    with_cache = model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=True)
    assert torch.equal(with_cache, model.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = GrokForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.config.biomarker_center == model.config.biomarker_center
    assert torch.equal(with_cache, reloaded.generate(**inputs, max_new_tokens=8, do_sample=False))


def test_biomarker_values_and_placeholders_must_match(biomarker_parts, parts):
    model, processor = biomarker_parts
    inputs = _biomarker_inputs(processor, [{"central_subfield": 300.0}])
    without_values = {k: v for k, v in inputs.items() if k != "biomarker_values"}
    with pytest.raises(ValueError, match="Biomarker placeholders and values do not match"):
        model(**without_values)
    with pytest.raises(ValueError, match=r"biomarker_values must have shape \(batch, 37\)"):
        model(**dict(inputs, biomarker_values=torch.zeros(1, 5)))
    text_only_model, text_only_processor = parts
    plain = _inputs(text_only_processor, [(True, True)])
    with pytest.raises(ValueError, match="no biomarker projector"):
        text_only_model(**plain, biomarker_values=torch.zeros(1, 37))
