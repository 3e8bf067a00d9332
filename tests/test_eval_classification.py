"""Diagnosis metrics on hand-made cases with hand-computed answers."""

import math
import random

import pytest

from grok_retina.evaluation.classification import (
    binary_metrics,
    diagnosis_metrics,
    macro_f1,
    macro_f1_difference,
    macro_f1_vs_chance,
    per_class_metrics,
    roc_auc,
)

LABELS4 = ("A", "B", "C", "D")
REFS = ["A", "A", "A", "B", "B", "C"]
PREDS = ["A", "A", "B", "B", None, "A"]  # one unparsed report (index 4)


def test_macro_f1_with_a_missing_class_and_an_unparsed_prediction():
    # A: tp 2, predicted 3 (0, 1, 5), support 3 -> P = R = F1 = 2/3
    # B: tp 1, predicted 2 (2, 3), support 2 -> P = R = F1 = 1/2   (the unparsed B is a false negative only)
    # C: tp 0, never predicted, support 1 -> P = R = F1 = 0
    # D: neither referenced nor predicted -> undefined, left out
    # macro-F1 = (2/3 + 1/2 + 0) / 3 = 7/18
    rows = per_class_metrics(PREDS, REFS, LABELS4)
    assert rows["A"]["f1"] == pytest.approx(2 / 3)
    assert rows["B"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rows["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows["D"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert macro_f1(PREDS, REFS, LABELS4) == pytest.approx(7 / 18)


def test_diagnosis_metrics_accuracy_confusion_and_unparsed():
    out = diagnosis_metrics(PREDS, REFS, LABELS4)
    assert out["macro_f1"] == pytest.approx(7 / 18)
    assert out["accuracy"] == 0.5  # 3 of 6
    assert out["unparsed"] == 1 and out["n"] == 6
    assert out["confusion_columns"] == ["A", "B", "C", "D", "none"]
    # rows = reference, columns = prediction, last column = unparsed
    assert out["confusion_matrix"] == [[2, 1, 0, 0, 0], [0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def test_a_predicted_class_without_support_scores_zero():
    # A: P 1, R 1/2, F1 2/3; B: predicted once, no support -> F1 0. macro = 1/3
    assert macro_f1(["A", "B"], ["A", "A"], ("A", "B")) == pytest.approx(1 / 3)


def test_default_label_set_and_generic_labels():
    out = diagnosis_metrics(["Glaucoma", "AMD", None], ["Glaucoma", "Normal", "AMD"])
    # Glaucoma F1 1; AMD P 0 R 0 F1 0; Normal F1 0 -> macro 1/3
    assert out["macro_f1"] == pytest.approx(1 / 3)
    assert len(out["confusion_matrix"]) == 7 and len(out["confusion_matrix"][0]) == 8
    # DR grades: "0" F1 1, "NPDR" P 1/2 R 1 F1 2/3, "PDR" F1 0 -> macro 5/9
    assert macro_f1(["0", "NPDR", "NPDR"], ["0", "NPDR", "PDR"], ("0", "NPDR", "PDR")) == pytest.approx(5 / 9)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"predictions\[1\] = 'Cataract' is not one of the labels"):
        diagnosis_metrics(["AMD", "Cataract"], ["AMD", "AMD"])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        macro_f1([None], ["amd"], ("AMD",))
    with pytest.raises(ValueError, match="2 items but references has 1"):
        macro_f1(["A", "A"], ["A"], ("A",))


def test_roc_auc_mann_whitney_with_and_without_ties():
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4 pairs
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # positives {0.5, 0.9} vs negatives {0.5, 0.5}: two ties count 1/2 each, 0.9 wins twice -> (1 + 2) / 4
    assert roc_auc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(0.75)
    assert roc_auc([0.2, 0.2], [True, False]) == pytest.approx(0.5)
    assert roc_auc([0.3, 0.7], [1, 1]) is None  # one class: undefined
    with pytest.raises(ValueError, match=r"targets\[1\] = 2"):
        roc_auc([0.1, 0.2], [0, 2])


def test_binary_metrics_at_a_threshold():
    # calls at 0.375: [0, 1, 0, 1]; tp 1 (0.8), fp 1 (0.4), fn 1 (0.35) -> P = R = F1 = 1/2, accuracy 2/4
    out = binary_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], threshold=0.375)
    assert out["roc_auc"] == pytest.approx(0.75)
    assert (out["precision"], out["recall"], out["f1"], out["accuracy"]) == (0.5, 0.5, 0.5, 0.5)
    assert out["n"] == 4 and out["n_positive"] == 2
    assert math.isclose(binary_metrics([0.9, 0.1], [1, 0])["f1"], 1.0)


# The label the benchmark scores is parsed by Stage I's grok_retina.report_parsing.parse_label (one parser).
@pytest.mark.parametrize(
    ("report", "label"),
    [
        ("Conclusion: no signs of glaucoma.", None),
        ("Conclusion: glaucoma is unlikely.", None),
        ("Conclusion: ruled out AMD.", None),
        ("Conclusion: findings consistent with diabetic retinopathy.", "DiabeticRetinopathy"),
        ("Conclusion: no signs of glaucoma; findings consistent with diabetic retinopathy.", "DiabeticRetinopathy"),
        ("Sub-inference: glaucoma is likely.\nConclusion: no evidence of ocular or systemic disease.", "Normal"),
        ("Conclusion: diabetic retinopathy is not present; the findings suggest diabetes mellitus.", "Diabetes"),
        ("Conclusion: AMD has been ruled out; normal retina.", "Normal"),
        ("Conclusion: diabetic macular oedema in both eyes.", "DiabeticRetinopathy"),
    ],
)
def test_parse_label_respects_negation(report, label):
    from grok_retina.report_parsing import parse_label

    assert parse_label(report) == label


def test_chance_level_of_perfect_constant_and_independent_predictions():
    refs = [label for label in LABELS4 for _ in range(10)]
    perfect = macro_f1_vs_chance(refs, refs, LABELS4)
    assert perfect["p_value_vs_chance"] == pytest.approx(1 / 1001)  # no shuffle reaches F1 = 1
    assert 0.15 < perfect["chance_macro_f1"] < 0.35  # about 1/4 for four balanced classes
    constant = macro_f1_vs_chance(["A"] * len(refs), refs, LABELS4)  # one diagnosis for every eye
    assert constant["p_value_vs_chance"] == 1.0
    assert constant["chance_macro_f1"] == pytest.approx(macro_f1(["A"] * len(refs), refs, LABELS4))
    rng = random.Random(1)
    independent = [rng.choice(LABELS4) for _ in refs]
    assert macro_f1_vs_chance(independent, refs, LABELS4)["p_value_vs_chance"] > 0.05
    assert macro_f1_vs_chance(independent, refs, LABELS4, seed=3) == macro_f1_vs_chance(independent, refs, LABELS4, seed=3)


def test_macro_f1_difference_with_paired_bootstrap_interval():
    refs = [label for label in LABELS4 for _ in range(10)]
    rng = random.Random(2)
    noisy = [r if rng.random() < 0.5 else rng.choice(LABELS4) for r in refs]
    same = macro_f1_difference(noisy, noisy, refs, LABELS4)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # paired: identical answers never differ
    better = macro_f1_difference(noisy, refs, refs, LABELS4, n_resamples=500)
    assert better["difference"] == pytest.approx(1 - macro_f1(noisy, refs, LABELS4))
    assert 0 < better["ci_low"] < better["difference"] < better["ci_high"] <= 1
    worse = macro_f1_difference(refs, noisy, refs, LABELS4, n_resamples=500)
    assert worse["difference"] == pytest.approx(-better["difference"]) and worse["ci_high"] < 0
    one_flip = macro_f1_difference(refs, [*refs[:-1], "A"], refs, LABELS4)  # one answer of 40 changed
    assert one_flip["ci_low"] < one_flip["difference"] < 0 and one_flip["ci_high"] == 0.0
    with pytest.raises(ValueError, match="predictions has 39 items"):
        macro_f1_difference(refs, refs[:-1], refs, LABELS4)


def test_chance_level_is_in_diagnosis_metrics_and_unparsed_reports_never_match():
    out = diagnosis_metrics(PREDS, REFS, LABELS4)
    assert out["chance_macro_f1"] < out["macro_f1"] == pytest.approx(7 / 18)
    assert 0 < out["p_value_vs_chance"] <= 1
    assert macro_f1_vs_chance([None] * 6, REFS, LABELS4) == {"chance_macro_f1": 0.0, "p_value_vs_chance": 1.0}
    with pytest.raises(ValueError, match="n_permutations"):
        macro_f1_vs_chance(PREDS, REFS, LABELS4, n_permutations=0)
