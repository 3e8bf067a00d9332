"""The biomarker schema: 37 entries, validation errors that name the field, the prompt block."""

import math

import pytest

from processing.biomarkers import (
    BIOMARKER_NAMES,
    BIOMARKERS,
    CFP_BIOMARKER_NAMES,
    OCT_BIOMARKER_NAMES,
    BiomarkerError,
    biomarker_status,
    format_biomarkers,
    validate_biomarkers,
)


def test_schema_has_the_papers_37_biomarkers():
    assert len(BIOMARKERS) == 37 and len(OCT_BIOMARKER_NAMES) == 31 and len(CFP_BIOMARKER_NAMES) == 6
    assert len(set(BIOMARKER_NAMES)) == 37
    for band in ("inl_elm", "elm_isos", "isos_rpe", "inl_rpe"):
        assert {f"{band}_{r}" for r in ("central", "inner", "outer", "average")} <= set(OCT_BIOMARKER_NAMES)
    for spec in BIOMARKERS:
        assert spec.plausible[0] <= spec.normal[0] < spec.normal[1] <= spec.plausible[1], spec.name
        assert spec.unit == ("µm" if spec.modality == "oct" else "")


def test_validate_fills_missing_and_parses_numbers():
    values = validate_biomarkers({"central_subfield": "271.5", "av_ratio": 0.7, "rnfl": None, "gc_ipl": float("nan")})
    assert values["central_subfield"] == 271.5 and values["av_ratio"] == 0.7
    assert values["rnfl"] is None and values["gc_ipl"] is None and len(values) == 37


@pytest.mark.parametrize(
    "values,match",
    [
        ({"central_subfeild": 250}, r"Unknown biomarker name 'central_subfeild'.*central_subfield"),
        ({"rnfl": "thin"}, r"rnfl must be a number in µm"),
        ({"rnfl": True}, "boolean"),
        ({"cup_to_disc_ratio": 1.4}, r"cup_to_disc_ratio=1.4 is outside the plausible range \[0, 1\]"),
        ({"rpe": math.inf}, "infinite"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(BiomarkerError, match=match):
        validate_biomarkers(values, where="row 3")


@pytest.mark.parametrize("values", [[1, 2], "rnfl=28.5", 28.5])
def test_anything_but_a_mapping_is_a_named_biomarker_error(values):
    with pytest.raises(BiomarkerError, match=r"^row 3: expected a mapping of biomarker names to numbers"):
        validate_biomarkers(values, where="row 3")


def test_status_against_normal_range():
    assert biomarker_status("cup_to_disc_ratio", 0.8) == "high"
    assert biomarker_status("gc_ipl", 50.0) == "low"
    assert biomarker_status("gc_ipl", 75.0) == "normal"
    assert biomarker_status("gc_ipl", None) == "missing"


def test_prompt_block_shows_values_units_and_missing():
    block = format_biomarkers({"central_subfield": 301.25, "cup_to_disc_ratio": 0.71})
    assert "- Central subfield thickness: 301.2 µm" in block or "- Central subfield thickness: 301.3 µm" in block
    assert "- Vertical cup-to-disc ratio: 0.710" in block
    assert "- Macular RNFL thickness: not available" in block
    assert block.index("OCT biomarkers") < block.index("Fundus (CFP) biomarkers")
    assert block.count("\n- ") == 37
