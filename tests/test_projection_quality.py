"""DiLoCo's token-factor band, the critical-batch cost and the edges of the published range and of the
memory budget, worked by hand from docs/projection.md."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import least_squares

from bench.hardware import get_card
from bench.projection import Settings, colocated, model_spec
from bench.projection import quality as q


def chinchilla(n: float, d: float) -> float:
    return 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28


def test_the_fit_constants_are_the_least_squares_fit_of_the_published_points() -> None:
    pts = np.array(q.CHARLES_2025_LOSS_PENALTY_PCT)

    def residual(p: np.ndarray) -> np.ndarray:
        c, a, d, g = p
        return c + a * (pts[:, 0] / 1e9) ** (-d) * (pts[:, 1] ** g - 1) - pts[:, 2]

    fit = least_squares(residual, [-0.2, 0.5, 0.2, 0.7])
    assert fit.x == pytest.approx([q.FIT_C, q.FIT_A, q.FIT_D, q.FIT_G], abs=2e-4)
    assert math.sqrt(np.mean(fit.fun**2)) == pytest.approx(q.FIT_RMS_PCT, abs=1e-4)
    jac = fit.jac
    cov = np.linalg.inv(jac.T @ jac) * np.sum(fit.fun**2) / (len(pts) - 4)
    assert math.sqrt(cov[3, 3]) == pytest.approx(q.FIT_G_SIGMA, abs=2e-4)
    # Table 4 at 2.4B, M = 8: +1.1 % (the fit: within its largest residual)
    assert q.diloco_loss_penalty(2.4e9, 8, 30) * 100 == pytest.approx(1.1, abs=0.17)


def test_h_growth_reproduces_douillard_2023_section_3_1() -> None:
    """150M, M = 8: H = 1000 costs ln(1.029) nats more than H = 50 on a ~2.71-nat loss."""
    m_term = q.FIT_A * 0.15 ** (-q.FIT_D) * (8**q.FIT_G - 1)
    grown = m_term * q.H_GROWTH_PER_DECADE * math.log10(1000 / 50)
    assert grown == pytest.approx(100 * math.log(1.029) / math.log(15), rel=0.01)


def test_loss_penalty_to_tokens_by_hand() -> None:
    n, d = 1.24e9, 20 * 1.24e9
    data = 410.7 / d**0.28
    expected = (1 + 0.01 * chinchilla(n, d) / data) ** (1 / 0.28)
    assert q.tokens_for_loss_penalty(0.01, n, d) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.19, abs=0.01)  # the review's "1B, +1 % loss: 1.19x"
    assert q.tokens_for_loss_penalty(0.0, n, d) == 1.0


def test_band_for_eight_workers_on_a_2_4b_model_at_h30() -> None:
    n, m, h = 2.4e9, 8, 30
    central_pct = q.FIT_C + q.FIT_A * 2.4 ** (-q.FIT_D) * (8**q.FIT_G - 1)
    band = q.diloco_token_factor(m, h, n, worker_batch_tokens=2**17)
    d = 20 * n

    def factor(pct: float) -> float:
        return (1 + pct / 100 * chinchilla(n, d) / (410.7 / d**0.28)) ** (1 / 0.28)

    assert band.central == pytest.approx(factor(central_pct), rel=1e-9)
    assert band.low == 1.0  # parity up to 8 workers (DiLoCo 2023, OpenDiLoCo)
    assert band.high == pytest.approx(factor(central_pct + 2 * q.FIT_RMS_PCT), rel=1e-9)
    assert band.in_published_range and band.low < band.central < band.high


def test_thousand_workers_on_one_sequence_is_outside_everything_published() -> None:
    band = q.diloco_token_factor(1000, 500, 1.24e9, worker_batch_tokens=8192, tokens=24.8e9)
    assert not band.in_published_range
    text = " ".join(band.outside)
    assert "more than any published" in text
    assert band.central > 10 and band.high > band.central  # not a free lunch
    # Past 8 replicas the high end uses the exponent at +2 sigma on the growth beyond 8.
    g_hi = q.FIT_G + 2 * q.FIT_G_SIGMA
    a = q.FIT_A * 1.24 ** (-q.FIT_D) * (1 + q.H_GROWTH_PER_DECADE * math.log10(500 / 30))
    central = q.FIT_C + a * (1000**q.FIT_G - 1)
    high = central + 2 * q.FIT_RMS_PCT + a * ((1000**g_hi - 8**g_hi) - (1000**q.FIT_G - 8**q.FIT_G))
    assert band.loss_penalty[1] * 100 == pytest.approx(central, rel=1e-9)
    assert band.loss_penalty[2] * 100 == pytest.approx(high, rel=1e-9)


def test_critical_batch_by_hand() -> None:
    n, d = 1.24e9, 24.8e9
    b_crit = 2e8 / chinchilla(n, d) ** (1 / 0.21)
    assert q.critical_batch_tokens(n, d) == pytest.approx(b_crit, rel=1e-12)
    assert 2e6 < b_crit < 3e6  # about 2.4M tokens for the Chinchilla-trained 1B
    assert q.critical_batch_factor(8.19e6, 1e6, b_crit) == pytest.approx((1 + 8.19e6 / b_crit) / (1 + 1e6 / b_crit))
    assert q.critical_batch_factor(0.5e6, 1e6, b_crit) == 1.0


def test_too_few_outer_syncs_and_too_small_worker_batches_are_named() -> None:
    few = q.diloco_token_factor(8, 2000, 1e9, worker_batch_tokens=1e6, tokens=1e10)
    assert any("outer syncs" in why for why in few.outside)
    tiny = q.diloco_token_factor(8, 30, 1e9, worker_batch_tokens=2048)
    assert any("tokens per worker" in why for why in tiny.outside)
    assert q.diloco_token_factor(8, 30, 1e9, worker_batch_tokens=8192).in_published_range


def test_no_end_of_the_band_is_worse_than_one_replica_alone() -> None:
    band = q.diloco_token_factor(1000, 500, 125e6, worker_batch_tokens=2048, tokens=2.5e9)
    assert band.high == 1000.0
    assert q.tokens_for_loss_penalty(band.loss_penalty[2], 125e6, 2.5e9) > 1000
    assert band.central == pytest.approx(q.tokens_for_loss_penalty(band.loss_penalty[1], 125e6, 2.5e9))


def test_the_published_points_are_charles_tables_4_and_5() -> None:
    """Table 4: 35M-2.4B at M = 1, 2, 4, 8; Table 5: 4B and 10B at M = 1, 2, 4; one point each."""
    grid = [(n, m) for n, m, _ in q.CHARLES_2025_LOSS_PENALTY_PCT]
    table4 = [(n, m) for n in (35e6, 90e6, 180e6, 335e6, 550e6, 1.3e9, 2.4e9) for m in (1, 2, 4, 8)]
    assert grid == table4 + [(n, m) for n in (4e9, 10e9) for m in (1, 2, 4)]
    # 180M (Table 4): +0.3 % at M = 2, between its -0.2 at M = 1 and +1.1 at M = 4.
    assert dict(((n, m), pct) for n, m, pct in q.CHARLES_2025_LOSS_PENALTY_PCT)[(180e6, 2)] == 0.3


def test_the_fewest_published_outer_syncs_is_32() -> None:
    """1B, M = 8, H = 100 on 20B tokens: a worker batch sized for 32.5 outer syncs is in range, one
    for 31.5 is not, and the note says how many and the published 32."""
    n, m, h, d = 1e9, 8, 100, 2e10
    pct = q.FIT_C + q.FIT_A * 1.0 ** (-q.FIT_D) * (8**q.FIT_G - 1) * (1 + q.H_GROWTH_PER_DECADE * math.log10(100 / 30))
    central = (1 + pct / 100 * chinchilla(n, d) / (410.7 / d**0.28)) ** (1 / 0.28)
    inside = q.diloco_token_factor(m, h, n, worker_batch_tokens=d * central / (m * h * 32.5), tokens=d)
    assert inside.central == pytest.approx(central, rel=1e-12)
    assert inside.in_published_range
    outside = q.diloco_token_factor(m, h, n, worker_batch_tokens=d * central / (m * h * 31.5), tokens=d)
    assert outside.outside == ("31.5 outer syncs in the whole run: fewer than any published run (32)",)


@pytest.mark.parametrize(("replicas", "inner", "params", "batch"), [(0, 1, 1e9, 8192), (2, 0, 1e9, 8192),
                                                                    (2, 1, 0.0, 8192), (2, 1, 1e9, 0)])
def test_each_argument_of_the_band_must_be_positive(replicas: int, inner: int, params: float, batch: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        q.diloco_token_factor(replicas, inner, params, worker_batch_tokens=batch)


def test_the_low_end_past_eight_replicas_is_the_fits_growth_beyond_eight() -> None:
    """64 replicas of 1B at H = 30: parity up to 8, then the fit's growth from 8 to 64, a·(64^G - 8^G)
    percent (the constant C cancels), 5.5 % where the whole penalty is 6.9 % and the one at 8 is 1.4 %."""
    n, d = 1e9, 20 * 1e9
    band = q.diloco_token_factor(64, 30, n, worker_batch_tokens=2**17)
    low_pct = q.FIT_A * (64**q.FIT_G - 8**q.FIT_G)
    assert band.loss_penalty[0] * 100 == pytest.approx(low_pct, rel=1e-9)
    assert f"{low_pct:.1f} {q.FIT_C + q.FIT_A * (64**q.FIT_G - 1):.1f} {q.FIT_C + q.FIT_A * (8**q.FIT_G - 1):.1f}" \
        == "5.5 6.9 1.4"
    factor = (1 + low_pct / 100 * chinchilla(n, d) / (410.7 / d**0.28)) ** (1 / 0.28)
    assert factor < 64 and band.low == pytest.approx(factor, rel=1e-9)


def test_the_smallest_published_worker_batch_is_8192_tokens() -> None:
    """Charles et al. 2025 Fig. 4 (1.3B and 2.4B panels): the smallest global batch is 2^16 tokens, over
    8 replicas 2^16 / 8 = 8,192 tokens (4 sequences of 2,048) per worker per inner step. 8,192 is in
    range, 8,191 is out and the note names both figures (1B, M = 8, H = 30: thousands of outer syncs)."""
    assert q.diloco_token_factor(8, 30, 1e9, worker_batch_tokens=8192).outside == ()
    below = q.diloco_token_factor(8, 30, 1e9, worker_batch_tokens=8191)
    assert below.outside == ("8,191 tokens per worker per inner step: less than any published run (8,192)",)


def test_sixty_four_replicas_is_the_largest_published_run_and_sixty_five_is_beyond_it() -> None:
    """Douillard et al. 2023 Table 3 ran up to 64 replicas: 64 is only past the fit's 8 (Charles et al.
    2025), 65 is past every published run. 1B at H = 30 on 2^17 tokens per worker: 2e10·F / (M·2^17·30)
    is at least 78 outer syncs, so the replica count is the only note."""
    at = q.diloco_token_factor(64, 30, 1e9, worker_batch_tokens=2**17)
    assert at.outside == ("64 replicas: beyond the fitted 8 (Charles et al. 2025)",)
    past = q.diloco_token_factor(65, 30, 1e9, worker_batch_tokens=2**17)
    assert past.outside == ("65 replicas: more than any published DiLoCo run (64, Douillard et al. 2023 Table 3)",)


def test_memory_exactly_at_the_budget_fits() -> None:
    """125M (GPT-3 Small: 12 x 768, s = 2,048, V = 50,257 tied) on one H100 whose whole memory is the
    budget: 16 bytes/param (bf16 weights and gradients, fp32 Adam) = 2e9, selective activations
    34·s·h·L = 641,728,512, one Liger chunk of fp32 logits 4·32·V = 6,432,896 (ceil(V/h) = 66,
    ceil(2048/66) = 32): 2,648,161,408 bytes. A card of exactly that holds it with selective
    recomputation; one byte less falls back to full recomputation (2·s·h·L + 34·s·h of activations)."""
    total = 16 * 125e6 + 34 * 2048 * 768 * 12 + 4 * 32 * 50257
    assert total == 2_648_161_408
    h100 = get_card("h100")
    whole = Settings(usable_memory=1.0)
    exact = colocated(model_spec("125M"), replace(h100, memory_bytes=int(total)), 1, 1e9, settings=whole)
    assert exact.plan.startswith("tp=1 pp=1 dp=1, bf16, selective recompute")
    assert exact.memory is not None and exact.memory.total == total
    short = colocated(model_spec("125M"), replace(h100, memory_bytes=int(total) - 1), 1, 1e9, settings=whole)
    assert short.plan.startswith("tp=1 pp=1 dp=1, bf16, full recompute")
    full = 16 * 125e6 + 2 * 2048 * 768 * 12 + 34 * 2048 * 768 + 4 * 32 * 50257
    assert short.memory is not None and short.memory.total == full


def test_thirty_five_million_parameters_is_the_smallest_published_model() -> None:
    """Charles et al. 2025 Table 4 starts at 35M, Table 5 ends at 10B: both ends are in range, a
    parameter either side is out and the note says so (8 replicas, H = 30, 8,192 tokens per worker:
    hundreds of outer syncs, so the size is the only note)."""
    assert q.diloco_token_factor(8, 30, 35e6, worker_batch_tokens=8192).outside == ()
    assert q.diloco_token_factor(8, 30, 10e9, worker_batch_tokens=8192).outside == ()
    below = q.diloco_token_factor(8, 30, 34_999_999, worker_batch_tokens=8192)
    assert below.outside == ("3.5e+07 parameters: outside the published 35M-10B",)
    above = q.diloco_token_factor(8, 30, 10e9 + 1, worker_batch_tokens=8192)
    assert above.outside == ("1e+10 parameters: outside the published 35M-10B",)


@pytest.mark.parametrize("replicas", [1, 4, 8])
def test_up_to_eight_replicas_the_high_end_is_the_fit_plus_twice_its_rms(replicas: int) -> None:
    """1B at H = 30 on its 20B Chinchilla tokens, within the fitted M <= 8: central = C + A·(M^G - 1)
    percent ((N/1e9)^-d = 1), low = parity (0, or the central value when that is below it), high =
    central + 2 x 0.0922 points; the steeper +2σ exponent only enters past 8 replicas. Each end's
    token factor is (1 + p·L(N, D)·D^0.28/410.7)^(1/0.28), capped at M replicas."""
    n, d = 1e9, 2e10
    central = (q.FIT_C + q.FIT_A * (replicas**q.FIT_G - 1)) / 100
    high = central + 2 * 0.0922 / 100
    low = min(central, 0.0)
    band = q.diloco_token_factor(replicas, 30, n, worker_batch_tokens=2**17)
    assert band.loss_penalty == pytest.approx((low, central, high), rel=1e-12, abs=1e-15)

    def factor(p: float) -> float:
        f = (1 + p * chinchilla(n, d) / (410.7 / d**0.28)) ** (1 / 0.28)
        return f if replicas == 1 else min(replicas, f)

    assert (band.low, band.central, band.high) == pytest.approx((factor(low), factor(central), factor(high)), rel=1e-12)
