"""How the matmul probe spends its time and memory: the shape ladders, the sweep's prediction of
each next shape, its budget, its stops, and the sustained window's blocks.

The real DeviceTimer and the real sweep run on a host clock that stands still except while a
product runs: each call of a size-s product moves it by CALL_S[s] (a few bits of mantissa, so the
sums are exact), so what each shape costs and what the sweep predicts are known exactly. The
products themselves are real and small (64 to 256). Host memory is a fed number.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from probes import compute
from probes.compute import MatmulPlan, Operands
from probes.energy import NullMeter
from probes.timing import DeviceTimer, Timing

CPU = torch.device("cpu")

#: Seconds of the fake clock per call: 3/4096 s at 64, growing with the FLOP count (x8 per doubling).
UNIT = 3 * 2.0**-12
CALL_S = {64: UNIT, 96: 27 / 8 * UNIT, 128: 8 * UNIT, 256: 64 * UNIT}  # 96 is 1.5 x 64: 1.5^3 = 27/8


class WorkClock:
    """A host clock that only the products move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> WorkClock:
    clock = WorkClock()
    real_step = Operands.step

    def step(self: Operands) -> None:
        real_step(self)
        clock.now += CALL_S[self.a[0].shape[0]]

    monkeypatch.setattr(Operands, "step", step)
    return clock


def plan(budget_s: float, max_call_s: float | None = None) -> MatmulPlan:
    """No warm-up time (two calls) and three blocks of one call each: five calls per shape and BLAS."""
    return MatmulPlan(sizes=[64, 128, 256], sweep_budget_s=budget_s, blocks=3, block_s=2.0**-12, sustained_s=1.0,
                      sustain_all_dtypes=False, max_call_s=max_call_s, warmup_s=0.0)  # fmt: skip


def sweep(clock: WorkClock, matmul_plan: MatmulPlan) -> compute._SweepResult:
    """fp32 on the CPU: torch's BLAS and numpy's, so every shape is timed twice."""
    return compute._sweep(DeviceTimer(CPU, clock=clock), CPU, "fp32", matmul_plan, llc_bytes=None)


def swept(result: compute._SweepResult) -> list[tuple[int, str]]:
    return [(row["m"], row["backend"]) for row in result.rows]


# Worked by hand, in units of UNIT: size 64 costs 2 BLAS x 5 calls = 10. Its calls took 1, so a 128
# call is predicted at 1 x 2^3 = 8, and the 128 shape at warm-up max(0, 2 x 8) + 3 blocks x max(1/3, 8)
# = 40, twice (two BLAS): 80. Spent plus predicted: 10 + 80 = 90 units = 0.06591796875 s.
AFTER_128_S = 90 * UNIT


@pytest.mark.parametrize(
    ("budget_s", "sizes", "stopped"),
    [
        (0.0659, [64], "sizes from 128 skipped: they would overrun the 0.0659 s sweep budget"),
        # 128 then costs what was predicted (80 units); 256 would add 2 x (2 x 64 + 3 x 64) = 640 more
        (0.066, [64, 128], "sizes from 256 skipped: they would overrun the 0.066 s sweep budget"),
    ],
)
def test_the_budget_stops_the_sweep_at_the_shape_whose_predicted_cost_overruns_it(
    clock: WorkClock, budget_s: float, sizes: list[int], stopped: str
) -> None:
    assert 0.0659 < AFTER_128_S < 0.066
    result = sweep(clock, plan(budget_s))
    assert swept(result) == [(size, blas) for size in sizes for blas in ("torch", "numpy")]
    assert result.stopped == stopped
    assert clock.now == (10 + (80 if 128 in sizes else 0)) * UNIT  # the prediction was exact


@pytest.mark.parametrize(
    ("max_call_s", "sizes", "stopped"),
    [
        # 128 is predicted at 8 units = 0.00586 s (a fourth power would say 0.0117 s); 256 at 64 units
        (0.01, [64, 128], "sizes from 256 skipped: one call would take about 0.047 s, over the 0.01 s"),
        (0.005, [64], "sizes from 128 skipped: one call would take about 0.0059 s, over the 0.005 s"),
    ],
)
def test_the_windows_cap_stops_at_the_first_call_predicted_past_it(
    clock: WorkClock, max_call_s: float, sizes: list[int], stopped: str
) -> None:
    result = sweep(clock, plan(10.0, max_call_s=max_call_s))
    assert swept(result) == [(size, blas) for size in sizes for blas in ("torch", "numpy")]
    assert result.stopped == stopped + " a Windows display driver allows before it resets the GPU (TDR)"


# A size that is not a multiple of the last (the CPU ladder goes 1024 to 1536, the GPU's 2048 to 3072
# and 8192 to 10240) is predicted at the cube of the ratio: a 96 call after 64's at 1.5^3 = 27/8 units,
# 0.00247 s. The 96 shape then costs, per BLAS, two warm-up calls and three one-call blocks: 5 x 27/8,
# twice; with 64's 10 units spent, 10 + 33.75 = 43.75 units = 0.0320434... s.
AFTER_96_S = 43.75 * UNIT


@pytest.mark.parametrize(
    ("budget_s", "max_call_s", "sizes", "stopped"),
    [
        (0.032, None, [64], "sizes from 96 skipped: they would overrun the 0.032 s sweep budget"),
        (0.0321, None, [64, 96], None),
        (10.0, 0.002, [64], "sizes from 96 skipped: one call would take about 0.0025 s, over the 0.002 s a Windows "
                            "display driver allows before it resets the GPU (TDR)"),
    ],
)
def test_a_size_between_multiples_is_predicted_at_the_cube_of_its_ratio(
    clock: WorkClock, budget_s: float, max_call_s: float | None, sizes: list[int], stopped: str | None
) -> None:
    assert 0.032 < AFTER_96_S < 0.0321
    result = sweep(clock, replace(plan(budget_s, max_call_s=max_call_s), sizes=[64, 96]))
    assert swept(result) == [(size, blas) for size in sizes for blas in ("torch", "numpy")]
    assert result.stopped == stopped
    assert clock.now == (AFTER_96_S if 96 in sizes else 10 * UNIT)  # the prediction was exact


def test_a_shape_that_does_not_fit_a_quarter_of_host_memory_ends_the_sweep(
    clock: WorkClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32, two sets (no cache given): 2 x 3 x 4 s^2 bytes of operands, 8 x 16 x s of check rows and
    two check chunks. The chunk is set so that 128 needs 12,344,999,996 B: 12.34 GB (a GB taken as
    999,999,999 B would print 12.35, as 2^30 B 11.50). The host has four times what 64 needs, plus a little."""
    chunk = (12_344_999_996 - (2 * 3 * 4 * 128**2 + 8 * 16 * 128)) // 2
    monkeypatch.setattr(compute, "CHECK_CHUNK_BYTES", chunk)
    need_64 = 2 * 3 * 4 * 64**2 + 8 * 16 * 64 + 2 * chunk
    available = 4 * (need_64 + 100_000)
    monkeypatch.setattr(compute.psutil, "virtual_memory", lambda: SimpleNamespace(available=available))
    result = sweep(clock, plan(10.0))
    assert swept(result) == [(64, "torch"), (64, "numpy")]
    assert result.stopped == "sizes from 128 skipped: 12.34 GB of operands would not fit in memory"
    assert result.failures == []


def test_the_host_memory_rule_is_a_quarter_of_what_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute.psutil, "virtual_memory", lambda: SimpleNamespace(available=8_000_000_000))
    assert compute._fits(1_999_999_999, CPU)
    assert not compute._fits(2_000_000_000, CPU)


STEP = 2.0**-10


class Work:
    """Stands in for the operands: each step moves the clock by STEP."""

    def __init__(self, clock: WorkClock) -> None:
        self.clock = clock

    def step(self) -> None:
        self.clock.now += STEP


@pytest.mark.parametrize("metered", [False, True])
def test_the_sustained_window_is_timed_in_quarter_second_blocks(metered: bool) -> None:
    """A 1 s window of STEP-long calls: blocks of 0.25 / STEP = 256 calls, four of them, whether a
    meter watches the window or not."""
    clock = WorkClock()
    meter = NullMeter("cpu", "test: no sensor", clock=clock) if metered else None
    timing, energy = compute._sustained(DeviceTimer(CPU, clock=clock), Work(clock), 1.0, meter)  # type: ignore[arg-type]
    assert timing == Timing([STEP] * 4, calls_per_block=256, warmup_calls=1, elapsed_s=1.0)
    assert (energy is not None) == metered


def test_plans_per_device_and_mode() -> None:
    """The ladders are square sizes in multiples of 256 (CPU) or 1024 (GPU), growing, the quick one
    a subset of the full one; a full GPU sweep reaches 16384 (mamf-finder's lesson: the best shape
    of a large card is large)."""
    assert MatmulPlan.for_device("cpu", quick=True) == MatmulPlan([256, 512, 1024, 2048, 3072], 6.0, 7, 0.05, 10.0, False)
    assert MatmulPlan.for_device("cpu", quick=False) == MatmulPlan(
        [256, 512, 1024, 1536, 2048, 3072, 4096, 6144], 30.0, 15, 0.05, 10.0, True
    )
    assert MatmulPlan.for_device("cuda", quick=True, platform="linux") == MatmulPlan(
        [1024, 2048, 4096, 8192], 4.0, 10, 0.05, 10.0, False, headline_sustained_s=10.0
    )
    assert MatmulPlan.for_device("cuda", quick=False, platform="linux") == MatmulPlan(
        [1024, 2048, 3072, 4096, 6144, 8192, 10240, 12288, 16384], 25.0, 30, 0.05, 10.0, True, headline_sustained_s=60.0
    )
    for kind, step, blas in (("cpu", 256, 2), ("cuda", 1024, 1)):
        quick, full = (MatmulPlan.for_device(kind, quick=q, platform="linux") for q in (True, False))
        for p in (quick, full):
            assert p.sizes == sorted(set(p.sizes)) and all(size % step == 0 for size in p.sizes)
            # the floor of every shape (warm-up and blocks of a fast call) fits the budget
            assert len(p.sizes) * blas * p.shape_s(0.0) <= p.sweep_budget_s
        assert set(quick.sizes) <= set(full.sizes)


@pytest.mark.parametrize(
    ("budget_s", "blocks"),
    [
        # a third of 15 units is 5: five one-call blocks reach it exactly, and the loop stops
        (15 * UNIT, 5),
        # a third of 0.75 s is 0.25 s = 341.33 units: block 342 is the first at or past it
        (0.75, 342),
    ],
)
def test_each_shape_times_blocks_for_at_most_a_third_of_the_sweep_budget(
    clock: WorkClock, budget_s: float, blocks: int
) -> None:
    """One 64 shape, 400 blocks allowed: DeviceTimer.measure stops at a third of the sweep budget."""
    one_shape = MatmulPlan(sizes=[64], sweep_budget_s=budget_s, blocks=400, block_s=2.0**-12, sustained_s=1.0,
                           sustain_all_dtypes=False, warmup_s=0.0)  # fmt: skip
    result = sweep(clock, one_shape)
    assert result.best is not None and result.best.timing.seconds_per_call == [UNIT] * blocks
    assert clock.now == 2 * (2 + blocks) * UNIT  # two BLAS, each two warm-up calls and its blocks


def test_no_shape_at_all_names_the_smallest_size(monkeypatch: pytest.MonkeyPatch, clock: WorkClock) -> None:
    """Not even 64 fits (the host has nothing available): 2 x 3 x 4 x 64^2 + 8 x 16 x 64 + 2 x 64 MiB
    = 134,324,224 B would be needed."""
    monkeypatch.setattr(compute.psutil, "virtual_memory", lambda: SimpleNamespace(available=0))
    result = sweep(clock, plan(10.0))
    assert (result.best, result.rows) == (None, [])
    assert result.stopped == "sizes from 64 skipped: 0.13 GB of operands would not fit in memory"
    assert result.failures == ["no shape fits the time budget or memory (smallest tried 64)"]
