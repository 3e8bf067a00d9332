"""Stage 0, OCT: graph-search layers, fovea, thicknesses (px and µm), fluid, on synthetic, phantom and real scans."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing.measure import UnusableImageError, measure_biomarkers, measure_oct
from processing.measure.oct_layers import BOUNDARIES, shortest_path
from processing.measure.oct import NOT_ON_A_LINE

from .measure_synthetic import synthetic_bscan

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dme-dr-paired"


@pytest.fixture(scope="module")
def scan():
    return synthetic_bscan()


@pytest.fixture(scope="module")
def measured(scan):
    return measure_oct(scan.image, scan.axial_um_per_px, scan.lateral_um_per_px, eye="OD")


def test_shortest_path_follows_the_cheap_line_within_its_step_limit():
    cost = np.ones((40, 60))
    truth = np.r_[np.full(30, 10), np.arange(11, 26), np.full(15, 25)]
    cost[truth, np.arange(60)] = 0.0
    np.testing.assert_array_equal(shortest_path(cost, max_step=1), truth)
    cost[:, 20] = 1.0  # a gap in the line is bridged, not jumped around
    assert np.abs(shortest_path(cost, max_step=1) - truth).max() <= 1


def test_boundaries_match_the_synthetic_layers(scan, measured):
    seg = measured.segmentation
    away = np.abs(np.arange(scan.image.width) - scan.fovea_x) > 70  # inner layers vanish in the pit
    for name in BOUNDARIES:
        offset = (seg.boundaries[name] - scan.boundaries[name])[away]
        # pixel-centre rows versus the scene's top-edge rows: a constant half pixel, not an error
        assert abs(np.median(offset) + 0.5) < 1.0, name
        assert np.percentile(np.abs(offset + 0.5), 90) < 2.0, name
    pit = ~away
    assert np.percentile(np.abs(seg.boundaries["ilm"] - scan.boundaries["ilm"] + 0.5)[pit], 90) < 2.0


def test_fovea_and_thicknesses_in_pixels_and_um(scan, measured):
    assert abs(measured.profile.fovea_x - scan.fovea_x) <= 3 and measured.profile.fovea_method == "pit"
    central = scan.mean_thickness("ilm", "bm", 0.0, 0.5)
    assert measured.central_thickness_px == pytest.approx(central, rel=0.03)
    assert measured.biomarkers["central_subfield"] == pytest.approx(central * scan.axial_um_per_px, rel=0.03)
    # OD: nasal is the right side of the scan
    nasal = scan.mean_thickness("ilm", "bm", 0.5, 1.5, side=+1) * scan.axial_um_per_px
    temporal = scan.mean_thickness("ilm", "bm", 0.5, 1.5, side=-1) * scan.axial_um_per_px
    assert measured.biomarkers["inner_nasal"] == pytest.approx(nasal, rel=0.03)
    assert measured.biomarkers["inner_temporal"] == pytest.approx(temporal, rel=0.03)
    onl_opl = scan.mean_thickness("inl_opl", "elm", 0.0, 0.5) * scan.axial_um_per_px
    assert measured.biomarkers["inl_elm_central"] == pytest.approx(onl_opl, rel=0.08)
    for name in ("inner_superior", "outer_inferior"):
        assert measured.biomarkers[name] is None and measured.reasons[name] == NOT_ON_A_LINE
    assert measured.quality_flag == "good" and measured.quality > 0.6


def test_left_eye_swaps_nasal_and_temporal(scan, measured):
    left = measure_oct(scan.image, scan.axial_um_per_px, scan.lateral_um_per_px, eye="OS")
    assert left.biomarkers["inner_nasal"] == pytest.approx(measured.biomarkers["inner_temporal"])
    unknown = measure_oct(scan.image, scan.axial_um_per_px, scan.lateral_um_per_px)
    assert unknown.biomarkers["outer_nasal"] is None and "eye" in unknown.reasons["outer_nasal"]
    assert unknown.biomarkers["central_subfield"] == measured.biomarkers["central_subfield"]


def test_no_micrometres_without_scales(scan, measured):
    unscaled = measure_oct(scan.image)
    assert all(value is None for value in unscaled.biomarkers.values())
    assert "pixels only" in unscaled.reasons["central_subfield"]
    assert unscaled.central_thickness_px == pytest.approx(measured.central_thickness_px, rel=0.02)
    axial_only = measure_oct(scan.image, axial_um_per_px=scan.axial_um_per_px)
    assert axial_only.biomarkers["central_subfield"] is None and "lateral" in axial_only.reasons["central_subfield"]
    result = measure_biomarkers(oct=[scan.image])
    assert result["biomarkers"]["central_subfield"] is None
    assert result["extra"]["central_thickness_px"] == pytest.approx(measured.central_thickness_px, rel=0.02)
    assert result["extra"]["intraretinal_fluid_area_mm2"] is None


def test_fluid_flags():
    plain, cyst, detached = (synthetic_bscan(**kw) for kw in ({"seed": 1}, {"cyst": True}, {"subretinal": True}))
    dry = measure_oct(plain.image, plain.axial_um_per_px, plain.lateral_um_per_px)
    assert not dry.fluid.intraretinal and not dry.fluid.subretinal
    wet = measure_oct(cyst.image, cyst.axial_um_per_px, cyst.lateral_um_per_px)
    assert wet.fluid.intraretinal and not wet.fluid.subretinal
    area = np.pi * 9.0 * 14.0  # the drawn ellipse, px
    assert wet.fluid.intraretinal_area_px == pytest.approx(area, rel=0.4)
    assert wet.fluid.area_mm2("intraretinal") == pytest.approx(wet.fluid.intraretinal_area_px * 4.0 * 15.0 / 1e6)
    srf = measure_oct(detached.image, detached.axial_um_per_px, detached.lateral_um_per_px)
    assert srf.fluid.subretinal and not srf.fluid.intraretinal
    assert srf.central_thickness_px == pytest.approx(detached.mean_thickness("ilm", "bm", 0.0, 0.5), rel=0.04)


def test_input_errors_name_the_field_and_the_fix(scan):
    with pytest.raises(ValueError, match="oct: expected a 2-D grayscale"):
        measure_oct(np.zeros((10, 10, 10)))
    with pytest.raises(ValueError, match="axial_um_per_px: must be a positive"):
        measure_oct(scan.image, axial_um_per_px=-1.0)
    with pytest.raises(ValueError, match=r"divide by 255"):
        measure_oct(np.asarray(scan.image, dtype=np.float32))
    with pytest.raises(UnusableImageError, match="blank"):
        measure_oct(Image.new("L", (200, 100)))
    blank = measure_biomarkers(oct=Image.new("L", (200, 100)))
    assert blank["quality"]["oct"] is None and blank["reasons"]["central_subfield"].startswith("OCT not measurable")


def test_phantom_central_thickness_within_5_percent():
    phantom = pytest.importorskip("processing.phantom").RetinaPhantom(seed=3)
    errors = []
    for i in range(30):
        sample = phantom[i]
        m = measure_oct(sample["oct"][0], sample["oct_axial_um_per_px"], sample["oct_lateral_um_per_px"], sample["eye"])
        truth = phantom.subject(i).biomarkers["central_subfield"]
        errors.append(abs(m.biomarkers["central_subfield"] - truth) / truth)
    assert np.median(errors) < 0.05


@pytest.mark.skipif(not (REAL / "labels.csv").is_file(), reason=f"real DME/DR set not found at {REAL.resolve()}")
def test_real_dme_eyes_are_thicker_and_more_often_wet():
    with (REAL / "labels.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["modality"] == "oct" and "_o_" in r["file"]]
    picked = {}
    for row in sorted(rows, key=lambda r: r["file"]):  # the first B-scan of the first 10 eyes of each class
        eye = (row["patient"], row["eye"])
        if eye not in picked and sum(d == row["DME"] for d, _ in picked.values()) < 10:
            picked[eye] = (row["DME"], row["file"])
    measured = {"0": [], "1": []}
    for dme, name in picked.values():
        measured[dme].append(measure_oct(REAL / "images" / name))
    assert len(measured["1"]) == 10 and len(measured["0"]) == 10
    measures = {"central thickness": lambda m: m.central_thickness_px, "peak thickness": lambda m: m.profile.peak_px,
                "fluid flag": lambda m: m.fluid.intraretinal or m.fluid.subretinal}
    for name, value in measures.items():
        assert np.mean([value(m) for m in measured["1"]]) > np.mean([value(m) for m in measured["0"]]), name
