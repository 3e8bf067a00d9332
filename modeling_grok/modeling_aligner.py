"""Stage II: contrastive alignment of GROK's OCT tower with the OCT biomarker vector (CLIP-style, NT-Xent)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from .configuration_aligner import GrokAlignerConfig
from .modeling_grok import GrokVisionTower, init_vit_tokens, normalised_biomarkers_with_mask

OCT_TOWER_WEIGHTS = "oct_tower.safetensors"
OCT_TOWER_CONFIG = "oct_vision_config.json"
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class AlignerOutput(ModelOutput):
    """Loss, L2-normalised embeddings of both modalities, image-to-biomarker logits and per-dimension stds.

    ``image_std`` / ``biomarker_std`` are the per-dimension standard deviations of the normalised embeddings
    over the batch, shape (projection_dim,): near ``1 / sqrt(projection_dim)`` when the embeddings spread over
    the sphere, near 0 when the representation collapses.
    """

    loss: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    biomarker_embeds: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    image_std: torch.FloatTensor | None = None
    biomarker_std: torch.FloatTensor | None = None


def nt_xent_loss(image_embeds: torch.Tensor, biomarker_embeds: torch.Tensor, logit_scale: torch.Tensor | float):
    """Symmetric InfoNCE (NT-Xent across modalities, as CLIP) of row-matched, L2-normalised embeddings.

    Returns ``(loss, logits_per_image)`` with ``logits = scale * image @ biomarker.T`` and ``scale = 1 / T``.
    """
    logits = logit_scale * image_embeds @ biomarker_embeds.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    return loss, logits


def mean_patch_embedding(tower: GrokVisionTower, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, D): the mean of the tower's final, normed patch tokens (the features GROK's projector sees)."""
    return tower(pixel_values).mean(dim=1)


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` x (Linear-BatchNorm1d-ReLU), then a Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    for i in range(hidden_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class GrokBiomarkerEncoder(nn.Module):
    """Normalise the biomarker vector, put a learned token in missing entries, append the mask, run an MLP."""

    def __init__(self, config: GrokAlignerConfig):
        super().__init__()
        num = config.num_biomarkers
        self.register_buffer("center", torch.tensor(config.biomarker_center, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(config.biomarker_scale, dtype=torch.float32), persistent=False)
        self.mask_token = nn.Parameter(torch.zeros(num))
        self.mlp = _mlp(2 * num, config.hidden_dim, config.projection_dim, config.biomarker_layers)

    def forward(self, biomarkers: torch.Tensor, biomarker_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``biomarkers`` (B, K) in schema units, NaN where missing; ``biomarker_mask`` (B, K) True where present."""
        if biomarkers.ndim != 2 or biomarkers.shape[1] != self.center.shape[0]:
            raise ValueError(
                f"biomarkers must have shape (batch, {self.center.shape[0]}) in the order of config.biomarker_names, "
                f"got {tuple(biomarkers.shape)}."
            )
        present = None if biomarker_mask is None else biomarker_mask.bool()
        return self.mlp(normalised_biomarkers_with_mask(biomarkers, self.center, self.scale, self.mask_token, present))


class GrokAligner(PreTrainedModel):
    """GROK's OCT tower and a biomarker encoder trained with symmetric NT-Xent (paper Stage II).

    ``oct_tower`` is a [`GrokVisionTower`]: after alignment, ``save_oct_tower`` writes its timm weights for
    ``GrokForConditionalGeneration.from_components(..., oct_encoder=path)``.
    """

    config: GrokAlignerConfig
    config_class = GrokAlignerConfig
    base_model_prefix = "aligner"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["GrokVisionTower"]

    def __init__(self, config: GrokAlignerConfig):
        super().__init__(config)
        self.oct_tower = GrokVisionTower(config.oct_vision_config)
        dim = self.oct_tower.embed_dim
        self.image_head = _mlp(dim, config.hidden_dim, config.projection_dim, hidden_layers=1)
        self.biomarker_encoder = GrokBiomarkerEncoder(config)
        logit_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.logit_scale = nn.Parameter(logit_scale)
        else:
            self.register_buffer("logit_scale", logit_scale)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        init_vit_tokens(module)
        if isinstance(module, GrokBiomarkerEncoder):
            init.zeros_(module.mask_token)
            init.copy_(module.center, torch.tensor(self.config.biomarker_center))
            init.copy_(module.scale, torch.tensor(self.config.biomarker_scale))
        elif isinstance(module, GrokAligner):
            init.constant_(module.logit_scale, math.log(1.0 / self.config.temperature))

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp())

    def encode_oct(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, D) mean patch-token embedding of the OCT tower, before the head: what the linear probe reads."""
        return mean_patch_embedding(self.oct_tower, pixel_values.to(self.oct_tower.vit.patch_embed.proj.weight.dtype))

    def get_image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, projection_dim) L2-normalised OCT embeddings."""
        return F.normalize(self.image_head(self.encode_oct(pixel_values)), dim=-1)

    def get_biomarker_embeds(self, biomarkers: torch.Tensor, biomarker_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, projection_dim) L2-normalised biomarker embeddings."""
        return F.normalize(self.biomarker_encoder(biomarkers.float(), biomarker_mask), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        biomarkers: torch.Tensor,
        biomarker_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> AlignerOutput:
        """``pixel_values`` (B, 3, S, S) from `GrokOCTImageProcessor`; ``biomarkers`` (B, K), NaN where missing."""
        if pixel_values.shape[0] != biomarkers.shape[0]:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[0]} B-scans but biomarkers has {biomarkers.shape[0]} rows; "
                "give one biomarker vector per B-scan."
            )
        image_embeds = self.get_image_embeds(pixel_values)
        biomarker_embeds = self.get_biomarker_embeds(biomarkers, biomarker_mask).to(image_embeds.dtype)
        logit_scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        loss, logits = nt_xent_loss(image_embeds, biomarker_embeds, logit_scale)
        with torch.no_grad():
            image_std = image_embeds.float().std(dim=0, unbiased=False)
            biomarker_std = biomarker_embeds.float().std(dim=0, unbiased=False)
        return AlignerOutput(
            loss=loss if return_loss else None,
            image_embeds=image_embeds,
            biomarker_embeds=biomarker_embeds,
            logits_per_image=logits,
            image_std=image_std,
            biomarker_std=biomarker_std,
        )

    def load_oct_encoder(self, name_or_path: str | os.PathLike, checkpoint_format: str = "auto") -> dict:
        """Start the OCT tower from a RETFound / timm checkpoint (file, folder or Hub id); see
        `load_vision_tower_state_dict`."""
        from .component_loading import load_vision_tower_state_dict

        return load_vision_tower_state_dict(name_or_path, self.oct_tower.vit, checkpoint_format=checkpoint_format)

    def save_oct_tower(self, path: str | os.PathLike) -> Path:
        """Write the OCT tower to the folder ``path``: `oct_tower.safetensors` (plain timm keys) and
        `oct_vision_config.json` (``GrokConfig(oct_vision_config=...)``), loadable with
        ``from_components(..., oct_encoder=path, oct_vision_config=load_oct_vision_config(path))``."""
        return save_oct_tower(self.oct_tower, self.config.oct_vision_config, path)


def save_oct_tower(tower: GrokVisionTower, tower_config: dict, path: str | os.PathLike) -> Path:
    """Write ``tower``'s timm state dict and its config to the folder ``path`` (one checkpoint file in it)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tower.vit.state_dict().items()}
    save_file(state, str(path / OCT_TOWER_WEIGHTS), metadata={"format": "pt"})
    (path / OCT_TOWER_CONFIG).write_text(json.dumps(dict(tower_config), indent=2) + "\n")
    return path


def load_oct_vision_config(path: str | os.PathLike) -> dict:
    """The tower config saved next to an aligned OCT tower (pass it as ``oct_vision_config``)."""
    file = Path(path) / OCT_TOWER_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not a folder written by GrokAligner.save_oct_tower.")
    return json.loads(file.read_text())


def load_oct_tower(path: str | os.PathLike, tower_config: dict | None = None, checkpoint_format: str = "auto"):
    """A [`GrokVisionTower`] from a `save_oct_tower` folder, or from any RETFound / timm checkpoint given its
    ``tower_config``."""
    from .component_loading import load_vision_tower_state_dict

    tower_config = tower_config if tower_config is not None else load_oct_vision_config(path)
    tower = GrokVisionTower(tower_config)
    load_vision_tower_state_dict(path, tower.vit, checkpoint_format=checkpoint_format)
    return tower.eval()


__all__ = [
    "AlignerOutput",
    "GrokAligner",
    "GrokBiomarkerEncoder",
    "load_oct_tower",
    "load_oct_vision_config",
    "mean_patch_embedding",
    "nt_xent_loss",
    "save_oct_tower",
]
