"""Label-conditional biomarker distributions of the retina phantom.

A subject's biomarkers come from a small anatomical model so that the 37 values are mutually consistent:

- *primary* biomarkers are drawn for the label: normal ones from the schema's normal range (mean = centre,
  SD = a quarter of the width, i.e. the range is mean +- 2 SD), diseased ones shifted by a number of SDs times
  the subject's severity in [0, 1] (so mild cases overlap the normal class). Correlations come from shared
  latent factors (one layer's rings move together, disc size with cup size, ...) and the two eyes of a
  patient share most of their draw.
- *derived* biomarkers follow from the primary ones by the layer geometry:
  ``inl_rpe_r = inl_elm_r + elm_isos_r + isos_rpe_r``; band averages and ``overall_macular`` are ETDRS
  area-weighted means of the rings; each subfield's thickness (ILM to Bruch's membrane) is
  inner retina (RNFL + GC-IPL + INL, distributed over the rings) + INL-RPE + RPE.

Layer conventions (as in the renderer): INL-ELM runs from the INL/OPL boundary to the ELM (OPL + ONL),
ELM-ISOS from the ELM to the top of the ellipsoid zone, ISOS-RPE from there to the OS/RPE interface, RPE
from that interface to Bruch's membrane. Retinal thickness is ILM to Bruch's membrane.
Derived values are not re-centred on the schema: because the schema's sources are not exactly additive,
the normal class's ETDRS thicknesses sit up to ~1 SD above the schema centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..biomarkers import BIOMARKER_NAMES, get_biomarker
from ..labels import LABELS

RINGS = ("central", "inner", "outer")
QUADRANTS = ("superior", "inferior", "nasal", "temporal")
BANDS = ("inl_elm", "elm_isos", "isos_rpe")
# ETDRS grid areas (diameters 1, 3, 6 mm) as fractions of the whole grid: 1/36, 8/36, 27/36.
RING_WEIGHTS = np.array([1.0, 8.0, 27.0]) / 36.0

PRIMARY: tuple[str, ...] = (
    "rnfl", "gc_ipl", "inl", "rpe", "vertical_disc_diameter",
    *(f"{band}_{ring}" for band in BANDS for ring in RINGS),
    "cup_to_disc_ratio", "av_ratio", "arterial_tortuosity", "venular_tortuosity",
    "arterial_fractal_dimension", "venular_fractal_dimension",
)  # fmt: skip

# Bounds the generator keeps primary draws in: inside the schema's plausible range and renderable.
RENDER_BOUNDS: dict[str, tuple[float, float]] = {
    "rnfl": (5.0, 80.0), "gc_ipl": (20.0, 130.0), "inl": (10.0, 90.0), "rpe": (8.0, 80.0),
    "vertical_disc_diameter": (1000.0, 3000.0),
    **{f"inl_elm_{ring}": (20.0, 400.0) for ring in RINGS},
    **{f"elm_isos_{ring}": (5.0, 60.0) for ring in RINGS},
    **{f"isos_rpe_{ring}": (10.0, 90.0) for ring in RINGS},
    "cup_to_disc_ratio": (0.05, 0.95), "av_ratio": (0.4, 1.2),
    "arterial_tortuosity": (1.0, 1.6), "venular_tortuosity": (1.0, 1.6),
    "arterial_fractal_dimension": (1.1, 1.8), "venular_fractal_dimension": (1.1, 1.8),
}  # fmt: skip

# Shared latent factors: primary -> ((factor, loading), ...); the rest of each variance is individual.
LOADINGS: dict[str, tuple[tuple[str, float], ...]] = {
    "rnfl": (("inner_retina", 0.6),),
    "gc_ipl": (("inner_retina", 0.6),),
    "inl": (("inner_retina", 0.4),),
    **{f"{band}_{ring}": ((band, 0.85), ("outer_retina", 0.3)) for band in BANDS for ring in RINGS},
    "vertical_disc_diameter": (("disc", 0.55),),
    "cup_to_disc_ratio": (("disc", 0.55),),  # larger discs have larger cups (Jonas et al., IOVS 1988)
    "arterial_tortuosity": (("tortuosity", 0.7),),
    "venular_tortuosity": (("tortuosity", 0.7),),
    "arterial_fractal_dimension": (("fractal", 0.75),),
    "venular_fractal_dimension": (("fractal", 0.75),),
}
FACTORS: tuple[str, ...] = tuple(dict.fromkeys(f for pairs in LOADINGS.values() for f, _ in pairs))
INTER_EYE_CORRELATION = 0.8  # fellow eyes: OCT thickness ICC ~0.8-0.9 (Ko et al., Ophthalmology 2017)

# Disease shifts in SDs of the normal range at full severity; each line names its source.
SHIFTS: dict[str, dict[str, float]] = {
    "AMD": {
        "rpe": 3.0,  # RPE-drusen complex thickening (Farsiu et al., Ophthalmology 2014)
        "isos_rpe_central": 1.5, "isos_rpe_inner": 1.0, "isos_rpe_outer": 0.5,  # drusen lift the OS/RPE (Farsiu 2014)
        # photoreceptor thinning over drusen (Schuman et al., Ophthalmology 2009)
        "elm_isos_central": -1.0, "inl_elm_central": -0.8,
        "gc_ipl": -0.5,  # GCC thinning in AMD (Zucchiatti et al., IOVS 2015)
    },
    "Glaucoma": {
        "cup_to_disc_ratio": 3.5,  # vertical cup enlargement (Varma et al., Ophthalmology 1994)
        "gc_ipl": -2.5, "rnfl": -2.0,  # macular GC-IPL/RNFL loss (Mwanza et al., Ophthalmology 2012)
        "vertical_disc_diameter": 0.3,  # larger discs in POAG (Jonas et al., IOVS 1988)
    },
    "Diabetes": {
        "gc_ipl": -0.7, "rnfl": -0.5,  # neurodegeneration before retinopathy (van Dijk et al., IOVS 2010)
        "av_ratio": -0.8,  # wider venules (Klein et al., Arch Ophthalmol 2004)
        "venular_tortuosity": 0.5,  # (Sasongko et al., Diabetologia 2011)
        "arterial_fractal_dimension": 0.4, "venular_fractal_dimension": 0.4,  # (Cheung et al., Diabetes Care 2009)
    },
    "Hypertension": {
        "av_ratio": -2.5,  # arteriolar narrowing (Wong et al., Ophthalmology 2004; Ikram et al., Hypertension 2006)
        "arterial_tortuosity": 2.0, "venular_tortuosity": 1.0,  # (Cheung et al., IOVS 2011)
        "arterial_fractal_dimension": -1.5, "venular_fractal_dimension": -0.8,  # (Liew et al., Ophthalmology 2008)
    },
    "Alzheimer": {
        "gc_ipl": -1.8,  # GC-IPL thinning in AD (Cheung et al., J Alzheimers Dis 2015)
        "rnfl": -1.5,  # RNFL thinning, meta-analysis (Coppola et al., PLoS One 2015)
        # sparser vascular network (Cheung et al., Alzheimers Dement 2014)
        "venular_fractal_dimension": -1.0, "arterial_fractal_dimension": -0.8,
        "venular_tortuosity": 1.0,  # (Cheung et al., Alzheimers Dement 2014)
    },
    "DiabeticRetinopathy": {
        "inl": 2.0,  # INL thickening (Vujosevic & Midena, J Diabetes Res 2013)
        "inl_elm_central": 2.5, "inl_elm_inner": 2.0, "inl_elm_outer": 1.0,  # OPL/ONL fluid (Otani et al., AJO 1999)
        "gc_ipl": -0.8,  # (van Dijk et al., IOVS 2010)
        "av_ratio": -1.2,  # venular dilation (Klein et al., Arch Ophthalmol 2004)
        "venular_tortuosity": 1.5,  # (Sasongko et al., Diabetologia 2011)
        "arterial_fractal_dimension": 0.6, "venular_fractal_dimension": 0.8,  # (Cheung et al., Diabetes Care 2009)
    },
    "Normal": {},
}  # fmt: skip
assert set(SHIFTS) == set(LABELS) and all(set(s) <= set(PRIMARY) for s in SHIFTS.values())

DME_FRACTION = 0.4  # share of DR eyes with centre-involving macular oedema
DME_CENTRAL_FLUID_UM = (40.0, 160.0)  # extra OPL/ONL thickness at full severity (Otani et al., AJO 1999)
SEVERITY_BETA = (2.0, 1.5)  # severity ~ Beta: mean 0.57, many mild cases
SEVERITY_EYE_SD = 0.1  # fellow eyes differ a little in severity
CENTRAL_SHARE_SD, INNER_SHARE_SD = 0.11, 0.05  # foveal pit morphology (spread of the ring shares)
QUADRANT_SD_UM = 4.0  # individual spread of the subfields around their ring


def _centre_sd(name: str) -> tuple[float, float]:
    low, high = get_biomarker(name).normal
    return (low + high) / 2.0, (high - low) / 4.0


def _normal_centre(name: str) -> float:
    return _centre_sd(name)[0]


_MEAN = np.array([_centre_sd(n)[0] for n in PRIMARY])
_SD = np.array([_centre_sd(n)[1] for n in PRIMARY])
_LOW = np.array([max(RENDER_BOUNDS[n][0], get_biomarker(n).plausible[0]) for n in PRIMARY])
_HIGH = np.array([min(RENDER_BOUNDS[n][1], get_biomarker(n).plausible[1]) for n in PRIMARY])
_LAMBDA = np.zeros((len(PRIMARY), len(FACTORS)))
for _i, _name in enumerate(PRIMARY):
    for _factor, _loading in LOADINGS.get(_name, ()):
        _LAMBDA[_i, FACTORS.index(_factor)] = _loading
_RESIDUAL = np.sqrt(1.0 - (_LAMBDA**2).sum(axis=1))
_SHIFT = np.array([[SHIFTS[label].get(n, 0.0) for n in PRIMARY] for label in LABELS])

# Inner retina (RNFL + GC-IPL + INL) per ring as a share of its grid average, from the schema's normal centres.
_INNER_RETINA = sum(_normal_centre(n) for n in ("rnfl", "gc_ipl", "inl"))
_RING_TOTAL = {
    "central": _normal_centre("central_subfield"),
    "inner": np.mean([_normal_centre(f"inner_{q}") for q in QUADRANTS]),
}
_SHARE = {
    ring: (_RING_TOTAL[ring] - _normal_centre(f"inl_rpe_{ring}") - _normal_centre("rpe")) / _INNER_RETINA
    for ring in ("central", "inner")
}
# Subfield offsets around their ring mean (nasal thickest, temporal thinnest), from the schema's centres.
_QUADRANT_OFFSET = {
    ring: {
        q: _normal_centre(f"{ring}_{q}") - np.mean([_normal_centre(f"{ring}_{p}") for p in QUADRANTS])
        for q in QUADRANTS
    }
    for ring in ("inner", "outer")
}


@dataclass
class Subject:
    """One phantom eye: its label, severity in [0, 1], macular oedema flag and all 37 biomarkers.

    ``inner_retina`` holds RNFL + GC-IPL + INL per ETDRS ring (µm) and ``foveola_share`` the inner-retina
    thickness at the foveal centre as a share of the central subfield's: the renderer uses them to draw the pit.
    """

    label: int
    severity: float
    dme: bool
    biomarkers: dict[str, float]
    inner_retina: dict[str, float] = field(default_factory=dict)
    foveola_share: float = 0.2

    @property
    def label_name(self) -> str:
        return LABELS[self.label]


def _latent(rng: np.random.Generator) -> np.ndarray:
    """Standard-normal scores of the primary biomarkers with the factor correlations."""
    factors = rng.standard_normal(len(FACTORS))
    return _LAMBDA @ factors + _RESIDUAL * rng.standard_normal(len(PRIMARY))


def patient_draw(rng: np.random.Generator, label_weights: np.ndarray) -> dict:
    """What the two eyes of a patient share: label, severity and latent scores."""
    label = int(rng.choice(len(LABELS), p=label_weights))
    return {
        "label": label,
        "severity": float(rng.beta(*SEVERITY_BETA)),
        "latent": _latent(rng),
        "shape": rng.standard_normal(2),
    }


def sample_subject(patient: dict, rng: np.random.Generator) -> Subject:
    """One eye of ``patient`` (from `patient_draw`); ``rng`` holds the eye's own randomness."""
    label = patient["label"]
    is_normal = LABELS[label] == "Normal"
    severity = (
        0.0 if is_normal else float(np.clip(patient["severity"] + SEVERITY_EYE_SD * rng.standard_normal(), 0.0, 1.0))
    )
    rho = INTER_EYE_CORRELATION
    z = np.sqrt(rho) * patient["latent"] + np.sqrt(1.0 - rho) * _latent(rng)
    values = np.clip(_MEAN + _SD * (z + severity * _SHIFT[label]), _LOW, _HIGH)
    p = dict(zip(PRIMARY, values.tolist()))

    dme = LABELS[label] == "DiabeticRetinopathy" and rng.random() < DME_FRACTION
    if dme:
        fluid = severity * rng.uniform(*DME_CENTRAL_FLUID_UM)
        p["inl_elm_central"] += fluid
        p["inl_elm_inner"] += 0.4 * fluid

    shape = np.sqrt(rho) * patient["shape"] + np.sqrt(1.0 - rho) * rng.standard_normal(2)
    central_share = max(0.25, _SHARE["central"] + CENTRAL_SHARE_SD * shape[0])
    inner_share = _SHARE["inner"] + INNER_SHARE_SD * shape[1]
    outer_share = (1.0 - RING_WEIGHTS[0] * central_share - RING_WEIGHTS[1] * inner_share) / RING_WEIGHTS[2]
    inner_retina = p["rnfl"] + p["gc_ipl"] + p["inl"]
    rings = {
        "central": central_share * inner_retina,
        "inner": inner_share * inner_retina,
        "outer": outer_share * inner_retina,
    }
    biomarkers = _derive(p, rings, rng)
    return Subject(
        label=label,
        severity=severity,
        dme=dme,
        biomarkers=biomarkers,
        inner_retina=rings,
        foveola_share=float(rng.uniform(0.08, 0.3)),
    )


def _derive(p: dict[str, float], inner_retina: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """All 37 biomarkers from the primary ones and the inner retina per ring (see the module docstring)."""
    out = dict(p)
    for band in BANDS:
        out[f"{band}_average"] = float(RING_WEIGHTS @ [p[f"{band}_{ring}"] for ring in RINGS])
    for region in (*RINGS, "average"):
        out[f"inl_rpe_{region}"] = sum(out[f"{band}_{region}"] for band in BANDS)
    out["central_subfield"] = inner_retina["central"] + out["inl_rpe_central"] + p["rpe"]
    for ring in ("inner", "outer"):
        noise = rng.normal(0.0, QUADRANT_SD_UM, len(QUADRANTS))
        noise -= noise.mean()  # keeps the ring mean, hence overall_macular, exact
        base = inner_retina[ring] + out[f"inl_rpe_{ring}"] + p["rpe"]
        for q, e in zip(QUADRANTS, noise):
            out[f"{ring}_{q}"] = float(base + _QUADRANT_OFFSET[ring][q] + e)
    ring_means = [
        out["central_subfield"],
        *(np.mean([out[f"{r}_{q}"] for q in QUADRANTS]) for r in ("inner", "outer")),
    ]
    out["overall_macular"] = float(RING_WEIGHTS @ ring_means)
    return {name: float(out[name]) for name in BIOMARKER_NAMES}
