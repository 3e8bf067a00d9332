"""Thickness profiles along a horizontal foveal B-scan whose ETDRS-region means are exact.

The scan is centred on the fovea (x = 0 between the two middle columns). Regions follow the ETDRS grid along
the line: central |x| <= 500 µm, inner 500-1500 µm and outer 1500-3000 µm on either side. A profile is the
smoothest curve (least squared second difference on a fine knot grid, linearly interpolated to the columns)
(plus a little tension, so that the curve does not overshoot between regions) whose mean over the columns
of each region equals its target, optionally with a fixed value at the fovea. Every profile is a fixed
linear map of its targets, precomputed once per scan geometry.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solveh_banded

ETDRS_RADII_UM = (500.0, 1500.0, 3000.0)
KNOT_SPACING_UM = 40.0
TENSION = 0.02  # weight of the squared first difference against the squared second difference
RIDGE = 1e-8  # makes the roughness matrix invertible (constants are otherwise free); shapes change < 0.001 µm


class BScanProfiles:
    """Profiles for a B-scan of ``width`` columns at ``lateral_um_per_px``; ``x_um`` holds each column's position."""

    def __init__(self, width: int, lateral_um_per_px: float):
        self.x_um = (np.arange(width) + 0.5 - width / 2.0) * lateral_um_per_px
        half = max(abs(self.x_um[0]), ETDRS_RADII_UM[0])
        n_side = int(np.ceil(half / KNOT_SPACING_UM))
        knots = np.arange(-n_side, n_side + 1) * (half / n_side)  # symmetric, with a knot at x = 0
        interp = np.stack([np.interp(self.x_um, knots, np.eye(len(knots))[k]) for k in range(len(knots))], axis=1)

        d = np.abs(self.x_um)
        r0, r1, r2 = ETDRS_RADII_UM
        left, right = self.x_um < 0, self.x_um > 0
        self.regions = {
            "central": d <= r0,
            "inner_left": left & (d > r0) & (d <= r1),
            "inner_right": right & (d > r0) & (d <= r1),
            "outer_left": left & (d > r1) & (d <= r2),
            "outer_right": right & (d > r1) & (d <= r2),
        }
        empty = [name for name, mask in self.regions.items() if not mask.any()]
        if empty:
            raise ValueError(
                f"A B-scan {width} px wide at {lateral_um_per_px:g} µm/px does not reach the ETDRS regions {empty}; "
                "use a scan at least 6 mm wide."
            )
        means = np.stack([interp[mask].mean(axis=0) for mask in self.regions.values()])
        centre = np.eye(len(knots))[n_side][None]
        eye = np.eye(len(knots))
        roughness = np.diff(eye, n=2, axis=0).T @ np.diff(eye, n=2, axis=0) + TENSION * np.diff(
            eye, axis=0
        ).T @ np.diff(eye, axis=0)
        bands = np.zeros((3, len(knots)))  # upper banded storage of the pentadiagonal roughness matrix
        for offset in range(3):
            bands[2 - offset, offset:] = np.diagonal(roughness, offset)
        bands[2] += RIDGE
        self._free = interp @ self._smoothest(bands, means)  # targets: the 5 region means
        self._pinned = interp @ self._smoothest(bands, np.vstack([means, centre]))  # and the value at x = 0

    @staticmethod
    def _smoothest(roughness_bands: np.ndarray, constraints: np.ndarray) -> np.ndarray:
        """Knot values, as a linear map of the targets, minimising ``v' R v`` subject to ``C v = targets``:
        ``v = R^-1 C' (C R^-1 C')^-1 targets``, with banded solves (dense LAPACK calls of this size can stall
        for long under multi-threaded BLAS on busy machines)."""
        r_inv_ct = solveh_banded(roughness_bands, constraints.T)
        return r_inv_ct @ np.linalg.inv(constraints @ r_inv_ct)

    def profile(
        self, central: float, inner: tuple[float, float], outer: tuple[float, float], at_fovea: float | None = None
    ) -> np.ndarray:
        """Values per column (µm) with the given central mean, (left, right) inner and outer ring means and,
        when given, the value ``at_fovea`` at x = 0."""
        targets = [central, inner[0], inner[1], outer[0], outer[1]]
        if at_fovea is None:
            return self._free @ np.array(targets)
        return self._pinned @ np.array([*targets, at_fovea])
