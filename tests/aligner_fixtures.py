"""Synthetic OCT / biomarker pairs for the Stage II tests: two bright bands whose depth, thickness and gap
follow three latent factors that also drive the 31 OCT biomarkers (so an image tells its biomarkers)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from grok_retina.alignment import OCTPairDataset, OCTPairs
from modeling_grok.configuration_aligner import GrokAlignerConfig
from modeling_grok.image_processing_grok import IMAGENET_MEAN, IMAGENET_STD

# 32 px, 8 px patches -> 16 tokens of width 32: a tower that trains in seconds.
VIT_ALIGN_TEST = {
    "architecture": "vit_tiny_patch16_224",
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}


def tiny_aligner_config(**kwargs) -> GrokAlignerConfig:
    kwargs = {"oct_vision_config": VIT_ALIGN_TEST, "projection_dim": 16, "hidden_dim": 32, **kwargs}
    return GrokAlignerConfig(**kwargs)


def _factors_and_biomarkers(n: int, seed: int, missing: float) -> tuple[np.ndarray, np.ndarray]:
    config = tiny_aligner_config()
    loadings = np.random.default_rng(1234).normal(size=(3, config.num_biomarkers))
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    z = factors @ loadings / np.sqrt(3) + 0.1 * rng.normal(size=(n, config.num_biomarkers))
    biomarkers = np.asarray(config.biomarker_center) + np.asarray(config.biomarker_scale) * z
    biomarkers[rng.random(biomarkers.shape) < missing] = np.nan
    return factors, biomarkers.astype(np.float32)


def band_scan(factors: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) grayscale in [0, 1]: two soft horizontal bands set by the three factors, plus noise."""
    rows = np.arange(size, dtype=np.float64)[:, None]

    def band(top: float, bottom: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(rows - top))) / (1 + np.exp(bottom - rows))

    top = size * (0.3 + 0.06 * factors[0])
    bottom = top + size * (0.12 + 0.04 * factors[1])
    second = bottom + size * (0.15 + 0.04 * factors[2])
    profile = 0.7 * band(top, bottom) + 0.9 * band(second, second + 0.06 * size)
    return np.clip(0.05 + profile + 0.04 * rng.normal(size=(size, size)), 0.0, 1.0)


def synthetic_pairs(n: int, size: int = 32, seed: int = 0, missing: float = 0.0) -> OCTPairs:
    factors, biomarkers = _factors_and_biomarkers(n, seed, missing)
    rng = np.random.default_rng(seed + 1)
    scans = np.stack([band_scan(f, size, rng) for f in factors])
    return OCTPairs(torch.from_numpy(scans).half(), torch.from_numpy(biomarkers))


def synthetic_dataset(n: int, size: int = 32, seed: int = 0, missing: float = 0.0) -> OCTPairDataset:
    return OCTPairDataset(synthetic_pairs(n, size, seed, missing), IMAGENET_MEAN, IMAGENET_STD)


def synthetic_grok_rows(n: int, seed: int = 0, height: int = 48, width: int = 64) -> list[dict]:
    """Rows of the GROK dataset schema (PIL images) with the same band model, for recipe-level tests."""
    from processing.biomarkers import BIOMARKER_NAMES

    config = tiny_aligner_config()
    factors, biomarkers = _factors_and_biomarkers(n, seed, 0.0)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i in range(n):
        scan = band_scan(factors[i], height, rng)[:, np.linspace(0, height - 1, width).astype(int)]
        values = dict(zip(config.biomarker_names, biomarkers[i].tolist()))
        rows.append({
            "id": f"syn-{seed}-{i}",
            "patient_id": f"syn-{seed}-p{i // 2}",
            "eye": "OD" if i % 2 == 0 else "OS",
            "cfp": Image.new("RGB", (32, 32)),
            "oct": [Image.fromarray((scan * 255).astype(np.uint8), mode="L")],
            "biomarkers": {name: values.get(name) for name in BIOMARKER_NAMES},
            "label": 0,
            "report": None,
            "oct_axial_um_per_px": 3.87,
            "oct_lateral_um_per_px": 11.7,
            "cfp_um_per_px": None,
        })  # fmt: skip
    return rows
