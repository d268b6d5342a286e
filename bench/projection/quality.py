"""What a training strategy costs in tokens for the loss synchronous training reaches.

Two effects, each from the literature, each a pure function (docs/projection.md, "Tokens"):

- `diloco_token_factor(replicas, inner_steps, params, worker_batch_tokens)`: DiLoCo's quality cost
  as a low/central/high band of token factors, fitted to the published loss penalties of DiLoCo
  against data-parallel training (Charles et al. 2025, "Scaling Laws for DiLoCo", arXiv 2503.09799,
  Tables 4 and 5) and to the cost of syncing less often (Douillard et al. 2023, arXiv 2311.08105,
  section 3.1 "Communication frequency"), converted into tokens with the Chinchilla loss fit
  (Hoffmann et al. 2022, arXiv 2203.15556, eq. 10). Outside the published range it says so.
- `critical_batch_factor(batch_tokens, nominal_batch_tokens, params, tokens)`: the extra tokens a
  batch past the critical batch size costs (McCandlish et al. 2018, arXiv 1812.06162;
  Kaplan et al. 2020, arXiv 2001.08361, eq. 1.4 and 5.4-5.5).

A token factor F means: F x D tokens reach the loss that synchronous training at the nominal batch
reaches with D. F = 1 is parity; F < 1 would be a gain (DiLoCo with few replicas on large models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# ------------------------------------------------------------------------------------------------
# Chinchilla loss fit (Hoffmann et al. 2022, eq. 10, "approach 3"): L(N, D) = E + A/N^alpha + B/D^beta
# ------------------------------------------------------------------------------------------------

CHINCHILLA_E = 1.69
CHINCHILLA_A = 406.4
CHINCHILLA_B = 410.7
CHINCHILLA_ALPHA = 0.34
CHINCHILLA_BETA = 0.28


def chinchilla_loss(params: float, tokens: float) -> float:
    """Predicted loss (nats/token) of a model of `params` trained on `tokens` (Hoffmann et al. eq. 10)."""
    return CHINCHILLA_E + CHINCHILLA_A / params**CHINCHILLA_ALPHA + CHINCHILLA_B / tokens**CHINCHILLA_BETA


def tokens_for_loss_penalty(penalty: float, params: float, tokens: float) -> float:
    """Token factor F of a method whose loss after `tokens` is (1 + penalty) x synchronous training's.

    Read as a data efficiency: the method's D tokens are worth D/F synchronous tokens, so
    L(N, D/F) = (1 + penalty)·L(N, D), and with the Chinchilla form
    F = (1 + penalty·L(N, D)·D^beta / B)^(1/beta). Finite for any penalty > -(data term)/L.
    """
    data_term = CHINCHILLA_B / tokens**CHINCHILLA_BETA
    ratio = 1 + penalty * chinchilla_loss(params, tokens) / data_term
    if ratio <= 0:
        raise ValueError(f"a loss gain of {-penalty:.1%} is more than the whole data term allows")
    return ratio ** (1 / CHINCHILLA_BETA)


# ------------------------------------------------------------------------------------------------
# DiLoCo: the published loss penalties and the fit through them
# ------------------------------------------------------------------------------------------------

#: (params, replicas M, eval-loss difference to data-parallel in %), every point at H = 30, Chinchilla
#: tokens, each method at its own tuned learning rate and batch. Charles et al. 2025, Table 4
#: (35M-2.4B, M = 1, 2, 4, 8) and Table 5 (4B and 10B, hyperparameters from their scaling laws).
CHARLES_2025_LOSS_PENALTY_PCT: tuple[tuple[float, int, float], ...] = (
    (35e6, 1, -0.1), (35e6, 2, 0.7), (35e6, 4, 2.0), (35e6, 8, 3.9),
    (90e6, 1, -0.1), (90e6, 2, 0.5), (90e6, 4, 1.5), (90e6, 8, 3.1),
    (180e6, 1, -0.2), (180e6, 2, 0.3), (180e6, 4, 1.1), (180e6, 8, 2.3),
    (335e6, 1, -0.3), (335e6, 2, 0.1), (335e6, 4, 0.9), (335e6, 8, 2.0),
    (550e6, 1, -0.3), (550e6, 2, 0.2), (550e6, 4, 0.7), (550e6, 8, 1.7),
    (1.3e9, 1, -0.4), (1.3e9, 2, 0.2), (1.3e9, 4, 0.5), (1.3e9, 8, 1.3),
    (2.4e9, 1, -0.4), (2.4e9, 2, -0.1), (2.4e9, 4, 0.3), (2.4e9, 8, 1.1),
    (4e9, 1, -0.22), (4e9, 2, -0.18), (4e9, 4, 0.18),
    (10e9, 1, -0.19), (10e9, 2, -0.19), (10e9, 4, 0.29),
)  # fmt: skip

#: Least-squares fit of penalty% = C + A·(N/1e9)^(-D)·(M^G - 1) to the points above
#: (tests/test_projection_quality.py refits them): RMS residual 0.092 points, largest 0.17.
FIT_C = -0.2663
FIT_A = 0.6966
FIT_D = 0.2842
FIT_G = 0.5818
#: Standard error of G from the same fit; the band's high end grows past the fitted M with G + 2σ.
FIT_G_SIGMA = 0.0611
FIT_RMS_PCT = 0.0922
#: H = 30 throughout Charles et al.; below it they found no gain (H = 1 was worst, Fig. 9).
FIT_H = 30
#: Syncing less often: Douillard et al. 2023 (150M, M = 8, section 3.1 and Fig. 4): perplexity 2.9 %
#: higher at H = 1000 than at H = 50, i.e. ln(1.029) = 0.0286 nats on a loss of ln(15) = 2.71 nats,
#: +1.06 % loss over log10(20) = 1.30 decades of H. As a share of the fit's M-term at 150M, M = 8
#: (2.81 points): 0.289 more of it per decade of H beyond 30.
H_GROWTH_PER_DECADE = 0.289

#: The published range (beyond it the band's pessimistic end is the one to use):
FIT_MAX_REPLICAS = 8  # Charles et al. fit M <= 8; DiLoCo 2023 ran up to 64 (Table 3), unfitted
PUBLISHED_MAX_REPLICAS = 64
PUBLISHED_PARAMS = (35e6, 10e9)  # Charles et al. Tables 4-5
PUBLISHED_MAX_H = 2000  # Douillard et al. 2023, Fig. 4
#: The fewest outer syncs of a published run: H = 2000 over 64,000 inner steps (Douillard et al. Fig. 4).
PUBLISHED_MIN_OUTER_SYNCS = 32
#: The smallest per-replica batch: 2^16 tokens (the smallest global batch in Charles et al. Fig. 4's
#: 1.3B and 2.4B panels) over 8 replicas: 4 sequences of 2,048 tokens.
PUBLISHED_MIN_WORKER_BATCH = 2**16 / 8

SOURCE = ("Charles et al. 2025 (arXiv 2503.09799) Tables 4-5 fit, H-growth from Douillard et al. 2023 "
          "(arXiv 2311.08105) Fig. 4, tokens by the Chinchilla fit (Hoffmann et al. 2022 eq. 10)")


def diloco_loss_penalty(params: float, replicas: float, inner_steps: float, *, exponent: float = FIT_G,
                        h_growth: float = H_GROWTH_PER_DECADE) -> float:
    """DiLoCo's eval loss over data-parallel's, as a fraction (0.01 = 1 % higher), from the fit."""
    m_term = FIT_A * (params / 1e9) ** (-FIT_D) * (replicas**exponent - 1)
    h_term = 1 + h_growth * math.log10(max(inner_steps, FIT_H) / FIT_H)
    return (FIT_C + m_term * h_term) / 100


@dataclass(frozen=True)
class TokenFactor:
    """DiLoCo's token factor as a band, with the penalties behind it and where it leaves the literature."""

    low: float
    central: float
    high: float
    loss_penalty: tuple[float, float, float]
    #: Why the case is outside the published range; empty when inside.
    outside: tuple[str, ...]
    source: str = SOURCE

    @property
    def in_published_range(self) -> bool:
        return not self.outside

    def to_dict(self) -> dict[str, object]:
        return {"low": self.low, "central": self.central, "high": self.high,
                "loss_penalty": {"low": self.loss_penalty[0], "central": self.loss_penalty[1],
                                 "high": self.loss_penalty[2]},
                "in_published_range": self.in_published_range, "outside": list(self.outside),
                "source": self.source}


def diloco_token_factor(replicas: int, inner_steps: int, params: float, worker_batch_tokens: float,
                        tokens: float | None = None) -> TokenFactor:
    """Tokens DiLoCo needs, over synchronous training's, for the same loss: low / central / high.

    central: the fit through Charles et al.'s penalties, grown for H > 30 as Douillard et al. measured.
    low: parity up to 8 replicas (Douillard et al. 2023 abstract and Table 2; OpenDiLoCo, Jaghouar et
    al. 2024, Table 1: DiLoCo with 8 workers, H = 500, matches data-parallel), the fit's growth beyond.
    high: the fit plus twice its RMS residual; past the fitted 8 replicas its exponent at +2σ.
    Every end is capped at M: M replicas do at least as well as one of them alone (Table 3 there).
    `tokens` (default 20·N, the Chinchilla budget the penalties were measured at) sets the loss the
    penalty is a share of, and the number of outer syncs.
    """
    if replicas < 1 or inner_steps < 1 or params <= 0 or worker_batch_tokens <= 0:
        raise ValueError("replicas, inner steps, params and worker batch must be positive")
    d = 20 * params if tokens is None else tokens
    central = diloco_loss_penalty(params, replicas, inner_steps)
    at_eight = diloco_loss_penalty(params, min(replicas, FIT_MAX_REPLICAS), inner_steps)
    low = min(central, max(0.0, central - at_eight))
    beyond = 0.0
    if replicas > FIT_MAX_REPLICAS:
        steep = diloco_loss_penalty(params, replicas, inner_steps, exponent=FIT_G + 2 * FIT_G_SIGMA)
        steep_eight = diloco_loss_penalty(params, FIT_MAX_REPLICAS, inner_steps, exponent=FIT_G + 2 * FIT_G_SIGMA)
        beyond = (steep - steep_eight) - (central - at_eight)
    high = central + 2 * FIT_RMS_PCT / 100 + beyond
    # More replicas at the same inner steps never raised perplexity in Douillard et al. 2023 (Table 3,
    # up to 64): M replicas do at least as well as one of them alone on its D/M tokens, so F <= M.
    factors = [min(float(replicas), tokens_for_loss_penalty(p, params, d)) if replicas > 1 else
               tokens_for_loss_penalty(p, params, d) for p in (low, central, high)]
    outside = []
    if replicas > PUBLISHED_MAX_REPLICAS:
        outside.append(f"{replicas} replicas: more than any published DiLoCo run ({PUBLISHED_MAX_REPLICAS}, "
                       "Douillard et al. 2023 Table 3)")
    elif replicas > FIT_MAX_REPLICAS:
        outside.append(f"{replicas} replicas: beyond the fitted {FIT_MAX_REPLICAS} (Charles et al. 2025)")
    if not PUBLISHED_PARAMS[0] <= params <= PUBLISHED_PARAMS[1]:
        outside.append(f"{params:.3g} parameters: outside the published 35M-10B")
    if inner_steps > PUBLISHED_MAX_H:
        outside.append(f"H = {inner_steps}: more inner steps than any published run ({PUBLISHED_MAX_H})")
    syncs = d * factors[1] / (replicas * worker_batch_tokens * inner_steps)
    if syncs < PUBLISHED_MIN_OUTER_SYNCS:
        outside.append(f"{syncs:.1f} outer syncs in the whole run: fewer than any published run "
                       f"({PUBLISHED_MIN_OUTER_SYNCS})")
    if worker_batch_tokens < PUBLISHED_MIN_WORKER_BATCH:
        outside.append(f"{worker_batch_tokens:,.0f} tokens per worker per inner step: less than any published "
                       f"run ({PUBLISHED_MIN_WORKER_BATCH:,.0f})")
    return TokenFactor(factors[0], factors[1], factors[2], (low, central, high), tuple(outside))


# ------------------------------------------------------------------------------------------------
# The critical batch (McCandlish et al. 2018; Kaplan et al. 2020)
# ------------------------------------------------------------------------------------------------

#: Kaplan et al. 2020 eq. 1.4: B_crit(L) = B*/L^(1/alpha_B), B* = 2e8 tokens, alpha_B = 0.21, L in nats.
KAPLAN_B_STAR = 2e8
KAPLAN_ALPHA_B = 0.21


def critical_batch_tokens(params: float, tokens: float) -> float:
    """B_crit at the loss the Chinchilla fit predicts at the end of training.

    Assumption (docs/projection.md): Kaplan et al.'s fit was made on WebText2 with GPT-2's tokenizer,
    the loss here is the Chinchilla fit's on MassiveText; both are nats per token of English web text.
    The final loss gives the largest B_crit of the run, so the penalty below is the mildest reading.
    """
    return KAPLAN_B_STAR / chinchilla_loss(params, tokens) ** (1 / KAPLAN_ALPHA_B)


def critical_batch_factor(batch_tokens: float, nominal_batch_tokens: float, critical_tokens: float) -> float:
    """Tokens needed at `batch_tokens` over those at the nominal batch: E = E_min·(1 + B/B_crit)
    (McCandlish et al. 2018 eq. 2.11; Kaplan et al. 2020 eq. 5.5). 1 at or below the nominal batch."""
    if batch_tokens <= nominal_batch_tokens:
        return 1.0
    return (1 + batch_tokens / critical_tokens) / (1 + nominal_batch_tokens / critical_tokens)


#: DiLoCo tolerates larger global batches: its optimal batch grows as M^0.3399 (Charles et al. 2025,
#: Table 10, joint fit of the batch size); the critical batch a DiLoCo run is held to grows alike.
DILOCO_BATCH_EXPONENT = 0.3399
