"""The data `flopwatt swarm` trains on: a language generated from a fixed seed, with a known loss floor.

Every machine must train on the same tokens without downloading anything, and a loss must be read
against what is achievable. So the text is a second-order Markov chain over `vocab` tokens, built
and sampled with integer arithmetic only (splitmix64, Steele et al. 2014, as a counter-based
generator): the same tokens on any CPU, OS, numpy or torch version, and no float rounding that could
make two machines disagree.

The next token c after (a, b) is drawn with integer weights

    w(c | a, b) = u(c | b) + v(c | a mod groups, b)

where u gives every token b a few successors with small weights (a bigram table, learnt first) and v
gives every (a mod groups, b) a few successors with large weights (what the token two back adds,
learnt later). A sequence starts with two uniformly random tokens.

The floor: for a second-order chain the best possible prediction of x_t from everything before it
is P(x_t | x_{t-2}, x_{t-1}), so the least expected cross-entropy of a model that reads x_0..x_{S-1}
and predicts x_1..x_S is, in nats per token,

    floor(S) = ( ln V + sum_{t=2..S} sum_{a,b} p_t(a, b) H(P(. | a, b)) ) / S

with x_1 uniform (ln V), p_2 uniform over pairs and p_{t+1}(b, c) = sum_a p_t(a, b) P(c | a, b).
As S grows it tends to the entropy rate sum_{a,b} pi(a, b) H(P(. | a, b)), pi the stationary
distribution of pairs. Both are computed exactly (up to float64 rounding), not estimated.

Why it is fair to DDP and DiLoCo alike: both read the same global stream of sequences in the same
order (sequence g of the stream is the same on every machine; step t's global batch is sequences
t*B .. t*B + B - 1, split over the ranks), start from the same weights, and are scored on the same
held-out sequences, from a separate stream the training never reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Keeps the training and the held-out streams apart: the domain sits in the counter's top byte.
TRAIN, HELD_OUT = 0, 1
_DOMAIN_SHIFT = np.uint64(56)


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a distribution given as an array of probabilities."""
    return float(-(p * np.log(np.where(p > 0, p, 1.0))).sum())


def splitmix64(counter: np.ndarray) -> np.ndarray:
    """splitmix64 of each uint64 (Steele, Lea and Flood 2014): a counter-based generator, wrapping
    arithmetic only, so the same counters give the same numbers everywhere."""
    with np.errstate(over="ignore"):
        z = np.asarray(counter, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class Language:
    """A second-order Markov chain over `vocab` tokens (see the module docstring)."""

    vocab: int = 64
    seed: int = 14
    #: Successors of each token b in the bigram table u, and their largest weight.
    bigram_successors: int = 4
    bigram_max_weight: int = 4
    #: Successors of each (a mod groups, b) in the table v, and their largest weight.
    context_successors: int = 2
    context_max_weight: int = 32
    groups: int = 2

    def _table(self, part: int, rows: int, successors: int, max_weight: int) -> tuple[np.ndarray, np.ndarray]:
        """(successor, weight) arrays of shape (rows, successors) from this language's seed."""
        base = np.uint64((self.seed << 8 | part) << 32)
        draws = splitmix64(base + np.arange(rows * successors, dtype=np.uint64)).reshape(rows, successors)
        token = (draws % np.uint64(self.vocab)).astype(np.int64)
        weight = 1 + ((draws >> np.uint64(32)) % np.uint64(max_weight)).astype(np.int64)
        return token, weight

    @cached_property
    def weights(self) -> np.ndarray:
        """Integer weights w[a, b, c] of token c after (a, b); every row has a positive sum."""
        v = self.vocab
        w = np.zeros((v, v, v), dtype=np.int64)
        token, weight = self._table(1, v, self.bigram_successors, self.bigram_max_weight)
        for b in range(v):
            np.add.at(w[:, b, :], (slice(None), token[b]), weight[b])
        token, weight = self._table(2, self.groups * v, self.context_successors, self.context_max_weight)
        for a in range(v):
            for b in range(v):
                row = (a % self.groups) * v + b
                np.add.at(w[a, b], token[row], weight[row])
        return w

    @cached_property
    def probabilities(self) -> np.ndarray:
        """P[a, b, c] = P(c | a, b)."""
        w = self.weights
        return w / w.sum(axis=-1, keepdims=True)

    @cached_property
    def _row_entropy(self) -> np.ndarray:
        """H(P(. | a, b)) in nats, for every pair (a, b)."""
        p = self.probabilities
        return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)

    def _step(self, pairs: np.ndarray) -> np.ndarray:
        """The distribution of (x_{t}, x_{t+1}) from that of (x_{t-1}, x_t)."""
        return np.einsum("ab,abc->bc", pairs, self.probabilities)

    def loss_floor(self, seq_len: int) -> float:
        """The least expected cross-entropy (nats/token) over a sequence of `seq_len` predictions."""
        v = self.vocab
        pairs = np.full((v, v), 1.0 / v**2)
        total = math.log(v)
        for _ in range(2, seq_len + 1):
            total += float((pairs * self._row_entropy).sum())
            pairs = self._step(pairs)
        return total / seq_len

    @cached_property
    def stationary(self) -> np.ndarray:
        """pi[a, b]: the distribution of pairs the chain settles to, by iterating it to a fixed point."""
        v = self.vocab
        pairs = np.full((v, v), 1.0 / v**2)
        for _ in range(100_000):
            nxt = self._step(pairs)
            if np.abs(nxt - pairs).sum() < 1e-13:
                return nxt
            pairs = nxt
        raise ArithmeticError("the chain did not settle; is it periodic?")

    def entropy_rate(self) -> float:
        """sum pi(a, b) H(P(. | a, b)) in nats/token: the floor of an endless sequence."""
        return float((self.stationary * self._row_entropy).sum())

    def bigram_entropy(self) -> float:
        """H(x_t | x_{t-1}) in the stationary chain: the least loss of a model that reads one token
        back. A loss below it shows the model uses the token two back."""
        pairs = self.stationary
        single = pairs.sum(axis=0)
        return _entropy(pairs) - _entropy(single)

    def sequences(self, first: int, count: int, seq_len: int, domain: int = TRAIN) -> np.ndarray:
        """Sequences first .. first+count-1 of a stream: int64 (count, seq_len + 1) tokens."""
        width = seq_len + 1
        index = np.arange(first, first + count, dtype=np.uint64)[:, None] * np.uint64(width)
        counter = (np.uint64(domain) << _DOMAIN_SHIFT) + index + np.arange(width, dtype=np.uint64)
        draws = splitmix64(counter ^ splitmix64(np.uint64(self.seed)))
        out = np.empty((count, width), dtype=np.int64)
        out[:, :2] = (draws[:, :2] % np.uint64(self.vocab)).astype(np.int64)
        cumulative = np.cumsum(self.weights, axis=-1)
        for t in range(2, width):
            rows = cumulative[out[:, t - 2], out[:, t - 1]]
            pick = (draws[:, t] % rows[:, -1].astype(np.uint64)).astype(np.int64)
            out[:, t] = (rows <= pick[:, None]).sum(axis=1)
        return out
