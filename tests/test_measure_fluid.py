"""Stage 0, OCT fluid and peak thickness: which dark regions count as fluid, on synthetic B-scans."""

from __future__ import annotations

import numpy as np
import pytest

from processing.measure import measure_oct
from processing.measure.images import as_gray
from processing.measure.oct_layers import LayerSegmentation
from processing.measure.oct_metrics import PEAK_RADIUS_MM, detect_fluid

from .measure_synthetic import CYST, synthetic_bscan


def fluid_with_true_layers(**scene) -> tuple[int, int]:
    """(intraretinal, subretinal) fluid px found on a synthetic scan segmented by its true boundaries, so that
    only `detect_fluid`'s own rules are tested."""
    scan = synthetic_bscan(**scene)
    boundaries = {name: rows - 0.5 for name, rows in scan.boundaries.items()}  # pixel-centre rows
    seg = LayerSegmentation(boundaries, np.ones(scan.image.width, bool), 1.0 / scan.axial_um_per_px, False)
    found = detect_fluid(as_gray(scan.image, "oct"), seg, scan.lateral_um_per_px, scan.axial_um_per_px)
    return found.intraretinal_area_px, found.subretinal_area_px


def test_a_cyst_is_found_and_a_dry_scan_stays_dry():
    assert fluid_with_true_layers(cyst=True)[0] == pytest.approx(np.pi * CYST[1] * CYST[2], rel=0.4)
    assert fluid_with_true_layers() == (0, 0)


def test_a_flat_dark_region_is_not_a_cyst():
    """40 µm tall (under `MIN_CYST_HEIGHT_UM`): as thin as a dark outer nuclear layer can be."""
    assert fluid_with_true_layers(cysts=((-1.0, 5.0, 20.0),)) == (0, 0)


def test_a_region_without_a_compact_core_is_not_a_cyst():
    """A cross of 6 and 4 px wide strands, 96 µm tall: no 30 µm square fits inside."""
    assert fluid_with_true_layers(cysts=((-1.0, 12.0, 3.0), (-1.0, 2.0, 40.0))) == (0, 0)


def test_a_region_at_the_edge_of_the_scan_is_ignored():
    assert fluid_with_true_layers(cysts=((-3.0, *CYST[1:]),)) == (0, 0)
    assert fluid_with_true_layers(cysts=((-2.0, *CYST[1:]),))[0] > 0


def test_subretinal_fluid_needs_no_minimum_height():
    """The lifted retina leaves a gap at most 56 µm tall: subretinal, found whole."""
    assert fluid_with_true_layers(subretinal=True)[1] > 0


def test_peak_thickness_is_the_thickest_point_near_the_fovea():
    scan = synthetic_bscan()
    m = measure_oct(scan.image, scan.axial_um_per_px, scan.lateral_um_per_px)
    x_mm = (np.arange(scan.image.width) - scan.fovea_x) * scan.lateral_um_per_px / 1000.0
    truth = (scan.boundaries["bm"] - scan.boundaries["ilm"])[np.abs(x_mm) <= PEAK_RADIUS_MM].max()
    assert m.profile.peak_px == pytest.approx(truth, rel=0.03)
    assert m.extras()["peak_thickness_px"] == m.profile.peak_px > m.central_thickness_px  # the pit is thinner
