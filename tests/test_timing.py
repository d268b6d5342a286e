"""DeviceTimer's arithmetic, driven by a clock that only the timed function moves.

Every call of `work` costs exactly STEP seconds of the fake clock (a power of two, so sums are
exact), so calls per block, seconds per call, warm-up calls and elapsed time are known exactly.
The CUDA path runs with stand-ins for torch.cuda.Event and current_stream (no GPU here): what is
checked is which stream the events are recorded on and how their milliseconds become seconds,
not anything a GPU would have to show.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from probes.devices import device_context
from probes.timing import DeviceTimer, synchronize

STEP = 2.0**-10  # seconds per call


class StepClock:
    """A host clock standing still except while `work` runs."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += STEP
        self.calls += 1


CPU = torch.device("cpu")


def test_measure_sizes_blocks_from_the_warm_up_and_reports_seconds_per_call() -> None:
    clock = StepClock()
    timing = DeviceTimer(CPU, clock=clock).measure(clock.work, block_s=10 * STEP, blocks=5, max_s=1.0, warmup_s=200 * STEP)
    assert timing.warmup_calls == 200
    assert timing.calls_per_block == 10
    assert timing.seconds_per_call == [STEP] * 5  # per call, not per block of 10
    assert timing.elapsed_s == 50 * STEP  # the blocks only: the warm-up is not in it
    assert clock.calls == 200 + 50


def test_a_call_slower_than_the_block_is_timed_one_call_per_block() -> None:
    clock = StepClock()
    timing = DeviceTimer(CPU, clock=clock).measure(clock.work, block_s=STEP / 4, blocks=3, max_s=1.0, warmup_s=0.0)
    assert (timing.warmup_calls, timing.calls_per_block, timing.seconds_per_call) == (2, 1, [STEP] * 3)


@pytest.mark.parametrize(("max_s", "blocks_taken"), [(25 * STEP, 3), (35 * STEP, 4), (40 * STEP, 4), (1.0, 7)])
def test_max_s_stops_after_the_block_that_passes_it_but_never_before_min_blocks(max_s: float, blocks_taken: int) -> None:
    clock = StepClock()
    timer = DeviceTimer(CPU, clock=clock)
    timing = timer.measure(clock.work, block_s=10 * STEP, blocks=7, max_s=max_s, warmup_s=0.0, min_blocks=3)
    assert len(timing.seconds_per_call) == blocks_taken
    assert timing.elapsed_s == blocks_taken * 10 * STEP  # at exactly max_s (40 steps) no block follows


def test_a_timing_cannot_be_altered_once_measured() -> None:
    clock = StepClock()
    timing = DeviceTimer(CPU, clock=clock).measure(clock.work, block_s=STEP, blocks=3, max_s=1.0, warmup_s=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        timing.elapsed_s = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(("window", "blocks_taken"), [(100 * STEP, 10), (95 * STEP, 10), (5 * STEP, 3)])
def test_measure_window_runs_blocks_until_the_window_is_full_and_at_least_three(window: float, blocks_taken: int) -> None:
    clock = StepClock()
    timing = DeviceTimer(CPU, clock=clock).measure_window(clock.work, window_s=window, block_s=10 * STEP)
    assert timing.calls_per_block == 10 and timing.warmup_calls == 1
    assert timing.seconds_per_call == [STEP] * blocks_taken
    assert timing.elapsed_s == blocks_taken * 10 * STEP >= window
    assert clock.calls == 1 + blocks_taken * 10  # one call sizes the blocks: the window has no other warm-up


class FakeEvent:
    """torch.cuda.Event's interface, stamped from the step clock: records which stream it went on."""

    clock: StepClock
    recorded: list[object] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at = None

    def record(self, stream: object = None) -> None:
        self.at = self.clock.now
        FakeEvent.recorded.append(stream)

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.at - self.at) * 1e3  # milliseconds, as CUDA reports them


def test_cuda_events_go_on_the_timed_devices_stream_and_milliseconds_become_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = StepClock()
    FakeEvent.clock, FakeEvent.recorded = clock, []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"current stream of {device}")
    timer = DeviceTimer(torch.device("cuda", 1), clock=clock)
    assert timer._block(clock.work, 8) == pytest.approx(8 * STEP, rel=1e-12)
    # Both events on cuda:1's stream, never the current device's (cuda:0 unless someone set it).
    assert FakeEvent.recorded == ["current stream of cuda:1"] * 2


def test_device_context_selects_a_cuda_device_and_leaves_others_alone() -> None:
    selected = device_context("cuda:1")
    assert isinstance(selected, torch.cuda.device) and selected.idx == 1
    for other in ("cpu", "mps"):
        with device_context(other):  # a no-op that needs no accelerator
            pass
        assert not isinstance(device_context(other), torch.cuda.device)


def test_defaults_warm_up_for_0_2_s_and_keep_three_blocks_past_max_s() -> None:
    clock = StepClock()
    timing = DeviceTimer(CPU, clock=clock).measure(clock.work, block_s=10 * STEP, blocks=7, max_s=0.0)
    assert timing.warmup_calls == 205  # 0.2 s / STEP = 204.8 calls
    assert len(timing.seconds_per_call) == 3


def test_blocks_round_up_to_whole_calls_and_never_to_none() -> None:
    clock = StepClock()
    timer = DeviceTimer(CPU, clock=clock)
    # A block of 10.5 calls' time holds 11 calls, in both kinds of measurement.
    assert timer.measure(clock.work, block_s=10.5 * STEP, blocks=3, max_s=1.0, warmup_s=0.0).calls_per_block == 11
    assert timer.measure_window(clock.work, window_s=0.0, block_s=10.5 * STEP).calls_per_block == 11
    # block_s 0 (training on a CPU: one step a block) still makes one call a block
    assert timer.measure(clock.work, block_s=0.0, blocks=3, max_s=1.0, warmup_s=0.0).calls_per_block == 1
    one_a_block = timer.measure_window(clock.work, window_s=0.0, block_s=0.0)
    assert (one_a_block.calls_per_block, one_a_block.seconds_per_call) == (1, [STEP] * 3)


def test_synchronize_waits_for_the_given_device_only(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    synchronize(torch.device("cuda", 1))
    synchronize(torch.device("mps"))
    synchronize(CPU)
    synchronize(torch.device("xpu"))  # a device type that sorts after "mps": no backend of ours waits
    assert waited == [torch.device("cuda", 1), "mps"]


def test_a_call_faster_than_the_clock_counts_as_a_nanosecond() -> None:
    """A clock that does not move during a call (coarse timers) must not divide by zero."""
    frozen = StepClock()
    timer = DeviceTimer(CPU, clock=frozen)
    window = timer.measure_window(lambda: None, window_s=0.0, block_s=1e-8)
    timed = timer.measure(lambda: None, block_s=1e-8, blocks=3, max_s=1.0, warmup_s=0.0)
    assert window.calls_per_block == timed.calls_per_block == 10  # 10 ns of blocks at 1 ns a call
    assert window.seconds_per_call == timed.seconds_per_call == [0.0] * 3


def test_an_apple_gpu_is_timed_by_the_host_clock_between_synchronisations(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = StepClock()
    events: list[str] = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: events.append(f"sync after {clock.calls} calls"))
    assert DeviceTimer(torch.device("mps"), clock=clock)._block(clock.work, 4) == 4 * STEP
    assert events == ["sync after 0 calls", "sync after 4 calls"]
