"""Overlays for a person to check a measurement: boundaries and fluid on the OCT; vessels, disc and cup on the CFP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from .cfp import AVR_ZONE
from .images import ImageLike, as_gray, as_rgb
from .oct_metrics import ETDRS_RADII_MM

if TYPE_CHECKING:
    from .cfp import CFPMeasurement
    from .oct import OCTMeasurement

BOUNDARY_COLOURS: dict[str, tuple[int, int, int]] = {
    "ilm": (255, 64, 64), "rnfl_gcl": (255, 160, 0), "ipl_inl": (255, 255, 0), "inl_opl": (0, 220, 0),
    "opl_onl": (0, 230, 230), "elm": (0, 128, 255), "isos": (160, 64, 255), "rpe": (255, 0, 255), "bm": (255, 255, 255),
}
FLUID_COLOURS = {1: (0, 255, 255), 2: (255, 210, 0)}  # intraretinal cyan, subretinal yellow
ARTERY, VEIN, OTHER = (230, 30, 30), (40, 90, 255), (235, 235, 235)


def _tint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)


def oct_overlay(image: ImageLike, measurement: OCTMeasurement) -> Image.Image:
    """The B-scan in RGB with the boundaries (one colour each), fluid tinted (intraretinal cyan, subretinal
    yellow), the fovea as a vertical line and the 0.5/1.5/3 mm region limits as ticks at the bottom."""
    gray = as_gray(image, "oct")
    rgb = np.repeat(gray[..., None] * 255.0, 3, axis=2)
    for kind, colour in FLUID_COLOURS.items():
        _tint(rgb, measurement.fluid.labels == kind, colour, 0.45)
    out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    height = gray.shape[0]
    for name, rows in measurement.segmentation.boundaries.items():
        x = np.flatnonzero(np.isfinite(rows))
        for run in np.split(x, np.flatnonzero(np.diff(x) > 1) + 1):
            if run.size > 1:
                draw.line(list(zip(run.tolist(), rows[run].tolist())), fill=BOUNDARY_COLOURS[name], width=1)
    fx = measurement.profile.fovea_x
    draw.line([(fx, 0), (fx, height - 1)], fill=(255, 255, 0), width=1)
    px_per_mm = 1000.0 / measurement.profile.lateral_um_per_px
    for radius in ETDRS_RADII_MM:
        for sign in (-1, 1):
            x = fx + sign * radius * px_per_mm
            draw.line([(x, height - 12), (x, height - 1)], fill=(255, 255, 0), width=2)
    label = f"fovea ({measurement.profile.fovea_method})" + (" regions on assumed 6 mm width" if measurement.profile.lateral_assumed else "")
    draw.text((4, 4), label, fill=(255, 255, 0))
    return out


def _ellipse_points(cy: float, cx: float, ry: float, rx: float, n: int = 90) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n)
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist()))


def cfp_overlay(image: ImageLike, measurement: CFPMeasurement) -> Image.Image:
    """The photograph with vessels (arteries red, veins blue, unclassified white), the disc (green) and cup
    (yellow) ellipses and the AVR measurement zone (0.5-1 disc diameter from the margin, dotted)."""
    rgb = as_rgb(image, "cfp") * 255.0
    vessels = measurement.vessels
    _tint(rgb, vessels.mask, OTHER, 0.35)
    for cls, colour in ((1, ARTERY), (2, VEIN)):
        _tint(rgb, vessels.class_map == cls, colour, 0.85)
    out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    disc = measurement.disc
    if disc is not None:
        draw.line(_ellipse_points(disc.cy, disc.cx, disc.ry, disc.rx), fill=(0, 255, 0), width=2)
        if disc.cup_ry:
            draw.line(_ellipse_points(disc.cup_cy, disc.cup_cx, disc.cup_ry, disc.cup_rx), fill=(255, 255, 0), width=2)
        for k in AVR_ZONE:
            for point in _ellipse_points(disc.cy, disc.cx, k * disc.radius, k * disc.radius, n=120)[::2]:
                draw.point(point, fill=(0, 255, 0))
    return out
