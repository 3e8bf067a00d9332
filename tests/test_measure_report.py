"""The stage 0 report's real-set evaluation: AUC, the logistic model, patient folds and the held-out split; its
figures file is replaced atomically."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from grok_retina.evaluation.classification import roc_auc
import recipes.measure_report as report
from recipes.measure_report import (
    LogisticModel,
    bootstrap_interval,
    cross_validated_auc,
    eye_features,
    held_out_auc,
    out_of_fold_scores,
    patient_folds,
)


def eyes_of(patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two eyes per patient; feature 0 is the patient's number, feature 1 a noisy DME signal."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(patients), 2)
    label = rng.random(patient.size) < 0.3
    label[:2] = [True, False]
    x = np.c_[patient, label + rng.normal(0, 0.7, patient.size)]
    return x, label, [f"p{p}" for p in patient]


class SpyModel:
    """Stands in for `LogisticModel`: remembers the patients (feature 0) it was fitted on and fails if it
    scores one of them."""

    fitted: list[set] = []

    def __init__(self, seen: set):
        self.seen = seen

    @classmethod
    def fit(cls, x, y):
        cls.fitted.append(set(x[:, 0]))
        return cls(set(x[:, 0]))

    def score(self, x):
        leaked = self.seen & set(x[:, 0])
        assert not leaked, f"patients {sorted(leaked)} scored by a model fitted on them"
        return x[:, 1]

    def coefficients(self, names):
        return {}


def test_auc_is_the_share_of_ordered_pairs():
    assert roc_auc(np.array([2.0, 3.0, 1.0, 2.5]), np.array([True, True, False, False])) == 0.75
    assert roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5


def test_logistic_model_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal([50.0, 0.5], [10.0, 0.3], size=(20000, 2))
    truth = np.array([0.2, -3.0])
    y = rng.random(len(x)) < 1.0 / (1.0 + np.exp(-(x @ truth - 8.0)))
    model = LogisticModel.fit(x, y, l2=1e-6)
    found = model.coefficients(("thickness", "fluid"))
    assert found["thickness"] == pytest.approx(0.2, abs=0.01)
    assert found["fluid"] == pytest.approx(-3.0, abs=0.15)
    assert found["intercept"] == pytest.approx(-8.0, abs=0.5)
    np.testing.assert_allclose(model.score(x[:3]), x[:3] @ [found["thickness"], found["fluid"]] + found["intercept"], atol=0.01)  # rounded coefficients


def test_logistic_model_stays_finite_on_separable_eyes_and_needs_both_classes():
    x, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([False, False, True, True])
    model = LogisticModel.fit(x, y)
    assert np.all(np.isfinite(model.weights)) and model.score(np.array([[4.0]]))[0] > model.score(np.array([[1.0]]))[0]
    with pytest.raises(ValueError, match="y: the training eyes hold one class only"):
        LogisticModel.fit(x, np.zeros(4, bool))


def test_patient_folds_keep_patients_together_and_share_out_the_positives():
    _, label, patients = eyes_of(60)
    fold = patient_folds(patients, label, folds=5, seed=3)
    for patient in set(patients):
        assert len({f for f, p in zip(fold, patients) if p == patient}) == 1
    assert set(fold) == set(range(5)) and all(label[fold == k].any() for k in range(5))
    np.testing.assert_array_equal(fold, patient_folds(patients, label, folds=5, seed=3))


def test_no_eye_is_scored_by_a_model_that_saw_its_patient(monkeypatch):
    x, label, patients = eyes_of(40)
    monkeypatch.setattr(report, "LogisticModel", SpyModel)
    SpyModel.fitted = []
    out_of_fold_scores(x, label, patients, folds=4, seed=0)
    assert len(SpyModel.fitted) == 4 and set().union(*SpyModel.fitted) == set(x[:, 0])
    SpyModel.fitted = []
    validation = {f"p{p}" for p in range(0, 40, 5)}
    figures = held_out_auc(x, label, patients, validation)
    assert SpyModel.fitted == [{p for p in range(40) if f"p{p}" not in validation}]
    assert figures["validation_eyes"] == 2 * len(validation) and figures["train_eyes"] == len(patients) - 2 * len(validation)
    assert figures["validation_dme_eyes"] == int(sum(y for y, p in zip(label, patients) if p in validation))


def test_a_clean_signal_gives_auc_1_held_out_and_cross_validated():
    x, label, patients = eyes_of(50)
    x[:, 1] = label + 0.01 * x[:, 0] / 100  # separable
    assert held_out_auc(x, label, patients, {f"p{p}" for p in range(0, 50, 4)})["auc"] == 1.0
    cv = cross_validated_auc(x, label, patients, folds=5, repeats=3)
    assert cv["auc_median"] == 1.0 and cv["eyes"] == 100 and cv["dme_eyes"] == int(label.sum())
    assert cv["auc_95_interval"] == [1.0, 1.0]


def test_bootstrap_interval_brackets_the_auc():
    x, label, patients = eyes_of(80, seed=1)
    low, high = bootstrap_interval(x[:, 1], label, patients, n=300)
    assert 0.0 <= low < roc_auc(x[:, 1], label) < high <= 1.0


def test_eye_features_average_the_measured_b_scans():
    rows = {"a1": {"central_px": 40.0, "peak_px": 50.0, "fluid": True},
            "a2": {"central_px": 60.0, "peak_px": 70.0, "fluid": False},
            "b1": {"error": "blank"}}
    eyes = {("p1", "OD"): {"oct": ["a1", "a2"]}, ("p2", "OS"): {"oct": ["b1"]}}
    keys, features = eye_features(rows, eyes)
    assert keys == [("p1", "OD")]
    assert features["central_thickness_px"].tolist() == [50.0] and features["peak_thickness_px"].tolist() == [60.0]
    assert features["fluid_share"].tolist() == [0.5]


def test_the_figures_file_is_replaced_whole_never_rewritten_in_place(tmp_path, monkeypatch):
    figures = {"pairs": 1, "seed": 0, "biomarkers": {}}
    monkeypatch.setattr(report, "phantom_figures", lambda n, seed, num_proc: figures)
    out = tmp_path / "results" / "measure.json"
    out.parent.mkdir()
    out.write_text('{"old": true}\n')
    os.link(out, tmp_path / "reader.json")  # what a reader holding the old file sees
    assert report.main(["--phantom_n", "1", "--skip_real", "true", "--timing_n", "0", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"phantom": figures}
    assert json.loads((tmp_path / "reader.json").read_text()) == {"old": True}
    assert [p.name for p in out.parent.iterdir()] == ["measure.json"]  # no temporary file left behind
