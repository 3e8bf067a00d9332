"""Stage II benchmark: a ridge linear probe of the biomarkers on frozen OCT-tower embeddings.

Embeddings are the mean of the tower's final patch tokens (`GrokAligner.encode_oct`). Per biomarker, features
and target are standardised on the training rows, the ridge penalty is chosen from `ALPHAS` on a held-out
fifth of them (by mean squared error) and the probe is refit on all of them; rows missing that biomarker
are left out. Metrics come from `grok_retina.evaluation.regression.regression_metrics`: per biomarker in its
own unit, overall pooled in those units, and overall in *normal-range SD units* (each biomarker divided by
a quarter of its schema normal range, so every biomarker weighs the same).
"""

from __future__ import annotations

import json

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from grok_retina.alignment import OCTPairDataset
from grok_retina.evaluation.regression import regression_metrics
from modeling_grok.modeling_aligner import mean_patch_embedding
from modeling_grok.modeling_grok import GrokVisionTower

# Ridge penalties relative to the number of rows (features standardised): from almost none to very strong.
ALPHAS: tuple[float, ...] = tuple(float(a) for a in 10.0 ** np.arange(-5.0, 2.5, 0.5))


@torch.no_grad()
def embed_oct(tower: GrokVisionTower, dataset: Dataset, batch_size: int = 256) -> np.ndarray:
    """(N, D) float64 mean patch-token embeddings of ``dataset``'s ``pixel_values`` through the frozen tower."""
    tower.eval()
    dtype = tower.vit.patch_embed.proj.weight.dtype
    chunks = [
        mean_patch_embedding(tower, batch["pixel_values"].to(dtype)).double().numpy()
        for batch in DataLoader(dataset, batch_size=batch_size)
    ]
    return np.concatenate(chunks)


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Ridge weights (len(alphas), D, T) of standardised ``x`` (N, D) on centred ``y`` (N, T), penalty alpha * N."""
    eigenvalues, vectors = np.linalg.eigh(x.T @ x / len(x))
    projected = vectors.T @ (x.T @ y / len(x))
    return np.stack([vectors @ (projected / (np.clip(eigenvalues, 0, None) + a)[:, None]) for a in alphas])


@dataclass
class RidgeProbe:
    """A linear map from embeddings to biomarkers in their units: ``x @ weight + bias``; ``alpha`` per target."""

    weight: np.ndarray  # (D, T)
    bias: np.ndarray  # (T,)
    alpha: np.ndarray  # (T,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.weight + self.bias


def fit_ridge_probe(
    x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS, val_fraction: float = 0.2, seed: int = 0
) -> RidgeProbe:
    """Closed-form ridge per target of ``y`` (N, T; NaN = missing) on ``x`` (N, D), alpha chosen per target on a
    random ``val_fraction`` of the rows, then refit on all rows with that target."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x {x.shape} and y {y.shape} must be (N, D) and (N, T) with the same N.")
    is_val = np.zeros(len(x), dtype=bool)
    is_val[np.random.default_rng(seed).permutation(len(x))[: int(round(val_fraction * len(x)))]] = True
    weight, bias = np.zeros((x.shape[1], y.shape[1])), np.full(y.shape[1], np.nan)
    chosen = np.full(y.shape[1], np.nan)
    groups: dict[bytes, list[int]] = defaultdict(list)  # targets with the same missing rows share one solve
    for j in range(y.shape[1]):
        groups[np.isfinite(y[:, j]).tobytes()].append(j)
    for key, targets in groups.items():
        rows = np.frombuffer(key, dtype=bool)
        fit, val = rows & ~is_val, rows & is_val
        if fit.sum() < 2 or val.sum() < 1:
            raise ValueError(f"Too few rows with targets {targets} to fit and validate a probe ({rows.sum()} present).")
        errors = _val_errors(x[fit], y[fit][:, targets], x[val], y[val][:, targets], alphas)
        best = np.asarray(alphas)[errors.argmin(axis=0)]
        for alpha in np.unique(best):
            subset = [t for t, a in zip(targets, best) if a == alpha]
            w, b = _fit(x[rows], y[rows][:, subset], alpha)
            weight[:, subset], bias[subset], chosen[subset] = w, b, alpha
    return RidgeProbe(weight, bias, chosen)


def _standardise(x: np.ndarray, y: np.ndarray):
    x_mean, x_std = x.mean(0), x.std(0)
    x_std = np.where(x_std > 1e-12, x_std, 1.0)
    y_mean, y_std = y.mean(0), y.std(0)
    y_std = np.where(y_std > 1e-12, y_std, 1.0)
    return (x - x_mean) / x_std, (y - y_mean) / y_std, (x_mean, x_std, y_mean, y_std)


def _val_errors(x_fit, y_fit, x_val, y_val, alphas) -> np.ndarray:
    """Validation MSE (len(alphas), T) in standardised target units."""
    xs, ys, (x_mean, x_std, y_mean, y_std) = _standardise(x_fit, y_fit)
    path = _ridge_path(xs, ys, alphas)
    pred = ((x_val - x_mean) / x_std) @ path  # (A, N_val, T)
    return (((pred - (y_val - y_mean) / y_std) ** 2).mean(axis=1))


def _fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit weight (D, T) and bias (T,) of one ridge solve on standardised data."""
    xs, ys, (x_mean, x_std, y_mean, y_std) = _standardise(x, y)
    coef = _ridge_path(xs, ys, [alpha])[0]
    weight = coef / x_std[:, None] * y_std
    return weight, y_mean - x_mean @ weight


def probe_metrics(
    predictions: np.ndarray, targets: np.ndarray, names: Sequence[str], center: Sequence[float], scale: Sequence[float]
) -> dict:
    """`regression_metrics` in the biomarkers' units, plus ``overall_normalised`` in normal-range SD units."""
    center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    raw = regression_metrics(predictions, targets, names)
    normalised = regression_metrics((predictions - center) / scale, (np.asarray(targets) - center) / scale, names)
    return {"overall": raw["overall"], "overall_normalised": normalised["overall"], "per_target": raw["per_target"]}


def compare_towers(
    towers: Mapping[str, GrokVisionTower],
    train: OCTPairDataset,
    test: OCTPairDataset,
    names: Sequence[str],
    center: Sequence[float],
    scale: Sequence[float],
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Probe every tower (fit on ``train``, scored on ``test``). With an ``aligned`` and an ``unaligned``
    tower, ``mae_reduction`` is ``1 - aligned MAE / unaligned MAE``."""
    y_train = train.pairs.biomarkers.double().numpy()
    y_test = test.pairs.biomarkers.double().numpy()
    results: dict = {"biomarkers": list(names), "n_train": len(train), "n_test": len(test), "towers": {}}
    for label, tower in towers.items():
        probe = fit_ridge_probe(embed_oct(tower, train, batch_size), y_train, seed=seed)
        metrics = probe_metrics(probe.predict(embed_oct(tower, test, batch_size)), y_test, names, center, scale)
        metrics["alpha"] = dict(zip(names, probe.alpha.tolist()))
        results["towers"][label] = metrics
    if {"aligned", "unaligned"} <= results["towers"].keys():
        aligned, unaligned = results["towers"]["aligned"], results["towers"]["unaligned"]
        results["mae_reduction"] = {
            key: 1.0 - aligned[key]["mae"] / unaligned[key]["mae"] for key in ("overall", "overall_normalised")
        }
    return results


def resolve_tower_dirs(aligned: str | os.PathLike, unaligned: str | os.PathLike | None) -> tuple[Path, Path]:
    """The aligned tower folder and the baseline: ``aligned`` may be an alignment output folder (its
    ``oct_tower``; the baseline defaults to its ``initial_oct_tower``) or a tower folder itself."""
    from grok_retina.alignment import INITIAL_OCT_TOWER_DIR, OCT_TOWER_DIR

    aligned = Path(aligned)
    root = aligned if (aligned / OCT_TOWER_DIR).is_dir() else None
    tower = aligned / OCT_TOWER_DIR if root is not None else aligned
    if unaligned is None:
        if root is None or not (root / INITIAL_OCT_TOWER_DIR).is_dir():
            raise ValueError(
                f"No unaligned baseline next to {aligned}: pass unaligned= (the tower's initialisation: an "
                "initial_oct_tower folder or the RETFound checkpoint it started from)."
            )
        unaligned = root / INITIAL_OCT_TOWER_DIR
    return tower, Path(unaligned)


def probe_aligned_vs_unaligned(
    aligned: str | os.PathLike,
    unaligned: str | os.PathLike | None,
    train_dataset,
    test_dataset,
    names: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    unaligned_format: str = "auto",
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Probe the aligned OCT tower against the same tower unaligned on GROK datasets (ridge fit on
    ``train_dataset``, scored on ``test_dataset``); ``names`` default to the aligner's (or the schema's OCT)."""
    from grok_retina.alignment import prepare_oct_pairs
    from modeling_grok.configuration_aligner import GrokAlignerConfig, schema_normalisation
    from modeling_grok.image_processing_grok import GrokOCTImageProcessor
    from modeling_grok.modeling_aligner import load_oct_tower, load_oct_vision_config

    tower_dir, baseline = resolve_tower_dirs(aligned, unaligned)
    aligner_config = Path(aligned) / "config.json"
    if aligner_config.is_file() and names is None:
        config = GrokAlignerConfig.from_pretrained(aligned)
        names, center, scale = config.biomarker_names, config.biomarker_center, config.biomarker_scale
    else:
        from processing.biomarkers import OCT_BIOMARKER_NAMES

        names = list(names or OCT_BIOMARKER_NAMES)
        center, scale = schema_normalisation(names)
    tower_config = load_oct_vision_config(tower_dir)
    towers = {
        "unaligned": load_oct_tower(baseline, tower_config, checkpoint_format=unaligned_format),
        "aligned": load_oct_tower(tower_dir, tower_config),
    }
    processor = GrokOCTImageProcessor(size=int(tower_config["img_size"]))
    train, test = (
        OCTPairDataset(prepare_oct_pairs(ds, processor.size, names, cache_dir), processor.image_mean, processor.image_std)
        for ds in (train_dataset, test_dataset)
    )
    results = compare_towers(towers, train, test, names, center, scale, batch_size=batch_size, seed=seed)
    results["towers_from"] = {"aligned": str(tower_dir), "unaligned": str(baseline)}
    return results


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_probe_table(results: dict) -> str:
    """A markdown table: overall rows, then MAE / RMSE / R² per biomarker for each probed tower."""
    from processing.biomarkers import BIOMARKERS_BY_NAME

    labels = list(results["towers"])
    head = ["biomarker", "unit"] + [f"{m} {label}" for m in ("MAE", "RMSE", "R²") for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, unit: str, metrics: list[dict]) -> str:
        cells = [_fmt(m[key]) for key in ("mae", "rmse", "r2") for m in metrics]
        return "| " + " | ".join([name, unit, *cells]) + " |"

    towers = [results["towers"][label] for label in labels]
    lines.append(row("**overall**", "normal SD", [t["overall_normalised"] for t in towers]))
    lines.append(row("**overall (pooled)**", "biomarker units", [t["overall"] for t in towers]))
    for name in results["biomarkers"]:
        spec = BIOMARKERS_BY_NAME.get(name)
        lines.append(row(name, spec.unit if spec else "", [t["per_target"][name] for t in towers]))
    summary = [
        f"Ridge probe fit on {results['n_train']} pairs, scored on {results['n_test']} held-out pairs.",
        *(f"MAE reduction ({key}): {value:.1%}" for key, value in results.get("mae_reduction", {}).items()),
    ]
    return "\n".join(lines + [""] + summary)


__all__ = [
    "ALPHAS",
    "RidgeProbe",
    "compare_towers",
    "embed_oct",
    "fit_ridge_probe",
    "format_probe_table",
    "save_probe_results",
    "probe_aligned_vs_unaligned",
    "probe_metrics",
    "resolve_tower_dirs",
]


def save_probe_results(results: dict, output: str | os.PathLike) -> Path:
    """Write the probe ``results`` as JSON (atomically), print the table, and return the file."""
    from .evaluation.report import atomic_write_text

    output = atomic_write_text(output, json.dumps(results, indent=2) + "\n")
    print(format_probe_table(results))
    print(f"Probe results saved to {output}.")
    return output
