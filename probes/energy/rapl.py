"""CPU package energy through Linux powercap RAPL (Intel, and AMD Zen, which the same driver serves).

Only top-level package zones count: `intel-rapl:N` named `package-N` (or `package-N-die-M`).
Skipped, because their energy is already inside a package or is the package again:
- nested zones `intel-rapl:N:M` (core, uncore, dram);
- `psys`, a top-level zone that contains the packages;
- the `intel-rapl-mmio:N` twin of the same package (used only where the MSR zones are absent).

`energy_uj` wraps (minutes at full load on AMD). The hardware counts 32 bits of energy units and
the kernel shows `max_energy_range_uj` as (2**32 - 1) units (get_max_energy_counter in
drivers/powercap/intel_rapl_common.c), so the counter comes back to 0 one unit after that value:
a wrap adds `max_energy_range_uj` plus one unit (61 µJ on Intel, 15 µJ on AMD). A reader thread
polls during each window, often enough to see every wrap, and a delta implying more than
`max_package_w` is rejected: the window becomes unavailable instead of carrying a wrong figure.

Since the November 2020 Platypus fix (CVE-2020-8694) only root may read `energy_uj`; VMs, macOS
and Windows have no powercap at all. Then the CPU is reported unavailable with that reason, or,
only if the user asked for it, estimated from TDP x CPU load (method "estimated").
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from probes.energy.meter import (
    MIN_WINDOW_S,
    Clock,
    EnergyError,
    EnergyMeter,
    NullMeter,
    PowerReading,
    Sample,
    Sampler,
    SensorLost,
    SensorUnavailable,
)

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
POWERCAP_ROOT_ENV = "FLOPWATT_POWERCAP_ROOT"
#: No CPU package draws more (today's largest server parts are ~500 W); a larger delta is a glitch.
MAX_PACKAGE_W = 1000.0
#: Deltas over shorter intervals are judged as if this long (RAPL itself updates about every 1 ms).
_MIN_JUDGED_INTERVAL_S = 0.01
#: Intervals shorter than this are too noisy to count towards the peak power.
_MIN_PEAK_INTERVAL_S = 0.1
#: The largest raw count: the hardware's energy status registers are 32 bits (ENERGY_STATUS_MASK).
_RAW_COUNTER_MAX = 2**32 - 1

ReadText = Callable[[Path], str]

_MSR_ZONE = re.compile(r"^intel-rapl:(\d+)$")
_MMIO_ZONE = re.compile(r"^intel-rapl-mmio:(\d+)$")


def read_sysfs(path: Path) -> str:
    return path.read_text()


def powercap_root(root: Path | None = None) -> Path:
    """`root`, else $FLOPWATT_POWERCAP_ROOT, else /sys/class/powercap."""
    if root is not None:
        return root
    return Path(os.environ.get(POWERCAP_ROOT_ENV) or DEFAULT_POWERCAP_ROOT)


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str
    #: The largest value energy_uj shows; None when the kernel does not say (some old systems report 0).
    max_energy_range_uj: int | None

    @property
    def wrap_uj(self) -> float | None:
        """How much a wrap to 0 adds: the range plus the one energy unit from its top back to 0."""
        if self.max_energy_range_uj is None:
            return None
        return self.max_energy_range_uj + self.max_energy_range_uj / _RAW_COUNTER_MAX


def _zones_matching(root: Path, pattern: re.Pattern[str], read_text: ReadText) -> list[RaplZone]:
    zones: list[tuple[int, RaplZone]] = []
    for entry in sorted(root.iterdir()):
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            name = read_text(entry / "name").strip()
        except OSError:
            continue
        if not name.startswith("package"):
            continue  # psys contains the packages; a top-level dram zone is not CPU package energy
        try:
            max_range_uj: int | None = int(read_text(entry / "max_energy_range_uj")) or None
        except (OSError, ValueError):
            max_range_uj = None
        zones.append((int(match.group(1)), RaplZone(entry, name, max_range_uj)))
    return [zone for _, zone in sorted(zones, key=lambda pair: pair[0])]


def find_package_zones(root: Path, read_text: ReadText = read_sysfs) -> list[RaplZone]:
    """The top-level package zones under a powercap root; SensorUnavailable says why there are none."""
    if not root.is_dir():
        if not sys.platform.startswith("linux"):
            raise SensorUnavailable(f"RAPL is read through Linux powercap; this is {sys.platform}")
        raise SensorUnavailable(
            f"{root} does not exist (a VM or container without powercap, or intel_rapl_msr not loaded)"
        )
    zones = _zones_matching(root, _MSR_ZONE, read_text) or _zones_matching(root, _MMIO_ZONE, read_text)
    if not zones:
        raise SensorUnavailable(f"no RAPL package zone under {root} (VMs usually hide RAPL)")
    return zones


def read_energy_uj(zone: RaplZone, read_text: ReadText = read_sysfs) -> int:
    """One raw counter value; an unreadable counter raises SensorUnavailable with the precise reason."""
    path = zone.path / "energy_uj"
    try:
        text = read_text(path)
    except PermissionError as exc:
        raise SensorUnavailable(
            f"cannot read {path}: permission denied (since the 2020 Platypus fix, CVE-2020-8694, "
            "only root may read RAPL energy; run as root or grant read access to energy_uj)"
        ) from exc
    except OSError as exc:
        raise SensorUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return int(text.strip())
    except ValueError as exc:
        raise SensorUnavailable(f"{path} holds {text.strip()!r}, not an energy counter") from exc


def package_tdp_w(root: Path | None = None, read_text: ReadText = read_sysfs) -> float | None:
    """Sum of the packages' long-term power limit ceilings (their TDP), readable without root."""
    try:
        zones = find_package_zones(powercap_root(root), read_text)
        return sum(int(read_text(z.path / "constraint_0_max_power_uw")) for z in zones) / 1e6 or None
    except (EnergyError, OSError, ValueError):
        return None


class _ZoneCounter:
    """Accumulates one zone's energy across reads, undoing wraps and rejecting impossible deltas."""

    def __init__(self, zone: RaplZone, raw_uj: int, t_s: float, max_package_w: float) -> None:
        self.zone = zone
        self.total_uj = 0.0
        self.last_t_s = t_s
        self._last_raw_uj = raw_uj
        self._max_package_w = max_package_w

    def update(self, raw_uj: int, t_s: float) -> float:
        """Add the energy since the last read and return it (µJ)."""
        delta_uj: float = raw_uj - self._last_raw_uj
        interval_s = t_s - self.last_t_s
        self._last_raw_uj, self.last_t_s = raw_uj, t_s
        if delta_uj < 0:
            if self.zone.wrap_uj is None:
                raise SensorLost(f"RAPL {self.zone.name} counter went backwards and its wrap point is unknown")
            delta_uj += self.zone.wrap_uj
        limit_uj = self._max_package_w * max(interval_s, _MIN_JUDGED_INTERVAL_S) * 1e6
        if delta_uj > limit_uj:
            raise SensorLost(
                f"RAPL {self.zone.name} counter jumped {delta_uj / 1e6:.1f} J in {interval_s:.3f} s, "
                f"more than a package can draw ({self._max_package_w:.0f} W); the window is rejected"
            )
        self.total_uj += delta_uj
        return delta_uj


class RaplMeter(EnergyMeter):
    """CPU package energy (all sockets summed) from powercap RAPL counters."""

    method = "rapl"

    def __init__(
        self,
        root: Path | None = None,
        *,
        read_text: ReadText = read_sysfs,
        max_package_w: float = MAX_PACKAGE_W,
        poll_interval_s: float | None = None,
        min_window_s: float = MIN_WINDOW_S,
        clock: Clock = time.perf_counter,
    ) -> None:
        """Find the package zones and read each once; raise SensorUnavailable if that fails."""
        super().__init__("cpu", min_window_s=min_window_s, clock=clock)
        self.root = powercap_root(root)
        self._read_text = read_text
        self._max_package_w = max_package_w
        self.zones = find_package_zones(self.root, read_text)
        if poll_interval_s is None:
            # Four reads per shortest possible wrap, at most one a second.
            wraps_s = [z.max_energy_range_uj / (max_package_w * 1e6) for z in self.zones if z.max_energy_range_uj]
            poll_interval_s = max(0.01, min([1.0] + [w / 4 for w in wraps_s]))
        self.poll_interval_s = poll_interval_s
        self._live = self._counters(self._clock())
        self._window: list[_ZoneCounter] = []
        self._t0_s = 0.0
        self._window_failure: EnergyError | None = None
        self._peak_w: float | None = None
        self._last_poll_t_s = 0.0

    def _counters(self, t_s: float) -> list[_ZoneCounter]:
        return [_ZoneCounter(z, read_energy_uj(z, self._read_text), t_s, self._max_package_w) for z in self.zones]

    def _update(self, counters: list[_ZoneCounter], t_s: float) -> float:
        return sum(c.update(read_energy_uj(c.zone, self._read_text), t_s) for c in counters)

    def _begin(self, t0: float) -> None:
        self._window = self._counters(t0)
        self._t0_s = t0
        self._window_failure = None
        self._peak_w = None
        self._last_poll_t_s = t0
        self._sampler = Sampler(self.poll, self.poll_interval_s, "flopwatt-rapl").start()

    def poll(self) -> None:
        """Read the counters now, so no wrap goes unseen; the window's thread calls this."""
        if self._sampler is None or self._window_failure is not None:
            return
        self._record(self._clock())

    def _record(self, t_s: float) -> None:
        try:
            delta_uj = self._update(self._window, t_s)
        except EnergyError as exc:
            self._window_failure = exc
            return
        interval_s = t_s - self._last_poll_t_s
        self._last_poll_t_s = t_s
        if interval_s >= _MIN_PEAK_INTERVAL_S:
            watts = delta_uj / 1e6 / interval_s
            self._peak_w = watts if self._peak_w is None else max(self._peak_w, watts)

    def _end(self, t1: float) -> Sample:
        if self._window_failure is None:
            self._record(t1)
        if self._window_failure is not None:
            raise self._window_failure
        seconds = t1 - self._t0_s
        joules = sum(c.total_uj for c in self._window) / 1e6
        telemetry: dict[str, Any] = {"zones": {c.zone.name: c.total_uj / 1e6 for c in self._window}}
        return Sample(joules=joules, seconds=seconds, watts_peak=self._peak_w, telemetry=telemetry, moved=joules > 0)

    def _read(self) -> PowerReading:
        t_s = self._clock()
        interval_s = t_s - self._live[0].last_t_s
        delta_uj = self._update(self._live, t_s)
        return PowerReading(
            device=self.device,
            power_w=delta_uj / 1e6 / interval_s if interval_s > 0 else None,
            clock_hz=_cpu_clock_hz(),
        )



def _cpu_clock_hz() -> float | None:
    freq = psutil.cpu_freq()
    return freq.current * 1e6 if freq else None


def _busy_fraction(before: Any, after: Any) -> float:
    """Share of CPU time spent busy between two psutil.cpu_times() snapshots (0..1).

    A field that went backwards (Linux's steal time can, on VMs: psutil#1210) is left out, as
    psutil's own cpu_percent does (psutil#1214), instead of cancelling the time the others counted.
    """
    # guest time is already counted in user time on Linux; counting it twice would inflate the load.
    fields = [f for f in before._fields if f not in ("guest", "guest_nice")]
    deltas = {f: max(0.0, getattr(after, f) - getattr(before, f)) for f in fields}
    idle = sum(deltas[f] for f in fields if f in ("idle", "iowait"))
    busy = sum(deltas[f] for f in fields if f not in ("idle", "iowait"))
    return busy / (busy + idle) if busy + idle > 0 else 0.0


class EstimatedCpuMeter(EnergyMeter):
    """TDP x CPU load: a guess, used only when the user asks for one, always labelled "estimated"."""

    method = "estimated"

    def __init__(
        self,
        tdp_w: float,
        why_not_measured: str,
        *,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        min_window_s: float = MIN_WINDOW_S,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__("cpu", min_window_s=min_window_s, clock=clock)
        self.tdp_w = tdp_w
        self.why_not_measured = why_not_measured
        self._cpu_times = cpu_times
        self._times0: Any = None
        self._t0_s = 0.0
        self._live = (self._clock(), cpu_times())

    def _begin(self, t0: float) -> None:
        self._t0_s = t0
        self._times0 = self._cpu_times()

    def _end(self, t1: float) -> Sample:
        load = _busy_fraction(self._times0, self._cpu_times())
        seconds = t1 - self._t0_s
        return Sample(
            joules=self.tdp_w * load * seconds,
            seconds=seconds,
            telemetry={
                "estimate": f"TDP {self.tdp_w:.0f} W x CPU load {load:.0%}, not measured",
                "tdp_w": self.tdp_w,
                "cpu_load": load,
                "why_not_measured": self.why_not_measured,
            },
        )

    def _read(self) -> PowerReading:
        then_s, before = self._live
        self._live = (self._clock(), self._cpu_times())
        return PowerReading(
            device=self.device,
            power_w=self.tdp_w * _busy_fraction(before, self._live[1]) if self._live[0] > then_s else None,
            clock_hz=_cpu_clock_hz(),
        )


def cpu_meter(
    root: Path | None = None, *, estimate: bool = False, tdp_w: float | None = None, **options: Any
) -> EnergyMeter:
    """RAPL where readable; else an estimate if asked for and the TDP is known; else a NullMeter."""
    try:
        return RaplMeter(root, **options)
    except SensorUnavailable as exc:
        reason = str(exc)
    if not estimate:
        return NullMeter("cpu", f"{reason}; --estimate-cpu-power would estimate it from TDP and load")
    tdp_w = tdp_w or package_tdp_w(root)
    if tdp_w is None:
        return NullMeter("cpu", f"{reason}; no estimate either, as the CPU's TDP is unknown")
    return EstimatedCpuMeter(tdp_w, reason)
