"""RETFound (MAE, DINOv2) and RetiZero (LoRA-ViT) checkpoints, written locally in their real formats."""

import copy

import pytest
import timm
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from modeling_grok import GrokConfig, GrokForConditionalGeneration, GrokProcessor
from modeling_grok.component_loading import load_vision_tower_state_dict
from modeling_grok.configuration_grok import QWEN2_TINY_TEST, VIT_TINY_TEST
from modeling_grok.modeling_grok import GrokVisionTower
from tests.tiny_components import fundus_image, messages, oct_image, tiny_tokenizer


def _source_vit(img_size=64):
    torch.manual_seed(1)
    kwargs = {k: v for k, v in VIT_TINY_TEST.items() if k != "architecture"} | {"img_size": img_size}
    return timm.create_model(VIT_TINY_TEST["architecture"], pretrained=False, num_classes=0, **kwargs).eval()


def _features(vit, pixels):
    with torch.no_grad():
        return vit.forward_intermediates(pixels, indices=[-1], norm=True, output_fmt="NLC", intermediates_only=True)[0]


def _tower():
    torch.manual_seed(2)
    return GrokVisionTower(VIT_TINY_TEST).eval()


@pytest.mark.parametrize("variant", [{}, {"global_pool": "avg"}, {"reg_tokens": 2}])
@pytest.mark.parametrize("layer,norm,keep_prefix", [(-1, True, False), (-1, True, True), (1, True, False), (-1, False, False)])
def test_tower_tokens_match_timm_forward_intermediates(variant, layer, norm, keep_prefix):
    """The last-block fast path (`forward_features`) gives what `forward_intermediates` gives, prefix tokens
    (CLS, registers) in front, with either final norm (a ViT with an avg-pool head norms in `fc_norm`)."""
    torch.manual_seed(3)
    tower = GrokVisionTower(VIT_TINY_TEST | variant).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = tower.vit.forward_intermediates(
            pixels, indices=[layer], norm=norm, output_fmt="NLC", intermediates_only=True,
            return_prefix_tokens=keep_prefix,
        )[0]
        if keep_prefix:
            expected = torch.cat([expected[1], expected[0]], dim=1)
        tokens = tower(pixels, layer=layer, norm=norm, keep_prefix=keep_prefix)
    prefix = tower.vit.num_prefix_tokens if keep_prefix else 0
    assert tokens.shape == (2, 16 + prefix, 32)
    torch.testing.assert_close(tokens, expected)


def test_retfound_mae_checkpoint(tmp_path):
    source = _source_vit()
    state = source.state_dict() | {"decoder_embed.weight": torch.randn(8, 32), "mask_token": torch.zeros(1, 1, 8)}
    torch.save({"model": state, "epoch": 3}, tmp_path / "RETFound_oct_weights.pth")
    tower = _tower()
    report = load_vision_tower_state_dict(tmp_path, tower.vit)
    assert "decoder_embed.weight" in report["unexpected"]
    pixels = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tower(pixels), _features(source, pixels))


def test_retfound_dinov2_teacher_checkpoint_with_renames(tmp_path):
    source = _source_vit()
    teacher = {}
    for key, value in source.state_dict().items():
        key = key.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
        teacher[f"backbone.{key}"] = value
    teacher["backbone.mask_token"] = torch.zeros(1, 32)
    torch.save({"teacher": teacher}, tmp_path / "RETFound_dinov2_meh.pth")
    tower = _tower()
    load_vision_tower_state_dict(tmp_path / "RETFound_dinov2_meh.pth", tower.vit, checkpoint_format="retfound")
    pixels = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tower(pixels), _features(source, pixels))


class _LoRAQKV(torch.nn.Module):
    """RetiZero's LoRA-ViT wrapper of `attn.qkv`: q and v get an unscaled low-rank update."""

    def __init__(self, qkv, rank=8):
        super().__init__()
        self.qkv, dim = qkv, qkv.in_features
        self.linear_a_q, self.linear_b_q = torch.nn.Linear(dim, rank, bias=False), torch.nn.Linear(rank, dim, bias=False)
        self.linear_a_v, self.linear_b_v = torch.nn.Linear(dim, rank, bias=False), torch.nn.Linear(rank, dim, bias=False)
        for layer in (self.linear_b_q, self.linear_b_v):
            torch.nn.init.normal_(layer.weight, std=0.5)  # non-zero, so merging matters

    def forward(self, x):
        out = self.qkv(x)
        dim = self.qkv.in_features
        return torch.cat([out[..., :dim] + self.linear_b_q(self.linear_a_q(x)), out[..., dim:-dim],
                          out[..., -dim:] + self.linear_b_v(self.linear_a_v(x))], dim=-1)


def test_retizero_lora_checkpoint_is_merged(tmp_path):
    source = copy.deepcopy(_source_vit())
    for block in source.blocks:
        block.attn.qkv = _LoRAQKV(block.attn.qkv)
    wrapped = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}
    torch.save(wrapped, tmp_path / "RetiZero.pth")
    tower = _tower()
    load_vision_tower_state_dict(tmp_path / "RetiZero.pth", tower.vit)  # format detected from the LoRA keys
    pixels = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tower(pixels), _features(source, pixels), atol=1e-5, rtol=1e-4)


def test_position_embeddings_are_interpolated_for_another_image_size(tmp_path):
    torch.save({"model": _source_vit(img_size=48).state_dict()}, tmp_path / "small.pth")
    tower = _tower()
    load_vision_tower_state_dict(tmp_path / "small.pth", tower.vit)
    assert tower.vit.pos_embed.shape[1] == 1 + 16
    assert tower(torch.randn(1, 3, 64, 64)).shape == (1, 16, 32)


def test_mismatched_tower_config_is_a_clear_error(tmp_path):
    torch.save({"model": _source_vit().state_dict()}, tmp_path / "c.pth")
    wide = GrokVisionTower(VIT_TINY_TEST | {"embed_dim": 48})
    with pytest.raises(ValueError, match="does not match"):
        load_vision_tower_state_dict(tmp_path / "c.pth", wide.vit)


def test_from_components_local_paths(tmp_path):
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in QWEN2_TINY_TEST.items() if k != "model_type"}))
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    source = _source_vit()
    torch.save({"model": source.state_dict()}, tmp_path / "retfound.pth")
    model = GrokForConditionalGeneration.from_components(
        text_model=tmp_path / "lm",
        oct_encoder=tmp_path / "retfound.pth",
        cfp_vision_config=VIT_TINY_TEST,
        oct_vision_config=VIT_TINY_TEST,
    ).eval()
    pixels = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model.model.oct_tower(pixels), _features(source, pixels))
    torch.testing.assert_close(model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    processor = GrokProcessor.from_config(tokenizer, model.config)
    assert (processor.cfp_token_id, processor.oct_token_id) == (model.config.cfp_token_id, model.config.oct_token_id)
    text = processor.apply_chat_template(messages(True, True), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[fundus_image(), oct_image()]], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 3
