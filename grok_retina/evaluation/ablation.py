"""Modality ablation (as in the GROK paper): the same dataset with CFP+OCT, OCT only and CFP only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .report import format_value, headline_metrics, section_title

MODALITY_SETTINGS: dict[str, frozenset[str]] = {
    "CFP+OCT": frozenset({"cfp", "oct"}),
    "OCT only": frozenset({"oct"}),
    "CFP only": frozenset({"cfp"}),
}


@dataclass
class AblationResult:
    """Per setting: the generated reports and the metric sections scored on them."""

    reports: dict[str, list[str]] = field(default_factory=dict)
    sections: dict[str, dict[str, dict]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"reports": self.reports, "sections": self.sections}

    def to_markdown(self) -> str:
        """One row per headline metric, one column per setting ("–" where a setting lacks it)."""
        settings = list(self.sections)
        values: dict[tuple[str, str], dict[str, float]] = {}
        for setting in settings:
            for row in headline_metrics(self.sections[setting]):
                values.setdefault((section_title(row["section"]), row["name"]), {})[setting] = row["value"]
        lines = [f"| Section | Metric | {' | '.join(settings)} |", "|---|---|" + "---:|" * len(settings)]
        for (section, name), by_setting in values.items():
            cells = [format_value(by_setting[s]) if s in by_setting else "–" for s in settings]
            lines.append(f"| {section} | {name} | {' | '.join(cells)} |")
        return "\n".join(lines) + "\n"


def run_modality_ablation(
    generate_fn: Callable[[object, frozenset[str]], Sequence[str]],
    dataset: object,
    score_fn: Callable[[list[str], frozenset[str]], dict[str, dict]],
    settings: Mapping[str, frozenset[str]] = MODALITY_SETTINGS,
) -> AblationResult:
    """For each setting, ``generate_fn(dataset, modalities)`` writes one report per sample (in order) and
    ``score_fn(reports, modalities)`` scores them (the modalities, to query the model again where a metric
    needs it).
    """
    result = AblationResult()
    for name, modalities in settings.items():
        unknown = set(modalities) - {"cfp", "oct"}
        if unknown or not modalities:
            raise ValueError(
                f"setting {name!r}: modalities must be a non-empty subset of {{'cfp', 'oct'}}, got {set(modalities)!r}."
            )
        reports = generate_fn(dataset, frozenset(modalities))
        if isinstance(reports, str) or not all(isinstance(r, str) for r in reports):
            raise TypeError(f"setting {name!r}: generate_fn must return a list of report strings, one per sample.")
        if hasattr(dataset, "__len__") and len(reports) != len(dataset):
            raise ValueError(
                f"setting {name!r}: generate_fn returned {len(reports)} reports for {len(dataset)} samples."
            )
        result.reports[name] = list(reports)
        result.sections[name] = score_fn(list(reports), frozenset(modalities))
    return result
