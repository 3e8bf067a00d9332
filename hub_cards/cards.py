"""Render the model card, the dataset card and the Space README from Jinja templates, and check them offline.

`validate_card` round-trips a card through ``huggingface_hub``'s parser (``ModelCard(content)``: the YAML header
and the ``model-index`` are parsed and type-checked) and checks the fields the Hub needs; ``card.validate()``
would need the network and is never called.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData, SpaceCard, SpaceCardData
from huggingface_hub.repocard import RepoCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id

from processing.biomarkers import BIOMARKERS, CFP_BIOMARKER_NAMES, OCT_BIOMARKER_NAMES
from processing.labels import LABEL_DISPLAY, LABELS

if TYPE_CHECKING:
    from grok_retina.evaluation.report import EvaluationResult

TEMPLATES = Path(__file__).parent / "templates"

PAPER_TITLE = (
    "GROK: From Quantitative Biomarkers to Qualitative Diagnosis via a Grounded MLLM with Knowledge-Guided Instruction"
)
PAPER_URL = "https://arxiv.org/abs/2510.04281"
CITATION = f"""@misc{{grok2025,
  title         = {{{PAPER_TITLE}}},
  year          = {{2025}},
  eprint        = {{2510.04281}},
  archivePrefix = {{arXiv}},
  url           = {{{PAPER_URL}}}
}}"""
NOT_A_MEDICAL_DEVICE = (
    "**Not a medical device.** This is research software. It is not cleared, approved or CE-marked as a medical "
    "device by any regulator, and its output must not be used for diagnosis, screening, treatment or any other "
    "clinical decision."
)

DEFAULT_MODEL_REPO = "grok-retina/grok-retina"
DEFAULT_DATASET_REPO = "grok-retina/grok-phantom"
DEFAULT_BASE_MODEL = "Qwen/Qwen2-7B-Instruct"  # the paper's language backbone
PIPELINE_TAG = "image-text-to-text"
LIBRARY_NAME = "transformers"
DOMAIN_TAGS = ("grok", "ophthalmology", "retina", "fundus", "oct", "medical", "biomarkers", "multimodal")
SPACE_COLOURS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")

# Metadata a card must carry; a missing or empty one fails `validate_card`.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("license", "tags", "base_model", "datasets", "pipeline_tag", "library_name"),
    "dataset": ("license", "tags", "task_categories", "pretty_name", "size_categories", "configs"),
    "space": ("title", "sdk", "sdk_version", "app_file", "license", "tags", "models"),
}
_CARD_CLASSES: dict[str, type[RepoCard]] = {"model": ModelCard, "dataset": DatasetCard, "space": SpaceCard}
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_OCT_UNITS = "/".join(sorted({b.unit for b in BIOMARKERS if b.modality == "oct"}))
# What every card template may say about the schema and the label set (read from their one source).
SCHEMA_FACTS = {
    "n_biomarkers": len(BIOMARKERS),
    "label_descriptions": ", ".join(LABEL_DISPLAY[label] for label in LABELS),
}

# One-line descriptions of the GROK dataset columns (processing.grok_dataset.grok_features).
COLUMN_DOCS: dict[str, str] = {
    "id": "unique sample id",
    "patient_id": "patient id (splits never share a patient)",
    "eye": "OD (right) or OS (left), empty when unknown",
    "cfp": "colour fundus photograph (image)",
    "oct": "OCT B-scans (list of images, the central foveal B-scan first)",
    "biomarkers": f"the {len(BIOMARKERS)} biomarkers ({len(OCT_BIOMARKER_NAMES)} OCT measures in {_OCT_UNITS}, "
                  f"{len(CFP_BIOMARKER_NAMES)} CFP vessel and disc measures); missing as null",
    "label": f"diagnosis label (ClassLabel: {', '.join(LABELS)})",
    "report": "reference report text (may be empty)",
    "oct_axial_um_per_px": "OCT axial pixel size in µm (null when unknown)",
    "oct_lateral_um_per_px": "OCT lateral pixel size in µm (null when unknown)",
    "cfp_um_per_px": "fundus photograph pixel size in µm (null when unknown)",
}


class CardError(ValueError):
    """A card whose metadata the Hub would reject or misread; the message names the field and the fix."""


def _repo_ids(field: str, ids: str | Sequence[str] | None) -> list[str]:
    ids = [ids] if isinstance(ids, str) else list(ids or [])
    for repo_id in ids:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise CardError(f"{field}: {repo_id!r} is not a valid Hub repo id ({error}); use 'org/name'.") from None
        if "/" not in repo_id:
            raise CardError(f"{field}: {repo_id!r} has no namespace; use 'org/name' (e.g. {DEFAULT_MODEL_REPO!r}).")
    return ids


def _load_results(results: "str | Path | EvaluationResult | None") -> "EvaluationResult | None":
    if results is None:
        return None
    from grok_retina.evaluation.report import EvaluationResult

    if isinstance(results, EvaluationResult):
        return results
    path = Path(results)
    if not path.is_file():
        raise CardError(f"results: {path} does not exist; pass the JSON written by 'grok-retina evaluate'.")
    return EvaluationResult.load_json(path)


def _parameter_count(model_dir: Path) -> int:
    """Parameters stored in the folder's safetensors files, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def _human(count: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


def _architecture(model_dir: Path) -> dict:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise CardError(f"model_dir: {model_dir} has no config.json; save the model with model.save_pretrained(model_dir).")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") != "grok":
        raise CardError(f"model_dir: {config_file} has model_type {config.get('model_type')!r}, expected 'grok'.")
    text = config.get("text_config") or {}
    return {
        "text_model_type": text.get("model_type", "unknown"),
        "text_layers": text.get("num_hidden_layers"),
        "text_hidden_size": text.get("hidden_size"),
        "towers": {m: config.get(f"{m}_vision_config", {}).get("architecture", "unknown") for m in ("cfp", "oct")},
        "image_size": {m: config.get(f"{m}_vision_config", {}).get("img_size") for m in ("cfp", "oct")},
        "projector_type": config.get("projector_type"),
        "parameters": _human(_parameter_count(model_dir)),
    }


def render_model_card(
    model_dir: str | Path,
    results: "str | Path | EvaluationResult | None" = None,
    *,
    base_model: str = DEFAULT_BASE_MODEL,
    datasets: str | Sequence[str] | None = None,
    repo_id: str = DEFAULT_MODEL_REPO,
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card for a saved GROK folder; ``results`` (an evaluation JSON) fills the ``model-index``.

    ``datasets`` defaults to the evaluated dataset when its id is a Hub repo id.
    """
    model_dir = Path(model_dir)
    result = _load_results(results)
    _repo_ids("repo_id", repo_id)
    if datasets is None and result is not None and "/" in result.dataset:
        datasets = [result.dataset]
    datasets = _repo_ids("datasets", datasets)
    if not datasets:
        raise CardError("datasets: name at least one training dataset by Hub id (e.g. --dataset org/grok-phantom).")
    model_name, eval_results = (None, None)
    if result is not None:
        model_name, eval_results = model_index_to_eval_results(result.model_index())
    data = ModelCardData(
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        base_model=_repo_ids("base_model", base_model)[0],
        datasets=datasets,
        tags=list(dict.fromkeys([*DOMAIN_TAGS, "custom_code", *tags])),
        model_name=model_name or repo_id.split("/")[-1],
        eval_results=eval_results,
    )
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / "model_card.md"),
        repo_id=repo_id,
        title=repo_id.split("/")[-1],
        arch=_architecture(model_dir),
        results_markdown=result.to_markdown() if result is not None else None,
        not_a_medical_device=NOT_A_MEDICAL_DEVICE,
        citation=CITATION,
        paper_url=PAPER_URL,
        **SCHEMA_FACTS,
        paper_title=PAPER_TITLE,
    )
    validate_card(card, "model")
    return card


def _size_category(rows: int) -> str:
    bounds = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
    return next((name for bound, name in bounds if rows < bound), "1M<n<10M")


def render_dataset_card(
    repo_id: str,
    splits: Mapping[str, int],
    features: Mapping[str, str],
    *,
    synthetic: bool,
    license: str = "apache-2.0",
    pretty_name: str | None = None,
    tags: Sequence[str] = (),
    model_repo_id: str = DEFAULT_MODEL_REPO,
) -> DatasetCard:
    """The dataset card for Parquet shards ``data/{split}-*.parquet``: ``splits`` maps a split to its row count,
    ``features`` a column to a one-line description. ``synthetic`` says whether the samples are phantoms
    (tagged ``synthetic``) or real data, whose card then makes the publisher responsible for consent,
    de-identification and the licence."""
    _repo_ids("repo_id", repo_id)
    kind = "retinal phantom" if synthetic else "retinal dataset"
    pretty_name = pretty_name or f"GROK {kind} (CFP + OCT + {len(BIOMARKERS)} biomarkers)"
    if not splits or not all(isinstance(n, int) and n > 0 for n in splits.values()):
        raise CardError(f"splits: give each split's row count (> 0), got {dict(splits)!r}.")
    data = DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=[PIPELINE_TAG],
        tags=list(dict.fromkeys([*DOMAIN_TAGS, *(["synthetic"] if synthetic else []), *tags])),
        size_categories=[_size_category(sum(splits.values()))],
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}
        ],
    )
    card = DatasetCard.from_template(
        data,
        template_path=str(TEMPLATES / "dataset_card.md"),
        repo_id=repo_id,
        model_repo_id=model_repo_id,
        synthetic=synthetic,
        splits=dict(splits),
        features=dict(features),
        not_a_medical_device=NOT_A_MEDICAL_DEVICE,
        citation=CITATION,
        paper_url=PAPER_URL,
        **SCHEMA_FACTS,
    )
    validate_card(card, "dataset")
    return card


def render_space_readme(
    model_id: str = DEFAULT_MODEL_REPO,
    *,
    package_requirement: str,
    title: str = "GROK retinal report demo",
    license: str = "apache-2.0",
    sdk_version: str | None = None,
    datasets: Sequence[str] = (),
) -> SpaceCard:
    """The Space README: YAML header (sdk gradio, app_file app.py, ``models: [model_id]``) and a usage text.

    ``models[0]`` is also the model the app loads when ``GROK_MODEL`` is unset; ``package_requirement`` is the
    requirements.txt line that installs this package (shown in the README).
    """
    if sdk_version is None:
        import gradio

        sdk_version = gradio.__version__
    data = SpaceCardData(
        title=title,
        emoji="👁️",
        colorFrom="indigo",
        colorTo="red",
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        pinned=False,
        license=license,
        short_description="CFP + OCT + biomarkers -> a grounded retinal report",
        models=_repo_ids("model_id", model_id),
        datasets=_repo_ids("datasets", datasets) or None,
        tags=list(dict.fromkeys([*DOMAIN_TAGS, PIPELINE_TAG])),
    )
    card = SpaceCard.from_template(
        data,
        template_path=str(TEMPLATES / "space_readme.md"),
        model_id=model_id,
        package_requirement=package_requirement,
        not_a_medical_device=NOT_A_MEDICAL_DEVICE,
        citation=CITATION,
        paper_url=PAPER_URL,
        **SCHEMA_FACTS,
    )
    validate_card(card, "space")
    return card


def validate_card(card: RepoCard | str, kind: str) -> dict:
    """Parse ``card`` as the Hub does and check its required metadata; returns the metadata dict.

    Raises `CardError` naming the field: a missing field, an invalid license id, a bad repo id, a
    ``model-index`` the Hub cannot read, or a body without the not-a-medical-device statement or the citation.
    """
    if kind not in _CARD_CLASSES:
        raise CardError(f"kind must be one of {', '.join(_CARD_CLASSES)}, got {kind!r}.")
    try:
        parsed = _CARD_CLASSES[kind](str(card))  # parses the YAML header and type-checks the model-index
    except Exception as error:  # huggingface_hub raises ValueError/YAML errors on a malformed header
        raise CardError(f"{kind} card: the YAML header does not parse ({error}).") from error
    metadata = parsed.data.to_dict()
    missing = [name for name in REQUIRED_FIELDS[kind] if not metadata.get(name)]
    if missing:
        raise CardError(f"{kind} card: missing metadata {', '.join(missing)}; set them when rendering the card.")
    licenses = metadata["license"] if isinstance(metadata["license"], list) else [metadata["license"]]
    for value in licenses:
        if not _LICENSE_RE.match(str(value)):
            raise CardError(f"{kind} card: license {value!r} is not a Hub license id (e.g. 'apache-2.0', 'cc-by-4.0').")
    if kind == "model":
        if metadata["pipeline_tag"] != PIPELINE_TAG:
            raise CardError(f"model card: pipeline_tag must be {PIPELINE_TAG!r}, got {metadata['pipeline_tag']!r}.")
        _repo_ids("base_model", metadata["base_model"])
        _repo_ids("datasets", metadata["datasets"])
        if "model-index" in metadata:
            model_index_to_eval_results(metadata["model-index"])
    if kind == "space":
        if metadata["sdk"] != "gradio" or metadata["app_file"] != "app.py":
            raise CardError("space card: sdk must be 'gradio' and app_file 'app.py'.")
        _repo_ids("models", metadata["models"])
    body = parsed.text
    for needed, what in ((NOT_A_MEDICAL_DEVICE, "the not-a-medical-device statement"), ("2510.04281", "the GROK citation")):
        if needed not in body:
            raise CardError(f"{kind} card: the body lacks {what}; keep it in hub_cards/templates.")
    return metadata
