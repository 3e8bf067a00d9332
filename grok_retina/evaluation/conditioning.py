"""Does a trained GROK read its inputs? Completion loss with each eye's own prompt, images and biomarkers vs.
another eye's.

A model that conditions on the biomarkers and images scores a reference report clearly better with its own
inputs; a gap near zero means it writes the same report whatever it is shown (it learned the format, not the
case), which a diagnosis metric alone cannot tell from bad luck.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch


@dataclass
class ConditioningGap:
    """Mean completion loss (nats per token) of ``n`` rows with their own and with shifted inputs."""

    own_loss: float
    other_loss: float
    n: int

    @property
    def gap(self) -> float:
        return self.other_loss - self.own_loss

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "gap": self.gap}


def _completion_loss(model, collator, rows: Sequence[dict[str, Any]], batch_size: int) -> float:
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collator([dict(r) for r in rows[start : start + batch_size]])
        batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
        total += loss.item()
        tokens += int((targets != -100).sum())
    return total / tokens


def conditioning_gap(model, processor, rows: Sequence[dict[str, Any]], batch_size: int = 8) -> ConditioningGap:
    """``rows`` are Stage I SFT rows (``prompt``, ``completion``, ``images``, ``biomarkers``); row i is scored once
    with its own prompt, images and biomarkers and once with row i+1's (a cyclic shift, so no row keeps its own
    inputs)."""
    from ..training import GrokDataCollator  # the training collator

    if len(rows) < 2:
        raise ValueError(f"conditioning_gap needs at least 2 rows to swap inputs between, got {len(rows)}.")
    rows = [dict(r) for r in rows]
    following = rows[1:] + rows[:1]
    inputs = ("prompt", "images", "biomarkers")
    shifted = [{**row, **{k: other[k] for k in inputs if k in other}} for row, other in zip(rows, following)]
    collator = GrokDataCollator(processor=processor, completion_only_loss=True)
    was_training = model.training
    model.eval()
    try:
        own = _completion_loss(model, collator, rows, batch_size)
        other = _completion_loss(model, collator, shifted, batch_size)
    finally:
        model.train(was_training)
    return ConditioningGap(own_loss=own, other_loss=other, n=len(rows))


__all__ = ["ConditioningGap", "conditioning_gap"]
