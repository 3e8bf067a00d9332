"""GROK: two frozen timm ViT towers (CFP, OCT) whose patch tokens are projected into a causal LM (LLaVA layout)."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput

from .configuration_grok import GrokConfig

# Inputs the first (prefill) step consumes; decode steps read them from the KV cache.
MULTIMODAL_INPUT_KEYS = ("pixel_values_cfp", "pixel_values_oct", "oct_slices_per_image", "biomarker_values")


def reads_cache_only(past_key_values: Cache | None, *multimodal_inputs: torch.Tensor | None) -> bool:
    """A decode step: no images or biomarkers given, and the prompt with its placeholders already in the cache."""
    return (
        all(x is None for x in multimodal_inputs)
        and past_key_values is not None
        and past_key_values.get_seq_length() > 0
    )


@dataclass
class GrokModelOutputWithPast(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus the projected features of each image modality and of the biomarkers."""

    cfp_hidden_states: torch.FloatTensor | None = None
    oct_hidden_states: torch.FloatTensor | None = None
    biomarker_hidden_states: torch.FloatTensor | None = None


@dataclass
class GrokCausalLMOutputWithPast(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cfp_hidden_states: torch.FloatTensor | None = None
    oct_hidden_states: torch.FloatTensor | None = None
    biomarker_hidden_states: torch.FloatTensor | None = None


class GrokVisionTower(nn.Module):
    """A timm ViT returning one block's tokens: (batch, tokens, embed_dim)."""

    def __init__(self, tower_config: dict):
        super().__init__()
        kwargs = {k: v for k, v in tower_config.items() if k != "architecture"}
        self.vit = timm.create_model(tower_config["architecture"], pretrained=False, num_classes=0, **kwargs)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    def forward(self, pixel_values: torch.Tensor, layer: int = -1, norm: bool = True, keep_prefix: bool = False):
        if norm and layer in (-1, len(self.vit.blocks) - 1):  # the last block, normed: timm's plain (fastest) path
            tokens = self.vit.forward_features(pixel_values)
            return tokens if keep_prefix else tokens[:, self.vit.num_prefix_tokens :]
        (tokens,) = self.vit.forward_intermediates(
            pixel_values,
            indices=[layer],
            norm=norm,
            output_fmt="NLC",
            intermediates_only=True,
            return_prefix_tokens=keep_prefix,
        )
        if keep_prefix:
            spatial, prefix = tokens
            return torch.cat([prefix, spatial], dim=1)
        return tokens


def init_vit_tokens(module: nn.Module) -> None:
    """timm's init of a ViT's own parameters (position embedding, CLS and register tokens), which
    `PreTrainedModel._init_weights` does not cover."""
    if isinstance(module, timm.models.vision_transformer.VisionTransformer):
        init.trunc_normal_(module.pos_embed, std=0.02)
        if module.cls_token is not None:
            init.normal_(module.cls_token, std=1e-6)
        if module.reg_token is not None:
            init.normal_(module.reg_token, std=1e-6)


class GrokMultiModalProjector(nn.Module):
    """`mlp2x_gelu` (Linear-GELU-Linear, as LLaVA-1.5) or `linear` from a tower's width to the LM's."""

    def __init__(self, in_features: int, out_features: int, projector_type: str, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features, bias=bias)
        if projector_type == "mlp2x_gelu":
            self.act = nn.GELU()
            self.linear_2 = nn.Linear(out_features, out_features, bias=bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear_1(image_features)
        if hasattr(self, "linear_2"):
            hidden_states = self.linear_2(self.act(hidden_states))
        return hidden_states


def normalised_biomarkers_with_mask(
    values: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, missing_value: torch.Tensor,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 2K): ``(values - center) / scale`` with ``missing_value`` where an entry is absent (non-finite, or False
    in ``present``), then the missing mask; GROK's biomarker projector and the Stage II biomarker encoder read it."""
    present = torch.isfinite(values) if present is None else present & torch.isfinite(values)
    finite = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    normalised = (finite - center.to(values.dtype)) / scale.to(values.dtype)
    filled = torch.where(present, normalised, missing_value.to(values.dtype))
    return torch.cat([filled, (~present).to(values.dtype)], dim=-1)


class GrokBiomarkerProjector(nn.Module):
    """The biomarker vector as ``num_biomarker_tokens`` LM tokens: normalised, a learned value in missing entries,
    the missing mask appended, then `mlp2x_gelu` whose first layer fans out to one hidden vector per token."""

    def __init__(self, config: GrokConfig):
        super().__init__()
        count, hidden = len(config.biomarker_names), config.text_config.hidden_size
        self.num_tokens = config.num_biomarker_tokens
        self.register_buffer("center", torch.tensor(config.biomarker_center, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(config.biomarker_scale, dtype=torch.float32), persistent=False)
        self.missing_value = nn.Parameter(torch.zeros(count))
        self.linear_1 = nn.Linear(2 * count, self.num_tokens * hidden, bias=config.projector_bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, hidden, bias=config.projector_bias)

    def forward(self, biomarker_values: torch.Tensor) -> torch.Tensor:
        """``biomarker_values`` (batch, len(biomarker_names)) in schema units, NaN where missing ->
        (batch, num_biomarker_tokens, hidden)."""
        if biomarker_values.ndim != 2 or biomarker_values.shape[1] != self.center.shape[0]:
            raise ValueError(
                f"biomarker_values must have shape (batch, {self.center.shape[0]}), one column per entry of "
                f"config.biomarker_names, got {tuple(biomarker_values.shape)}; build it with GrokProcessor(biomarkers=...)."
            )
        values = biomarker_values.to(self.linear_1.weight.dtype)
        tokens = self.linear_1(normalised_biomarkers_with_mask(values, self.center, self.scale, self.missing_value))
        return self.linear_2(self.act(tokens.view(values.shape[0], self.num_tokens, -1)))


class GrokPreTrainedModel(PreTrainedModel):
    config: GrokConfig
    config_class = GrokConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _no_split_modules = ["GrokVisionTower"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        init_vit_tokens(module)
        if isinstance(module, GrokBiomarkerProjector):
            init.zeros_(module.missing_value)
            init.copy_(module.center, torch.tensor(self.config.biomarker_center))
            init.copy_(module.scale, torch.tensor(self.config.biomarker_scale))


class GrokModel(GrokPreTrainedModel):
    """The two towers, their projectors, the biomarker projector (when ``num_biomarker_tokens`` > 0) and the
    language model (no LM head); returns `last_hidden_state`."""

    def __init__(self, config: GrokConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.cfp_tower = GrokVisionTower(config.cfp_vision_config)
        self.oct_tower = GrokVisionTower(config.oct_vision_config)
        self.cfp_projector = GrokMultiModalProjector(
            self.cfp_tower.embed_dim, hidden, config.projector_type, config.projector_bias
        )
        self.oct_projector = GrokMultiModalProjector(
            self.oct_tower.embed_dim, hidden, config.projector_type, config.projector_bias
        )
        self.biomarker_projector = GrokBiomarkerProjector(config) if config.num_biomarker_tokens else None
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _tower_tokens(self, modality: str, pixel_values: torch.Tensor) -> torch.Tensor:
        tower = self.cfp_tower if modality == "cfp" else self.oct_tower
        size = self.config.image_size(modality)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values_{modality} must have shape (num_images, 3, {size}, {size}) for this model's "
                f"{modality.upper()} tower, got {tuple(pixel_values.shape)}; prepare images with GrokProcessor."
            )
        keep_prefix = self.config.vision_feature_select_strategy == "full"
        features = tower(
            pixel_values.to(dtype=tower.vit.patch_embed.proj.weight.dtype),
            layer=self.config.vision_feature_layer,
            norm=self.config.vision_feature_norm,
            keep_prefix=keep_prefix,
        )
        tokens = self.config.tokens_per_image
        if tokens is not None and not keep_prefix and tokens != features.shape[1]:
            grid = self.config.patch_grid(modality)
            side = int(tokens**0.5)
            grid_features = features.transpose(1, 2).reshape(features.shape[0], -1, grid, grid)
            features = F.adaptive_avg_pool2d(grid_features, side).flatten(2).transpose(1, 2)
        return features

    def get_image_features(
        self,
        pixel_values_cfp: torch.Tensor | None = None,
        pixel_values_oct: torch.Tensor | None = None,
        oct_slices_per_image: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Projected tokens per image: ``{"cfp": (n_cfp, T, hidden) | None, "oct": (n_oct, T, hidden) | None}``.

        ``pixel_values_oct`` holds every B-scan of every OCT image; ``oct_slices_per_image`` says how many
        consecutive B-scans make up each image (a volume), and a volume's tokens are averaged over its slices.
        """
        features: dict[str, torch.Tensor | None] = {"cfp": None, "oct": None}
        if pixel_values_cfp is not None and pixel_values_cfp.shape[0] > 0:
            features["cfp"] = self.cfp_projector(self._tower_tokens("cfp", pixel_values_cfp))
        if pixel_values_oct is not None and pixel_values_oct.shape[0] > 0:
            projected = self.oct_projector(self._tower_tokens("oct", pixel_values_oct))
            if oct_slices_per_image is not None:
                counts = [int(c) for c in oct_slices_per_image.tolist()]
                if sum(counts) != projected.shape[0] or min(counts) < 1:
                    raise ValueError(
                        f"oct_slices_per_image {counts} must be positive and sum to the {projected.shape[0]} "
                        "B-scans in pixel_values_oct."
                    )
                if max(counts) > 1:
                    projected = torch.stack([chunk.mean(0) for chunk in projected.split(counts)])
            features["oct"] = projected
        return features

    def get_biomarker_features(self, biomarker_values: torch.Tensor | None) -> torch.Tensor | None:
        """(batch, num_biomarker_tokens, hidden) projected biomarker tokens, or None without values."""
        if biomarker_values is None:
            return None
        if self.biomarker_projector is None:
            raise ValueError(
                "biomarker_values were given but this model has no biomarker projector (config.num_biomarker_tokens "
                "is 0): its biomarkers are read from the prompt text only; leave biomarker_values out."
            )
        return self.biomarker_projector(biomarker_values)

    def get_placeholder_mask(
        self, kind: str, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor
    ) -> torch.BoolTensor:
        """Positions of ``kind``'s placeholder tokens, from ids or (without ids) from their embedding."""
        token_id = self.config.token_id(kind)
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_cfp: torch.Tensor | None = None,
        pixel_values_oct: torch.Tensor | None = None,
        oct_slices_per_image: torch.Tensor | None = None,
        biomarker_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> GrokModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        features = self.get_image_features(pixel_values_cfp, pixel_values_oct, oct_slices_per_image)
        features["biomarkers"] = self.get_biomarker_features(biomarker_values)
        decode = reads_cache_only(past_key_values, pixel_values_cfp, pixel_values_oct, biomarker_values)
        for kind in () if decode else self.config.placeholder_kinds():
            mask = self.get_placeholder_mask(kind, input_ids, inputs_embeds)
            kind_features = features[kind]
            n_tokens = int(mask.sum())
            n_features = 0 if kind_features is None else kind_features.shape[0] * kind_features.shape[1]
            if n_tokens != n_features:
                raise ValueError(self._placeholder_mismatch(kind, n_tokens, kind_features))
            if kind_features is not None:
                kind_features = kind_features.to(inputs_embeds.device, inputs_embeds.dtype)
                inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), kind_features)
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return GrokModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cfp_hidden_states=features["cfp"],
            oct_hidden_states=features["oct"],
            biomarker_hidden_states=features["biomarkers"],
        )

    def _placeholder_mismatch(self, kind: str, n_tokens: int, features: torch.Tensor | None) -> str:
        given = 0 if features is None else features.shape[0]
        if kind == "biomarkers":
            per_sample = self.config.num_biomarker_tokens
            return (
                f"Biomarker placeholders and values do not match: the text has {n_tokens} <biomarkers> tokens "
                f"({n_tokens / per_sample:g} samples of {per_sample} tokens) but biomarker_values has {given} rows. "
                "Put one {'type': 'biomarkers'} item in each sample's messages (build_student_messages does) and pass "
                "the values with GrokProcessor(biomarkers=...) or GrokDataCollator."
            )
        per_image = self.config.num_image_tokens(kind)
        return (
            f"{kind.upper()} placeholders and images do not match: the text has {n_tokens} "
            f"{kind} placeholder tokens ({n_tokens / per_image:g} images of {per_image} tokens) but "
            f"{given} {kind.upper()} images were given. Put one {{'type': 'image', 'modality': "
            f"'{kind}'}} item in the messages per image, and build inputs with GrokProcessor."
        )


class GrokForConditionalGeneration(GrokPreTrainedModel, GenerationMixin):
    """GROK with a language-modelling head: ``model`` + ``lm_head``, as `LlavaForConditionalGeneration`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: GrokConfig):
        super().__init__(config)
        self.model = GrokModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_image_features(
        self,
        pixel_values_cfp: torch.Tensor | None = None,
        pixel_values_oct: torch.Tensor | None = None,
        oct_slices_per_image: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        return self.model.get_image_features(pixel_values_cfp, pixel_values_oct, oct_slices_per_image)

    @classmethod
    def from_components(
        cls,
        text_model: str | os.PathLike | PreTrainedModel,
        cfp_encoder: str | os.PathLike | None = None,
        oct_encoder: str | os.PathLike | None = None,
        *,
        tokenizer=None,
        cfp_encoder_format: str = "auto",
        oct_encoder_format: str = "auto",
        text_model_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "GrokForConditionalGeneration":
        """Assemble GROK from a pretrained causal LM and RETFound / RetiZero / timm tower checkpoints.

        Each component is a Hub id or a local path (``text_model_kwargs`` go to
        `AutoModelForCausalLM.from_pretrained`, e.g. ``gguf_file=``); a tower left as None stays randomly
        initialised. The projectors (and the biomarker projector, with ``num_biomarker_tokens=k``) are new. The
        placeholder tokens are added to the text model's tokenizer
        (or ``tokenizer``) and the embeddings resized; build the matching processor with
        ``GrokProcessor.from_config(tokenizer, model.config)``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .component_loading import load_vision_tower_state_dict
        from .processing_grok import add_placeholder_tokens

        text_model_kwargs = dict(text_model_kwargs or {})
        if isinstance(text_model, PreTrainedModel):
            causal_lm = text_model
        else:
            causal_lm = AutoModelForCausalLM.from_pretrained(text_model, **text_model_kwargs)
            if tokenizer is None:
                gguf = {"gguf_file": text_model_kwargs["gguf_file"]} if "gguf_file" in text_model_kwargs else {}
                tokenizer = AutoTokenizer.from_pretrained(text_model, **gguf)
        if tokenizer is None:
            raise ValueError("Pass tokenizer= when text_model is an already loaded model.")
        cfp_token_id, oct_token_id, biomarker_token_id = add_placeholder_tokens(tokenizer)
        config = GrokConfig(
            text_config=causal_lm.config, cfp_token_id=cfp_token_id, oct_token_id=oct_token_id,
            biomarker_token_id=biomarker_token_id, **config_kwargs
        )
        with torch.device("meta"):
            model = cls(config)
        model.model.language_model = causal_lm.get_decoder()
        model.lm_head = causal_lm.get_output_embeddings()
        hidden = config.text_config.hidden_size
        for modality, source, checkpoint_format in (
            ("cfp", cfp_encoder, cfp_encoder_format),
            ("oct", oct_encoder, oct_encoder_format),
        ):
            tower = GrokVisionTower(config.tower_config(modality))
            if source is not None:
                load_vision_tower_state_dict(source, tower.vit, checkpoint_format=checkpoint_format)
            projector = GrokMultiModalProjector(tower.embed_dim, hidden, config.projector_type, config.projector_bias)
            projector.apply(model._init_weights)
            setattr(model.model, f"{modality}_tower", tower)
            setattr(model.model, f"{modality}_projector", projector)
        if config.num_biomarker_tokens:
            model.model.biomarker_projector = GrokBiomarkerProjector(config)
            model.model.biomarker_projector.apply(model._init_weights)
        model.resize_token_embeddings(len(tokenizer))
        if config.tie_word_embeddings:
            model.tie_weights()
        left_on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
        if left_on_meta:
            raise RuntimeError(f"from_components left weights unmaterialised: {left_on_meta[:3]}")
        return model

    def freeze_vision_towers(self) -> None:
        """Freeze both towers (GROK trains projectors and the LM's LoRA only)."""
        for tower in (self.model.cfp_tower, self.model.oct_tower):
            tower.requires_grad_(False)
            tower.eval()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_cfp: torch.Tensor | None = None,
        pixel_values_oct: torch.Tensor | None = None,
        oct_slices_per_image: torch.Tensor | None = None,
        biomarker_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> GrokCausalLMOutputWithPast:
        text_inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        if reads_cache_only(past_key_values, pixel_values_cfp, pixel_values_oct, biomarker_values):
            # a decode step has nothing to merge: the LM alone, as fast per token as the bare LM
            outputs = self.model.language_model(**text_inputs)
        else:
            outputs = self.model(
                pixel_values_cfp=pixel_values_cfp,
                pixel_values_oct=pixel_values_oct,
                oct_slices_per_image=oct_slices_per_image,
                biomarker_values=biomarker_values,
                **text_inputs,
            )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])
        loss = None
        if labels is not None:
            if input_ids is not None:  # image and biomarker positions never carry a target
                kinds = self.config.placeholder_kinds()
                placeholder_ids = torch.tensor([self.config.token_id(k) for k in kinds], device=input_ids.device)
                labels = labels.masked_fill(torch.isin(input_ids, placeholder_ids), -100)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return GrokCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cfp_hidden_states=getattr(outputs, "cfp_hidden_states", None),
            oct_hidden_states=getattr(outputs, "oct_hidden_states", None),
            biomarker_hidden_states=getattr(outputs, "biomarker_hidden_states", None),
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """Images and biomarkers are encoded on the first step only; later steps read them from the KV cache."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in MULTIMODAL_INPUT_KEYS:
                model_inputs.pop(key, None)
        return model_inputs


# generate() inspects forward's signature on every step for models registered as remote code; compute it once.
GrokForConditionalGeneration.forward.__signature__ = inspect.signature(GrokForConditionalGeneration.forward)

__all__ = ["GrokForConditionalGeneration", "GrokModel", "GrokPreTrainedModel"]
