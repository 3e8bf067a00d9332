"""Regression metrics on a hand-computed case."""

import math

import pytest

from grok_retina.evaluation.regression import regression_metrics

TARGETS = [[1, 10], [2, 20], [3, 30]]
PREDS = [[1, 12], [2, 18], [4, 30]]


def test_per_target_and_overall_by_hand():
    out = regression_metrics(PREDS, TARGETS, names=["cdr", "rnfl"])
    # cdr: errors 0, 0, 1 -> MAE 1/3, RMSE sqrt(1/3); SS_res 1, SS_tot (1 + 0 + 1) = 2 -> R² 0.5
    cdr = out["per_target"]["cdr"]
    assert (cdr["mae"], cdr["rmse"], cdr["r2"], cdr["n"]) == pytest.approx((1 / 3, math.sqrt(1 / 3), 0.5, 3))
    # rnfl: errors 2, -2, 0 -> MAE 4/3, RMSE sqrt(8/3); SS_res 8, SS_tot 200 -> R² 0.96
    rnfl = out["per_target"]["rnfl"]
    assert (rnfl["mae"], rnfl["rmse"], rnfl["r2"]) == pytest.approx((4 / 3, math.sqrt(8 / 3), 0.96))
    # overall: pooled |errors| 0,0,1,2,2,0 -> MAE 5/6, RMSE sqrt(9/6); R² mean(0.5, 0.96) = 0.73
    assert out["overall"] == pytest.approx({"mae": 5 / 6, "rmse": math.sqrt(1.5), "r2": 0.73, "n": 6})


def test_missing_targets_are_skipped_and_constant_targets_have_no_r2():
    out = regression_metrics([[1.0, 5.0], [3.0, 5.0], [9.0, 5.0]], [[1.0, 5.0], [2.0, 5.0], [float("nan"), 5.0]])
    assert out["per_target"]["target_0"]["n"] == 2 and out["per_target"]["target_0"]["mae"] == 0.5
    assert out["per_target"]["target_1"]["r2"] is None  # zero variance: undefined, not averaged
    assert out["overall"]["r2"] == pytest.approx(1 - 1 / 0.5)  # only target_0: SS_res 1, SS_tot 0.5
    assert out["overall"]["n"] == 5


def test_one_dimensional_input_and_errors():
    assert regression_metrics([1.0, 2.0], [1.0, 3.0])["overall"]["mae"] == 0.5
    with pytest.raises(ValueError, match="same"):
        regression_metrics([[1.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        regression_metrics([float("nan")], [1.0])
    with pytest.raises(ValueError, match="one name per column"):
        regression_metrics([[1.0, 2.0]], [[1.0, 2.0]], names=["a"])
