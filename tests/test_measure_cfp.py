"""Stage 0, fundus: vessels, artery/vein split, calibre, tortuosity, disc and cup, on synthetic and phantom photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from processing.measure import UnusableImageError, measure_biomarkers, measure_cfp
from processing.measure.cfp import FRACTAL_REASON
from processing.measure.cfp_vessels import ARTERY, VEIN, box_counting_dimension

from .measure_synthetic import synthetic_fundus

UM_PER_PX = 26.5


@pytest.fixture(scope="module")
def fundus():
    return synthetic_fundus()


@pytest.fixture(scope="module")
def measured(fundus):
    return measure_cfp(fundus.image, UM_PER_PX)


def test_disc_and_cup(fundus, measured):
    disc = measured.disc
    assert disc is not None
    assert np.hypot(disc.cx - fundus.disc_centre[0] + 0.5, disc.cy - fundus.disc_centre[1] + 0.5) < 2.0
    assert disc.vertical_diameter_px == pytest.approx(2 * fundus.disc_vertical_radius, rel=0.03)
    assert measured.biomarkers["cup_to_disc_ratio"] == pytest.approx(fundus.cup_to_disc, abs=0.05)
    assert measured.biomarkers["vertical_disc_diameter"] == pytest.approx(2 * fundus.disc_vertical_radius * UM_PER_PX, rel=0.03)


def test_vessels_calibre_and_artery_vein_split(fundus, measured):
    segs = measured.vessels.segments
    # the straight veins are darker in red than the arteries: most vessel length near them is classed vein
    assert segs.length[segs.cls == VEIN].sum() > 0 and segs.length[segs.cls == ARTERY].sum() > 0
    assert measured.pixels["vein_calibre"] == pytest.approx(fundus.vein_width, rel=0.1)
    assert measured.pixels["artery_calibre"] == pytest.approx(fundus.artery_width, rel=0.2)
    assert measured.biomarkers["av_ratio"] == pytest.approx(fundus.artery_width / fundus.vein_width, abs=0.15)
    assert 0.01 < measured.vessels.density < 0.2


def test_tortuosity_of_wiggly_arteries_and_straight_veins(fundus, measured):
    assert measured.biomarkers["arterial_tortuosity"] == pytest.approx(fundus.artery_tortuosity, abs=0.03)
    assert measured.biomarkers["venular_tortuosity"] < 1.02
    assert measured.biomarkers["arterial_tortuosity"] > measured.biomarkers["venular_tortuosity"] + 0.01


def test_fractal_dimension_is_measured_but_not_put_in_the_schema_field(measured):
    assert measured.biomarkers["arterial_fractal_dimension"] is None
    assert measured.reasons["arterial_fractal_dimension"] == FRACTAL_REASON
    assert 0.8 < measured.extras()["arterial_fractal_dimension_boxcount"] < 1.6


def test_box_counting_dimension_of_a_line_and_a_square():
    line, square = np.zeros((256, 256), bool), np.zeros((256, 256), bool)
    line[128, :] = True
    square[64:192, 64:192] = True  # aligned with every box grid: N(s) = (128 / s)^2 exactly
    assert box_counting_dimension(line, line.shape) == pytest.approx(1.0, abs=0.05)
    assert box_counting_dimension(square, square.shape) == pytest.approx(2.0, abs=0.01)
    assert box_counting_dimension(np.zeros((256, 256), bool), (256, 256)) is None


def test_scale_and_missing_modality(fundus, measured):
    unscaled = measure_cfp(fundus.image)
    assert unscaled.biomarkers["vertical_disc_diameter"] is None and "pixels only" in unscaled.reasons["vertical_disc_diameter"]
    assert unscaled.pixels["disc_vertical_diameter"] == pytest.approx(measured.pixels["disc_vertical_diameter"])
    assert unscaled.biomarkers["cup_to_disc_ratio"] == measured.biomarkers["cup_to_disc_ratio"]
    only_cfp = measure_biomarkers(cfp=fundus.image, cfp_um_per_px=UM_PER_PX)
    assert only_cfp["biomarkers"]["central_subfield"] is None
    assert only_cfp["reasons"]["central_subfield"] == "no OCT B-scan given"
    assert only_cfp["quality"]["oct"] is None and only_cfp["quality"]["cfp"]["flag"].startswith(("good", "fair"))
    nothing = measure_biomarkers()
    assert all(v is None for v in nothing["biomarkers"].values()) and set(nothing["reasons"]) == set(nothing["biomarkers"])


def test_input_errors_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match="cfp: a colour fundus photograph is needed"):
        measure_cfp(Image.new("L", (128, 128)))
    with pytest.raises(ValueError, match="cfp_um_per_px: must be a positive"):
        measure_cfp(Image.new("RGB", (128, 128)), um_per_px=0.0)
    with pytest.raises(UnusableImageError, match="blank or black"):
        measure_cfp(Image.new("RGB", (128, 128)))


def test_phantom_cup_to_disc_within_0_05():
    phantom = pytest.importorskip("processing.phantom").RetinaPhantom(seed=5)
    errors = []
    for i in range(12):
        sample = phantom[i]
        m = measure_cfp(sample["cfp"], sample["cfp_um_per_px"])
        errors.append(abs(m.biomarkers["cup_to_disc_ratio"] - phantom.subject(i).biomarkers["cup_to_disc_ratio"]))
    assert np.median(errors) < 0.05
