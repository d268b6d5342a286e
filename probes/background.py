"""How much of the machine something else used while a probe ran.

A figure measured while another program computes is a figure of a shared machine; pyperf and the
Phoronix Test Suite warn about such runs, and so does flopwatt. Two shares of the machine's CPU
capacity (all logical CPUs x the window), read with psutil:

- `background_cpu`: CPU time of every other process, i.e. the system's busy time less this
  process's own (its threads, and the children it waited for, such as iperf3);
- `steal_cpu` (Linux guests): time the hypervisor gave this machine's vCPUs to other guests.

Neither sees a host's other guests sharing cores, caches and memory without stealing time:
docs/measurements.md shows that noise on the dev VM, with both shares near zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class _Reading:
    wall: float
    busy: float
    steal: float | None
    own: float


def _read(process: psutil.Process) -> _Reading:
    system = psutil.cpu_times()
    steal = getattr(system, "steal", None)
    # Busy is everything but idle and I/O wait. Steal is counted apart, and Linux counts time spent
    # running guests inside user and nice already, so guest and guest_nice are not added twice.
    not_busy = ("idle", "iowait", "steal", "guest", "guest_nice")
    busy = sum(getattr(system, name) for name in system._fields if name not in not_busy)
    mine = process.cpu_times()
    own = mine.user + mine.system + getattr(mine, "children_user", 0.0) + getattr(mine, "children_system", 0.0)
    return _Reading(time.perf_counter(), busy, steal, own)


class CpuWatch:
    """Started before a probe and read after it: the other processes' and the hypervisor's shares."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cpus = psutil.cpu_count() or 1
        self._start = _read(self._process)

    def shares(self) -> dict[str, float]:
        """{"background_cpu": 0..1, and "steal_cpu": 0..1 where the OS counts steal} since the start."""
        end = _read(self._process)
        capacity = (end.wall - self._start.wall) * self._cpus
        if capacity <= 0:
            return {}
        others = (end.busy - self._start.busy) - (end.own - self._start.own)
        shares = {"background_cpu": _share(others, capacity)}
        if end.steal is not None and self._start.steal is not None:
            shares["steal_cpu"] = _share(end.steal - self._start.steal, capacity)
        return shares


def _share(seconds: float, capacity: float) -> float:
    # clock ticks are counted at 10 ms, so a quiet window can come out a hair below zero
    return round(min(max(seconds / capacity, 0.0), 1.0), 3)
