"""The grounding verifier and report parsing on hand-written reports with known errors."""

import pytest

from grok_retina.report_parsing import parse_label, split_sections
from grok_retina.verifier import verify_report
from processing.biomarkers import BIOMARKERS

MEANS = {b.name: round(sum(b.normal) / 2, 3) for b in BIOMARKERS}
# Glaucoma: CDR markedly enlarged, GC-IPL and RNFL mildly thinned; inner nasal mildly thickened; one missing value.
GLAUCOMA = dict(MEANS, cup_to_disc_ratio=0.78, gc_ipl=60.0, rnfl=18.0, inner_nasal=360.0, venular_tortuosity=None)

CLEAN = """**Biomarker Assessments:**
- Vertical cup-to-disc ratio: 0.78, markedly enlarged
- GC-IPL thickness: 60.0 µm, thinned (normal 63.0-84.0 µm)
- Macular RNFL: 18.0 µm, thinned
- Inner nasal subfield thickness: 360 µm, thickened; a non-specific deviation
- The central subfield thickness of 265 µm is within normal limits.
**Sub-inference:**
The markedly enlarged C/D ratio together with thinning of the GC-IPL and RNFL indicates ganglion cell loss; the macula is otherwise preserved.
**Conclusion:** Findings are consistent with glaucoma, with no signs of diabetic retinopathy."""


def verify(text, label="Glaucoma", biomarkers=GLAUCOMA, **kwargs):
    return verify_report(text, biomarkers, label=label, **kwargs)


def test_clean_report_passes():
    result = verify(CLEAN)
    assert result.passed, result.findings()
    assert result.findings() == "OK"
    assert result.conclusion_label == "Glaucoma" and result.conclusion_consistent
    assert result.scores() == {"quantitative_accuracy": 1.0, "descriptor_accuracy": 1.0, "coverage": 1.0,
                               "grounding": 1.0}
    cdr = next(c for c in result.claims if c.biomarker == "cup_to_disc_ratio")
    assert (cdr.cited_value, cdr.true_value, cdr.descriptor, cdr.ok) == (0.78, 0.78, "markedly enlarged", True)


def test_values_within_ten_percent_pass_and_units_convert():
    text = CLEAN.replace("60.0 µm, thinned", "62 µm, thinned").replace(
        "- Macular RNFL", f"- Vertical disc diameter: {MEANS['vertical_disc_diameter'] / 1000:.2f} mm\n- Macular RNFL")
    assert verify(text).passed, verify(text).findings()


def test_wrong_number_is_flagged():
    result = verify(CLEAN.replace("GC-IPL thickness: 60.0 µm", "GC-IPL thickness: 70.0 µm"))
    assert not result.passed
    [error] = result.value_errors
    assert (error.biomarker, error.cited_value, error.true_value) == ("gc_ipl", 70.0, 60.0)
    assert "measured value is 60.0 µm" in result.findings()
    assert result.quantitative_accuracy < 1.0


def test_wrong_descriptor_is_flagged():
    result = verify(CLEAN.replace("360 µm, thickened", "360 µm, thinned"))
    assert not result.passed
    [error] = result.descriptor_errors
    assert (error.biomarker, error.descriptor) == ("inner_nasal", "thinned")
    assert "'thickened' by the guideline" in result.findings()


@pytest.mark.parametrize(
    "old, new, ok",
    [
        ("60.0 µm, thinned", "60.0 µm, markedly thinned", False),  # overstated severity
        ("0.78, markedly enlarged", "0.78, enlarged", True),  # understated: still the right direction
        ("is within normal limits", "is not thinned", True),  # negation of a wrong direction
        ("is within normal limits", "is not within normal limits", False),
        ("- Macular RNFL: 18.0 µm, thinned", "- Macular RNFL: 18.0 µm, not thinned", False),
    ],
)
def test_descriptor_severity_and_negation(old, new, ok):
    assert old in CLEAN
    result = verify(CLEAN.replace(old, new))
    assert result.passed is ok, result.findings()


def test_contradictory_conclusion_is_flagged():
    text = CLEAN.replace("Findings are consistent with glaucoma, with no signs of diabetic retinopathy.",
                         "No ocular or systemic disease.")
    result = verify(text)
    assert result.conclusion_label == "Normal"
    assert not result.label_consistent and not result.evidence_consistent and not result.passed
    assert "must lead to glaucoma" in result.findings()
    # without a label, the clear glaucoma pattern alone contradicts a normal conclusion
    unlabelled = verify(text, label=None)
    assert unlabelled.label_consistent and not unlabelled.evidence_consistent
    assert "clear pattern of glaucoma" in unlabelled.findings()


def test_number_for_missing_biomarker_is_fabricated():
    text = CLEAN.replace("- Macular RNFL", "- Venular tortuosity: 1.08, within normal limits\n- Macular RNFL")
    result = verify(text)
    [claim] = result.fabricated
    assert claim.biomarker == "venular_tortuosity" and claim.cited_value == 1.08 and claim.true_value is None
    assert "was not measured" in result.findings() and not result.passed


def test_number_matching_nothing_is_fabricated_but_quoted_limits_are_not():
    result = verify(CLEAN.replace("otherwise preserved.", "otherwise preserved. About 240 cells are lost."))
    [claim] = result.fabricated
    assert claim.biomarker is None and claim.cited_value == 240.0
    assert "matches no measured biomarker" in result.findings()
    quoted = verify(CLEAN.replace("0.78, markedly enlarged", "0.78, markedly enlarged (above 0.75)"))
    assert quoted.passed, quoted.findings()


def test_negated_diagnoses():
    assert parse_label("Conclusion: There is no evidence of glaucoma.") is None
    assert parse_label("Conclusion: No signs of glaucoma; findings suggest Alzheimer's disease.") == "Alzheimer"
    assert parse_label("Conclusion: no evidence of glaucoma, AMD or diabetic retinopathy; the eye is healthy.") == "Normal"
    assert parse_label("Conclusion: consistent with AMD rather than diabetic retinopathy.") == "AMD"
    assert parse_label("Conclusion: The findings are not consistent with glaucoma.") is None
    assert parse_label("Conclusion: no diabetic retinopathy and no macular edema.") == "Normal"  # both ruled out
    assert parse_label("Conclusion: no diabetic retinopathy.") is None  # oedema not ruled out: no diagnosis
    assert parse_label("Conclusion: no diabetic retinopathy, but diabetic macular oedema.") == "DiabeticRetinopathy"
    assert parse_label("Conclusion: AMD has been ruled out; normal retina.") == "Normal"
    assert parse_label("Conclusion: diabetes mellitus without retinopathy.") == "Diabetes"
    assert parse_label("Conclusion: Diabetic retinopathy in a patient with diabetes.") == "DiabeticRetinopathy"
    assert parse_label("Assessment done. Most likely glaucoma.") == "Glaucoma"  # no section: last sentence
    result = verify(CLEAN.replace("Findings are consistent with glaucoma, with no signs of diabetic retinopathy.",
                                  "There is no evidence of glaucoma."))
    assert result.conclusion_label is None and not result.passed
    assert "names no diagnosis" in result.findings()


def test_split_sections_accepts_markdown_headings():
    sections = split_sections("## Biomarker Assessments\n- a\n**Sub-inference:** b\nConclusion: c")
    assert sections == {"Biomarker Assessments": "- a", "Sub-inference": "b", "Conclusion": "c"}
    assert split_sections("no headings")["Conclusion"] == ""


def test_coverage_counts_abnormal_biomarkers_mentioned():
    text = CLEAN.replace("- Inner nasal subfield thickness: 360 µm, thickened; a non-specific deviation\n", "")
    result = verify(text)
    assert result.missed == ["inner_nasal"] and result.coverage == pytest.approx(3 / 4)
    assert result.passed  # above min_coverage=0.5
    assert not verify(text, min_coverage=1.0).passed


@pytest.mark.parametrize("leak", ["Given the provided diagnosis, ", "On the single B-scan available, "])
def test_revealing_how_the_report_was_made_fails(leak):
    result = verify(CLEAN.replace("The markedly enlarged", leak + "the markedly enlarged"))
    assert not result.passed and "reveals how it was produced" in result.findings()


def test_missing_sections_and_length():
    result = verify("Glaucoma.")
    assert "Missing section(s): Biomarker Assessments, Sub-inference, Conclusion" in result.findings()
    long = CLEAN.replace("the macula is otherwise preserved.", "the macula is otherwise preserved " * 60 + ".")
    assert "shorten it to at most 300" in verify(long).findings()
