"""The retina phantom: determinism, label-conditional biomarkers, and images that carry their biomarkers."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from processing.biomarkers import BIOMARKER_NAMES, validate_biomarkers
from processing.grok_dataset import COLUMNS, grok_features
from processing.labels import LABELS
from processing.phantom import RetinaPhantom
from processing.phantom.distributions import BANDS, RING_WEIGHTS
from processing.phantom.render_oct import BOUNDARIES


@pytest.fixture(scope="module")
def phantom():
    return RetinaPhantom(seed=0)


SMALL = {"cfp_size": 64, "oct_size": (96, 64)}  # for tests that render nothing or little


def _biomarkers(label: str, n: int = 300, seed: int = 5) -> dict[str, np.ndarray]:
    p = RetinaPhantom(seed=seed, label_weights={label: 1.0}, **SMALL)
    subjects = [p.subject(i) for i in range(n)]
    return {name: np.array([s.biomarkers[name] for s in subjects]) for name in BIOMARKER_NAMES}


@pytest.fixture(scope="module")
def by_label():
    return {label: _biomarkers(label) for label in LABELS}


# -- schema and determinism -------------------------------------------------------------------------------
def test_sample_has_exactly_the_schema_columns(phantom):
    sample = phantom[3]
    assert list(sample) == list(COLUMNS) == [c for c in grok_features()]
    assert sample["id"] == "phantom-s0-000003" and sample["patient_id"] == "phantom-s0-p000001"
    assert sample["eye"] == "OS" and phantom[2]["eye"] == "OD"
    assert sample["cfp"].mode == "RGB" and sample["cfp"].size == (512, 512)
    assert [im.mode for im in sample["oct"]] == ["L"] and sample["oct"][0].size == (512, 496)
    assert set(sample["biomarkers"]) == set(BIOMARKER_NAMES) and None not in sample["biomarkers"].values()
    assert sample["label"] in range(len(LABELS)) and sample["report"] is None
    assert sample["oct_lateral_um_per_px"] == pytest.approx(6000 / 512)
    grok_features().encode_example(sample)  # the row fits the dataset features


def test_same_seed_and_index_give_the_same_sample_in_any_order(phantom):
    fresh = RetinaPhantom(seed=0)
    fresh.sample(11)  # a different history must not matter
    a, b = phantom.sample(7), fresh.sample(7)
    assert a["biomarkers"] == b["biomarkers"] and a["label"] == b["label"]
    assert np.array_equal(np.asarray(a["cfp"]), np.asarray(b["cfp"]))
    assert np.array_equal(np.asarray(a["oct"][0]), np.asarray(b["oct"][0]))


def test_different_seeds_and_indices_differ(phantom):
    other = RetinaPhantom(seed=1).sample(7)
    sample = phantom.sample(7)
    assert sample["biomarkers"] != other["biomarkers"]
    assert not np.array_equal(np.asarray(sample["oct"][0]), np.asarray(other["oct"][0]))
    assert phantom.sample(8)["biomarkers"] != sample["biomarkers"]


def test_fellow_eyes_share_the_label_and_correlate():
    p = RetinaPhantom(seed=2, **SMALL)
    pairs = [(p.subject(2 * k), p.subject(2 * k + 1)) for k in range(150)]
    assert all(od.label == os_.label for od, os_ in pairs)
    rnfl = np.array([[od.biomarkers["rnfl"], os_.biomarkers["rnfl"]] for od, os_ in pairs])
    assert np.corrcoef(rnfl.T)[0, 1] > 0.6


def test_length_indexing_and_label_weights():
    bounded = RetinaPhantom(n=5, **SMALL)
    assert len(bounded) == 5 and len(list(bounded)) == 5
    with pytest.raises(TypeError, match="unbounded"):
        len(RetinaPhantom(**SMALL))
    with pytest.raises(IndexError):
        bounded[5]
    assert bounded[-1]["id"].endswith("000004")
    only = RetinaPhantom(label_weights={"Glaucoma": 1.0}, **SMALL)
    assert {only.subject(i).label for i in range(20)} == {LABELS.index("Glaucoma")}
    with pytest.raises(ValueError, match="unknown labels"):
        RetinaPhantom(label_weights={"Cataract": 1.0}, **SMALL)


def test_missing_rate_blanks_that_share_of_biomarkers():
    p = RetinaPhantom(seed=3, missing_rate=0.3, **SMALL)
    values = [v for i in range(12) for v in p[i]["biomarkers"].values()]
    share = sum(v is None for v in values) / len(values)
    assert 0.2 < share < 0.4


# -- label-conditional distributions ----------------------------------------------------------------------
def test_every_sampled_value_validates_and_the_layers_add_up(by_label):
    for label, values in by_label.items():
        for i in range(0, 300, 7):
            validate_biomarkers({name: float(v[i]) for name, v in values.items()}, where=label)
        for region in ("central", "inner", "outer", "average"):
            total = sum(values[f"{band}_{region}"] for band in BANDS)
            assert np.allclose(values[f"inl_rpe_{region}"], total)
        rings = [values["central_subfield"]] + [
            np.mean([values[f"{ring}_{q}"] for q in ("superior", "inferior", "nasal", "temporal")], axis=0)
            for ring in ("inner", "outer")
        ]
        assert np.allclose(values["overall_macular"], RING_WEIGHTS @ np.array(rings))


def test_normal_class_is_centred_on_the_schema_normal_range(by_label):
    from processing.biomarkers import get_biomarker

    for name in ("rnfl", "gc_ipl", "cup_to_disc_ratio", "av_ratio", "central_subfield", "rpe"):
        low, high = get_biomarker(name).normal
        values = by_label["Normal"][name]
        assert abs(values.mean() - (low + high) / 2) < 0.1 * (high - low)
        assert 0.85 < np.mean((values >= low) & (values <= high)) < 1.0


@pytest.mark.parametrize(
    "label, name, direction",
    [
        ("Glaucoma", "cup_to_disc_ratio", +1),
        ("Glaucoma", "rnfl", -1),
        ("Glaucoma", "gc_ipl", -1),
        ("Alzheimer", "gc_ipl", -1),
        ("Alzheimer", "rnfl", -1),
        ("AMD", "rpe", +1),
        ("DiabeticRetinopathy", "central_subfield", +1),
        ("DiabeticRetinopathy", "inl", +1),
        ("Hypertension", "av_ratio", -1),
        ("Hypertension", "arterial_tortuosity", +1),
        ("Diabetes", "gc_ipl", -1),
    ],
)
def test_disease_shifts_the_right_way(by_label, label, name, direction):
    normal, disease = by_label["Normal"][name], by_label[label][name]
    standard_error = np.sqrt(normal.var() / len(normal) + disease.var() / len(disease))
    assert direction * (disease.mean() - normal.mean()) / standard_error > 3.0


def test_classes_overlap_no_single_biomarker_separates_them(by_label):
    normal, glaucoma = by_label["Normal"], by_label["Glaucoma"]
    assert np.mean(glaucoma["cup_to_disc_ratio"] < 0.6) > 0.2  # not every glaucoma has a large cup
    for name in BIOMARKER_NAMES:
        values = np.concatenate([normal[name], glaucoma[name]])
        is_glaucoma = np.r_[np.zeros(len(normal[name])), np.ones(len(glaucoma[name]))]
        accuracy = max(
            max(np.mean((values > t) == is_glaucoma), np.mean((values <= t) == is_glaucoma)) for t in np.unique(values)
        )
        assert accuracy < 0.95, name


# -- the images carry the biomarkers ----------------------------------------------------------------------
def _steepest(derivative, start, stop):
    """Sub-pixel row of the largest value of ``derivative`` (differences between rows k and k + 1) in
    ``[start, stop)``: the edge between pixels k and k + 1 lies at row k + 1."""
    k = start + int(np.argmax(derivative[start:stop]))
    a, b, c = derivative[k - 1], derivative[k], derivative[k + 1]
    curvature = a - 2 * b + c
    return k + 1 + (np.clip(0.5 * (a - c) / curvature, -0.5, 0.5) if curvature < 0 else 0.0)


def _central_thickness_um(image, axial, lateral):
    """Mean ILM-to-Bruch's-membrane distance over the central 1 mm. Per column (averaged over 7 columns):
    the ILM is the steepest rise where the retina first leaves the vitreous, Bruch's membrane the steepest
    fall at the bottom of the deepest bright band (the RPE, the last one above the darker choroid)."""
    a = ndi.uniform_filter1d(np.asarray(image, float), 7, axis=1)
    height, width = a.shape
    x = (np.arange(width) + 0.5 - width / 2) * lateral
    thickness = []
    for j in np.flatnonzero(np.abs(x) <= 500):
        p = a[:, j]
        rise = np.diff(p)
        vitreous = np.median(p[: height // 5])
        first = int(np.argmax(p > vitreous + 0.25 * (p.max() - vitreous)))
        ilm = _steepest(rise, first - 4, first + 2)
        below = ndi.uniform_filter1d(p, 3)[first : first + int(700 / axial)]
        rpe_bottom = first + np.flatnonzero(below > 0.7 * below.max())[-1]
        bm = _steepest(-rise, rpe_bottom - 2, rpe_bottom + 4)
        thickness.append((bm - ilm) * axial)
    return float(np.mean(thickness))


def _extent(profile, level, row):
    top = bottom = row
    while top > 0 and profile[top - 1] > level:
        top -= 1
    while bottom < len(profile) - 1 and profile[bottom + 1] > level:
        bottom += 1
    top_edge = top - (profile[top] - level) / (profile[top] - profile[top - 1])
    bottom_edge = bottom + (profile[bottom] - level) / (profile[bottom] - profile[bottom + 1])
    return bottom_edge - top_edge


def _vertical_cdr(image, um_per_px, disc_centre):
    """Vertical cup and disc diameters around ``disc_centre``: vessels are removed by a grey closing (which
    keeps convex bright regions), the background, rim and cup levels come from 3-means on the vertical
    profile, and each diameter is measured at half-level crossings on the column through its region."""
    g = np.asarray(image, dtype=float)[..., 1]
    radius = 9
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    r, pad = int(1800 / um_per_px), radius + 1
    cx, cy = int(disc_centre[0]), int(disc_centre[1])
    win = ndi.grey_closing(g[cy - r - pad : cy + r + pad, cx - r - pad : cx + r + pad], footprint=disk)[
        pad:-pad, pad:-pad
    ]
    column = win[:, r]
    levels = np.array([column.min(), (column.min() + column.max()) / 2, column.max()])
    for _ in range(20):
        nearest = np.argmin(np.abs(column[:, None] - levels[None]), axis=1)
        levels = np.array([column[nearest == k].mean() if (nearest == k).any() else levels[k] for k in range(3)])
    background, rim, cup = np.sort(levels)
    diameters = []
    for level in ((background + rim) / 2, (rim + cup) / 2):
        regions, _ = ndi.label(win > level)
        region = regions == (regions[r, r] or np.bincount(regions.ravel())[1:].argmax() + 1)
        row, col = (int(round(v)) for v in ndi.center_of_mass(region))
        diameters.append(_extent(win[:, col], level, row))
    return diameters[1] / diameters[0]


@pytest.fixture(scope="module")
def rendered():
    """20 samples of all labels but AMD: its drusen lift the RPE, which the simple Bruch's membrane detection
    of `_central_thickness_um` would take for the membrane."""
    p = RetinaPhantom(seed=7, label_weights={label: float(label != "AMD") for label in LABELS})
    return p, [p.sample(i) for i in range(20)]


def test_oct_thickness_at_the_fovea_matches_the_central_subfield(rendered):
    _, samples = rendered
    errors = [
        _central_thickness_um(s["oct"][0], s["oct_axial_um_per_px"], s["oct_lateral_um_per_px"])
        / s["biomarkers"]["central_subfield"]
        - 1.0
        for s in samples
    ]
    assert np.max(np.abs(errors)) < 0.05, errors


def test_cup_to_disc_ratio_measured_from_the_fundus(rendered):
    phantom, samples = rendered
    errors = [
        _vertical_cdr(s["cfp"], s["cfp_um_per_px"], phantom.ground_truth(i).cfp.disc_centre)
        - s["biomarkers"]["cup_to_disc_ratio"]
        for i, s in enumerate(samples)
    ]
    assert np.max(np.abs(errors)) < 0.05, errors


def test_oct_ground_truth_boundaries_are_ordered_and_exact():
    p = RetinaPhantom(seed=4, label_weights={"AMD": 1, "DiabeticRetinopathy": 1, "Normal": 1})
    columns = np.abs((np.arange(512) + 0.5 - 256) * p.oct_lateral_um_per_px)
    for i in range(12):
        truth = p.ground_truth(i)
        rows = np.stack([truth.oct.boundaries[name] for name in BOUNDARIES])
        assert (np.diff(rows, axis=0) >= 0).all()
        thickness = (truth.oct.boundaries["bm"] - truth.oct.boundaries["ilm"]) * p.oct_axial_um_per_px
        b = truth.subject.biomarkers
        assert thickness[columns <= 500].mean() == pytest.approx(b["central_subfield"], rel=1e-6)
        nasal = (np.arange(512) >= 256) if p.eye(i) == "OD" else (np.arange(512) < 256)
        ring = (columns > 500) & (columns <= 1500)
        assert thickness[ring & nasal].mean() == pytest.approx(b["inner_nasal"], rel=1e-6)
        assert thickness[ring & ~nasal].mean() == pytest.approx(b["inner_temporal"], rel=1e-6)


def test_vessels_carry_calibre_ratio_and_tortuosity_and_the_disc_sits_nasally(phantom):
    for i in range(4):
        truth = phantom.ground_truth(i)
        b, scene = truth.subject.biomarkers, truth.cfp
        assert scene.arteries.calibre[0] / scene.veins.calibre[0] == pytest.approx(b["av_ratio"])
        assert np.median(scene.arteries.tortuosity()) == pytest.approx(b["arterial_tortuosity"], abs=2e-3)
        assert np.median(scene.veins.tortuosity()) == pytest.approx(b["venular_tortuosity"], abs=2e-3)
        assert 2 * scene.disc_radii[1] * phantom.cfp_um_per_px == pytest.approx(b["vertical_disc_diameter"])
        assert (scene.disc_centre[0] > scene.fovea[0]) == (phantom.eye(i) == "OD")


def test_lesions_follow_the_label():
    p = RetinaPhantom(seed=6, label_weights={"AMD": 1, "DiabeticRetinopathy": 1, "Normal": 1})
    kinds: dict[str, set] = {label: set() for label in ("AMD", "DiabeticRetinopathy", "Normal")}
    drusen_lift = {label: 0.0 for label in kinds}
    for i in range(30):
        truth = p.ground_truth(i)
        label = truth.subject.label_name
        kinds[label] |= {lesion[0] for lesion in truth.cfp.lesions}
        lift = truth.oct.boundaries["bm"] - truth.oct.drusen_top
        drusen_lift[label] = max(drusen_lift[label], float(lift.max()))
    assert kinds["Normal"] == set() and drusen_lift["Normal"] == 0.0
    assert "druse" in kinds["AMD"] and drusen_lift["AMD"] > 0
    assert {"microaneurysm", "haemorrhage"} <= kinds["DiabeticRetinopathy"]


def test_to_dataset_streams_the_same_samples(tmp_path):
    p = RetinaPhantom(seed=0, n=4)
    dataset = p.to_dataset(cache_dir=str(tmp_path))
    assert dataset.features == grok_features() and len(dataset) == 4
    for i in range(4):
        row, sample = dataset[i], p[i]
        assert row["id"] == sample["id"] and row["label"] == sample["label"]
        assert row["biomarkers"]["central_subfield"] == pytest.approx(
            sample["biomarkers"]["central_subfield"], rel=1e-6
        )
        assert np.array_equal(np.asarray(row["oct"][0]), np.asarray(sample["oct"][0]))  # PNG: lossless
        assert np.abs(np.asarray(row["cfp"], float) - np.asarray(sample["cfp"], float)).mean() < 2  # JPEG q95
        assert isinstance(row["cfp"], Image.Image)
