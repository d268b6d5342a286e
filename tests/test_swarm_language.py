"""The swarm's generated language: its loss floor worked out independently, and its stream fixed for good.

The floor is checked three ways: against brute-force enumeration of every sequence of a tiny
language, against the stationary distribution found as an eigenvector, and against the loss the true
probabilities give on sequences the generator draws (so the sampler and the floor describe the same
chain).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from probes.swarm_language import HELD_OUT, TRAIN, Language, splitmix64

TINY = Language(vocab=3, seed=5, bigram_successors=2, bigram_max_weight=3, context_successors=1,
                context_max_weight=5, groups=2)


def _brute_force_floor(lang: Language, seq_len: int) -> float:
    """Mean over every sequence x_0..x_S of -ln P(x_t | all before), weighted by its probability."""
    w = lang.weights.astype(np.float64)
    p = w / w.sum(axis=-1, keepdims=True)
    v = lang.vocab
    total = 0.0
    for seq in itertools.product(range(v), repeat=seq_len + 1):
        prob = 1.0 / v**2  # x_0 and x_1 uniform and independent
        loss = math.log(v)  # predicting x_1 from x_0 alone
        for t in range(2, seq_len + 1):
            step = p[seq[t - 2], seq[t - 1], seq[t]]
            prob *= step
            loss += -math.log(step) if step > 0 else 0.0
        total += prob * loss
    return total / seq_len


@pytest.mark.parametrize("seq_len", [2, 3, 5])
def test_the_floor_is_what_enumerating_every_sequence_gives(seq_len: int) -> None:
    assert TINY.loss_floor(seq_len) == pytest.approx(_brute_force_floor(TINY, seq_len), rel=1e-12)


def test_the_entropy_rate_uses_the_stationary_distribution_of_pairs() -> None:
    lang = Language(vocab=6, seed=3)
    p = lang.probabilities
    v = lang.vocab
    transition = np.zeros((v * v, v * v))  # pair (a, b) -> pair (b, c)
    for a, b, c in itertools.product(range(v), repeat=3):
        transition[a * v + b, b * v + c] = p[a, b, c]
    values, vectors = np.linalg.eig(transition.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi /= pi.sum()
    row_entropy = [-sum(q * math.log(q) for q in p[a, b] if q > 0) for a in range(v) for b in range(v)]
    assert lang.entropy_rate() == pytest.approx(float(pi @ row_entropy), rel=1e-9)
    # and the floor of long sequences tends to it: each added prediction costs the rate
    assert 200 * lang.loss_floor(200) - 199 * lang.loss_floor(199) == pytest.approx(lang.entropy_rate(), rel=1e-9)


def test_the_bigram_level_is_the_entropy_of_the_next_token_given_one_back() -> None:
    lang = Language(vocab=6, seed=3)
    pairs = lang.stationary
    given_one = pairs / pairs.sum(axis=1, keepdims=True)  # P(b | a) in the stationary chain
    expected = -sum(pairs[a, b] * math.log(given_one[a, b]) for a in range(6) for b in range(6) if pairs[a, b] > 0)
    assert lang.bigram_entropy() == pytest.approx(expected, rel=1e-12)
    assert lang.entropy_rate() < lang.bigram_entropy() < math.log(lang.vocab)


def test_the_generator_draws_the_chain_the_floor_describes() -> None:
    """The true probabilities' loss on drawn sequences matches the floor, within four standard errors."""
    lang, seq_len = Language(), 64
    seqs = lang.sequences(0, 4000, seq_len)
    p = lang.probabilities
    per_token = -np.log(p[seqs[:, :-2], seqs[:, 1:-1], seqs[:, 2:]])
    per_sequence = (math.log(lang.vocab) + per_token.sum(axis=1)) / seq_len
    error = per_sequence.std(ddof=1) / math.sqrt(len(per_sequence))
    assert abs(per_sequence.mean() - lang.loss_floor(seq_len)) < 4 * error
    assert np.all(np.isfinite(per_token))  # every drawn token has positive probability


def test_the_default_language_has_the_documented_floor() -> None:
    lang = Language()
    assert lang.loss_floor(64) == pytest.approx(1.3501, abs=1e-4)
    assert lang.entropy_rate() == pytest.approx(1.3060, abs=1e-4)
    assert lang.bigram_entropy() == pytest.approx(1.7034, abs=1e-4)


def test_splitmix64_is_the_reference_generator() -> None:
    """Steele et al.'s splitmix64 seeded with 0 starts 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    assert int(splitmix64(golden)) == 0x6E789E6AA1B965F4


def test_the_stream_is_pinned_so_every_machine_and_version_trains_on_the_same_tokens() -> None:
    assert Language().sequences(0, 1, 12)[0].tolist() == [36, 61, 43, 17, 33, 19, 45, 10, 24, 51, 42, 22, 13]


def test_the_stream_is_the_same_however_it_is_split_over_ranks() -> None:
    lang = Language()
    whole = lang.sequences(0, 12, 16)
    parts = np.concatenate([lang.sequences(first, 4, 16) for first in (0, 4, 8)])
    assert np.array_equal(whole, parts)


def test_held_out_sequences_are_not_training_sequences() -> None:
    lang = Language()
    train = {tuple(s) for s in lang.sequences(0, 2000, 16, TRAIN)}
    held_out = {tuple(s) for s in lang.sequences(0, 64, 16, HELD_OUT)}
    assert not train & held_out
