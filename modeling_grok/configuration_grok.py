"""GROK configuration: a causal-LM text config and two timm ViT towers (CFP: RetiZero, OCT: RETFound)."""

from __future__ import annotations

import math
from typing import Literal

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

# RETFound (MAE / DINOv2) and RetiZero are ViT-L/16 at 224 px: 196 patch tokens of width 1024.
VIT_LARGE_PATCH16_224 = {
    "architecture": "vit_large_patch16_224",
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "mlp_ratio": 4.0,
}

# A 2-block ViT for tests and CPU runs: 64 px, 16 px patches -> 16 tokens.
VIT_TINY_TEST = {
    "architecture": "vit_tiny_patch16_224",
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}

# Qwen2-7B-Instruct's text config (config.json of Qwen/Qwen2-7B-Instruct).
QWEN2_7B_INSTRUCT = {
    "model_type": "qwen2",
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}

QWEN2_TINY_TEST = {
    "model_type": "qwen2",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}

MODALITIES = ("cfp", "oct")


class GrokConfig(PretrainedConfig):
    r"""Configuration of a [`GrokForConditionalGeneration`], composed like `LlavaConfig`.

    Args:
        text_config: any causal-LM config (default: Qwen2).
        cfp_vision_config / oct_vision_config: a timm architecture name (`architecture`) plus the kwargs of
            `timm.create_model` (`img_size`, `patch_size`, `embed_dim`, `depth`, `num_heads`, ...).
        projector_type: `"mlp2x_gelu"` (LLaVA-1.5's two-layer MLP) or `"linear"`.
        vision_feature_layer: which ViT block's output feeds the LLM (`-1` = last).
        vision_feature_norm: apply the tower's final LayerNorm to the chosen block's output.
        vision_feature_select_strategy: `"patch"` drops the CLS/register tokens, `"full"` keeps them.
        tokens_per_image: average-pool the patch grid to this many tokens (a square, e.g. 196 -> 49);
            `None` keeps every token.
        cfp_token_id / oct_token_id: ids of the placeholder tokens the processor expands per image.
        oct_volume_reduction: how the slices of one OCT volume are combined (`"mean"` of their tokens).
        num_biomarker_tokens: `0` (the paper's model) reads the biomarkers only as prompt text; `k > 0` also feeds
            the biomarker vector, normalised and with a learned value for missing entries, through an `mlp2x_gelu`
            projector into `k` LM tokens at the `<biomarkers>` placeholder.
        biomarker_names / biomarker_center / biomarker_scale: that vector's entries in order and their
            normalisation ``(x - center) / scale``, required with biomarker tokens
            (`grok_retina.sft.biomarker_token_config` gives the schema's 37, centred on the middle of each normal
            range, scaled by a quarter of its width); stored so a saved model is self-describing.
        biomarker_token_id: id of the `<biomarkers>` placeholder token.
    """

    model_type = "grok"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    text_config: dict | PretrainedConfig | None = None
    cfp_vision_config: dict | None = None
    oct_vision_config: dict | None = None
    projector_type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    projector_bias: bool = True
    vision_feature_layer: int = -1
    vision_feature_norm: bool = True
    vision_feature_select_strategy: Literal["patch", "full"] = "patch"
    tokens_per_image: int | None = None
    cfp_token_id: int = 0
    oct_token_id: int = 1
    oct_volume_reduction: Literal["mean"] = "mean"
    num_biomarker_tokens: int = 0
    biomarker_names: list[str] | None = None
    biomarker_center: list[float] | None = None
    biomarker_scale: list[float] | None = None
    biomarker_token_id: int = 2
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        text_type = getattr(self.text_config, "model_type", None)
        if text_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ValueError(
                f"text_config must be a causal language model's config; model_type {text_type!r} is not one "
                "(use e.g. a Qwen2, Llama or SmolLM2 config, or AutoConfig.from_pretrained of a causal LM)."
            )
        self.cfp_vision_config = {**VIT_LARGE_PATCH16_224, **(self.cfp_vision_config or {})}
        self.oct_vision_config = {**VIT_LARGE_PATCH16_224, **(self.oct_vision_config or {})}
        if self.projector_type not in ("mlp2x_gelu", "linear"):
            raise ValueError(f"projector_type must be 'mlp2x_gelu' or 'linear', got {self.projector_type!r}.")
        for modality in MODALITIES:
            grid = self.patch_grid(modality)
            if self.tokens_per_image is not None:
                side = math.isqrt(self.tokens_per_image)
                if side * side != self.tokens_per_image or not 0 < side <= grid:
                    raise ValueError(
                        f"tokens_per_image={self.tokens_per_image} must be a square number no larger than the "
                        f"{modality} tower's {grid}x{grid} patch grid (e.g. {grid * grid}, {(grid // 2) ** 2})."
                    )
        if self.num_biomarker_tokens < 0:
            raise ValueError(f"num_biomarker_tokens must be 0 (biomarkers as text only) or more, got {self.num_biomarker_tokens}.")
        if self.num_biomarker_tokens:
            vectors = (self.biomarker_names, self.biomarker_center, self.biomarker_scale)
            if any(v is None for v in vectors) or not len(vectors[0]) == len(vectors[1]) == len(vectors[2]) > 0:
                raise ValueError(
                    "num_biomarker_tokens > 0 needs biomarker_names, biomarker_center and biomarker_scale, one value "
                    "per biomarker; grok_retina.sft.biomarker_token_config(k) gives the schema's."
                )
            if min(self.biomarker_scale) <= 0:
                raise ValueError("biomarker_scale must be positive for every biomarker (a typical SD of each).")
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    def tower_config(self, modality: str) -> dict:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        return self.cfp_vision_config if modality == "cfp" else self.oct_vision_config

    def patch_grid(self, modality: str) -> int:
        """Patches per side of the tower's input image."""
        vision = self.tower_config(modality)
        return int(vision["img_size"]) // int(vision["patch_size"])

    def image_size(self, modality: str) -> int:
        return int(self.tower_config(modality)["img_size"])

    def num_image_tokens(self, modality: str) -> int:
        """Placeholder tokens per image of ``modality`` in the LLM's input."""
        if self.tokens_per_image is not None:
            return self.tokens_per_image
        grid = self.patch_grid(modality)
        prefix = 0 if self.vision_feature_select_strategy == "patch" else 1
        return grid * grid + prefix

    def placeholder_kinds(self) -> tuple[str, ...]:
        """The placeholders this model fills: the image modalities, and ``"biomarkers"`` with biomarker tokens."""
        return (*MODALITIES, "biomarkers") if self.num_biomarker_tokens else MODALITIES

    def token_id(self, kind: str) -> int:
        """The placeholder token id of ``kind``: an image modality (``"cfp"``, ``"oct"``) or ``"biomarkers"``."""
        return {"cfp": self.cfp_token_id, "oct": self.oct_token_id, "biomarkers": self.biomarker_token_id}[kind]

    @classmethod
    def paper(cls, **kwargs) -> "GrokConfig":
        """The GROK paper's model: Qwen2-7B-Instruct with RetiZero and RETFound ViT-L/16 towers."""
        return cls(text_config=dict(QWEN2_7B_INSTRUCT), cfp_vision_config=dict(VIT_LARGE_PATCH16_224),
                   oct_vision_config=dict(VIT_LARGE_PATCH16_224), **kwargs)

    @classmethod
    def tiny(cls, **kwargs) -> "GrokConfig":
        """A few-hundred-thousand-parameter GROK for tests and CPU runs."""
        kwargs.setdefault("text_config", dict(QWEN2_TINY_TEST))
        return cls(cfp_vision_config=dict(VIT_TINY_TEST), oct_vision_config=dict(VIT_TINY_TEST), **kwargs)


__all__ = ["GrokConfig"]
