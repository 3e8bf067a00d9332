"""The Eye-Guideline: severity bands, descriptors, age adjustment, aliases and the evidence scorer."""

import random

import pytest

from grok_retina.guideline import (
    AMBIGUOUS_ALIASES,
    LABEL_EVIDENCE,
    describe,
    evidence_for,
    mention_phrases,
    score_labels,
    thresholds,
)
from processing.biomarkers import BIOMARKERS, get_biomarker
from processing.labels import LABELS
from tests.stage1_samples import make_biomarkers

MEANS = {b.name: sum(b.normal) / 2 for b in BIOMARKERS}


@pytest.mark.parametrize(
    "name, value, status, descriptor, severity",
    [
        ("central_subfield", 265.0, "normal", "within normal limits", 0),
        ("central_subfield", 310.0, "high", "thickened", 1),
        ("central_subfield", 330.0, "high", "markedly thickened", 2),  # mean 265 + 3 SD (20) = 325
        ("gc_ipl", 60.0, "low", "thinned", 1),
        ("gc_ipl", 50.0, "low", "markedly thinned", 2),
        ("cup_to_disc_ratio", 0.65, "high", "enlarged", 1),
        ("cup_to_disc_ratio", 0.76, "high", "markedly enlarged", 2),  # ISGEO 99.5th percentile override
        ("av_ratio", 0.62, "low", "reduced", 1),
        ("venular_tortuosity", 1.2, "high", "markedly increased", 2),
        ("rnfl", None, "missing", "not available", 0),
    ],
)
def test_describe_bands(name, value, status, descriptor, severity):
    a = describe(name, value)
    assert (a.status, a.descriptor, a.severity) == (status, descriptor, severity)


def test_bands_follow_the_schema_normal_range():
    for spec in BIOMARKERS:
        t = thresholds(spec.name)
        assert (t.low, t.high) == spec.normal
        assert t.marked_low < t.low < t.high < t.marked_high
        assert describe(spec.name, MEANS[spec.name]).status == "normal"


def test_age_shifts_only_age_dependent_layers():
    young, ref, old = thresholds("gc_ipl", 35), thresholds("gc_ipl", 55), thresholds("gc_ipl", 75)
    assert young.low - ref.low == pytest.approx(3.2) and ref.low - old.low == pytest.approx(3.2)
    assert thresholds("rnfl", 75).low < thresholds("rnfl").low
    assert thresholds("central_subfield", 80) == thresholds("central_subfield")
    # 62 µm GC-IPL is thinned at 55, but within the age-adjusted limits at 85
    assert describe("gc_ipl", 62.0).status == "low" and describe("gc_ipl", 62.0, age=85).status == "normal"


def test_every_biomarker_is_named_by_its_display_name_and_aliases_are_unambiguous():
    phrases = mention_phrases()
    for spec in BIOMARKERS:
        assert phrases[spec.display.lower()] == (spec.name,)
    ambiguous = {p.lower() for p in AMBIGUOUS_ALIASES}
    assert all(len(names) == 1 for phrase, names in phrases.items() if phrase not in ambiguous)


def test_label_evidence_covers_every_label_with_known_biomarkers():
    assert set(LABEL_EVIDENCE) == set(LABELS)
    for evidence in LABEL_EVIDENCE.values():
        for item in evidence.items:
            get_biomarker(item.biomarker)
            assert item.direction in ("low", "high", "abnormal", "normal") and item.weight > 0


def test_score_labels_ranks_the_pattern_label_first():
    assert score_labels(MEANS)["Normal"] == 1.0
    rng = random.Random(3)
    for label in LABELS[:-1]:
        scores = score_labels(make_biomarkers(label, rng))
        assert max(scores, key=scores.get) == label, (label, scores)
        assert all(0.0 <= s <= 1.0 for s in scores.values())


def test_evidence_for_lists_matching_findings_strongest_first():
    values = dict(MEANS, cup_to_disc_ratio=0.8, gc_ipl=60.0)
    found = evidence_for("Glaucoma", values)
    assert [f.item.biomarker for f in found] == ["cup_to_disc_ratio", "gc_ipl"]
    assert found[0].assessment.severity == 2 and found[1].assessment.severity == 1
    assert evidence_for("AMD", values) == []
    with pytest.raises(ValueError, match="valid labels"):
        evidence_for("Cataract", values)
