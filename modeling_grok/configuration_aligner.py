"""Configuration of the Stage II OCT-biomarker aligner (GROK's OCT tower + a biomarker encoder, CLIP-style)."""

from __future__ import annotations

from transformers import PretrainedConfig

from .configuration_grok import VIT_LARGE_PATCH16_224


def schema_normalisation(names: list[str]) -> tuple[list[float], list[float]]:
    """Centre (mid of the normal range) and scale (a quarter of its width, ~1 SD) of each schema biomarker."""
    from processing.biomarkers import get_biomarker

    centers, scales = [], []
    for name in names:
        low, high = get_biomarker(name).normal
        centers.append((low + high) / 2.0)
        scales.append((high - low) / 4.0)
    return centers, scales


class GrokAlignerConfig(PretrainedConfig):
    r"""Configuration of a [`GrokAligner`].

    Args:
        oct_vision_config: the OCT tower as in [`GrokConfig`]: a timm `architecture` plus `timm.create_model`
            kwargs (default RETFound's ViT-L/16 at 224 px).
        biomarker_names: the biomarker vector's entries, in order (default: the schema's 31 OCT biomarkers).
        biomarker_center / biomarker_scale: per-biomarker normalisation, ``(x - center) / scale`` (default from
            the schema: mid of the normal range and a quarter of its width); stored so a saved aligner is
            self-describing.
        projection_dim: width of the shared embedding space.
        hidden_dim: width of the MLP heads' hidden layers.
        biomarker_layers: hidden layers of the biomarker MLP (each Linear-BatchNorm-ReLU).
        temperature: NT-Xent / InfoNCE temperature (paper: 0.5); the initial value when learned.
        learn_temperature: learn the temperature (as CLIP's log-scale, capped at 100).
        initializer_range: std of the heads' initial weights.
    """

    model_type = "grok_aligner"

    oct_vision_config: dict | None = None
    biomarker_names: list[str] | None = None
    biomarker_center: list[float] | None = None
    biomarker_scale: list[float] | None = None
    projection_dim: int = 128
    hidden_dim: int = 512
    biomarker_layers: int = 2
    temperature: float = 0.5
    learn_temperature: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.oct_vision_config = {**VIT_LARGE_PATCH16_224, **(self.oct_vision_config or {})}
        if self.biomarker_names is None:
            from processing.biomarkers import OCT_BIOMARKER_NAMES

            self.biomarker_names = list(OCT_BIOMARKER_NAMES)
        self.biomarker_names = list(self.biomarker_names)
        if not self.biomarker_names or len(set(self.biomarker_names)) != len(self.biomarker_names):
            raise ValueError("biomarker_names must be a non-empty list of distinct biomarker names.")
        if self.biomarker_center is None or self.biomarker_scale is None:
            centers, scales = schema_normalisation(self.biomarker_names)
            self.biomarker_center = self.biomarker_center or centers
            self.biomarker_scale = self.biomarker_scale or scales
        for field in ("biomarker_center", "biomarker_scale"):
            values = [float(v) for v in getattr(self, field)]
            if len(values) != len(self.biomarker_names):
                raise ValueError(
                    f"{field} has {len(values)} entries but biomarker_names has {len(self.biomarker_names)}; "
                    "give one value per biomarker (or leave both None to take them from the schema)."
                )
            setattr(self, field, values)
        if min(self.biomarker_scale) <= 0:
            raise ValueError("biomarker_scale must be positive for every biomarker (a typical SD of each).")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature} (paper: 0.5).")
        if self.projection_dim < 1 or self.hidden_dim < 1 or self.biomarker_layers < 1:
            raise ValueError("projection_dim, hidden_dim and biomarker_layers must be at least 1.")

    @property
    def num_biomarkers(self) -> int:
        return len(self.biomarker_names)


__all__ = ["GrokAlignerConfig"]
