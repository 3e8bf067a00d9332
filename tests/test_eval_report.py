"""Results file, markdown table, model-index block (checked with huggingface_hub) and the modality ablation."""

import json

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from grok_retina.evaluation.ablation import MODALITY_SETTINGS, run_modality_ablation
from grok_retina.evaluation.benchmark import evaluate_reports
from grok_retina.evaluation.classification import binary_metrics, diagnosis_metrics
from grok_retina.evaluation.grounding import grounding_metrics
from grok_retina.evaluation.judge import RubricJudge
from grok_retina.evaluation.regression import regression_metrics
from grok_retina.evaluation.report import EvaluationResult, ResultsFileError, headline_metrics
from grok_retina.evaluation.text_metrics import rouge_l
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.test_eval_rubric_judge import judgement_json


def make_result():
    return EvaluationResult(
        model="grok-retina-7b",
        dataset="local/gou-phantom",
        dataset_name="GOU phantom",
        split="test",
        sections={
            "diagnosis": diagnosis_metrics(["AMD", "Glaucoma", None], ["AMD", "Glaucoma", "Normal"]),
            "text": {"bleu": 0.25, "rouge_l": 0.5, "embedding_similarity": None},
            "regression": regression_metrics([[1.0], [2.0]], [[1.0], [3.0]], names=["rnfl"]),
            "DME": binary_metrics([0.2, 0.9], [0, 1]),
        },
        config={"judge": None},
    )


def test_headline_metrics_pick_scalars_and_skip_none():
    rows = {(r["section"], r["key"]): r for r in headline_metrics(make_result().sections)}
    assert rows[("diagnosis", "macro_f1")]["value"] == pytest.approx(2 / 3)  # AMD 1, Glaucoma 1, Normal 0
    assert rows[("regression", "mae")]["value"] == 0.5  # read from "overall"
    assert rows[("DME", "roc_auc")]["type"] == "roc_auc"
    assert ("text", "embedding_similarity") not in rows  # None is not a metric value


def test_model_index_is_accepted_by_huggingface_hub():
    block = make_result().model_index()
    name, results = model_index_to_eval_results(block)
    assert name == "grok-retina-7b"
    assert {r.task_type for r in results} == {"image-text-to-text"}
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("local/gou-phantom", "GOU phantom", "test")
    }
    f1 = next(r for r in results if r.metric_name == "Diagnosis: macro-F1")
    assert f1.metric_type == "f1" and f1.metric_value == pytest.approx(0.6667)
    card = ModelCard("---\n" + yaml.safe_dump({"license": "apache-2.0", "model-index": block}) + "---\n# card\n")
    assert len(card.data.eval_results) == len(results)
    assert card.data.to_dict()["model-index"][0]["results"][0]["task"]["type"] == "image-text-to-text"


def test_write_json_markdown_and_yaml_atomically(tmp_path):
    result = make_result()
    paths = result.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gou_results.json",
        "gou_results.md",
        "gou_results.model-index.yaml",
    ]  # no temporary files left
    data = json.loads(paths["json"].read_text())
    assert data["headline"] and data["sections"]["diagnosis"]["unparsed"] == 1
    assert EvaluationResult.load_json(paths["json"]) == result
    markdown = paths["markdown"].read_text()
    assert "| Diagnosis | macro-F1 | 0.6667 |" in markdown
    assert "| Normal | 0.0000 | 0.0000 | 0.0000 | 1 |" in markdown  # per-class table
    assert yaml.safe_load(paths["model_index"].read_text())["model-index"] == result.model_index()


def test_loading_another_json_names_the_file_and_the_fix(tmp_path):
    ablation = tmp_path / "ablation.json"
    ablation.write_text(json.dumps({"reports": {}, "sections": {}}))
    with pytest.raises(ResultsFileError, match=r"ablation.json is not an evaluation result: it lacks the keys model, "
                                               r"dataset, split; has unknown keys reports; pass --results the "
                                               r"gou_results.json"):
        EvaluationResult.load_json(ablation)
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps([make_result().to_dict()]))
    with pytest.raises(ResultsFileError, match="baselines.json holds a JSON list, not an evaluation result"):
        EvaluationResult.load_json(baselines)
    broken = tmp_path / "gou_results.json"
    broken.write_text(json.dumps({**make_result().to_dict(), "sections": []}))
    with pytest.raises(ResultsFileError, match="has non-object values for sections"):
        EvaluationResult.load_json(broken)
    broken.write_text("{")
    with pytest.raises(ResultsFileError, match="gou_results.json is not JSON"):
        EvaluationResult.load_json(broken)


def test_model_index_without_metrics_is_an_error():
    with pytest.raises(ValueError, match="no headline metrics"):
        EvaluationResult("m", "d", "test", sections={"text": {"bleu": None}}).model_index()


def test_modality_ablation_with_a_fake_generator():
    calls = []

    def generate(dataset, modalities):
        calls.append(modalities)
        # the fake model only finds glaucoma when it sees the fundus photograph
        return ["Conclusion: glaucoma." if "cfp" in modalities else "Conclusion: normal." for _ in dataset]

    def score(reports, modalities):
        predictions = ["Glaucoma" if "glaucoma" in r else "Normal" for r in reports]
        return {"diagnosis": diagnosis_metrics(predictions, ["Glaucoma", "Glaucoma"])}

    result = run_modality_ablation(generate, ["s1", "s2"], score)
    assert calls == list(MODALITY_SETTINGS.values())
    assert [result.sections[s]["diagnosis"]["accuracy"] for s in MODALITY_SETTINGS] == [1.0, 0.0, 1.0]
    table = result.to_markdown()
    assert table.splitlines()[0] == "| Section | Metric | CFP+OCT | OCT only | CFP only |"
    assert "| Diagnosis | accuracy | 1.0000 | 0.0000 | 1.0000 |" in table
    assert result.to_dict()["reports"]["OCT only"] == ["Conclusion: normal."] * 2


def test_modality_ablation_checks_the_generator():
    with pytest.raises(ValueError, match="returned 1 reports for 2 samples"):
        run_modality_ablation(lambda d, m: ["x"], ["a", "b"], lambda r, m: {})
    with pytest.raises(ValueError, match="non-empty subset"):
        run_modality_ablation(lambda d, m: ["x"], ["a"], lambda r, m: {}, settings={"bad": frozenset({"mri"})})


GLAUCOMA = {"cup_to_disc_ratio": 0.72, "rnfl": 18.0, "gc_ipl": 58.0}
GOOD = (
    "Biomarker Assessments:\n- Vertical cup-to-disc ratio: 0.72, enlarged\n- Macular RNFL thickness: 18.0 µm, thinned\n"
    "- GC-IPL thickness: 58.0 µm, thinned\nSub-inference:\nEnlarged cupping with inner retinal thinning.\n"
    "Conclusion: Findings consistent with glaucoma."
)
BAD = (
    "Biomarker Assessments:\n- Vertical cup-to-disc ratio: 0.50, normal\nSub-inference:\nNothing of note.\n"
    "Conclusion: No signs of glaucoma; normal retina."
)


def test_grounding_metrics_average_the_verifier():
    out = grounding_metrics([GOOD, BAD], [GLAUCOMA, GLAUCOMA], ["Glaucoma", "Glaucoma"])
    # GOOD: every value, descriptor and abnormal biomarker right, conclusion consistent (all 1).
    # BAD: its one value and one descriptor are wrong (0, 0), it covers 1 of 3 abnormal biomarkers, and it
    # concludes Normal: grounding = mean(0, 0, 1/3, 0) = 1/12.
    assert out["quantitative_accuracy"] == 0.5 and out["descriptor_accuracy"] == 0.5
    assert out["coverage"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["grounding"] == pytest.approx((1 + 1 / 12) / 2)
    assert (out["conclusion_consistency"], out["pass_rate"], out["reports_without_values"]) == (0.5, 0.5, 0)
    with pytest.raises(ValueError, match="one entry per sample"):
        grounding_metrics([GOOD], [], None)


def test_evaluate_reports_end_to_end_with_a_local_judge(tmp_path):
    with FakeOpenAIServer(lambda request: Reply(content=judgement_json())) as server:
        judge = RubricJudge("judge", base_url=server.base_url, api_key="test", concurrency=2)
        sections = evaluate_reports(
            [GOOD, BAD],
            ["Glaucoma", "Glaucoma"],
            [GOOD, GOOD],
            [GLAUCOMA, GLAUCOMA],
            ids=["eye-1", "eye-2"],
            judge=judge,
            embeddings=False,
        )
    # parsed: Glaucoma, Normal. Glaucoma P 1 R 1/2 F1 2/3; Normal predicted without support: F1 0 -> macro 1/3
    assert sections["diagnosis"]["predictions"] == ["Glaucoma", "Normal"]
    assert sections["diagnosis"]["macro_f1"] == pytest.approx(1 / 3)
    assert sections["text"]["rouge_l"] == pytest.approx((1 + rouge_l([BAD], [GOOD])) / 2)  # mean over pairs
    assert sections["text"]["bleu"] < 1.0 and sections["text"]["embedding_similarity"] is None
    assert sections["grounding"]["conclusion_consistency"] == 0.5
    assert sections["rubric"]["total"] == 73 and sections["rubric"]["usage"]["requests"] == 2
    assert [s["id"] for s in sections["rubric"]["per_sample"]] == ["eye-1", "eye-2"]
    result = EvaluationResult("grok", "phantom", "test", sections=sections)
    names = {m["name"] for m in result.model_index()[0]["results"][0]["metrics"]}
    assert {
        "Clinical rubric (LLM judge): rubric total (0-100)",
        "Verifier (deterministic): conclusion consistency rate",
    } <= names
    with pytest.raises(ValueError, match="references has 1 entries for 2 reports"):
        evaluate_reports([GOOD, BAD], references=[GOOD])
