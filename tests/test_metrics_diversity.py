"""Length and diversity metrics against values worked out by hand."""

import math

import pytest

from ropo.metrics import distinct_n, length_stats, ngrams, repetition_rate, self_bleu

THREE = ["the cat sat", "the cat ran", "a dog sat"]


def test_distinct_n_on_three_sentences():
    # unigrams: the cat sat the cat ran a dog sat -> 9, distinct {the cat sat ran a dog} -> 6
    assert distinct_n(THREE, 1) == pytest.approx(6 / 9)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) (a dog) (dog sat) -> 6, distinct 5
    assert distinct_n(THREE, 2) == pytest.approx(5 / 6)
    # trigrams: one per sentence, all different
    assert distinct_n(THREE, 3) == 1.0


def test_distinct_n_takes_token_ids_and_is_undefined_without_ngrams():
    assert distinct_n([[1, 2, 1], [2, 1]], 1) == pytest.approx(2 / 5)
    assert distinct_n(["one", "two"], 2) is None
    with pytest.raises(ValueError, match="n must be >= 1"):
        ngrams(["a"], 0)


def test_repetition_rate_within_each_answer():
    # "a b a b a": bigrams ab ba ab ba -> 2 of 4 repeat an earlier one; "x y z": none repeat;
    # "q" has no bigram and is left out of the mean.
    assert repetition_rate(["a b a b a", "x y z", "q"], 2) == pytest.approx((0.5 + 0.0) / 2)
    assert repetition_rate(["a a a a"], 1) == pytest.approx(3 / 4)
    assert repetition_rate(["q"], 2) is None


def test_self_bleu_by_hand():
    # "a b" vs ref "a b c": p1 = 2/2, p2 = 1/1 (effective order 2), brevity penalty exp(1 - 3/2).
    # "a b c" vs ref "a b": p1 = 2/3, p2 = 1/2, p3 = 0/1 -> sacrebleu's exp smoothing makes it 1/2;
    # no brevity penalty. BLEU = geometric mean of the precisions.
    first = math.exp(1 - 3 / 2)
    second = (2 / 3 * 1 / 2 * 1 / 2) ** (1 / 3)
    assert self_bleu([["a b", "a b c"]]) == pytest.approx(100 * (first + second) / 2, rel=1e-9)


def test_self_bleu_extremes_and_groups():
    same = ["the cat sat on the mat"] * 3
    assert self_bleu([same]) == pytest.approx(100)
    assert self_bleu([["alpha beta gamma", "delta epsilon zeta"]]) == 0.0
    # a prompt with one sample has nothing to compare with and does not count
    assert self_bleu([same, ["lonely"]]) == pytest.approx(100)
    assert self_bleu([["only one"]]) is None


def test_length_stats_by_hand():
    stats = length_stats([3, 10, 10, 5], max_new_tokens=10)
    assert (stats.mean, stats.median, stats.hit_limit_rate) == (7.0, 7.5, 0.5)
    assert stats.as_dict() == {"mean": 7.0, "median": 7.5, "hit_limit_rate": 0.5}
    with pytest.raises(ValueError, match=r"length\[1\] = 11"):
        length_stats([3, 11], max_new_tokens=10)
    with pytest.raises(ValueError, match="at least one"):
        length_stats([], max_new_tokens=10)
