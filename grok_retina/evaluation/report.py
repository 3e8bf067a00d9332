"""Evaluation results: a JSON file (atomic write), a markdown table and the model card's ``model-index``.

An `EvaluationResult` holds named *sections*, each the dict a metric function returns
(``diagnosis_metrics``, ``binary_metrics``, ``report_text_metrics``, ``summarise_judgements``,
``grounding_metrics``, ``regression_metrics``). Its headline metrics are the scalar values whose key is
in `HEADLINE_KEYS` (a regression section's are read from its ``"overall"`` entry); nested details
(per-class rows, confusion matrices, per-sample judgements) stay in the JSON only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .rubric import RUBRIC_ITEMS

TASK_TYPE = "image-text-to-text"
TASK_NAME = "Grounded Ophthalmic Understanding"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# section key -> (model-index metric type, display name). Order here is the order in tables.
HEADLINE_KEYS: dict[str, tuple[str, str]] = {
    "macro_f1": ("f1", "macro-F1"),
    "accuracy": ("accuracy", "accuracy"),
    "chance_macro_f1": ("chance_f1", "macro-F1 by chance (permuted references)"),
    "p_value_vs_chance": ("p_value", "p-value of macro-F1 vs chance (permutation test)"),
    "roc_auc": ("roc_auc", "ROC AUC"),
    "f1": ("f1", "F1"),
    "bleu": ("bleu", "BLEU-4"),
    "rouge_l": ("rouge", "ROUGE-L"),
    "embedding_similarity": ("cosine_similarity", "MiniLM embedding similarity"),
    "total": ("gou_rubric_total", "rubric total (0-100)"),
    **{item.name: (_snake(f"gou{item.name}"), f"{item.name} ({item.low}..{item.high})") for item in RUBRIC_ITEMS},
    "quantitative_accuracy": ("quantitative_accuracy", "quantitative accuracy"),
    "descriptor_accuracy": ("descriptor_accuracy", "descriptor accuracy"),
    "coverage": ("coverage", "abnormal-biomarker coverage"),
    "grounding": ("grounding", "grounding"),
    "conclusion_consistency": ("conclusion_consistency", "conclusion consistency rate"),
    "pass_rate": ("verifier_pass_rate", "verifier pass rate"),
    "own_loss": ("completion_loss", "completion loss with own inputs (nats/token)"),
    "other_loss": ("completion_loss_other_inputs", "completion loss with another eye's inputs"),
    "gap": ("conditioning_gap", "conditioning gap (0 = inputs ignored)"),
    "mae": ("mae", "MAE"),
    "rmse": ("rmse", "RMSE"),
    "r2": ("r_squared", "R²"),
}

SECTION_TITLES: dict[str, str] = {
    "diagnosis": "Diagnosis",
    "diagnosis_question": "Diagnosis question (short answer)",
    "dme": "DME",
    "dr_grade": "DR grade",
    "text": "Report text",
    "rubric": "Clinical rubric (LLM judge)",
    "grounding": "Verifier (deterministic)",
    "conditioning": "Conditioning on the inputs",
    "regression": "Biomarker regression",
}


def section_title(name: str) -> str:
    """A section's display title (its name when it has none)."""
    return SECTION_TITLES.get(name, name)


def headline_metrics(sections: dict[str, dict]) -> list[dict]:
    """``[{"section", "key", "type", "name", "value"}]`` for every headline scalar that is not None."""
    rows = []
    for section, values in sections.items():
        flat = {**values, **values["overall"]} if isinstance(values.get("overall"), dict) else values
        for key, (metric_type, name) in HEADLINE_KEYS.items():
            value = flat.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"section": section, "key": key, "type": metric_type, "name": name, "value": value})
    return rows


def format_value(value: float) -> str:
    """Integers as is, floats to 4 decimals."""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


class ResultsFileError(ValueError):
    """A JSON file that is not an `EvaluationResult` (gou_results.json); the message names the file and the fix."""


@dataclass
class EvaluationResult:
    """The benchmark's results for one model on one dataset split.

    ``dataset`` is the dataset's id (Hub id or folder name, the model-index ``type``); ``dataset_name``
    a display name (defaults to ``dataset``); ``config`` records how the run was made (judge model, ...).
    """

    model: str
    dataset: str
    split: str
    sections: dict[str, dict] = field(default_factory=dict)
    dataset_name: str | None = None
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "headline": headline_metrics(self.sections)}

    def save_json(self, path: str | Path) -> Path:
        """Write the JSON atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "EvaluationResult":
        """Read a file `save_json` wrote; raises `ResultsFileError` naming the file when it is another JSON."""
        path = Path(path)
        fix = ("pass --results the gou_results.json that 'grok-retina evaluate' writes (not ablation.json, "
               "baselines.json or a probe's results)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ResultsFileError(f"{path} is not JSON ({error.msg} at line {error.lineno}); {fix}.") from None
        if not isinstance(data, dict):
            raise ResultsFileError(f"{path} holds a JSON {type(data).__name__}, not an evaluation result; {fix}.")
        data.pop("headline", None)
        declared = fields(cls)
        required = [f.name for f in declared if f.default is MISSING and f.default_factory is MISSING]
        problems = {
            "lacks the keys": [name for name in required if name not in data],
            "has unknown keys": sorted(set(data) - {f.name for f in declared}),
            "has non-object values for": [k for k in ("sections", "config") if not isinstance(data.get(k, {}), dict)],
        }
        if any(problems.values()):
            found = "; ".join(f"{what} {', '.join(names)}" for what, names in problems.items() if names)
            raise ResultsFileError(f"{path} is not an evaluation result: it {found}; {fix}.")
        return cls(**data)

    def to_markdown(self) -> str:
        """A headline table, then each section's per-class table (where it has one)."""
        lines = [
            f"### {TASK_NAME}: {self.model} on {self.dataset_name or self.dataset} ({self.split})",
            "",
            "| Section | Metric | Value |",
            "|---|---|---:|",
        ]
        for r in headline_metrics(self.sections):
            lines.append(f"| {section_title(r['section'])} | {r['name']} | {format_value(r['value'])} |")
        for section, values in self.sections.items():
            if values.get("failed"):
                failed = f"{values['failed']} of {values.get('n')} samples failed to be judged"
                lines += ["", f"{section_title(section)}: {failed} (reasons in the JSON)."]
            per_class = values.get("per_class")
            if per_class:
                lines += [
                    "",
                    f"**{section_title(section)}: per class**",
                    "",
                    "| Class | Precision | Recall | F1 | Support |",
                ]
                lines.append("|---|---:|---:|---:|---:|")
                for label, row in per_class.items():
                    cells = ["–" if row[k] is None else format_value(row[k]) for k in ("precision", "recall", "f1")]
                    lines.append(f"| {label} | {' | '.join(cells)} | {row['support']} |")
            if values.get("confusion_matrix"):
                columns = values["confusion_columns"]
                lines += [
                    "",
                    f"**{section_title(section)}: confusion matrix** (rows: reference, columns: prediction)",
                    "",
                ]
                lines += [f"| | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
                for label, row in zip(values["labels"], values["confusion_matrix"]):
                    lines.append(f"| {label} | {' | '.join(map(str, row))} |")
        return "\n".join(lines) + "\n"

    def model_index(self) -> list[dict]:
        """The ``model-index`` block of a model card (``huggingface_hub`` format), values rounded to 4 decimals."""
        metrics = [
            {"type": r["type"], "value": round(r["value"], 4), "name": f"{section_title(r['section'])}: {r['name']}"}
            for r in headline_metrics(self.sections)
        ]
        if not metrics:
            raise ValueError("the result has no headline metrics to publish; add a section with at least one value.")
        dataset = {"name": self.dataset_name or self.dataset, "type": self.dataset, "split": self.split}
        task = {"type": TASK_TYPE, "name": TASK_NAME}
        return [{"name": self.model, "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]

    def write(self, out_dir: str | Path, stem: str = "gou_results") -> dict[str, Path]:
        """Write ``{stem}.json``, ``{stem}.md`` and ``{stem}.model-index.yaml`` into ``out_dir``, each atomically."""
        import yaml

        out_dir = Path(out_dir)
        block = yaml.safe_dump({"model-index": self.model_index()}, sort_keys=False, allow_unicode=True)
        return {
            "json": self.save_json(out_dir / f"{stem}.json"),
            "markdown": atomic_write_text(out_dir / f"{stem}.md", self.to_markdown()),
            "model_index": atomic_write_text(out_dir / f"{stem}.model-index.yaml", block),
        }


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file in the same folder, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
