"""GrokAligner: config from the schema, NT-Xent, the missing-value mask token, std logging, and the aligned
OCT tower loading into GROK unchanged."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from modeling_grok import GrokForConditionalGeneration
from modeling_grok.component_loading import load_vision_tower_state_dict
from modeling_grok.configuration_aligner import GrokAlignerConfig
from modeling_grok.configuration_grok import QWEN2_TINY_TEST, VIT_TINY_TEST
from modeling_grok.modeling_aligner import GrokAligner, load_oct_tower, load_oct_vision_config, nt_xent_loss
from modeling_grok.modeling_grok import GrokVisionTower
from processing.biomarkers import BIOMARKERS_BY_NAME, OCT_BIOMARKER_NAMES
from tests.aligner_fixtures import VIT_ALIGN_TEST, tiny_aligner_config
from tests.tiny_components import tiny_tokenizer


def _model(seed: int = 0, **kwargs) -> GrokAligner:
    torch.manual_seed(seed)
    return GrokAligner(tiny_aligner_config(**kwargs)).eval()


def _biomarkers(config: GrokAlignerConfig, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, config.num_biomarkers))
    return torch.tensor(np.asarray(config.biomarker_center) + np.asarray(config.biomarker_scale) * z, dtype=torch.float32)


def test_config_takes_names_and_normalisation_from_the_schema_and_round_trips(tmp_path):
    config = tiny_aligner_config()
    assert config.biomarker_names == list(OCT_BIOMARKER_NAMES)
    low, high = BIOMARKERS_BY_NAME["central_subfield"].normal
    index = config.biomarker_names.index("central_subfield")
    assert config.biomarker_center[index] == pytest.approx((low + high) / 2)
    assert config.biomarker_scale[index] == pytest.approx((high - low) / 4)
    assert config.model_type == "grok_aligner" and config.temperature == 0.5 and not config.learn_temperature
    config.save_pretrained(tmp_path)
    loaded = GrokAlignerConfig.from_pretrained(tmp_path)
    assert loaded.biomarker_center == config.biomarker_center and loaded.oct_vision_config == VIT_ALIGN_TEST


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="biomarker_scale has 2 entries"):
        GrokAlignerConfig(biomarker_names=["rpe", "inl", "rnfl"], biomarker_center=[1, 2, 3], biomarker_scale=[1, 2])
    with pytest.raises(ValueError, match="temperature must be positive"):
        GrokAlignerConfig(temperature=0.0)
    with pytest.raises(ValueError, match="Unknown biomarker name 'rpe_thickness'"):
        GrokAlignerConfig(biomarker_names=["rpe_thickness"])


def test_nt_xent_matches_the_hand_computed_2x2_value():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    biomarker = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss, logits = nt_xent_loss(image, biomarker, 1 / 0.5)
    # logits = 2 * image @ biomarker.T = [[2, 1.2], [0, 1.6]]; each row / column is a 2-way softmax.
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  -log softmax of the target vs one negative
    image_to_biomarker = (softplus(1.2 - 2.0) + softplus(0.0 - 1.6)) / 2
    biomarker_to_image = (softplus(0.0 - 2.0) + softplus(1.2 - 1.6)) / 2
    torch.testing.assert_close(logits, torch.tensor([[2.0, 1.2], [0.0, 1.6]]))
    assert float(loss) == pytest.approx((image_to_biomarker + biomarker_to_image) / 2, rel=1e-6)


@pytest.mark.parametrize("learn", [False, True])
def test_forward_uses_the_configured_temperature_and_logs_embedding_stds(learn):
    model = _model(temperature=0.2, learn_temperature=learn)
    pixels, biomarkers = torch.randn(6, 3, 32, 32), _biomarkers(model.config, 6)
    out = model(pixels, biomarkers)
    expected, _ = nt_xent_loss(out.image_embeds, out.biomarker_embeds, 1 / 0.2)
    torch.testing.assert_close(out.loss, expected)
    assert model.logit_scale.requires_grad is learn
    assert out.image_std.shape == out.biomarker_std.shape == (model.config.projection_dim,)
    torch.testing.assert_close(out.image_std, out.image_embeds.std(dim=0, unbiased=False))
    torch.testing.assert_close(out.biomarker_std, out.biomarker_embeds.std(dim=0, unbiased=False))
    collapsed = model(pixels[:1].repeat(6, 1, 1, 1), biomarkers[:1].repeat(6, 1))
    assert float(collapsed.image_std.max()) < 1e-5 < float(out.image_std.mean())


def test_missing_biomarkers_use_the_mask_token():
    model = _model()
    biomarkers = _biomarkers(model.config, 4)
    mask = torch.ones_like(biomarkers, dtype=torch.bool)
    mask[:, 3] = False
    changed = biomarkers.clone()
    changed[:, 3] += 50.0
    with_nan = biomarkers.clone()
    with_nan[:, 3] = float("nan")
    reference = model.get_biomarker_embeds(biomarkers, mask)
    torch.testing.assert_close(model.get_biomarker_embeds(changed, mask), reference)
    torch.testing.assert_close(model.get_biomarker_embeds(with_nan), reference)
    assert not torch.allclose(model.get_biomarker_embeds(changed), model.get_biomarker_embeds(biomarkers))
    with torch.no_grad():
        model.biomarker_encoder.mask_token[3] += 1.0
    assert not torch.allclose(model.get_biomarker_embeds(with_nan), reference)
    assert torch.isfinite(model(torch.randn(4, 3, 32, 32), with_nan).loss)


def test_save_and_from_pretrained_keep_every_weight_and_the_normalisation(tmp_path):
    model = _model(learn_temperature=True)
    with torch.no_grad():
        model.biomarker_encoder.mask_token.normal_()
        model.logit_scale.fill_(1.3)
    model.save_pretrained(tmp_path)
    loaded = GrokAligner.from_pretrained(tmp_path).eval()
    pixels, biomarkers = torch.randn(3, 3, 32, 32), _biomarkers(model.config, 3)
    biomarkers[0, 2] = float("nan")
    torch.testing.assert_close(loaded(pixels, biomarkers).loss, model(pixels, biomarkers).loss)
    torch.testing.assert_close(loaded.biomarker_encoder.center, model.biomarker_encoder.center)


def test_aligned_tower_loads_into_grok_from_components_with_identical_features(tmp_path):
    aligner = _model(seed=3, oct_vision_config=VIT_TINY_TEST)
    with torch.no_grad():  # stand-in for training: move every tower weight away from any initialisation
        for parameter in aligner.oct_tower.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    tower_dir = aligner.save_oct_tower(tmp_path / "oct_tower")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = aligner.oct_tower(pixels)

    vit = GrokVisionTower(load_oct_vision_config(tower_dir)).eval()
    load_vision_tower_state_dict(tower_dir, vit.vit, checkpoint_format="timm")
    torch.testing.assert_close(vit(pixels), expected)

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in QWEN2_TINY_TEST.items() if k != "model_type"}))
    grok = GrokForConditionalGeneration.from_components(
        lm,
        oct_encoder=tower_dir,
        tokenizer=tiny_tokenizer(),
        cfp_vision_config=VIT_TINY_TEST,
        oct_vision_config=load_oct_vision_config(tower_dir),
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(grok.model.oct_tower(pixels), expected)
        torch.testing.assert_close(load_oct_tower(tower_dir)(pixels), expected)
        torch.testing.assert_close(aligner.encode_oct(pixels), expected.mean(dim=1))
