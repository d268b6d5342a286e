"""One energy meter per device, measuring in windows, never crashing a probe.

A probe opens a window around its work and gets back a `WindowResult` whose `energy` is a
`probes.measurement.Energy`. Sensor trouble (no NVML, no RAPL permission, a GPU lost mid-run)
never raises out of a window: it becomes `Energy(method="unavailable", unavailable_reason=...)`,
so the probe keeps its figure and says why energy is missing.

How a probe uses a window
-------------------------
Power sensors are slow: NVML's energy counter moves every 20-100 ms, its averaged power over 1 s.
A window shorter than `meter.min_window_s` (1 s; 5 s for NVML, see probes.energy.nvml), or one
over which the counter did not move,
comes back with `too_short=True` and an unavailable `energy` (so ignoring the flag still records
nothing false). The probe then repeats its work in a longer window. `repeat_until_measured`
does exactly that::

    meter = meter_for("cuda:0")
    run = repeat_until_measured(meter, lambda n: [step() for _ in range(n)],
                                sync=torch.cuda.synchronize)
    energy = run.result.energy   # measured, or unavailable with the reason

or by hand::

    with meter.window(sync=torch.cuda.synchronize) as w:
        work()
    if w.result.too_short:
        ...  # run more repetitions in a new window

`sync` is called before each end of the window is read, so asynchronous GPU work lands inside it.
Above-idle figures: measure the idle baseline once (`measure_idle`), then
`meter.set_idle_watts(idle.value)`; every later window carries `idle_watts`.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from probes.measurement import Energy, EnergyMethod, Measurement, Unavailable

#: Shortest window a sensor is trusted for, unless its meter says longer (NVML: 5 s).
MIN_WINDOW_S = 1.0

#: Seconds from an arbitrary start. Meters default to time.perf_counter: time.monotonic ticks every
#: 15.6 ms on Windows before Python 3.13 (GetTickCount64; gh-88494), +-1.5-3 % on a 1 s window.
Clock = Callable[[], float]
Sync = Callable[[], None]


class EnergyError(Exception):
    """A sensor cannot give a figure; the message is the reason shown to the user.

        EnergyError
        ├── SensorUnavailable   no figure on this platform at all (no NVML, no RAPL zone, no permission)
        └── SensorLost          the sensor worked and then failed (GPU fell off the bus, counter jumped)

    These never leave a window: the meter turns them into an unavailable Energy.
    """


class SensorUnavailable(EnergyError):
    """The platform offers no reading for this device."""


class SensorLost(EnergyError):
    """A sensor stopped giving trustworthy readings during a run."""


@dataclass(frozen=True)
class PowerReading:
    """One instantaneous look at a device, for the live monitor and idle baselines."""

    device: str
    power_w: float | None = None
    clock_hz: float | None = None
    mem_clock_hz: float | None = None
    temperature_c: float | None = None
    power_limit_w: float | None = None
    throttle_reasons: tuple[str, ...] = ()
    #: Why `power_w` is None, when it is.
    unavailable_reason: str | None = None


@dataclass(frozen=True)
class WindowResult:
    """What one window measured; `energy` is unavailable whenever the figure can't be trusted."""

    energy: Energy
    seconds: float
    #: The window was shorter than the sensor needs, or its counter did not move: repeat the work.
    too_short: bool = False

    @property
    def measured(self) -> bool:
        return self.energy.method != "unavailable"


@dataclass
class Window:
    """Filled in when the `with meter.window()` block exits."""

    result: WindowResult | None = None

    @property
    def energy(self) -> Energy:
        if self.result is None:
            raise RuntimeError("the window is still open")
        return self.result.energy


@dataclass
class Sample:
    """Raw figures a meter collected over one window, before the common checks."""

    joules: float
    seconds: float
    watts_peak: float | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    #: False when the energy counter did not advance at all (window shorter than its update period).
    moved: bool = True


class EnergyMeter(ABC):
    """Energy of one device over windows of work. Subclasses read one kind of sensor."""

    #: What a measured window reports as Energy.method.
    method: EnergyMethod = "unavailable"

    def __init__(self, device: str, *, min_window_s: float = MIN_WINDOW_S, clock: Clock = time.perf_counter) -> None:
        self.device = device
        self.min_window_s = min_window_s
        self._clock = clock
        self._idle_watts: float | None = None
        self._t0: float | None = None
        self._begin_failure: str | None = None
        #: A meter that samples during a window (NVML, RAPL) starts this thread in _begin.
        self._sampler: Sampler | None = None

    @property
    def idle_watts(self) -> float | None:
        return self._idle_watts

    def set_idle_watts(self, watts: float | None) -> None:
        """Set the idle baseline that every later window carries (for above-idle figures)."""
        if watts is not None and (not math.isfinite(watts) or watts < 0):
            raise ValueError(f"idle power must be finite and non-negative, got {watts!r}")
        self._idle_watts = watts

    def begin_window(self, sync: Sync | None = None) -> None:
        if self._t0 is not None:
            raise RuntimeError(f"a window is already open on {self.device}")
        if sync is not None:
            sync()
        self._t0 = self._clock()
        self._begin_failure = None
        try:
            self._begin(self._t0)
        except EnergyError as exc:
            self._begin_failure = str(exc)

    def end_window(self, sync: Sync | None = None) -> WindowResult:
        if self._t0 is None:
            raise RuntimeError(f"no window is open on {self.device}")
        if sync is not None:
            sync()
        # Before the end is read: joining the thread can take a poll interval or more, which the
        # counters read right after t1 would otherwise count against a window that had ended.
        self._stop_sampler()
        t1 = self._clock()
        seconds = t1 - self._t0
        self._t0 = None
        if self._begin_failure is not None:
            return self._unavailable(self._begin_failure, seconds)
        try:
            sample = self._end(t1)
        except EnergyError as exc:
            return self._unavailable(str(exc), seconds)
        if sample.seconds + 1e-9 < self.min_window_s:  # 1e-9: ten 0.1 s steps make 0.999...9 s
            return self._unavailable(
                f"window of {sample.seconds:.2f} s is shorter than the {self.min_window_s:.1f} s "
                f"the {self.method} sensor needs; repeat the work in a longer window",
                sample.seconds,
                too_short=True,
            )
        if not sample.moved:
            return self._unavailable(
                f"the {self.method} counter did not advance over {sample.seconds:.2f} s; "
                "repeat the work in a longer window",
                sample.seconds,
                too_short=True,
            )
        energy = Energy(
            method=self.method,
            joules=sample.joules,
            watts_avg=sample.joules / sample.seconds,
            watts_peak=sample.watts_peak,
            seconds=sample.seconds,
            idle_watts=self._idle_watts,
            telemetry=sample.telemetry,
        )
        return WindowResult(energy=energy, seconds=sample.seconds)

    @contextmanager
    def window(self, sync: Sync | None = None) -> Iterator[Window]:
        """`with meter.window() as w: work()`; then `w.result` holds the WindowResult."""
        holder = Window()
        self.begin_window(sync)
        try:
            yield holder
        finally:
            # Ends even when the work raised, so a background sampler never outlives its window.
            holder.result = self.end_window(sync)

    def read(self) -> PowerReading:
        """Power, clocks and temperature right now (no window needed)."""
        try:
            return self._read()
        except EnergyError as exc:
            return PowerReading(device=self.device, unavailable_reason=str(exc))

    def close(self) -> None:
        """Release the sensor (NVML handle, threads). Safe to call twice."""
        self._stop_sampler()

    def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None

    def _unavailable(self, reason: str, seconds: float, *, too_short: bool = False) -> WindowResult:
        return WindowResult(
            energy=Energy(method="unavailable", unavailable_reason=f"{self.device}: {reason}"),
            seconds=seconds,
            too_short=too_short,
        )

    @abstractmethod
    def _begin(self, t0: float) -> None:
        """Read the sensor at the start of a window; raise EnergyError if it can't."""

    @abstractmethod
    def _end(self, t1: float) -> Sample:
        """Read the sensor at the end of a window and return what the window saw."""

    @abstractmethod
    def _read(self) -> PowerReading: ...


class NullMeter(EnergyMeter):
    """A device without a usable sensor: every window is unavailable, with the same reason."""

    def __init__(self, device: str, reason: str, *, clock: Clock = time.perf_counter) -> None:
        super().__init__(device, clock=clock)
        self.reason = reason

    def _begin(self, t0: float) -> None:
        raise SensorUnavailable(self.reason)

    def _end(self, t1: float) -> Sample:
        raise SensorUnavailable(self.reason)  # not reached: _begin already failed

    def _read(self) -> PowerReading:
        raise SensorUnavailable(self.reason)


class PowerTrace:
    """Timestamped power samples, integrated with the trapezoid rule (for polled sensors)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times_s: list[float] = []
        self._watts: list[float] = []

    def add(self, t_s: float, watts: float) -> None:
        with self._lock:
            self._times_s.append(t_s)
            self._watts.append(watts)

    def __len__(self) -> int:
        return len(self._times_s)

    def joules(self) -> float:
        with self._lock:
            pairs = list(zip(self._times_s, self._watts))
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(pairs, pairs[1:]))

    def peak_watts(self) -> float | None:
        with self._lock:
            return max(self._watts) if self._watts else None


class Sampler:
    """Calls `poll` every `interval_s` on a daemon thread until stopped.

    Meters start one per window, so nothing polls (and competes with a CPU probe) between windows.
    """

    def __init__(self, poll: Callable[[], None], interval_s: float, name: str) -> None:
        self._poll = poll
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._poll()


def spread(values: list[float]) -> dict[str, float]:
    """min/median/max of a telemetry series, the form every numeric telemetry entry takes."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


@dataclass(frozen=True)
class RepeatedRun:
    """A window long enough for the sensor (or the last attempt, if none was)."""

    result: WindowResult
    #: How many repetitions of the work the final window covered.
    repetitions: int


def repeat_until_measured(
    meter: EnergyMeter,
    work: Callable[[int], object],
    *,
    sync: Sync | None = None,
    repetitions: int = 1,
    max_total_s: float = 60.0,
) -> RepeatedRun:
    """Run `work(n)` in a window, growing n until the window is long enough for the sensor.

    `work(n)` must do n repetitions of the probe's unit of work. Each too-short window is thrown
    away and a new one run with more repetitions (sized from the last one's duration), until
    `max_total_s` of work has been spent; then the last, unavailable, result is returned.
    """
    spent_s = 0.0
    while True:
        with meter.window(sync) as w:
            work(repetitions)
        assert w.result is not None
        result = w.result
        spent_s += result.seconds
        if not result.too_short or spent_s >= max_total_s:
            return RepeatedRun(result=result, repetitions=repetitions)
        # Aim 20% past the minimum; at least double, so a counter that did not move gets a chance.
        per_rep_s = max(result.seconds, 1e-6) / repetitions
        repetitions = max(2 * repetitions, math.ceil(1.2 * meter.min_window_s / per_rep_s))


def measure_idle(
    meter: EnergyMeter,
    seconds: float,
    *,
    interval_s: float = MIN_WINDOW_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Measurement | Unavailable:
    """Idle power of one device: back-to-back windows of `interval_s`, one sample (W) each.

    A window is never shorter than the meter trusts (`meter.min_window_s`), so an NVML meter takes
    one 5 s window where `seconds` asks for 3. Run it before any probe loads the device. The caller
    then passes the median to `meter.set_idle_watts`, so later windows can report energy above idle.
    """
    interval_s = max(interval_s, meter.min_window_s)
    count = max(1, round(seconds / interval_s))
    results: list[WindowResult] = []
    for _ in range(count):
        with meter.window() as w:
            sleep(interval_s)
        assert w.result is not None
        if not w.result.measured:
            reason = w.result.energy.unavailable_reason or "no reading"
            return Unavailable(probe="power", metric="idle_power", device=meter.device, reason=reason)
        results.append(w.result)
    energies = [r.energy for r in results]
    joules = sum(e.joules or 0.0 for e in energies)
    window_s = sum(e.seconds or 0.0 for e in energies)
    peaks = [e.watts_peak for e in energies if e.watts_peak is not None]
    total = Energy(
        method=energies[0].method,
        joules=joules,
        watts_avg=joules / window_s,
        watts_peak=max(peaks) if peaks else None,
        seconds=window_s,
        telemetry=energies[-1].telemetry,  # the last interval's: clocks and temperature settled at idle
    )
    return Measurement(
        probe="power",
        metric="idle_power",
        unit="W",
        samples=[e.watts_avg or 0.0 for e in energies],
        device=meter.device,
        params={"seconds": window_s, "interval_s": interval_s},
        energy=total,
    )
