"""`grok-retina quickstart` end to end at a small size, its resume, and its refusal to resume with other options."""

import json

import pytest
from transformers import AutoModelForImageTextToText

import grok_retina.instruct
import grok_retina.quickstart as quickstart
import recipes.align_oct
from grok_retina.quickstart import QuickstartArguments, check_options, record_options, run_quickstart, stage_options


class StopAtStageII(Exception):
    """Raised by the stand-in Stage II so that a test stops there."""


@pytest.fixture
def up_to_stage_ii(monkeypatch) -> list[list[str]]:
    """Stages 1 and I stubbed out; Stage II records the arguments it is called with and stops the run."""
    calls: list[list[str]] = []

    def align(argv):
        calls.append(argv)
        raise StopAtStageII

    monkeypatch.setattr(quickstart, "_data", lambda args, folder: {"train": [None] * args.n_train, "test": [None]})
    monkeypatch.setattr(grok_retina.instruct, "generate_instructions", lambda data, teacher, out: data)
    monkeypatch.setattr(recipes.align_oct, "main", align)
    return calls


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


def test_options_are_recorded_per_started_stage_and_a_change_is_refused(tmp_path):
    args = QuickstartArguments(n_train=32, n_test=8, seed=0)
    options = stage_options(args)
    record_options(tmp_path, "data", options["data"])
    check_options(tmp_path, options)  # the same options: resumes
    # Stage III has not started: its options may still change.
    check_options(tmp_path, stage_options(QuickstartArguments(n_train=32, n_test=8, seed=0, sft_epochs=1)))
    recorded = json.loads((tmp_path / quickstart.OPTIONS_FILE).read_text())
    assert recorded == {"data": {"n_train": 32, "n_test": 8, "seed": 0}}
    refusal = r"--n_train 32 there, 64 now, --seed 0 there, 1 now.*--fresh true.*--output_dir"
    with pytest.raises(ValueError, match=refusal):
        check_options(tmp_path, stage_options(QuickstartArguments(n_train=64, n_test=8, seed=1)))


def test_rerun_with_other_options_is_refused_and_stage_ii_resumes_from_its_checkpoints(tmp_path, up_to_stage_ii):
    args = QuickstartArguments(output_dir=str(tmp_path / "qs"), n_train=32, n_test=8)
    with pytest.raises(StopAtStageII):
        run_quickstart(args)
    assert "--resume_from_checkpoint" not in up_to_stage_ii[-1]
    recorded = json.loads((tmp_path / "qs" / quickstart.OPTIONS_FILE).read_text())
    assert set(recorded) == {"data", "instruct", "align"}
    with pytest.raises(ValueError, match=r"--n_test 8 there, 16 now"):
        run_quickstart(QuickstartArguments(output_dir=str(tmp_path / "qs"), n_train=32, n_test=16))
    assert len(up_to_stage_ii) == 1  # refused before any stage ran
    (tmp_path / "qs" / "align" / "checkpoint-3").mkdir(parents=True)  # as if Stage II had stopped after an epoch
    with pytest.raises(StopAtStageII):
        run_quickstart(args)
    assert up_to_stage_ii[-1][-2:] == ["--resume_from_checkpoint", "latest"]
    with pytest.raises(StopAtStageII):  # --fresh deletes the run and its recorded options
        run_quickstart(QuickstartArguments(output_dir=str(tmp_path / "qs"), n_train=32, n_test=16, fresh=True))
    assert "--resume_from_checkpoint" not in up_to_stage_ii[-1]
