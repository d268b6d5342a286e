"""Timing device work correctly on any torch device.

GPU work is asynchronous: it is timed with CUDA events (which also serve ROCm), or by
synchronising before reading the host clock (MPS, CPU). Calls are grouped into blocks long
enough that timer overhead is negligible (torch's blocked_autorange idea), after a warm-up that
keeps module loading, kernel selection and clock ramp-up out of the figures.

The events are recorded on the timed device's own current stream, the one its kernels run on
(an event recorded without a stream goes on the *current device's* stream, cuda:0's unless the
caller set it; probes.devices.device_context does). The host clock is injectable, so tests can
drive the arithmetic with a clock that each call advances by a known step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from probes.energy import EnergyMeter, repeat_until_measured
from probes.measurement import Energy


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one entry per block, and how the blocks were made."""

    seconds_per_call: list[float]
    calls_per_block: int
    warmup_calls: int
    elapsed_s: float


class DeviceTimer:
    """Times `fn()` on one device; `clock` is the host clock (seconds) for everything but CUDA events."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = device
        self.clock = clock

    def _block(self, fn: Callable[[], object], calls: int) -> float:
        """Seconds for `calls` back-to-back calls."""
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(calls):
                fn()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / 1e3  # milliseconds
        synchronize(self.device)
        t0 = self.clock()
        for _ in range(calls):
            fn()
        synchronize(self.device)
        return self.clock() - t0

    def warm_up(self, fn: Callable[[], object], *, seconds: float, min_calls: int = 2) -> tuple[int, float]:
        """Run until `seconds` have passed (and at least `min_calls`); returns (calls, last call's time)."""
        calls, deadline, last = 0, self.clock() + seconds, math.inf
        while calls < min_calls or self.clock() < deadline:
            last = self._block(fn, 1)
            calls += 1
        return calls, last

    def measure(
        self,
        fn: Callable[[], object],
        *,
        block_s: float,
        blocks: int,
        max_s: float,
        warmup_s: float = 0.2,
        min_blocks: int = 3,
    ) -> Timing:
        """Time `blocks` blocks of calls, each about `block_s` long, stopping early after `max_s`.

        At least `min_blocks` blocks are taken whatever `max_s` says, so a spread always exists.
        """
        warmup_calls, one_call_s = self.warm_up(fn, seconds=warmup_s)
        calls = max(1, math.ceil(block_s / max(one_call_s, 1e-9)))
        samples: list[float] = []
        t0 = self.clock()
        while len(samples) < blocks and (len(samples) < min_blocks or self.clock() - t0 < max_s):
            samples.append(self._block(fn, calls) / calls)
        return Timing(samples, calls, warmup_calls, self.clock() - t0)

    def measure_window(self, fn: Callable[[], object], *, window_s: float, block_s: float) -> Timing:
        """Time back-to-back blocks for a steady window of at least `window_s` (sustained regime)."""
        _, one_call_s = self.warm_up(fn, seconds=0.0, min_calls=1)
        calls = max(1, math.ceil(block_s / max(one_call_s, 1e-9)))
        samples: list[float] = []
        t0 = self.clock()
        while self.clock() - t0 < window_s or len(samples) < 3:
            samples.append(self._block(fn, calls) / calls)
        return Timing(samples, calls, 1, self.clock() - t0)


def energy_of(meter: EnergyMeter | None, fn: Callable[[], object], device: torch.device) -> Energy | None:
    """Energy of `fn` in a window repeated until it is long enough for the sensor (>= 1 s).

    Timing and energy come from separate runs of the same work, so a slow sensor never
    stretches the timed blocks. None when no meter was given.
    """
    if meter is None:
        return None
    run = repeat_until_measured(meter, lambda n: [fn() for _ in range(n)], sync=lambda: synchronize(device))
    return run.result.energy
