"""Tests of the text data and the language models' reference evaluation: splits that do not leak,
the evaluated windows, the n-gram reference accuracies, the diversity of generated text and nucleus
sampling.

Run: python -m pytest -q test_data.py      (about 20 seconds on a 2-core CPU)
"""

import collections
import types

import pytest
import torch

from data import load_text, load_windows, unique_paragraphs
from lm_eval import distinct_ngrams, generate, ngram_accuracy, top_p_filter


def verbatim_fraction(train, test, width=64):
    """Fraction of the test text's consecutive `width`-character windows (every offset) found in
    training."""
    seen = {train[i : i + width] for i in range(len(train) - width + 1)}
    windows = [test[i : i + width] for i in range(len(test) - width + 1)]
    return sum(w in seen for w in windows) / len(windows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pydoc_test_and_validation_text_is_not_in_training(seed):
    # Several pydoc topics contain others: before de-duplication 78 % (seed 1) of the test windows
    # were training text.
    data = load_text("pydoc", "data", seed)
    text = {
        split: "".join(data["chars"][i] for i in data[split].tolist())
        for split in ("train", "val", "test")
    }
    assert len(text["test"]) >= 16_000  # enough text to evaluate on
    assert verbatim_fraction(text["train"], text["test"]) <= 0.01
    assert verbatim_fraction(text["train"], text["val"]) <= 0.01


def test_unique_paragraphs_keeps_first_occurrences_only():
    docs = ["a\n\nb b\n\nc", "x\n\nb  b\n\n  \n\na", "c\n \ny"]
    # whitespace-insensitive, in order
    assert unique_paragraphs(docs) == ["a\n\nb b\n\nc", "x", "y"]


def test_evaluated_windows_spread_over_the_whole_split():
    cfg = types.SimpleNamespace(
        dataset="pydoc", data_dir="data", seed=0, seq_len=64, eval_sequences=16
    )
    data, train, test, test_eval = load_windows(cfg, 65)
    assert test_eval.shape == (16, 65)
    # first and last window
    assert torch.equal(test_eval[0], test[0]) and torch.equal(test_eval[-1], test[-1])
    assert (
        load_windows(types.SimpleNamespace(**{**vars(cfg), "eval_sequences": 0}), 65)[3].shape
        == test.shape
    )


def brute_force_ngram_accuracy(train, windows, order):
    """Counts in dictionaries, the argmax (lowest id on ties) of the longest seen context of up to
    order−1."""
    tables = [collections.defaultdict(collections.Counter) for _ in range(order)]
    for k in range(order):
        for i in range(k, len(train)):
            tables[k][tuple(train[i - k : i])][train[i]] += 1
    hits = total = 0
    for row in windows:
        for i in range(len(row) - 1):
            guess = None
            for k in range(min(order, i + 2)):
                counts = tables[k].get(tuple(row[i - k + 1 : i + 1]) if k else ())
                if counts:
                    top = max(counts.values())
                    guess = min(c for c, v in counts.items() if v == top)
            hits += guess == row[i + 1]
            total += 1
    return hits / total


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_accuracy_matches_brute_force(order):
    g = torch.Generator().manual_seed(order)
    # ids 0..3, skewed
    train = torch.randint(0, 4, (3000,), generator=g) // torch.randint(1, 3, (3000,), generator=g)
    # id 4 never occurs in training: its contexts back off
    windows = torch.randint(0, 5, (20, 9), generator=g)
    expected = brute_force_ngram_accuracy(train.tolist(), windows.tolist(), order)
    assert ngram_accuracy(train, windows, 5, order) == pytest.approx(expected, abs=1e-12)


def test_ngram_accuracy_of_a_deterministic_text_is_one_past_its_order():
    # "abcabc…": a bigram knows every next character; a unigram guesses the most frequent one (ties:
    # lowest id).
    train = torch.arange(300) % 3
    windows = (torch.arange(10)[:, None] + torch.arange(7)) % 3  # (10, 7) windows of the same text
    assert ngram_accuracy(train, windows, 3, 2) == 1.0
    assert ngram_accuracy(train, windows, 3, 1) == pytest.approx(
        float((windows[:, 1:] == 0).float().mean())
    )


def test_distinct_ngrams_known_values():
    # 3 four-grams, 1 distinct
    assert distinct_ngrams(torch.tensor([[1, 1, 1, 1, 1, 1]]), 4) == pytest.approx(1 / 3)
    assert distinct_ngrams(torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]), 4) == 1.0
    assert distinct_ngrams(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]), 4) == 0.5  # pooled over rows


def test_top_p_keeps_the_smallest_nucleus_reaching_p_renormalised():
    """Probabilities 0.1, 0.5, 0.15, 0.25: the nucleus of p = 0.7 is {0.5, 0.25} (0.75 ≥ 0.7; 0.5
    alone is not), renormalised to 2/3, 1/3; p = 0.5 keeps 0.5 alone; p = 1 keeps everything."""
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    torch.testing.assert_close(top_p_filter(probs, 0.7), torch.tensor([[0, 2 / 3, 0, 1 / 3]]))
    torch.testing.assert_close(top_p_filter(probs, 0.5), torch.tensor([[0.0, 1, 0, 0]]))
    torch.testing.assert_close(top_p_filter(probs, 1.0), probs)
    # sampling draws only from the nucleus, at its frequencies
    logits = probs.log().expand(20000, 4)
    draws = generate(
        lambda x: logits,
        torch.zeros(20000, 1, dtype=torch.long),
        1,
        1.0,
        torch.Generator().manual_seed(0),
        top_p=0.7,
    )[:, 0]
    counts = torch.bincount(draws, minlength=4)
    assert counts[0] == counts[2] == 0
    assert abs(counts[1] / 20000 - 2 / 3) < 0.015  # 4.5 standard errors


