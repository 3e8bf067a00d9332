"""DME ROC AUC / F1 and DR-grade macro-F1 with known answers, the model-likelihood DME score, the baselines,
`evaluate_model` on a graded set, resuming it after a crash, and the `grok-retina evaluate` recipe's split check."""

import json
import math

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from datasets import Image as ImageFeature

from grok_retina.evaluation.benchmark import evaluate_reports
from grok_retina.evaluation.dme_dr import (
    LIKELIHOOD_SCORE,
    PARSE_SCORE,
    THICKNESS_SCORE,
    dme_metrics,
    dr_dme_baselines,
    dr_grade_metrics,
)
from grok_retina.evaluation.gou import ResumeError, evaluate_model, samples_from_dataset
from grok_retina.evaluation.judge import JudgeOutcome, JudgeUsage
from grok_retina.evaluation.report import EvaluationResult
from grok_retina.evaluation.rubric import validate_judgement
from grok_retina.pipeline import GrokPipeline
from processing.labels import DME_STATUSES, DR_GRADES
from tests.test_eval_rubric_judge import judgement_json
from tests.tiny_components import fundus_image, oct_image, tiny_model_and_processor


def test_dme_metrics_known_answer():
    calls = ["yes", "no", "yes", None, "no"]
    references = ["yes", "yes", "no", "no", "no"]
    out = dme_metrics(calls, references, [0.9, 0.4, 0.6, 0.1, 0.2], LIKELIHOOD_SCORE)
    assert out["roc_auc"] == pytest.approx(5 / 6) and out["score"] == LIKELIHOOD_SCORE
    assert (out["precision"], out["recall"], out["f1"]) == (0.5, 0.5, 0.5)
    assert (out["accuracy"], out["unparsed"], out["n"], out["n_positive"]) == (0.4, 1, 5, 2)
    assert out["confusion_matrix"] == [[1, 1, 1], [1, 1, 0]]
    assert out["confusion_columns"] == ["no", "yes", "none"]


def test_a_binary_call_gives_the_balanced_accuracy_as_auc():
    calls = ["yes", "no", "yes", None, "no"]
    references = ["yes", "yes", "no", "no", "no"]
    out = dme_metrics(calls, references)
    balanced = (1 / 2 + 2 / 3) / 2
    assert out["roc_auc"] == pytest.approx(balanced) and out["score"] == PARSE_SCORE
    with pytest.raises(ValueError, match=r"dme\[1\] = 'maybe'"):
        dme_metrics(["no", "no"], ["no", "maybe"])


def test_dr_grade_macro_f1_leaves_ungraded_eyes_out():
    out = dr_grade_metrics(["0", "NPDR", None, "PDR", "0"], ["0", "NPDR", "PDR", None, "NPDR"])
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert (out["n"], out["accuracy"], out["unparsed"], out["excluded_ungraded"]) == (4, 0.5, 1, 1)
    assert out["labels"] == list(DR_GRADES)
    assert out["confusion_matrix"] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="every dr_grade reference is None"):
        dr_grade_metrics(["0"], [None])


def test_baselines_majority_and_thickness():
    labels = ["Normal", "Normal", "DiabeticRetinopathy", "DiabeticRetinopathy", "Normal"]
    dme = ["no", "no", "yes", "yes", "no"]
    grades = ["0", "0", "NPDR", "PDR", "0"]
    biomarkers = [{"central_subfield": v} for v in (250.0, 320.0, 340.0, None, 260.0)]
    out = dr_dme_baselines(labels, dme, grades, biomarkers)
    majority = out["majority class"]
    assert majority["dme"]["f1"] == 0.0 and majority["dme"]["roc_auc"] == 0.5 and majority["dme"]["accuracy"] == 0.6
    assert majority["dr_grade"]["macro_f1"] == pytest.approx(0.75 / 3)  # F1 of "0" is 0.75, of NPDR and PDR 0
    assert majority["diagnosis"]["accuracy"] == 0.6
    thickness = out["central subfield thickness"]["dme"]
    assert thickness["roc_auc"] == 0.5 and thickness["f1"] == 0.5 and thickness["missing"] == 1
    assert thickness["score"] == THICKNESS_SCORE and thickness["scores"][3] is None
    json.dumps(out, allow_nan=False)  # valid JSON: no infinities


def test_evaluate_reports_and_markdown_show_the_graded_sections():
    reports = [
        "Conclusion: non-proliferative diabetic retinopathy with diabetic macular oedema.",
        "Conclusion: proliferative diabetic retinopathy without macular oedema.",
        "Conclusion: the eye appears healthy, with no diabetic retinopathy and no macular oedema.",
    ]
    sections = evaluate_reports(reports, ["DiabeticRetinopathy"] * 2 + ["Normal"], dme=["yes", "no", "no"],
                                dr_grades=["NPDR", "PDR", "0"])
    assert sections["dme"]["f1"] == 1.0 and sections["dme"]["roc_auc"] == 1.0
    assert sections["dr_grade"]["macro_f1"] == 1.0 and sections["diagnosis"]["accuracy"] == 1.0
    markdown = EvaluationResult("m", "d", "validation", sections).to_markdown()
    assert "| DME | ROC AUC | 1.0000 |" in markdown and "| DR grade | macro-F1 | 1.0000 |" in markdown
    assert "| NPDR | 0 | 1 | 0 | 0 |" in markdown  # the DR-grade confusion matrix
    with pytest.raises(ValueError, match="give dme and dr_grades together"):
        evaluate_reports(reports, dme=["yes", "no", "no"])


# --- the model's likelihood score and evaluate_model ---------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    model, processor = tiny_model_and_processor()
    return GrokPipeline(model, processor, max_new_tokens=8, measure_missing=False)


def test_continuation_logprobs_batch_equals_one_by_one_and_a_manual_sum(pipe):
    inputs = {"cfp": fundus_image(), "oct": oct_image(), "biomarkers": {"central_subfield": 340.0}, "prefix": "Sub-inference:\n"}
    texts = ["Conclusion: diabetic retinopathy with diabetic macular oedema.", "Conclusion: normal."]
    batched = pipe.continuation_logprobs(texts, **inputs)
    singles = [pipe.continuation_logprobs([t], **inputs)[0] for t in texts]
    assert batched == pytest.approx(singles, abs=1e-4) and all(v < 0 for v in batched)

    from grok_retina.prompts import build_student_messages

    prompt = pipe.processor.apply_chat_template(
        build_student_messages(inputs["biomarkers"], True, True), add_generation_prompt=True, tokenize=False)
    full = pipe.processor(text=[prompt + inputs["prefix"] + texts[1]], images=[[inputs["cfp"], inputs["oct"]]],
                          return_tensors="pt")
    tail = len(pipe.processor.tokenizer(texts[1], add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = pipe.model(**full).logits[0].float()
    ids = full["input_ids"][0]
    manual = sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(len(ids) - tail, len(ids)))
    assert singles[1] == pytest.approx(manual, abs=1e-4)


def graded_rows() -> Dataset:
    """A GROK-format graded set with the DME/DR set's ClassLabel columns."""
    return Dataset.from_dict({
        "id": ["a", "b", "c", "d"], "cfp": [fundus_image(seed=i) for i in range(4)],
        "oct": [[oct_image(seed=i)] for i in range(4)], "report": [None] * 4,
        "label": ["DiabeticRetinopathy", "DiabeticRetinopathy", "Normal", "Normal"],
        "biomarkers": [{"central_subfield": v} for v in (350.0, 300.0, 260.0, 250.0)],
        "dme": [1, 0, 0, 0], "dr_grade": [1, 2, 0, 0],
    }, features=Features({
        "id": Value("string"), "cfp": ImageFeature(), "oct": List(ImageFeature()), "report": Value("string"),
        "label": Value("string"), "biomarkers": {"central_subfield": Value("float32")},
        "dme": ClassLabel(names=list(DME_STATUSES)), "dr_grade": ClassLabel(names=list(DR_GRADES)),
    }))


def test_samples_carry_grade_and_dme():
    samples = samples_from_dataset(graded_rows())
    assert [(s.dr_grade, s.dme) for s in samples] == [("NPDR", "yes"), ("PDR", "no"), ("0", "no"), ("0", "no")]


def test_evaluate_model_on_a_graded_set(pipe, tmp_path):
    samples = samples_from_dataset(graded_rows())
    result, ablation = evaluate_model(pipe, samples, model_name="tiny", dataset_name="graded", split="validation",
                                      out_dir=tmp_path, ablation=True, embeddings=False)
    dme = result.sections["dme"]
    assert dme["score"] == LIKELIHOOD_SCORE and dme["n"] == 4 and dme["n_positive"] == 1
    assert 0.0 <= dme["roc_auc"] <= 1.0 and all(math.isfinite(s) for s in dme["scores"])
    assert result.sections["dr_grade"]["n"] == 4
    assert set(ablation.sections) == {"CFP+OCT", "OCT only", "CFP only"}
    assert all("dme" in sections for sections in ablation.sections.values())
    baselines = json.loads((tmp_path / "baselines.json").read_text())
    assert [b["model"] for b in baselines] == ["baseline: majority class", "baseline: central subfield thickness"]
    assert baselines[1]["sections"]["dme"]["roc_auc"] == 1.0
    assert "baseline: majority class" in (tmp_path / "baselines.md").read_text()
    parsed, _ = evaluate_model(pipe, samples, model_name="tiny", dataset_name="graded", split="validation",
                               out_dir=tmp_path / "parse", embeddings=False, dme_likelihood=False)
    assert parsed.sections["dme"]["score"] == PARSE_SCORE


# --- resuming an interrupted evaluation ------------------------------------------------------------------
class FlakyPipeline:
    """The tiny pipeline, counting the reports it generates; batch ``fail_at`` raises (a crash)."""

    def __init__(self, pipe, fail_at=None):
        self.pipe, self.fail_at, self.batches, self.reports = pipe, fail_at, 0, 0

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **inputs):
        self.batches += 1
        if self.batches == self.fail_at:
            raise RuntimeError("generation crashed")
        self.reports += len(inputs["cfp"])
        return self.pipe(**inputs)


class StubJudge:
    """A judge with a fixed judgement, counting the reports it grades; grading number ``fail_at`` raises."""

    model, concurrency = "stub-judge", 2

    def __init__(self, fail_at=None):
        self.fail_at, self.calls = fail_at, 0

    async def judge_many(self, samples, on_outcome=None):
        outcomes = []
        for index, sample in enumerate(samples):
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("judging crashed")
            judgement = validate_judgement(json.loads(judgement_json()))
            outcomes.append(JudgeOutcome(index, sample.id, judgement, None, JudgeUsage(1, 1, 10, 5)))
            if on_outcome is not None:
                on_outcome(outcomes[-1])
        return outcomes


def evaluate(pipeline, samples, out_dir, judge, **overrides):
    options = {"model_name": "tiny", "dataset_name": "graded", "split": "validation", "out_dir": out_dir,
               "judge": judge, "ablation": True, "batch_size": 2, "embeddings": False, **overrides}
    return evaluate_model(pipeline, samples, **options)


def test_an_interrupted_evaluation_resumes_without_redoing_work(pipe, tmp_path):
    samples = samples_from_dataset(graded_rows())
    evaluate(FlakyPipeline(pipe), samples, tmp_path / "whole", StubJudge())

    out = tmp_path / "resumed"
    crashing = FlakyPipeline(pipe, fail_at=2)  # the second batch of CFP+OCT reports
    with pytest.raises(RuntimeError, match="generation crashed"):
        evaluate(crashing, samples, out, StubJudge())
    assert crashing.reports == 2 and len((out / "generated_reports.jsonl").read_text().splitlines()) == 2
    with (out / "generated_reports.jsonl").open("a") as handle:
        handle.write('{"setting": "cfp+oct", "id": "c", "rep')  # a line cut short by the crash

    flaky, judge = FlakyPipeline(pipe), StubJudge(fail_at=6)  # the second report of OCT only
    with pytest.raises(RuntimeError, match="judging crashed"):
        evaluate(flaky, samples, out, judge)
    assert flaky.reports == 2 + 4  # the rest of CFP+OCT, then OCT only
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 5  # CFP+OCT, and OCT only's first

    flaky, judge = FlakyPipeline(pipe), StubJudge()
    result, ablation = evaluate(flaky, samples, out, judge)
    assert flaky.reports == 4 and judge.calls == 3 + 4  # CFP only's reports; the rest of OCT only, CFP only judged
    assert result.sections["rubric"]["judged"] == 4 and result.sections["rubric"]["usage"]["calls"] == 4
    for name in ("gou_results.json", "gou_results.md", "ablation.json", "baselines.json"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    records = [json.loads(line) for line in (out / "generated_reports.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["setting"] for r in records} == {"cfp+oct", "oct", "cfp"}

    flaky, judge = FlakyPipeline(pipe), StubJudge()
    evaluate(flaky, samples, out, judge)  # a finished run is all reused
    assert flaky.reports == judge.calls == 0


def test_records_of_another_model_or_dataset_are_refused(pipe, tmp_path):
    samples = samples_from_dataset(graded_rows())
    evaluate(pipe, samples, tmp_path, None, ablation=False, dme_likelihood=False)
    with pytest.raises(ResumeError, match=r"model 'tiny' there, 'other' now.*another output folder \(--out\)"):
        evaluate(pipe, samples, tmp_path, None, model_name="other")
    with pytest.raises(ResumeError, match="samples 4 there, 3 now"):
        evaluate(pipe, samples[:3], tmp_path, None)
    retrained = GrokPipeline(*tiny_model_and_processor(seed=1), max_new_tokens=8, measure_missing=False)
    with pytest.raises(ResumeError, match="model_weights"):
        evaluate(retrained, samples, tmp_path, None)
    (tmp_path / "run.json").unlink()
    with pytest.raises(ResumeError, match=f"delete {tmp_path} to start over"):
        evaluate(pipe, samples, tmp_path, None)
    with pytest.raises(ValueError, match=r"sample ids \['a'\] repeat"):
        evaluate(pipe, [samples[0], samples[0]], tmp_path / "dup", None)


def test_the_recipe_asks_for_a_split_before_loading_the_model(pipe, tmp_path, monkeypatch, capsys):
    from recipes.evaluate_gou import main

    folder = tmp_path / "graded"
    DatasetDict({"train": graded_rows(), "validation": graded_rows()}).save_to_disk(str(folder))
    loaded = []
    monkeypatch.setattr(GrokPipeline, "from_pretrained", lambda *args, **kwargs: loaded.append(args) or pipe)
    argv = ["--model", "tiny", "--dataset", str(folder), "--out", str(tmp_path / "eval"), "--embeddings", "false"]
    for extra in ([], ["--limit", "2"]):
        assert main(argv + extra) == 2
        assert f"{folder} has splits ['train', 'validation']; choose one with --split" in capsys.readouterr().err
    assert main([*argv, "--split", "test"]) == 2
    assert f"{folder} has no split 'test'; it has ['train', 'validation']" in capsys.readouterr().err
    assert not loaded
    assert main([*argv, "--split", "validation", "--limit", "2"]) == 0
    saved = json.loads((tmp_path / "eval" / "gou_results.json").read_text())
    assert (saved["split"], saved["config"]["n"]) == ("validation", 2)
    assert main([*argv, "--split", "validation", "--limit", "3"]) == 2  # the folder holds another run's records
    assert "samples 2 there, 3 now" in capsys.readouterr().err
