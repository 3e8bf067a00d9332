"""Horizontal foveal OCT B-scans rendered from a phantom subject's layer thicknesses.

Geometry. The scan is centred on the fovea (between the two middle columns) and spans 6 mm, the ETDRS grid
width. Depths are in rows, 0 at the top edge of the image, row ``i`` covering ``[i, i + 1)``; a thickness in
µm becomes rows by dividing by the axial scale. From Bruch's membrane (BM) upwards the boundaries are

    bm -> rpe (OS/RPE interface) -> isos (top of the ellipsoid zone) -> elm -> opl_onl -> inl_opl
    -> ipl_inl -> gcl_ipl -> rnfl_gcl -> ilm

with RPE = ``rpe`` (plus drusen), ISOS-RPE, ELM-ISOS and INL-ELM (OPL + ONL) from the band biomarkers and
RNFL, GC-IPL and INL sharing the inner retina. **Retinal thickness is ILM to BM**; along the scan line its
mean over the ETDRS central region (|x| <= 0.5 mm) equals ``central_subfield`` and over the inner
(0.5-1.5 mm) and outer (1.5-3 mm) regions the nasal and temporal subfield values (the nasal side is on the
right for OD, on the left for OS). The band thicknesses have their ring values as region means in the same way.
RNFL, GC-IPL and INL follow typical radial shapes, so their averages along the line only approximate the
macular averages.

Appearance. Each layer has a reflectivity (bright RNFL, IPL, OPL, ellipsoid zone and RPE; dark INL and
ONL; a thin bright ILM reflex and ELM line), partial-volume anti-aliased boundaries, a choroid with dark vessel
lumens fading with depth, and multiplicative speckle (gamma-distributed, laterally correlated). AMD adds
drusen (the RPE band lifted over a moderately reflective dome, Bruch's membrane staying in place); DR adds
hyper-reflective foci and, with macular oedema, intraretinal cysts (dark round spaces in the INL to ONL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from .distributions import Subject
from .macula import BScanProfiles

DEFAULT_AXIAL_UM_PER_PX = 3.87  # Spectralis: 1.9 mm over 496 rows
SCAN_WIDTH_UM = 6000.0
BOUNDARIES: tuple[str, ...] = (
    "ilm",
    "rnfl_gcl",
    "gcl_ipl",
    "ipl_inl",
    "inl_opl",
    "opl_onl",
    "elm",
    "isos",
    "rpe",
    "bm",
)

# Reflectivity of what lies below each boundary (linear display units, 1 = white).
VITREOUS = 0.03
# The RPE stays the brightest band (as in real scans): layer reflectivities vary by only 4 % per subject.
REFLECTIVITY = {
    "ilm": 0.68, "rnfl_gcl": 0.38, "gcl_ipl": 0.52, "ipl_inl": 0.2, "inl_opl": 0.48, "opl_onl": 0.12,
    "elm": 0.2, "isos": 0.78, "ez_end": 0.3, "iz": 0.52, "rpe": 1.0, "drusen": 0.42, "bm": 0.5,
}  # fmt: skip
REFLECTIVITY_SD = 0.04
ILM_REFLEX = (0.15, 4.0)  # extra reflectivity, thickness in µm
ELM_LINE = (0.3, 3.0)
# Choroid below BM: reflectivity fading from the choriocapillaris into the sclera, as (µm below BM, level).
CHOROID_FADE = tuple((depth, 0.1 + 0.35 * np.exp(-depth / 150.0)) for depth in np.arange(15.0, 400.0, 15.0))
GCL_SHARE, OPL_SHARE = 0.55, 0.3  # GCL within GC-IPL, OPL within INL-ELM
# Outer bands at the foveal centre relative to their central-subfield mean: the ONL (in INL-ELM) and the
# cone outer segments are thickest at the foveola.
FOVEAL_BULGE = {"inl_elm": (1.1, 1.25), "elm_isos": (1.08, 1.08), "isos_rpe": (1.08, 1.08)}
EZ_SHARE, IZ_SHARE = 0.3, 0.2  # ellipsoid and interdigitation zones within ISOS-RPE

# Inner-retina layers along the scan: share of each layer's grid average at the ETDRS ring centres
# (fovea, 1 mm, 2.25 mm), the outer value chosen so that the area-weighted mean is 1.
_RING_CENTRES_UM = (0.0, 1000.0, 2250.0)
_W = np.array([1.0, 8.0, 27.0]) / 36.0
_SHAPES = {
    name: (c, i, (1.0 - _W[0] * c - _W[1] * i) / _W[2])
    for name, (c, i) in {"rnfl": (0.4, 0.7), "gc_ipl": (0.7, 1.2), "inl": (0.6, 1.15)}.items()
}
RNFL_NASAL, RNFL_TEMPORAL = 1.3, 0.75  # macular RNFL is thicker towards the disc (outer ring)


@dataclass
class OCTScene:
    """The random geometry of one B-scan: boundary rows per column and the lesions to draw."""

    boundaries: dict[str, np.ndarray]  # rows (float, top edge = 0) per column, keys as in BOUNDARIES
    drusen_top: np.ndarray  # bottom of the lifted RPE band (rows); equals ``bm`` where there is no druse
    cysts: list[tuple[float, float, float, float]]  # (row, column, half-height, half-width) in px
    foci: list[tuple[float, float]]  # (row, column)
    gain: float
    reflectivity: dict[str, float]


class OCTRenderer:
    """Draws B-scans of ``size = (height, width)`` at ``axial_um_per_px`` over a 6 mm scan.

    ``seed`` fixes the speckle and choroid texture banks that scans are cut from.
    """

    def __init__(
        self, size: tuple[int, int] = (496, 512), axial_um_per_px: float = DEFAULT_AXIAL_UM_PER_PX, seed: int = 0
    ):
        self.height, self.width = (int(v) for v in size)
        self.axial_um_per_px = float(axial_um_per_px)
        self.lateral_um_per_px = SCAN_WIDTH_UM / self.width
        self.profiles = BScanProfiles(self.width, self.lateral_um_per_px)
        self.x_um = self.profiles.x_um
        rng = np.random.default_rng([seed, 0x0C7])
        bank = (self.height * 2, self.width * 2)
        speckle = ndi.uniform_filter1d(rng.standard_gamma(4.0, bank).astype(np.float32), 3, axis=1)
        self._speckle = speckle / speckle.mean()
        coarse = ndi.gaussian_filter(rng.standard_normal((self.height, self.width)).astype(np.float32), (1.5, 4.5))
        blobs = ndi.zoom(coarse, 2, order=1, grid_mode=True, mode="grid-wrap")  # smooth noise, made small
        blobs /= blobs.std()
        self._choroid = 1.0 - 0.6 / (1.0 + np.exp(-4.0 * (blobs - 0.6)))  # dark lumens where the noise is high
        d = np.abs(self.x_um)
        self._shares = {name: np.interp(d, _RING_CENTRES_UM, shape) for name, shape in _SHAPES.items()}
        outer = np.clip((d - 1000.0) / 1250.0, 0.0, 1.0)
        self._rnfl_side = {
            side: 1.0 + (factor - 1.0) * outer for side, factor in (("nasal", RNFL_NASAL), ("temporal", RNFL_TEMPORAL))
        }

    # -- geometry -----------------------------------------------------------------------------------------
    def scene(self, subject: Subject, eye: str, rng: np.random.Generator) -> OCTScene:
        """Boundary rows and lesions of ``subject``'s scan (``eye`` "OD" or "OS" puts the nasal side right or left)."""
        b = subject.biomarkers
        prof = self.profiles
        sides = ("temporal", "nasal") if eye == "OD" else ("nasal", "temporal")

        def ring_pair(ring: str) -> tuple[float, float]:
            return b[f"{ring}_{sides[0]}"], b[f"{ring}_{sides[1]}"]

        bands = {
            band: prof.profile(
                b[f"{band}_central"],
                (b[f"{band}_inner"],) * 2,
                (b[f"{band}_outer"],) * 2,
                b[f"{band}_central"] * rng.uniform(*bulge),
            )
            for band, bulge in FOVEAL_BULGE.items()
        }
        drusen = self._drusen(subject, rng)
        rpe_floor = b["rpe"] - drusen.mean()
        if drusen.any() and rpe_floor < 10.0:  # keep a visible RPE band: shrink the drusen rather than the RPE
            drusen *= (b["rpe"] - 10.0) / drusen.mean()
            rpe_floor = 10.0
        masks = list(prof.regions.values())
        region_drusen = [drusen[m].mean() for m in masks]
        outer_retina = sum(bands.values()) + rpe_floor
        centre = outer_retina[self.width // 2 - 1 : self.width // 2 + 1].mean()
        at_fovea = centre + subject.foveola_share * subject.inner_retina["central"]
        inner_pair, outer_pair = ring_pair("inner"), ring_pair("outer")
        retina = prof.profile(
            b["central_subfield"] - region_drusen[0],
            (inner_pair[0] - region_drusen[1], inner_pair[1] - region_drusen[2]),
            (outer_pair[0] - region_drusen[3], outer_pair[1] - region_drusen[4]),
            at_fovea,
        )
        inner = np.maximum(retina - outer_retina, 1.0)  # a guard: >= 4 µm in 600 subjects checked

        nasal = self.x_um > 0 if eye == "OD" else self.x_um < 0
        rnfl_side = np.where(nasal, self._rnfl_side["nasal"], self._rnfl_side["temporal"])
        weights = {
            "rnfl": b["rnfl"] * self._shares["rnfl"] * rnfl_side,
            "gc_ipl": b["gc_ipl"] * self._shares["gc_ipl"],
            "inl": b["inl"] * self._shares["inl"],
        }
        total_weight = sum(weights.values())
        layers = {name: inner * w / total_weight for name, w in weights.items()}

        ax = self.axial_um_per_px
        x = self.x_um / (SCAN_WIDTH_UM / 2.0)
        bm = (
            self.height * rng.uniform(0.6, 0.68)
            - self.height * rng.uniform(0.0, 0.05) * x**2
            + self.height * rng.uniform(-0.03, 0.03) * x
        )
        rows = {"bm": bm}
        rows["rpe"] = bm - (rpe_floor + drusen) / ax
        rows["isos"] = rows["rpe"] - bands["isos_rpe"] / ax
        rows["elm"] = rows["isos"] - bands["elm_isos"] / ax
        rows["opl_onl"] = rows["elm"] - (1.0 - OPL_SHARE) * bands["inl_elm"] / ax
        rows["inl_opl"] = rows["elm"] - bands["inl_elm"] / ax
        rows["ipl_inl"] = rows["inl_opl"] - layers["inl"] / ax
        rows["gcl_ipl"] = rows["ipl_inl"] - (1.0 - GCL_SHARE) * layers["gc_ipl"] / ax
        rows["rnfl_gcl"] = rows["ipl_inl"] - layers["gc_ipl"] / ax
        rows["ilm"] = rows["rnfl_gcl"] - layers["rnfl"] / ax
        boundaries = {name: rows[name] for name in BOUNDARIES}

        cysts, foci = [], []
        if subject.label_name == "DiabeticRetinopathy":
            n_cysts = rng.poisson(2.0 + 6.0 * subject.severity) if subject.dme else rng.poisson(0.5 * subject.severity)
            for _ in range(n_cysts):
                col = self._column(rng.uniform(-1200.0, 1200.0))
                top, bottom = rows["inl_opl"][col] - 0.5 * layers["inl"][col] / ax, rows["elm"][col]
                half_h = rng.uniform(0.15, 0.35) * (bottom - top)
                if half_h >= 1.5:
                    row = rng.uniform(top + half_h, bottom - half_h)
                    cysts.append(
                        (row, col + 0.5, half_h, half_h * rng.uniform(1.0, 2.5) * ax / self.lateral_um_per_px)
                    )
            for _ in range(rng.poisson(4.0 * subject.severity)):
                col = self._column(rng.uniform(-2500.0, 2500.0))
                foci.append((rng.uniform(rows["ipl_inl"][col], rows["opl_onl"][col]), col + 0.5))
        reflectivity = {k: v * (1.0 + REFLECTIVITY_SD * rng.standard_normal()) for k, v in REFLECTIVITY.items()}
        return OCTScene(boundaries, bm - drusen / ax, cysts, foci, float(rng.uniform(0.8, 1.05)), reflectivity)

    def _column(self, x_um: float) -> int:
        return int(np.clip(round(x_um / self.lateral_um_per_px + self.width / 2.0 - 0.5), 0, self.width - 1))

    def _drusen(self, subject: Subject, rng: np.random.Generator) -> np.ndarray:
        """Druse heights (µm) per column: domes under the RPE within 2 mm of the fovea, for AMD."""
        heights = np.zeros(self.width)
        if subject.label_name != "AMD":
            return heights
        for _ in range(rng.poisson(1.0 + 6.0 * subject.severity)):
            centre, half_width = rng.uniform(-2000.0, 2000.0), rng.uniform(60.0, 250.0)
            height = rng.uniform(15.0, 30.0 + 60.0 * subject.severity)
            u = (self.x_um - centre) / half_width
            heights = np.maximum(heights, height * np.sqrt(np.clip(1.0 - u**2, 0.0, None)))
        return heights

    # -- drawing ------------------------------------------------------------------------------------------
    def draw(self, scene: OCTScene, rng: np.random.Generator) -> Image.Image:
        """The B-scan of ``scene`` as an 8-bit grey PIL image; ``rng`` picks the speckle and texture."""
        h, w, ax = self.height, self.width, self.axial_um_per_px
        r, rows = scene.reflectivity, scene.boundaries
        steps: list[tuple[np.ndarray, float]] = [(rows["ilm"], r["ilm"] - VITREOUS)]
        previous = "ilm"
        for name in ("rnfl_gcl", "gcl_ipl", "ipl_inl", "inl_opl", "opl_onl", "elm", "isos"):
            steps.append((rows[name], r[name] - r[previous]))
            previous = name
        ez_end = rows["isos"] + EZ_SHARE * (rows["rpe"] - rows["isos"])
        iz = rows["rpe"] - IZ_SHARE * (rows["rpe"] - rows["isos"])
        steps += [
            (ez_end, r["ez_end"] - r["isos"]),
            (iz, r["iz"] - r["ez_end"]),
            (rows["rpe"], r["rpe"] - r["iz"]),
            (scene.drusen_top, r["drusen"] - r["rpe"]),
            (rows["bm"], r["bm"] - r["drusen"]),
            (rows["ilm"], ILM_REFLEX[0]),
            (rows["ilm"] + ILM_REFLEX[1] / ax, -ILM_REFLEX[0]),
            (rows["elm"], ELM_LINE[0]),
            (rows["elm"] + ELM_LINE[1] / ax, -ELM_LINE[0]),
        ]
        previous_level = r["bm"]
        for depth_um, level in CHOROID_FADE:
            steps.append((rows["bm"] + depth_um / ax, level - previous_level))
            previous_level = level
        image = VITREOUS + self._accumulate(steps)
        below_bm = np.clip(
            np.arange(1, h + 1, dtype=np.float32)[:, None] - rows["bm"][None, :].astype(np.float32), 0.0, 1.0
        )

        oy, ox = rng.integers(0, h), rng.integers(0, w)
        choroid = self._choroid[oy : oy + h, ox : ox + w]
        image *= 1.0 - below_bm * (1.0 - choroid)
        for row, col, half_h, half_w in scene.cysts:
            self._stamp(image, row, col, half_h, half_w, lambda patch, m: patch * (1.0 - 0.85 * m))
        for row, col in scene.foci:
            self._stamp(image, row, col, 1.2, 1.5, lambda patch, m: patch + 0.5 * m)
        oy, ox = rng.integers(0, h), rng.integers(0, w)
        image *= self._speckle[oy : oy + h, ox : ox + w] * (255.0 * scene.gain)
        return Image.fromarray(np.clip(image, 0.0, 255.0).astype(np.uint8), mode="L")

    def _accumulate(self, steps: list[tuple[np.ndarray, float]]) -> np.ndarray:
        """Sum of step functions down the columns, each pixel holding the mean over its row span."""
        h, w = self.height, self.width
        delta = np.zeros((h + 1, w), dtype=np.float32)
        cols = np.arange(w)
        for rows, height in steps:
            rows = np.clip(rows, 0.0, h)
            top = np.floor(rows).astype(np.intp)
            frac = (rows - top).astype(np.float32)
            delta[top, cols] += height * (1.0 - frac)
            delta[np.minimum(top + 1, h), cols] += height * frac
        for i in range(1, h):  # a running sum row by row: ~4x faster than a strided np.cumsum(axis=0)
            delta[i] += delta[i - 1]
        return delta[:h]

    @staticmethod
    def _stamp(image: np.ndarray, row: float, col: float, half_h: float, half_w: float, apply) -> None:
        """Apply ``apply(patch, mask)`` with a soft elliptical mask centred at (row, col)."""
        r0, r1 = int(max(row - half_h - 2, 0)), int(min(row + half_h + 3, image.shape[0]))
        c0, c1 = int(max(col - half_w - 2, 0)), int(min(col + half_w + 3, image.shape[1]))
        if r0 >= r1 or c0 >= c1:
            return
        rr, cc = np.ogrid[r0:r1, c0:c1]
        dist = np.sqrt(((rr + 0.5 - row) / half_h) ** 2 + ((cc + 0.5 - col) / half_w) ** 2)
        mask = np.clip((1.0 - dist) * min(half_h, half_w) + 0.5, 0.0, 1.0)
        image[r0:r1, c0:c1] = apply(image[r0:r1, c0:c1], mask)
