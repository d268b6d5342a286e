"""Every swarm figure's arithmetic, from hand-made records whose answers are worked out here."""

from __future__ import annotations

import statistics

import pytest

from probes.swarm_figures import (
    Context,
    Curve,
    bootstrap_token_factor,
    factor_figure,
    strategy_figures,
    token_factor,
    tokens_to_reach,
    utilisations,
)

FLOOR = {"loss_floor": 1.35, "entropy_rate": 1.3, "bigram_entropy": 1.7, "uniform_loss": 4.16}


def _ctx(strategy: str, h: int = 2, world: int = 2, payload: float = 1000.0) -> Context:
    return Context(strategy, world, h, 16, "fp32", tokens_per_step=1024, params=500, payload_bytes=payload,
                   extra={"n_layer": 2})


def _curve(tokens: list[float], losses: list[float], sequences: int = 8) -> Curve:
    curve = Curve()
    for i, (t, loss) in enumerate(zip(tokens, losses)):
        curve.add(t, 10.0 * i, [loss] * sequences)
    return curve


def test_tokens_to_reach_interpolates_between_evaluations() -> None:
    tokens, losses = [0, 100, 200, 300], [4.0, 3.0, 2.0, 2.5]
    assert tokens_to_reach(tokens, losses, 2.5) == 150.0  # halfway from 3.0 to 2.0
    assert tokens_to_reach(tokens, losses, 3.0) == 100.0
    assert tokens_to_reach(tokens, losses, 2.0) == 200.0  # first crossing, not the last point
    assert tokens_to_reach(tokens, losses, 1.9) is None
    assert tokens_to_reach(tokens, losses, 4.5) == 0.0


def test_token_factor_at_the_loss_ddp_ended_at() -> None:
    found = token_factor([0, 100, 200], [4.0, 3.0, 2.0], [0, 150, 300], [4.0, 3.0, 1.5])
    assert found is not None
    # DiLoCo reaches 2.0 at 150 + 150 * (3 - 2) / (3 - 1.5) = 250 tokens; DDP got there at 200
    assert (found.level, found.diloco_tokens, found.ddp_tokens) == (2.0, 250.0, 200.0)
    assert found.factor == pytest.approx(1.25)
    assert found.level_from == "ddp final"


def test_token_factor_at_diloco_final_when_it_did_not_get_as_low() -> None:
    found = token_factor([0, 100, 200], [4.0, 3.0, 2.0], [0, 150, 300], [4.0, 3.0, 2.5])
    assert found is not None
    # level 2.5: DiLoCo at its last point (300), DDP at 100 + 100 * 0.5 / 1.0 = 150
    assert (found.level, found.diloco_tokens, found.ddp_tokens, found.factor) == (2.5, 300.0, 150.0, 2.0)
    assert found.level_from == "diloco final"


def test_no_token_factor_without_learning() -> None:
    assert token_factor([0, 100], [4.0, 4.2], [0, 100], [4.0, 3.0]) is None


def test_the_bootstrap_resamples_held_out_sequences_of_both_curves_alike() -> None:
    ddp, diloco = _curve([0, 100, 200], [4.0, 3.0, 2.0]), _curve([0, 150, 300], [4.0, 3.0, 1.5])
    samples = bootstrap_token_factor(ddp, diloco, resamples=50)
    assert samples == [pytest.approx(1.25)] * 50  # identical sequences: every resample is the point
    # two kinds of sequence: DiLoCo is slower on one. Each resample's factor follows its mix exactly.
    ddp, diloco = Curve(), Curve()
    for t, a, b in ((0, 4.0, 4.0), (100, 3.0, 3.0), (200, 2.0, 2.0)):
        ddp.add(t, 0, [a, b])
    for t, a, b in ((0, 4.0, 4.0), (100, 3.0, 3.5), (200, 2.0, 3.0), (300, 1.0, 2.0)):
        diloco.add(t, 0, [a, b])
    samples = bootstrap_token_factor(ddp, diloco, resamples=200, seed=1)
    possible = {token_factor(ddp.tokens, [4.0, 3.0, 2.0], diloco.tokens, loss).factor  # type: ignore[union-attr]
                for loss in ([4.0, 3.0, 2.0, 1.0], [4.0, 3.25, 2.5, 1.5], [4.0, 3.5, 3.0, 2.0])}
    assert set(round(s, 12) for s in samples) <= {round(p, 12) for p in possible}
    assert min(samples) == pytest.approx(1.0) and max(samples) == pytest.approx(1.5)


def _ddp_records() -> dict[int, dict]:
    """2 ranks, H = 2: four steps, two evaluations, each followed by two steps timed alone and a sync."""
    return {
        0: {"interval_s": [1.0, 1.2, 1.1, 1.0], "compute_s": [0.5, 0.7, 0.6, 0.6], "busy_s": [1.2, 1.2],
            "sync_s": [0.4, 0.6], "sync_bytes": [1050, 1040, 1060, 1045], "device": "cpu", "device_name": "A",
            "tokens": 2048, "train_s": 4.3, "energy": None},
        1: {"interval_s": [1.1, 1.0, 1.3, 0.9], "compute_s": [0.8, 0.8, 0.9, 0.7], "busy_s": [1.6, 1.6],
            "sync_s": [0.5, 0.3], "sync_bytes": [], "sync_bytes_unavailable": "no counter", "device": "cpu",
            "device_name": "B", "tokens": 2048, "train_s": 4.3, "energy": None},
    }


def _by(measurements: list, metric: str, variant: str | None = None) -> object:
    (m,) = [m for m in measurements if m.metric == metric and (variant is None or m.variant == variant)]
    return m


def test_ddp_figures_take_the_slowest_rank_per_step() -> None:
    curve = _curve([0, 2048, 4096], [4.0, 3.0, 2.5])
    figures, unavailable = strategy_figures(_ctx("ddp"), _ddp_records(), curve, FLOOR)
    step = _by(figures, "swarm_step_s", "ddp")
    assert step.samples == [1.1, 1.2, 1.3, 1.0]
    assert _by(figures, "swarm_tokens_per_s", "ddp").samples == pytest.approx([1024 / s for s in (1.1, 1.2, 1.3, 1.0)])
    assert _by(figures, "swarm_tokens_per_s", "ddp").params["tokens"] == 4 * 1024
    assert _by(figures, "swarm_comm_s", "ddp").samples == [0.5, 0.6]
    # slowest rank's median compute: rank 1, median(0.8, 0.8, 0.9, 0.7) = 0.8
    assert step.params["compute_s"] == pytest.approx(0.8)
    assert step.params["exposed_comm_s"] == pytest.approx(statistics.median([1.1, 1.2, 1.3, 1.0]) - 0.8)
    assert step.params["hidden_comm_share"] == pytest.approx(1 - (1.15 - 0.8) / 0.55)
    # per H=2 steps: ranks' mean busy over the slowest wall of those two steps
    assert _by(figures, "swarm_utilisation", "ddp").samples == pytest.approx([1.4 / 2.3, 1.4 / 2.3])
    ring = _by(figures, "swarm_comm_s", "ddp").params
    assert (ring["payload_bytes"], ring["ring_bytes"]) == (1000.0, 1000.0)
    assert ring["effective_bps"] == pytest.approx(8 * 1000 / 0.55)
    assert _by(figures, "swarm_sync_bytes", "ddp rank 0").samples == [1050, 1040, 1060, 1045]
    assert _by(figures, "swarm_compute_s", "ddp rank 1").samples == [0.8, 0.8, 0.9, 0.7]
    assert _by(figures, "swarm_tokens_per_s", "ddp rank 1").samples == pytest.approx([2048 / 4.3])
    assert [u.reason for u in unavailable] == ["ddp rank 1: no counter"]


def test_diloco_figures_are_per_inner_step() -> None:
    records = {
        r: {"interval_s": [4.0 + r, 5.0], "compute_s": [0.9, 1.1, 1.0, 1.2], "busy_s": [2.0 + 0.4 * r, 2.2 - 0.2 * r],
            "sync_s": [1.5 + r, 2.0], "sync_bytes": [900, 950], "device": "cpu", "device_name": "A",
            "tokens": 4096, "train_s": 9.0, "energy": None}
        for r in range(2)
    }
    figures, _ = strategy_figures(_ctx("diloco", h=2), records, _curve([0, 2048, 4096], [4.0, 3.5, 3.0]), FLOOR)
    assert _by(figures, "swarm_step_s", "diloco").samples == [5.0 / 2, 5.0 / 2]
    assert _by(figures, "swarm_tokens_per_s", "diloco").samples == pytest.approx([2 * 1024 / 5.0] * 2)
    assert _by(figures, "swarm_comm_s", "diloco").samples == [2.5, 2.0]
    assert _by(figures, "swarm_utilisation", "diloco").samples == pytest.approx([2.2 / 5.0, 2.1 / 5.0])
    step = _by(figures, "swarm_step_s", "diloco").params
    # a round waits for the slowest rank's H steps: max over ranks per round [2.4, 2.2], over H = 2, median
    assert step["compute_s"] == pytest.approx(1.15)
    assert step["exposed_comm_s"] == pytest.approx(2.5 - 1.15)
    assert "hidden_comm_share" not in step


def test_a_rank_lost_mid_run_shortens_the_figures_to_what_all_completed() -> None:
    records = _ddp_records()
    records[1]["interval_s"] = records[1]["interval_s"][:3]
    figures, _ = strategy_figures(_ctx("ddp"), records, _curve([0, 2048], [4.0, 3.0]), FLOOR)
    assert _by(figures, "swarm_step_s", "ddp").samples == [1.1, 1.2, 1.3]
    assert _by(figures, "swarm_utilisation", "ddp").samples == pytest.approx([1.4 / 2.3])  # one whole H interval


def test_utilisation_groups_ddp_steps_by_evaluation() -> None:
    records = {0: {"busy_s": [3.0, 3.0]}, 1: {"busy_s": [1.0, 2.0]}}
    assert utilisations(_ctx("ddp", h=3), records, [1.0, 1.0, 2.0, 2.0, 2.0, 1.0]) == pytest.approx([2 / 4, 2.5 / 5])
    assert utilisations(_ctx("diloco", h=3), records, [4.0, 5.0]) == pytest.approx([2 / 4, 2.5 / 5])


def test_the_loss_is_the_held_out_groups_and_the_curve() -> None:
    curve = Curve()
    curve.add(0, 0.0, [4.0] * 16)
    curve.add(2048, 3.0, [float(i) for i in range(16)])
    figures, _ = strategy_figures(_ctx("ddp"), _ddp_records(), curve, FLOOR)
    loss = _by(figures, "swarm_loss", "ddp")
    assert loss.samples == [0.5, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5, 14.5]  # 8 groups of 2 sequences
    assert loss.params["curve_loss"] == [4.0, 7.5]
    assert loss.params["curve_tokens"] == [0.0, 2048.0] and loss.params["curve_seconds"] == [0.0, 3.0]
    assert loss.params["loss_floor"] == 1.35 and loss.unit == "nat"


def test_the_token_factor_figure_keeps_the_bootstrap_and_the_point() -> None:
    ddp, diloco = _curve([0, 100, 200], [4.0, 3.0, 2.0]), _curve([0, 150, 300], [4.0, 3.0, 1.5])
    m = factor_figure(_ctx("diloco"), ddp, diloco)
    assert m.metric == "swarm_token_factor" and m.variant == "diloco" and m.n == 200
    assert m.value == pytest.approx(1.25) and m.params["factor"] == pytest.approx(1.25)
    assert m.params["ddp_tokens"] == 200.0 and m.params["diloco_tokens"] == 250.0
    flat = factor_figure(_ctx("diloco"), _curve([0, 100], [4.0, 4.1]), _curve([0, 100], [4.0, 4.0]))
    assert flat.metric == "swarm_token_factor" and "did not fall" in flat.reason


def test_the_bootstrap_draws_the_same_sequences_for_both_curves() -> None:
    """Identical runs on uneven sequences: paired resamples always give 1; unpaired ones would not."""
    ddp, diloco = Curve(), Curve()
    for t, easy, hard in ((0, 4.0, 4.0), (100, 2.0, 3.6), (200, 1.5, 3.0)):
        ddp.add(t, 0, [easy, hard, hard])
        diloco.add(t, 0, [easy, hard, hard])
    assert bootstrap_token_factor(ddp, diloco, resamples=100) == [pytest.approx(1.0)] * 100
