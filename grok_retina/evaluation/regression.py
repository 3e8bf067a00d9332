"""Biomarker regression metrics (MAE, RMSE, R²) per target and overall; the one implementation, shared
by the benchmark and the Stage II linear probe.

Missing targets (NaN) are left out of that target's metrics. Overall MAE and RMSE pool every present
(sample, target) error, in the targets' own units; overall R² is the unweighted mean of the per-target R²
(scikit-learn's ``multioutput="uniform_average"``) over targets where it is defined. R² is undefined
(``None``) for a target with fewer than two present values or zero variance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def regression_metrics(predictions, targets, names: Sequence[str] | None = None) -> dict:
    """``{"overall": {"mae", "rmse", "r2", "n"}, "per_target": {name: {"mae", "rmse", "r2", "n"}}}``.

    ``predictions`` and ``targets`` are ``(n_samples, n_targets)`` (or ``(n_samples,)``) array-likes;
    ``names`` labels the targets (default ``"target_0"``, ...). Predictions must be finite.
    """
    pred = np.asarray(predictions, dtype=float)
    true = np.asarray(targets, dtype=float)
    if pred.ndim == 1 and true.ndim == 1:
        pred, true = pred[:, None], true[:, None]
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(
            f"predictions {pred.shape} and targets {true.shape} must have the same (n_samples, n_targets) shape."
        )
    if not np.isfinite(pred).all():
        raise ValueError("predictions contain NaN or inf; every predicted value must be finite.")
    names = list(names) if names is not None else [f"target_{j}" for j in range(pred.shape[1])]
    if len(names) != pred.shape[1]:
        raise ValueError(
            f"names has {len(names)} entries but there are {pred.shape[1]} targets; give one name per column."
        )
    present = np.isfinite(true)
    errors = np.where(present, pred - np.nan_to_num(true), np.nan)
    per_target: dict[str, dict] = {}
    for j, name in enumerate(names):
        err, y = errors[present[:, j], j], true[present[:, j], j]
        if err.size == 0:
            per_target[name] = {"mae": None, "rmse": None, "r2": None, "n": 0}
            continue
        ss_tot = float(((y - y.mean()) ** 2).sum())
        per_target[name] = {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "r2": 1.0 - float((err**2).sum()) / ss_tot if y.size > 1 and ss_tot > 0 else None,
            "n": int(err.size),
        }
    pooled = errors[present]
    r2s = [row["r2"] for row in per_target.values() if row["r2"] is not None]
    overall = {
        "mae": float(np.abs(pooled).mean()) if pooled.size else None,
        "rmse": float(np.sqrt((pooled**2).mean())) if pooled.size else None,
        "r2": float(np.mean(r2s)) if r2s else None,
        "n": int(pooled.size),
    }
    return {"overall": overall, "per_target": per_target}
