"""Retinal vessel trees of the fundus phantom: branching from the optic disc, calibre and tortuosity set exactly.

Each tree (arteries and veins, 4 each: superotemporal and inferotemporal arcades curving around the macula,
superonasal and inferonasal branches) is a chain of *segments* between branch points. At a branch the
segment continues as a major child and sheds a minor one, with calibres splitting by Murray's law
(parent^3 = major^3 + minor^3). Conventions the measurements can rely on:

- **calibre**: an artery's width is ``av_ratio`` times the width of a vein with the same branch history
  (the trunks leaving the disc are 150 µm wide for veins);
- **tortuosity**: every segment's arc length / chord length (of the drawn centre line) equals the
  arterial or venular tortuosity, the wiggle having zero offset and slope at branch points;
- **fractal dimension**: a denser, deeper branching for higher values (monotone, not calibrated to a
  box-counting estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VEIN_TRUNK_UM = 150.0
MAJOR_SHARE = 0.9  # major child / parent calibre; the minor child follows from Murray's law
MINOR_SHARE = (1.0 - MAJOR_SHARE**3) ** (1.0 / 3.0)
MIN_CALIBRE_PX = 0.7
POINTS_PER_SEGMENT = 17
WIGGLE_PERIOD_PX = 60.0  # about one S-bend per this much length
TURN_DECAY = 0.75  # trunk curvature fades segment by segment: the arcades bend round the macula, then run on


@dataclass
class VesselTree:
    """Centre lines (n_segments, POINTS_PER_SEGMENT, 2) as (x, y) pixels, calibres (px) and generations."""

    points: np.ndarray
    calibre: np.ndarray
    generation: np.ndarray

    def tortuosity(self) -> np.ndarray:
        """Arc length / chord length of each segment."""
        arc = np.linalg.norm(np.diff(self.points, axis=1), axis=2).sum(axis=1)
        return arc / np.linalg.norm(self.points[:, -1] - self.points[:, 0], axis=1)


def _primaries(nasal: float) -> list[tuple[float, float, float, int]]:
    """(heading in degrees with y down, turn in degrees per mm, segment length in mm, segments) of the 4
    trunks: ST and IT arcades curving around the macula, SN and IN branches; ``nasal`` = -1 mirrors x."""
    trunks = [(-95.0, -40.0, 0.6, 10), (95.0, 40.0, 0.6, 10), (-55.0, 4.0, 0.7, 6), (55.0, -4.0, 0.7, 6)]
    if nasal < 0:  # mirror x: heading h -> 180 - h, turning reverses
        trunks = [(180.0 - h, -t, s, n) for h, t, s, n in trunks]
    return trunks


def grow_tree(
    start: tuple[float, float],
    disc_radius_px: float,
    nasal: float,
    trunk_calibre_px: float,
    tortuosity: float,
    fractal_dimension: float,
    um_per_px: float,
    inside,
    rng: np.random.Generator,
) -> VesselTree:
    """One vessel type's tree from ``start`` (px), leaving the disc straight over ``disc_radius_px``.
    ``inside(x, y)`` says whether a point is in the field of view.

    Each trunk is a chain of segments; at each branch point a minor branch leaves with probability
    ``branch_p`` and grows a shorter chain that branches again, up to ``generations`` levels: both rise
    with the fractal dimension.
    """
    mm = 1000.0 / um_per_px  # px per mm
    generations = int(round(np.interp(fractal_dimension, (1.25, 1.5), (2, 4))))
    branch_p = float(np.interp(fractal_dimension, (1.25, 1.5), (0.55, 0.9)))
    uniform = iter(rng.random(8192).tolist())  # scalar draws from a buffer: far faster than rng calls
    normal = iter(rng.standard_normal(4096).tolist())
    segments: list[
        tuple[float, float, float, float, float, float, int]
    ] = []  # x, y, heading, turn, length, calibre, gen

    def grow(x, y, heading, turn, length, calibre, gen, steps):
        for _ in range(steps):
            if calibre < MIN_CALIBRE_PX or not inside(x, y):
                return
            segments.append((x, y, heading, turn, length, calibre, gen))
            end = heading + turn * length
            if abs(turn) > 1e-9:
                x, y = x + (math.sin(end) - math.sin(heading)) / turn, y - (math.cos(end) - math.cos(heading)) / turn
            else:
                x, y = x + length * math.cos(heading), y + length * math.sin(heading)
            heading = end + math.radians(4.0 * next(normal))
            if gen < generations and next(uniform) < branch_p:
                side = 1.0 if next(uniform) < 0.5 else -1.0
                angle = side * math.radians(35.0 + 30.0 * next(uniform))
                grow(x, y, heading + angle, turn * (0.6 * next(uniform) - 0.3),
                     length * (0.6 + 0.2 * next(uniform)), calibre * MINOR_SHARE, gen + 1, 2)  # fmt: skip
            calibre *= MAJOR_SHARE
            turn *= TURN_DECAY
            length *= 0.9 + 0.15 * next(uniform)

    for heading, turn, length, steps in _primaries(nasal):
        heading = math.radians(heading + 6.0 * next(normal))
        # a straight first stretch across the disc, then the trunk bends (arcades) and branches
        segments.append((start[0], start[1], heading, 0.0, disc_radius_px, trunk_calibre_px, 0))
        x, y = start[0] + disc_radius_px * math.cos(heading), start[1] + disc_radius_px * math.sin(heading)
        grow(
            x,
            y,
            heading,
            math.radians(turn) / mm,
            length * mm * (0.9 + 0.3 * next(uniform)),
            trunk_calibre_px,
            0,
            steps,
        )

    seg = np.array(segments, dtype=np.float64).reshape(-1, 7)
    points = _wiggle(seg[:, 0:2], seg[:, 2], seg[:, 3], seg[:, 4], tortuosity)
    return VesselTree(points=points, calibre=seg[:, 5], generation=seg[:, 6].astype(int))


def _straight_ratio_table(max_k: int = 8, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Arc/chord of a straight polyline wiggled by ``a * L * shape_k(t)``, for a grid of relative amplitudes a."""
    t = np.linspace(0.0, 1.0, POINTS_PER_SEGMENT)
    amplitude = np.linspace(0.0, 1.5, n) ** 2  # denser at small amplitudes
    ratios = []
    for k in range(1, max_k + 1):
        wiggle = np.sin(2.0 * np.pi * k * t) * np.sin(np.pi * t)
        dy = np.diff(amplitude[:, None] * wiggle[None], axis=1)
        ratios.append(np.sqrt(np.diff(t) ** 2 + dy**2).sum(axis=1))
    return amplitude, np.stack(ratios)


_AMPLITUDE, _RATIO = _straight_ratio_table()


def _wiggle(
    start: np.ndarray, heading: np.ndarray, turn: np.ndarray, length: np.ndarray, tortuosity: float
) -> np.ndarray:
    """Centre lines of circular-arc segments plus a perpendicular wiggle ``A sin(2 pi k t) sin(pi t)``.

    The wiggle keeps the end points, so the chord is the base arc's; its arc length is the base length times
    the straight-line ratio of `_straight_ratio_table` (the curvature term averages out to first order), whose
    inverse gives the amplitude for arc/chord = ``tortuosity`` (or none where the base arc alone exceeds it).
    """
    t = np.linspace(0.0, 1.0, POINTS_PER_SEGMENT)
    s = length[:, None] * t[None]
    theta = heading[:, None] + turn[:, None] * s
    straight = np.abs(turn) < 1e-9
    safe = np.where(straight, 1.0, turn)[:, None]
    x = np.where(straight[:, None], s * np.cos(theta), (np.sin(theta) - np.sin(heading)[:, None]) / safe)
    y = np.where(straight[:, None], s * np.sin(theta), -(np.cos(theta) - np.cos(heading)[:, None]) / safe)
    base = start[:, None, :] + np.stack([x, y], axis=-1)
    chord = np.linalg.norm(base[:, -1] - base[:, 0], axis=1)
    arc = np.linalg.norm(np.diff(base, axis=1), axis=2).sum(axis=1)
    needed = tortuosity * chord / arc  # the straight-line ratio the wiggle must add
    k = np.clip(np.round(length / WIGGLE_PERIOD_PX), 1, len(_RATIO)).astype(int)
    relative = np.zeros(len(length))
    for j in np.unique(k):
        relative[k == j] = np.interp(needed[k == j], _RATIO[j - 1], _AMPLITUDE)
    shape = np.sin(2.0 * np.pi * k[:, None] * t[None]) * np.sin(np.pi * t[None])
    normal = np.stack([-np.sin(theta), np.cos(theta)], axis=-1)
    return base + ((relative * length)[:, None] * shape)[..., None] * normal
