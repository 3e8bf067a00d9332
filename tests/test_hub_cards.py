"""Model card, dataset card and Space README: rendered from the templates, metadata checked offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, SpaceCard
from huggingface_hub.repocard import metadata_load

from grok_retina.evaluation.classification import diagnosis_metrics
from grok_retina.evaluation.report import EvaluationResult
from hub_cards import CITATION, NOT_A_MEDICAL_DEVICE, CardError, render_dataset_card, render_model_card, validate_card
from hub_cards.cards import COLUMN_DOCS, _human, render_space_readme
from processing.biomarkers import BIOMARKERS, CFP_BIOMARKER_NAMES, OCT_BIOMARKER_NAMES
from processing.labels import LABELS
from tests.tiny_components import tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, processor = tiny_model_and_processor()
    folder = tmp_path_factory.mktemp("grok")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model.num_parameters()


@pytest.fixture
def results_file(tmp_path):
    result = EvaluationResult(
        model="grok-retina-tiny", dataset="grok-retina/grok-phantom", dataset_name="GROK phantom", split="test",
        sections={"diagnosis": diagnosis_metrics(["AMD", "Glaucoma", "Glaucoma", "Normal"], ["AMD", "AMD", "Glaucoma", "Normal"])},
    )
    return result.save_json(tmp_path / "gou_results.json")


def test_model_card_metadata_and_model_index(model_dir, results_file, tmp_path):
    folder, parameters = model_dir
    card = render_model_card(folder, results_file, repo_id="grok-retina/grok-retina-tiny")
    card.save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")  # what the Hub reads from the file
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["base_model"] == "Qwen/Qwen2-7B-Instruct"
    assert meta["datasets"] == ["grok-retina/grok-phantom"]  # taken from the evaluated dataset
    assert {"custom_code", "ophthalmology", "medical"} <= set(meta["tags"])
    (entry,) = meta["model-index"]
    assert entry["name"] == "grok-retina-tiny"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-text-to-text"
    assert result["dataset"] == {"name": "GROK phantom", "type": "grok-retina/grok-phantom", "split": "test"}
    metrics = {m["name"]: m for m in result["metrics"]}
    assert metrics["Diagnosis: accuracy"]["value"] == 0.75 and metrics["Diagnosis: accuracy"]["type"] == "accuracy"
    # AMD: P 1, R 1/2; Glaucoma: P 1/2, R 1; Normal: 1 -> F1 2/3, 2/3, 1 (other labels have no support)
    assert metrics["Diagnosis: macro-F1"]["value"] == pytest.approx(0.7778, abs=1e-4)
    parsed = ModelCard((tmp_path / "README.md").read_text())
    assert {r.metric_name: r.metric_value for r in parsed.data.eval_results}["Diagnosis: accuracy"] == 0.75
    body = parsed.text
    assert NOT_A_MEDICAL_DEVICE in body and CITATION in body and "arXiv" in CITATION and "2510.04281" in CITATION
    from processing.biomarkers import BIOMARKERS
    from processing.labels import LABEL_DISPLAY, LABELS

    assert f"{len(BIOMARKERS)} quantitative biomarkers" in body and "{{" not in body  # every template field filled
    assert ", ".join(LABEL_DISPLAY[label] for label in LABELS) in " ".join(body.split())
    for section in ("## Intended use", "## Limitations", "## Evaluation", "## Citation"):
        assert section in body
    assert 'from_pretrained("grok-retina/grok-retina-tiny", trust_remote_code=True)' in body
    assert f"| Parameters | {_human(parameters)} |" in body and "| Diagnosis | accuracy | 0.7500 |" in body


def test_model_card_without_results(model_dir):
    card = render_model_card(model_dir[0], datasets="org/data", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    meta = card.data.to_dict()
    assert "model-index" not in meta and meta["datasets"] == ["org/data"]
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "No evaluation results were attached" in card.text


def test_model_card_errors_name_the_field(model_dir, tmp_path):
    folder = model_dir[0]
    with pytest.raises(CardError, match="datasets: name at least one training dataset"):
        render_model_card(folder)
    with pytest.raises(CardError, match="base_model: 'not a repo' is not a valid Hub repo id"):
        render_model_card(folder, datasets="org/data", base_model="not a repo")
    with pytest.raises(CardError, match="repo_id: 'grok-retina' has no namespace"):
        render_model_card(folder, datasets="org/data", repo_id="grok-retina")
    with pytest.raises(CardError, match="results: .* does not exist"):
        render_model_card(folder, tmp_path / "missing.json", datasets="org/data")
    with pytest.raises(CardError, match="has no config.json"):
        render_model_card(tmp_path, datasets="org/data")


def test_validate_card_rejects_what_the_hub_would(model_dir):
    good = str(render_model_card(model_dir[0], datasets="org/data"))
    header, body = good.split("\n---\n", 1)
    meta = yaml.safe_load(header.removeprefix("---\n"))

    def card(**changes):
        return "---\n" + yaml.safe_dump({**meta, **changes}) + "---\n" + body

    assert validate_card(good, "model")["pipeline_tag"] == "image-text-to-text"
    with pytest.raises(CardError, match="license 'Apache 2.0' is not a Hub license id"):
        validate_card(card(license="Apache 2.0"), "model")
    with pytest.raises(CardError, match="missing metadata library_name"):
        validate_card(card(library_name=None), "model")
    with pytest.raises(CardError, match="pipeline_tag must be 'image-text-to-text'"):
        validate_card(card(pipeline_tag="text-generation"), "model")
    with pytest.raises(CardError, match="the YAML header does not parse"):
        validate_card(card(**{"model-index": [{"name": "x", "results": [{"task": {}}]}]}), "model")
    with pytest.raises(CardError, match="lacks the not-a-medical-device statement"):
        validate_card(good.replace(NOT_A_MEDICAL_DEVICE, ""), "model")
    with pytest.raises(CardError, match="lacks the GROK citation"):
        validate_card(good.replace("2510.04281", "0000.00000"), "model")


def test_dataset_card():
    features = {"cfp": "fundus photo", "label": "diagnosis"}
    card = render_dataset_card("org/grok-phantom", {"train": 1500, "validation": 200}, features, synthetic=True)
    meta = card.data.to_dict()
    assert meta["task_categories"] == ["image-text-to-text"] and meta["size_categories"] == ["1K<n<10K"]
    assert "synthetic" in meta["tags"] and meta["license"] == "apache-2.0"
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*.parquet"}, {"split": "validation", "path": "data/validation-*.parquet"}]}]
    assert "| train | 1500 |" in card.text and "| `cfp` | fundus photo |" in card.text
    assert "**synthetic**" in card.text and NOT_A_MEDICAL_DEVICE in card.text and CITATION in card.text
    assert 'load_dataset("org/grok-phantom")' in card.text
    real = render_dataset_card("org/clinic", {"test": 10}, features, synthetic=False, license="cc-by-nc-4.0")
    assert "synthetic" not in real.data.tags and "consent, de-identification" in real.text
    with pytest.raises(CardError, match="splits: give each split's row count"):
        render_dataset_card("org/x", {"train": 0}, features, synthetic=True)


def test_column_docs_come_from_the_label_set_and_the_biomarker_schema():
    assert COLUMN_DOCS["label"] == f"diagnosis label (ClassLabel: {', '.join(LABELS)})"
    counts = f"the {len(BIOMARKERS)} biomarkers ({len(OCT_BIOMARKER_NAMES)} OCT measures in µm, {len(CFP_BIOMARKER_NAMES)}"
    assert COLUMN_DOCS["biomarkers"].startswith(counts)
    card = render_dataset_card("org/x", {"train": 1}, {"label": COLUMN_DOCS["label"]}, synthetic=True)
    assert card.data.pretty_name == f"GROK retinal phantom (CFP + OCT + {len(BIOMARKERS)} biomarkers)"
    assert f"| `label` | {COLUMN_DOCS['label']} |" in card.text


def test_space_readme_and_the_checked_in_copy():
    card = render_space_readme("org/grok-model", package_requirement="grok-retina[demo] @ https://example/x.whl")
    meta = validate_card(card, "space")
    assert (meta["sdk"], meta["app_file"], meta["models"]) == ("gradio", "app.py", ["org/grok-model"])
    assert len(meta["short_description"]) <= 60 and meta["colorFrom"] in ("indigo",)
    assert "grok-retina[demo] @ https://example/x.whl" in card.text and "`GROK_MODEL`" in card.text
    checked_in = SpaceCard.load(ROOT / "spaces" / "README.md")
    default = render_space_readme(package_requirement="x")
    assert validate_card(str(checked_in), "space") == default.data.to_dict()  # spaces/README.md is not stale


def test_readme_cites_the_paper_as_the_cards_do():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"```bibtex\n{CITATION}\n```" in readme
