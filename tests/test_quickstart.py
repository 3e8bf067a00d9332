"""`grok-retina quickstart` end to end at a small size, and its resume."""

import json

import pytest
from transformers import AutoModelForImageTextToText

from grok_retina.quickstart import QuickstartArguments, run_quickstart


@pytest.mark.slow
def test_quickstart_small_end_to_end_and_resume(tmp_path, capsys):
    args = QuickstartArguments(output_dir=str(tmp_path / "qs"), n_train=32, n_test=8, align_epochs=1, sft_epochs=1,
                               max_new_tokens=24)
    summary = run_quickstart(args)
    out = tmp_path / "qs"
    assert [s["stage"].split(":")[0] for s in summary["stages"]][:4] == [
        "phantom data (paired CFP + OCT, 37 ground-truth biomarkers)", "Stage I", "Stage II", "Stage III"]
    model = AutoModelForImageTextToText.from_pretrained(out / "model")
    assert type(model).__name__ == "GrokForConditionalGeneration"
    results = json.loads((out / "eval" / "gou_results.json").read_text())
    assert results["sections"]["diagnosis"]["n"] == 8 and "macro_f1" in results["sections"]["diagnosis"]
    example = json.loads((out / "example_report.json").read_text())
    assert example["true_label"] and len(example["assessments"]) == 37
    printed = capsys.readouterr().out
    for name, section in (("report_diagnosis", "diagnosis"), ("diagnosis_question", "diagnosis_question")):
        assert 0 < summary[name]["p_value_vs_chance"] <= 1
        assert summary[name]["chance_macro_f1"] == results["sections"][section]["chance_macro_f1"]
    assert results["sections"]["diagnosis_question"]["n"] == 8
    for line in ("macro-F1 of the short answers to the diagnosis question", "macro-F1 of the diagnoses named by the "
                 "reports' conclusions", "permutation p =", "=== Stage 6/6", "Conditioning: completion loss"):
        assert line in printed
    gap = summary["conditioning"]
    assert gap["n"] == 8 and 0 < gap["own_loss"] < 20 and gap["gap"] == pytest.approx(gap["other_loss"] - gap["own_loss"])
    weights = out / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    run_quickstart(args)  # resumes: every stage finds its output
    assert weights.stat().st_mtime_ns == before
    assert "trained model found; skipping" in capsys.readouterr().out
