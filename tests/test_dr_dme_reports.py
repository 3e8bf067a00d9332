"""DR grade and DME status in Stage I reports: the phrases, the negation-aware parser, the rules teacher, the
teacher prompt, the verifier, Stage I's columns and the assumed acquisition scales of Stage 0."""

import asyncio
import random

import pytest
from datasets import ClassLabel, Dataset

from grok_retina.instruct import generate_instructions, plan_jobs
from grok_retina.prompts import build_teacher_messages
from grok_retina.report_parsing import parse_dme, parse_dr_grade, parse_label, text_before_conclusion
from grok_retina.teachers import RulesTeacher, TeacherSample
from grok_retina.teachers.rules_teacher import CONCLUSIONS, NORMAL_CONCLUSIONS
from grok_retina.verifier import verify_report
from processing.biomarkers import validate_biomarkers
from processing.grok_dataset import grok_features
from processing.labels import DME_STATUSES, DR_GRADES, LABEL_DISPLAY, check_dr_dme, dr_dme_diagnosis, dr_dme_names
from tests.stage1_samples import make_biomarkers

RNG = random.Random(3)
GRADED = [  # (label, dr_grade, dme): every combination the DME/DR set can hold
    ("Normal", "0", "no"),
    ("DiabeticRetinopathy", "0", "yes"),
    ("DiabeticRetinopathy", "NPDR", "no"),
    ("DiabeticRetinopathy", "NPDR", "yes"),
    ("DiabeticRetinopathy", "PDR", "no"),
    ("DiabeticRetinopathy", "PDR", "yes"),
    ("DiabeticRetinopathy", None, "yes"),
]


def graded_sample(label, grade, dme, i=0):
    values = validate_biomarkers(make_biomarkers(label, RNG))
    return TeacherSample(f"{label}-{grade}-{dme}-{i}", values, label, dr_grade=grade, dme=dme)


# --- the phrases ---------------------------------------------------------------------------------------
def test_diagnosis_phrases():
    assert dr_dme_diagnosis("NPDR", "yes") == "non-proliferative diabetic retinopathy with diabetic macular oedema"
    assert dr_dme_diagnosis("PDR", "no") == "proliferative diabetic retinopathy without macular oedema"
    assert dr_dme_diagnosis("0", "no") == "no diabetic retinopathy and no macular oedema"
    assert dr_dme_diagnosis(None, "yes") == f"{LABEL_DISPLAY['DiabeticRetinopathy']} with diabetic macular oedema"
    with pytest.raises(ValueError, match="dr_grade 'R2'"):
        dr_dme_diagnosis("R2", "no")
    assert dr_dme_names(1, 0) == ("NPDR", "no") and dr_dme_names("PDR", "yes") == ("PDR", "yes")
    assert dr_dme_names(None, None) == (None, None)
    with pytest.raises(ValueError, match="dme index 2"):
        dr_dme_names(0, 2)


@pytest.mark.parametrize(
    "label, grade, dme, message",
    [
        ("Normal", "NPDR", "no", "contradicts"),
        ("DiabeticRetinopathy", "0", "no", "contradicts"),
        ("Glaucoma", "0", "no", "contradicts"),
        ("DiabeticRetinopathy", None, "no", "no diagnosis; give its DR grade"),
        ("DiabeticRetinopathy", "NPDR", None, "give the DME status"),
        ("DiabeticRetinopathy", "NPDR", "maybe", "dme 'maybe'"),
    ],
)
def test_inconsistent_dr_columns_are_named(label, grade, dme, message):
    with pytest.raises(ValueError, match=message):
        check_dr_dme(label, grade, dme)
    with pytest.raises(ValueError, match=f"sample x: .*{message}"):
        TeacherSample("x", {}, label, dr_grade=grade, dme=dme)


# --- parsing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "conclusion, grade, dme",
    [
        ("The most likely diagnosis is non-proliferative diabetic retinopathy with diabetic macular oedema.", "NPDR", "yes"),
        ("Findings are most consistent with proliferative diabetic retinopathy without macular oedema.", "PDR", "no"),
        ("The eye appears healthy, with no diabetic retinopathy and no macular oedema.", "0", "no"),
        ("There is no diabetic retinopathy and no macular oedema; the examination is within normal limits.", "0", "no"),
        ("Diabetic macular oedema without diabetic retinopathy.", "0", "yes"),
        ("No signs of glaucoma, macular degeneration or diabetic retinopathy; the eye appears healthy.", "0", "no"),
        ("Severe NPDR with clinically significant macular edema.", "NPDR", "yes"),
        ("Non-proliferative DR; macular oedema is not present.", "NPDR", "no"),
        ("PDR, but no DME.", "PDR", "no"),
        ("No macular oedema, but proliferative diabetic retinopathy.", "PDR", "no"),
        ("No proliferative retinopathy; moderate NPDR with DME.", "NPDR", "yes"),
        ("Diabetic retinopathy, ungraded, with macular oedema.", None, "yes"),
        ("Glaucoma without macular oedema.", "0", "no"),
        ("Hypertensive retinopathy.", "0", "no"),
        ("Image quality too poor to conclude.", None, None),
    ],
)
def test_grade_and_dme_are_read_from_the_conclusion_with_negation(conclusion, grade, dme):
    report = f"Biomarker Assessments:\n- CST: thickened\nSub-inference:\nMacular oedema is suspected.\nConclusion: {conclusion}"
    assert (parse_dr_grade(report), parse_dme(report)) == (grade, dme)


def test_only_the_conclusion_counts_and_text_before_it_is_split_off():
    report = "Sub-inference:\nProliferative diabetic retinopathy with macular oedema was excluded.\nConclusion: healthy eye."
    assert (parse_label(report), parse_dr_grade(report), parse_dme(report)) == ("Normal", "0", "no")
    assert text_before_conclusion(report) == report.split("Conclusion:")[0]
    assert text_before_conclusion("no headings at all") == "no headings at all"


# --- the rules teacher, the prompt and the verifier ----------------------------------------------------
@pytest.mark.parametrize("label, grade, dme", GRADED)
def test_rules_conclusions_state_grade_and_dme_and_pass_the_verifier(label, grade, dme):
    teacher = RulesTeacher(seed=0)
    for i in range(3):
        sample = graded_sample(label, grade, dme, i)
        text = asyncio.run(teacher.generate(sample)).text
        result = verify_report(text, sample.biomarkers, label=label, dr_grade=grade, dme=dme)
        assert result.passed, f"{text}\n{result.findings()}"
        assert (parse_label(text), parse_dme(text)) == (label, dme)
        assert parse_dr_grade(text) == grade
        assert dr_dme_diagnosis(grade, dme) in text.split("Conclusion:")[1]


def test_ungraded_samples_keep_the_label_only_conclusions():
    teacher = RulesTeacher(seed=0)
    for label in ("DiabeticRetinopathy", "Normal", "Glaucoma"):
        sample = TeacherSample(label, validate_biomarkers(make_biomarkers(label, RNG)), label)
        conclusion = teacher.answer(sample)["conclusion"]
        expected = NORMAL_CONCLUSIONS if label == "Normal" else [c.format(d=LABEL_DISPLAY[label]) for c in CONCLUSIONS]
        assert conclusion in expected


def test_teacher_prompt_names_grade_and_dme_only_for_graded_samples():
    sample = graded_sample("DiabeticRetinopathy", "PDR", "yes")
    graded = build_teacher_messages(sample.biomarkers, sample.label, dr_grade="PDR", dme="yes")[1]["content"]
    assert "Diagnosis to reach (never reveal that it was given): proliferative diabetic retinopathy with diabetic " \
           "macular oedema. The Conclusion must state" in graded
    plain = build_teacher_messages(sample.biomarkers, sample.label)[1]["content"]
    assert "Diagnosis to reach (never reveal that it was given): diabetic retinopathy.\n" in plain
    assert "macular oedema" not in plain
    assert RulesTeacher().messages(sample)[1]["content"] == graded
    with pytest.raises(ValueError, match="contradicts"):
        build_teacher_messages(sample.biomarkers, "Normal", dr_grade="PDR", dme="yes")


def test_verifier_asks_for_the_grade_and_dme_status():
    sample = graded_sample("DiabeticRetinopathy", "NPDR", "yes")
    ungraded = TeacherSample(sample.id, sample.biomarkers, sample.label)
    report = asyncio.run(RulesTeacher().generate(ungraded)).text  # names diabetic retinopathy, no grade, no DME
    assert verify_report(report, sample.biomarkers, label=sample.label).passed
    result = verify_report(report, sample.biomarkers, label=sample.label, dr_grade="NPDR", dme="yes")
    assert not result.passed and result.conclusion_consistent
    assert ("must state the diabetic retinopathy grade and the macular oedema status: non-proliferative diabetic "
            "retinopathy with diabetic macular oedema") in result.findings()


# --- Stage I with the dataset's columns ----------------------------------------------------------------
def graded_dataset() -> Dataset:
    rows = [graded_sample(*combo, i=i) for i, combo in enumerate(GRADED)]
    features = grok_features({"dme": ClassLabel(names=list(DME_STATUSES)), "dr_grade": ClassLabel(names=list(DR_GRADES))})
    return Dataset.from_dict({
        "id": [s.id for s in rows], "patient_id": [f"p{i}" for i in range(len(rows))], "eye": ["OD"] * len(rows),
        "cfp": [None] * len(rows), "oct": [[] for _ in rows], "biomarkers": [s.biomarkers for s in rows],
        "label": [s.label for s in rows], "report": [None] * len(rows),
        **{name: [None] * len(rows) for name in ("oct_axial_um_per_px", "oct_lateral_um_per_px", "cfp_um_per_px")},
        "dme": [s.dme for s in rows], "dr_grade": [s.dr_grade for s in rows],
    }, features=features)


def test_stage1_reads_and_keeps_the_dr_columns(tmp_path):
    dataset = graded_dataset()
    jobs = plan_jobs(dataset, RulesTeacher())
    assert [(j.sample.label, j.sample.dr_grade, j.sample.dme) for j in jobs] == GRADED
    result = generate_instructions(dataset, RulesTeacher(), tmp_path, progress=False)
    assert len(result) == len(GRADED) and {"dme", "dr_grade"} <= set(result.column_names)
    for row, (label, grade, dme) in zip(result, GRADED):
        assert (result.features["dme"].int2str(row["dme"]), row["dr_grade"]) == (
            dme, None if grade is None else DR_GRADES.index(grade))
        text = row["completion"][0]["content"][0]["text"]
        assert (parse_dr_grade(text), parse_dme(text)) == (grade, dme)


def test_stage1_names_a_row_whose_label_contradicts_its_grade():
    dataset = graded_dataset().map(lambda row, i: {"dr_grade": 1 if i == 0 else row["dr_grade"]}, with_indices=True)
    with pytest.raises(ValueError, match="sample Normal-0-no-0: label 'Normal' contradicts dr_grade='NPDR'"):
        plan_jobs(dataset, RulesTeacher())


# --- Stage 0: assumed scales ---------------------------------------------------------------------------
def test_assumed_scales_fill_only_rows_without_their_own():
    from processing.phantom import RetinaPhantom
    from recipes.measure_biomarkers import MeasureArguments, measure_row

    row = RetinaPhantom(seed=0)[0]
    unscaled = {**row, "biomarkers": {}, "oct_axial_um_per_px": None, "oct_lateral_um_per_px": None}
    assumed = {"oct_axial_um_per_px": row["oct_axial_um_per_px"], "oct_lateral_um_per_px": 99.0}
    without = measure_row(unscaled)
    assert without["biomarkers"].get("central_subfield") is None and "oct_axial_um_per_px" not in without
    scaled = measure_row(unscaled, assumed_scales=assumed)
    assert scaled["biomarkers"]["central_subfield"] is not None
    assert (scaled["oct_axial_um_per_px"], scaled["oct_lateral_um_per_px"]) == (row["oct_axial_um_per_px"], 99.0)
    own = measure_row({**row, "biomarkers": {}}, assumed_scales=assumed)
    assert "oct_lateral_um_per_px" not in own  # the row's own scale is kept
    assert MeasureArguments(dataset="d", out="o", assume_oct_axial_um_per_px=6.1).assumed_scales() == {
        "oct_axial_um_per_px": 6.1}
    with pytest.raises(ValueError, match="--assume_cfp_um_per_px must be a positive number"):
        MeasureArguments(dataset="d", out="o", assume_cfp_um_per_px=0.0)


def test_real_set_rows_become_graded_teacher_samples():
    from processing.dme_dr import load_dme_dr, resolve_root

    try:
        resolve_root()
    except FileNotFoundError as missing:
        pytest.skip(f"DME/DR paired set not available: {missing}")
    train = load_dme_dr()["train"]
    jobs = plan_jobs(train, RulesTeacher())
    rows = train.select_columns(["dr_grade", "dme"]).to_list()
    assert [(j.sample.dr_grade, j.sample.dme) for j in jobs] == [dr_dme_names(r["dr_grade"], r["dme"]) for r in rows]
    for job in jobs[:40]:  # biomarkers not measured yet: the conclusion still states grade and DME
        text = asyncio.run(RulesTeacher().generate(job.sample)).text
        assert (parse_dr_grade(text), parse_dme(text)) == (job.sample.dr_grade, job.sample.dme)
