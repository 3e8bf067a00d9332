"""Colour fundus photographs rendered from a phantom subject's biomarkers.

A macula-centred 45° field (12.5 mm across the circular field of view, a bright disc on black) with:

- an orange-red background with choroidal texture, darker macula and vignetting;
- the optic disc 4.5 mm nasal to the fovea (right of it for OD, left for OS), a vertical ellipse whose
  **vertical diameter is** ``vertical_disc_diameter`` / ``um_per_px``, and a brighter cup, concentric
  vertically, whose **vertical diameter is** ``cup_to_disc_ratio`` times the disc's. Both edges are
  anti-aliased ramps centred on the true boundary (half-way intensity = the edge);
- arteries (thinner, brighter red) over veins (wider, darker) from `vessels.grow_tree`, drawn at 2x and
  averaged down so that calibres are sub-pixel exact;
- lesions by label: drusen (AMD), microaneurysms, blot haemorrhages and hard exudates (DR, more exudates
  with oedema), cotton-wool spots (DR, hypertension), all within 3.5 mm of the fovea and off the disc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from .distributions import Subject
from .vessels import VEIN_TRUNK_UM, VesselTree, grow_tree

FIELD_UM = 12500.0
FOV_RADIUS = 0.46  # field of view radius as a share of the image side
DISC_FOVEA_UM = (4500.0, -400.0)  # disc centre from the fovea: nasal, and upwards (negative y)
SUPERSAMPLE = 2

BACKGROUND_LIGHT, BACKGROUND_DARK = np.array([225.0, 105.0, 55.0]), np.array([165.0, 62.0, 32.0])
RIM_COLOUR, CUP_COLOUR = np.array([240.0, 172.0, 112.0]), np.array([252.0, 228.0, 188.0])
VEIN_TINT, ARTERY_TINT = np.array([0.5, 0.3, 0.42]), np.array([0.8, 0.5, 0.55])  # multiply the background
FAINT_CALIBRE_PX = 4.0  # thinner vessels lose contrast in proportion, down to 30 %
MACULA_DARKENING = np.array([0.3, 0.42, 0.38])
DISC_EDGE_PX, CUP_EDGE_PX = 2.0, 3.0  # widths of the anti-aliased edge ramps

# kind -> (blend, colour or tint, softness); "add" brightens by colour, "multiply" tints.
LESIONS = {
    "druse": ("add", np.array([55.0, 48.0, 8.0]), "soft"),
    "microaneurysm": ("multiply", np.array([0.55, 0.32, 0.45]), "sharp"),
    "haemorrhage": ("multiply", np.array([0.6, 0.35, 0.45]), "soft"),
    "exudate": ("add", np.array([55.0, 60.0, 15.0]), "sharp"),
    "cotton_wool": ("add", np.array([35.0, 45.0, 45.0]), "soft"),
}


@dataclass
class CFPScene:
    """The random geometry of one fundus photo (pixels, x right and y down, pixel centres at +0.5)."""

    fovea: tuple[float, float]
    disc_centre: tuple[float, float]
    disc_radii: tuple[float, float]  # (horizontal, vertical)
    cup_radii: tuple[float, float]
    cup_centre: tuple[float, float]
    arteries: VesselTree
    veins: VesselTree
    lesions: list[tuple[str, float, float, float]] = field(default_factory=list)  # kind, x, y, radius
    background: np.ndarray = field(default_factory=lambda: BACKGROUND_LIGHT.copy())
    brightness: float = 1.0


class CFPRenderer:
    """Draws ``size`` x ``size`` fundus photos; ``seed`` fixes the texture and noise banks scenes are cut from."""

    def __init__(self, size: int = 512, seed: int = 0):
        self.size = int(size)
        self.radius = FOV_RADIUS * self.size
        self.um_per_px = FIELD_UM / (2.0 * self.radius)
        c = self.size / 2.0
        coords = np.arange(self.size, dtype=np.float32) + 0.5 - c
        r = np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2) / self.radius
        fov = np.clip((1.0 - r) * self.radius / 1.5 + 0.5, 0.0, 1.0)
        self._illumination = (fov * (1.0 - 0.45 * r**2.5)).astype(np.float32)
        rng = np.random.default_rng([seed, 0xCF9])
        bank = (2 * self.size, 2 * self.size)
        coarse = ndi.gaussian_filter(
            rng.standard_normal((self.size // 2, self.size // 2)).astype(np.float32), self.size / 240.0
        )
        texture = ndi.zoom(coarse, 4, order=1, grid_mode=True, mode="grid-wrap")  # smooth noise, made small
        self._texture = texture / texture.std()
        self._noise = rng.normal(0.0, 1.5, (3, *bank)).astype(np.float32)

    def inside(self, x: float, y: float) -> bool:
        """Whether (x, y) lies in the field of view."""
        c = self.size / 2.0
        return (x - c) ** 2 + (y - c) ** 2 < self.radius**2

    # -- geometry -----------------------------------------------------------------------------------------
    def scene(self, subject: Subject, eye: str, rng: np.random.Generator) -> CFPScene:
        b, px = subject.biomarkers, 1.0 / self.um_per_px
        nasal = 1.0 if eye == "OD" else -1.0
        c = self.size / 2.0
        fovea = (c - nasal * 0.07 * self.size + rng.normal(0, 4), c + rng.normal(0, 4))
        disc_centre = (
            fovea[0] + nasal * (DISC_FOVEA_UM[0] + rng.normal(0, 200)) * px,
            fovea[1] + (DISC_FOVEA_UM[1] + rng.normal(0, 200)) * px,
        )
        disc_v = 0.5 * b["vertical_disc_diameter"] * px
        disc_h = disc_v * rng.uniform(0.86, 0.96)
        cup_v = b["cup_to_disc_ratio"] * disc_v
        cup_h = cup_v * rng.uniform(0.9, 1.0) * disc_h / disc_v
        shift = min(rng.uniform(0.0, 0.3) * (disc_h - cup_h), 0.5 * cup_h)  # cups sit a little temporally
        cup_centre = (disc_centre[0] - nasal * shift, disc_centre[1])

        start = (disc_centre[0] + nasal * 0.35 * disc_h, disc_centre[1])
        vein_px = VEIN_TRUNK_UM * px
        veins = grow_tree(
            (start[0], start[1] + 2.0), disc_v, nasal, vein_px,
            b["venular_tortuosity"], b["venular_fractal_dimension"], self.um_per_px, self.inside, rng,
        )  # fmt: skip
        arteries = grow_tree(
            (start[0] + nasal * 2.0, start[1] - 2.0), disc_v, nasal, b["av_ratio"] * vein_px,
            b["arterial_tortuosity"], b["arterial_fractal_dimension"], self.um_per_px, self.inside, rng,
        )  # fmt: skip
        pigment = rng.uniform()
        return CFPScene(
            fovea=fovea,
            disc_centre=disc_centre,
            disc_radii=(disc_h, disc_v),
            cup_radii=(cup_h, cup_v),
            cup_centre=cup_centre,
            arteries=arteries,
            veins=veins,
            lesions=self._lesions(subject, fovea, disc_centre, disc_v, rng),
            background=pigment * BACKGROUND_DARK + (1.0 - pigment) * BACKGROUND_LIGHT,
            brightness=float(rng.uniform(0.9, 1.05)),
        )

    def _lesions(
        self, subject: Subject, fovea, disc_centre, disc_radius, rng
    ) -> list[tuple[str, float, float, float]]:
        s, px = subject.severity, 1.0 / self.um_per_px
        counts: dict[
            str, tuple[float, float, tuple[float, float]]
        ] = {}  # kind -> (mean count, spread in µm, radius in µm)
        if subject.label_name == "AMD":
            counts["druse"] = (3.0 + 30.0 * s, 1200.0, (40.0, 120.0))
        elif subject.label_name == "DiabeticRetinopathy":
            counts["microaneurysm"] = (3.0 + 25.0 * s, 1800.0, (25.0, 45.0))
            counts["haemorrhage"] = (0.5 + 8.0 * s, 1800.0, (80.0, 190.0))
            counts["exudate"] = (
                (1.0 + 15.0 * s) * (2.0 if subject.dme else 1.0),
                1000.0 if subject.dme else 1800.0,
                (30.0, 80.0),
            )
            counts["cotton_wool"] = (1.5 * s, 1800.0, (100.0, 220.0))
        elif subject.label_name == "Hypertension":
            counts["cotton_wool"] = (1.0 * s, 1800.0, (100.0, 220.0))
            counts["haemorrhage"] = (1.0 * s, 1800.0, (80.0, 160.0))
        lesions = []
        for kind, (mean, spread, radius) in counts.items():
            for _ in range(rng.poisson(mean)):
                x, y = fovea + rng.normal(0.0, spread * px, 2)
                if (
                    np.hypot(x - fovea[0], y - fovea[1]) > 3500.0 * px
                    or np.hypot(x - disc_centre[0], y - disc_centre[1]) < 1.5 * disc_radius
                ):
                    continue
                if self.inside(x, y):
                    lesions.append((kind, float(x), float(y), max(1.0, rng.uniform(*radius) * px)))
        return lesions

    # -- drawing ------------------------------------------------------------------------------------------
    def draw(self, scene: CFPScene, rng: np.random.Generator) -> Image.Image:
        """The photo of ``scene`` as an 8-bit RGB PIL image; ``rng`` picks the texture and noise.

        Works channel-first, (3, n, n) float32, where numpy's broadcasting is fast.
        """
        n, px = self.size, 1.0 / self.um_per_px
        oy, ox = rng.integers(0, n, 2)
        image = _column(scene.background) * (1.0 + 0.05 * self._texture[None, oy : oy + n, ox : ox + n])

        coords = np.arange(n, dtype=np.float32) + 0.5
        sigma = 1100.0 * px
        gx = np.exp(-0.5 * ((coords - scene.fovea[0]) / sigma) ** 2)
        gy = np.exp(-0.5 * ((coords - scene.fovea[1]) / sigma) ** 2)
        image *= 1.0 - (gy[:, None] * gx[None, :])[None] * _column(MACULA_DARKENING)
        self._draw_disc(image, scene)
        for kind, x, y, radius in scene.lesions:
            self._stamp(image, kind, x, y, radius)
        veins, arteries = self._vessel_masks(scene)
        image *= 1.0 - veins[None] * (1.0 - _column(VEIN_TINT))
        image *= 1.0 - arteries[None] * (1.0 - _column(ARTERY_TINT))
        image *= self._illumination * np.float32(scene.brightness)
        oy, ox = rng.integers(0, n, 2)
        image += self._noise[:, oy : oy + n, ox : ox + n] * self._illumination
        channels = np.clip(image, 0.0, 255.0).astype(np.uint8)
        return Image.merge("RGB", [Image.fromarray(c, mode="L") for c in channels])

    @staticmethod
    def _ellipse_ramp(xx, yy, centre, radii, edge_px) -> np.ndarray:
        """1 inside, 0 outside, a linear ramp of ``edge_px`` across the boundary (0.5 on it, exact vertically)."""
        rho = np.sqrt(((xx - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2)
        return np.clip((1.0 - rho) * radii[1] / edge_px + 0.5, 0.0, 1.0)[None]

    def _draw_disc(self, image: np.ndarray, scene: CFPScene) -> None:
        (cx, cy), (rh, rv) = scene.disc_centre, scene.disc_radii
        x0, x1 = int(max(cx - rh - 4, 0)), int(min(cx + rh + 5, self.size))
        y0, y1 = int(max(cy - rv - 4, 0)), int(min(cy + rv + 5, self.size))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        patch = image[:, y0:y1, x0:x1]
        disc = self._ellipse_ramp(xx, yy, scene.disc_centre, scene.disc_radii, DISC_EDGE_PX)
        cup = self._ellipse_ramp(xx, yy, scene.cup_centre, scene.cup_radii, CUP_EDGE_PX)
        patch[:] = patch * (1.0 - disc) + _column(RIM_COLOUR) * disc
        patch[:] = patch * (1.0 - cup) + _column(CUP_COLOUR) * cup

    def _stamp(self, image: np.ndarray, kind: str, x: float, y: float, radius: float) -> None:
        blend, colour, softness = LESIONS[kind]
        reach = radius * (2.5 if softness == "soft" else 1.0) + 2
        x0, x1 = int(max(x - reach, 0)), int(min(x + reach + 1, self.size))
        y0, y1 = int(max(y - reach, 0)), int(min(y + reach + 1, self.size))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = np.sqrt((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2)
        if softness == "soft":
            mask = np.exp(-0.5 * (d / (0.6 * radius)) ** 2)
        else:
            mask = np.clip(radius - d + 0.5, 0.0, 1.0)
        mask = mask[None].astype(np.float32)
        patch = image[:, y0:y1, x0:x1]
        patch[:] = patch + _column(colour) * mask if blend == "add" else patch * (1.0 - mask * (1.0 - _column(colour)))

    def _vessel_masks(self, scene: CFPScene) -> tuple[np.ndarray, np.ndarray]:
        """Vein and artery coverage (0-1) per pixel, drawn at SUPERSAMPLE x with fractional widths."""
        masks = []
        for tree in (scene.veins, scene.arteries):
            canvas = Image.new("L", (self.size * SUPERSAMPLE,) * 2)
            draw = ImageDraw.Draw(canvas)
            widths = tree.calibre * SUPERSAMPLE
            contrast = 255.0 * np.clip(tree.calibre / FAINT_CALIBRE_PX, 0.3, 1.0)
            whole = np.floor(widths).astype(int).tolist()
            partial = np.round(contrast * (widths - np.floor(widths))).astype(int).tolist()
            full = np.round(contrast).astype(int).tolist()
            # PIL puts integer coordinates at pixel centres; here pixel i spans [i, i + 1)
            lines = [pts.ravel().tolist() for pts in tree.points * SUPERSAMPLE - 0.5]
            # a line one pixel wider at the fractional coverage, then the whole-pixel line on top
            for line, w, fill in zip(lines, whole, partial):
                draw.line(line, fill=fill, width=w + 1)
            for line, w, fill in zip(lines, whole, full):
                if w:
                    draw.line(line, fill=fill, width=w)
            masks.append(np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0)
        return masks[0], masks[1]


def _column(colour: np.ndarray) -> np.ndarray:
    """A colour as a (3, 1, 1) float32 array that broadcasts over channel-first images."""
    return np.asarray(colour, dtype=np.float32).reshape(3, 1, 1)
