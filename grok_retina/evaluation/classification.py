"""Diagnosis metrics: macro-F1, per-class precision/recall/F1, confusion matrix, and binary ROC AUC / F1.

Conventions (the same for every label set: the GROK labels, DR grades, DME yes/no):

- A prediction of ``None`` is an *unparsed* report. It counts as a wrong prediction of an extra "none"
  class: a false negative for its reference class and a false positive for no class. It lowers recall
  and accuracy, never another class's precision.
- Chance: the same predictions scored against randomly permuted references (`macro_f1_vs_chance`). That keeps
  both label distributions, so a model that always writes one diagnosis scores exactly its chance level.
- Per-class precision is 0 when a class has support but is never predicted (and recall 0 when it is
  predicted but has no support); a class that occurs in neither references nor predictions has no
  defined F1 (``None``) and is left out of the macro average. Macro-F1 is therefore the unweighted mean
  of F1 over the classes that occur in the references or in the predictions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence

from processing.labels import LABELS

UNPARSED = "none"


def _check(predictions: Sequence, references: Sequence, labels: Sequence[Hashable]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has {len(references)}; give one prediction per reference."
        )
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be a non-empty sequence of distinct labels, got {list(labels)!r}.")
    known = set(labels)
    for name, values in (("references", references), ("predictions", predictions)):
        for i, value in enumerate(values):
            if value is None and name == "predictions":
                continue
            if value not in known:
                fix = "map it to a label or to None (unparsed)" if name == "predictions" else "fix the reference label"
                raise ValueError(f"{name}[{i}] = {value!r} is not one of the labels {list(labels)!r}; {fix}.")


def per_class_metrics(
    predictions: Sequence[Hashable | None], references: Sequence[Hashable], labels: Sequence[Hashable]
) -> dict[Hashable, dict[str, float | int | None]]:
    """``{label: {"precision", "recall", "f1", "support"}}``; see the module docstring for the conventions."""
    _check(predictions, references, labels)
    out: dict[Hashable, dict[str, float | int | None]] = {}
    for label in labels:
        tp = sum(p == label and r == label for p, r in zip(predictions, references))
        predicted = sum(p == label for p in predictions)
        support = sum(r == label for r in references)
        if predicted == 0 and support == 0:
            out[label] = {"precision": None, "recall": None, "f1": None, "support": 0}
            continue
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro_f1(
    predictions: Sequence[Hashable | None], references: Sequence[Hashable], labels: Sequence[Hashable]
) -> float:
    """Unweighted mean F1 over the classes of ``labels`` present in references or predictions."""
    f1s = [row["f1"] for row in per_class_metrics(predictions, references, labels).values() if row["f1"] is not None]
    if not f1s:
        raise ValueError("macro_f1 needs at least one reference; got an empty list.")
    return sum(f1s) / len(f1s)


def macro_f1_vs_chance(
    predictions: Sequence[Hashable | None],
    references: Sequence[Hashable],
    labels: Sequence[Hashable],
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Macro-F1 against chance by a permutation test: ``chance_macro_f1`` is the mean macro-F1 of the same
    predictions against shuffled references, ``p_value_vs_chance`` the share of shuffles scoring at least the
    observed macro-F1 (with the usual +1, so never 0)."""
    _check(predictions, references, labels)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}.")
    predicted, support = Counter(predictions), Counter(references)
    scored = [label for label in labels if predicted[label] or support[label]]
    if not scored:
        raise ValueError("macro_f1_vs_chance needs at least one reference; got an empty list.")

    def score(refs: Sequence[Hashable]) -> float:
        tp = Counter(p for p, r in zip(predictions, refs) if p == r)
        return sum(2 * tp[label] / (predicted[label] + support[label]) for label in scored) / len(scored)

    observed = score(references)
    shuffled, rng, null = list(references), random.Random(seed), []
    for _ in range(n_permutations):
        rng.shuffle(shuffled)
        null.append(score(shuffled))
    at_least = sum(value >= observed - 1e-12 for value in null)
    return {"chance_macro_f1": sum(null) / len(null), "p_value_vs_chance": (1 + at_least) / (1 + n_permutations)}


def macro_f1_difference(
    predictions_a: Sequence[Hashable | None],
    predictions_b: Sequence[Hashable | None],
    references: Sequence[Hashable],
    labels: Sequence[Hashable],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Macro-F1 of ``predictions_b`` minus that of ``predictions_a`` on the same samples, with a paired bootstrap
    95% interval (``ci_low``, ``ci_high``): the samples are resampled with replacement, both models scored on
    each resample."""
    _check(predictions_a, references, labels)
    _check(predictions_b, references, labels)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    rng, n, differences = random.Random(seed), len(references), []
    for _ in range(n_resamples):
        picked = [rng.randrange(n) for _ in range(n)]
        refs = [references[i] for i in picked]
        differences.append(macro_f1([predictions_b[i] for i in picked], refs, labels)
                           - macro_f1([predictions_a[i] for i in picked], refs, labels))
    differences.sort()
    return {"difference": macro_f1(predictions_b, references, labels) - macro_f1(predictions_a, references, labels),
            "ci_low": differences[int(0.025 * n_resamples)], "ci_high": differences[int(0.975 * n_resamples) - 1]}


def confusion_matrix(
    predictions: Sequence[Hashable | None], references: Sequence[Hashable], labels: Sequence[Hashable]
) -> list[list[int]]:
    """Rows are references and columns predictions, both in ``labels`` order, plus a last column for unparsed."""
    _check(predictions, references, labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for p, r in zip(predictions, references):
        matrix[index[r]][len(labels) if p is None else index[p]] += 1
    return matrix


def diagnosis_metrics(
    predictions: Sequence[str | None], references: Sequence[str], labels: Sequence[str] = LABELS
) -> dict:
    """Macro-F1, accuracy, per-class metrics, confusion matrix and the unparsed count for parsed diagnoses.

    ``predictions`` are labels parsed from the reports (``None`` when no label could be parsed);
    ``references`` the true labels. The confusion matrix's columns are ``labels`` then ``"none"``;
    ``chance_macro_f1`` and ``p_value_vs_chance`` come from `macro_f1_vs_chance`.
    """
    per_class = per_class_metrics(predictions, references, labels)
    f1s = [row["f1"] for row in per_class.values() if row["f1"] is not None]
    n = len(references)
    return {
        "n": n,
        "macro_f1": sum(f1s) / len(f1s) if f1s else None,
        "accuracy": sum(p == r for p, r in zip(predictions, references)) / n if n else None,
        "unparsed": sum(p is None for p in predictions),
        **(macro_f1_vs_chance(predictions, references, labels) if n else {}),
        "per_class": {str(label): row for label, row in per_class.items()},
        "labels": [str(label) for label in labels],
        "confusion_matrix": confusion_matrix(predictions, references, labels),
        "confusion_columns": [*(str(label) for label in labels), UNPARSED],
    }


def roc_auc(scores: Sequence[float], targets: Sequence[int | bool]) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic: P(score_pos > score_neg) + 0.5 P(tie), via average ranks.

    ``None`` when the targets hold only one class (AUC is undefined).
    """
    if len(scores) != len(targets):
        raise ValueError(f"scores has {len(scores)} items but targets has {len(targets)}; give one score per target.")
    for i, t in enumerate(targets):
        if t not in (0, 1):
            raise ValueError(f"targets[{i}] = {t!r}; binary targets must be 0/1 or False/True.")
    n_pos = sum(1 for t in targets if t)
    n_neg = len(targets) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):  # tied scores share the mean of their 1-based ranks
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, t in zip(ranks, targets) if t)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(scores: Sequence[float], targets: Sequence[int | bool], threshold: float = 0.5) -> dict:
    """ROC AUC plus precision, recall, F1 and accuracy of ``score >= threshold`` as the positive call."""
    auc = roc_auc(scores, targets)
    calls = [int(s >= threshold) for s in scores]
    truth = [int(t) for t in targets]
    row = per_class_metrics(calls, truth, (0, 1))[1]
    return {
        "n": len(truth),
        "n_positive": sum(truth),
        "roc_auc": auc,
        "threshold": threshold,
        "precision": row["precision"],
        "recall": row["recall"],
        "f1": row["f1"],
        "accuracy": sum(c == t for c, t in zip(calls, truth)) / len(truth) if truth else None,
    }
