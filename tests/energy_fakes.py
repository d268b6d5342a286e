"""Stand-ins for the hardware this machine lacks (NVML, RAPL, the CUDA driver), fed from recorded readings.

They behave like the sensors, not like the code under test:
- NVML's readings hold until the next update (both power fields of the recorded H100 PCIe change
  about every 100 ms); its energy counter steps at its own update period (`counter_period_s`),
  counting the power held between readings; `nvmlDeviceGetPowerUsage` is the recorded 1 s average
  where the card averages (Ampere and newer), the instant field separately.
- RAPL's `energy_uj` is the kernel's: a 32-bit count of energy units shown as whole µJ, with
  `max_energy_range_uj` = (2**32 - 1) units, so a wrap goes from that value to 0 and one unit on.
- libcuda's calls are real C function pointers (ctypes callbacks) with cuda.h's signatures.

tests/data/energy/*.json say where every reading came from and what is synthetic.
"""

from __future__ import annotations

import bisect
import ctypes
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

DATA = Path(__file__).parent / "data" / "energy"


def load_trace(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


class ReplayClock:
    """Time the test moves by hand, so every window lasts exactly what the test says."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


# -- NVML --------------------------------------------------------------------------------------


class ReplayGpu:
    """One GPU replaying a trace.

    A trace's readings carry their time (`t_s`, and the last one holds for ever), or are spaced
    `sample_interval_s` apart and repeat (the older traces of single snapshots). Options:
    `counter_period_s` (0: the counter follows the power continuously), `lost_at_s` (every call
    fails GPU_IS_LOST from then), `failing` {function or "NVML_FI_DEV_POWER_INSTANT": (error
    class, from_s)}, `counter_reset_at_s` (the driver reloads: the counter restarts from 0).
    """

    def __init__(
        self,
        trace: dict[str, Any],
        clock: Any,
        *,
        counter_period_s: float = 0.1,
        lost_at_s: float | None = None,
        not_supported: tuple[str, ...] = (),
        failing: dict[str, tuple[type[pynvml.NVMLError], float]] | None = None,
        counter_reset_at_s: float | None = None,
        pci_bus_id: str = "00000000:01:00.0",
    ) -> None:
        self.trace = trace
        self.name = trace["gpu"]
        self.uuid = trace["uuid"]
        self.pci_bus_id = pci_bus_id
        self.clock = clock
        self.counter_period_s = counter_period_s
        self.lost_at_s = lost_at_s
        self.not_supported = set(trace["not_supported"]) | set(not_supported)
        self.missing = set(trace["missing_in_driver"])
        self.failing = failing or {}
        self.counter_reset_at_s = counter_reset_at_s
        self.readings: list[dict[str, Any]] = trace["readings"]
        self.constants: dict[str, Any] = trace.get("constants", {})
        self.averages = bool(trace.get("power_usage_is_average", False))
        if "t_s" in self.readings[0]:
            self.times = [float(r["t_s"]) for r in self.readings]
            self.cycle_s: float | None = None
        else:
            dt = float(trace["sample_interval_s"])
            self.times = [k * dt for k in range(len(self.readings))]
            self.cycle_s = len(self.readings) * dt
        # Energy (mJ) from 0 to each reading's start, and over one whole cycle.
        self._before_mj = [0.0]
        for (t0, t1), r in zip(zip(self.times, self.times[1:]), self.readings):
            self._before_mj.append(self._before_mj[-1] + r.get("power_mw", 0) * (t1 - t0))
        if self.cycle_s is not None:
            self._cycle_mj = self._before_mj[-1] + self.readings[-1].get("power_mw", 0) * (self.cycle_s - self.times[-1])

    def _error(self, function: str) -> int | None:
        """The NVML return code `function` gives now, None when it works."""
        now = self.clock()
        if self.lost_at_s is not None and now >= self.lost_at_s:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        if function in self.missing:
            return pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
        if function in self.not_supported:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        if function in self.failing and now >= self.failing[function][1]:
            return self.failing[function][0]().value
        return None

    def check(self, function: str) -> None:
        code = self._error(function)
        if code is not None:
            raise pynvml.NVMLError(code)

    def _split(self, t: float) -> tuple[int, int, float]:
        """(whole cycles before t, index of the reading in force at t, seconds since it began)."""
        cycles, t = 0, round(t, 9)  # 0.7 / 0.1 is 6.999...: still reading 7
        if self.cycle_s is not None:
            cycles = math.floor(round(t / self.cycle_s, 9))
            t = max(0.0, round(t - cycles * self.cycle_s, 9))
        index = max(0, bisect.bisect_right(self.times, t) - 1)
        return cycles, index, t - self.times[index]

    def reading(self, key: str) -> Any:
        _, index, _ = self._split(self.clock())
        return self.readings[index].get(key, self.constants.get(key))

    def integral_mj(self, t: float) -> float:
        """Energy from 0 to t (mJ), each power reading held until the next."""
        cycles, index, into_s = self._split(t)
        whole = cycles * self._cycle_mj if cycles else 0.0
        return whole + self._before_mj[index] + self.readings[index].get("power_mw", 0) * into_s

    def energy_mj(self) -> int:
        """The counter: whole mJ up to its last update (every counter_period_s), since the driver loaded."""
        now = self.clock()
        tick = now
        if self.counter_period_s:
            tick = math.floor(round(now / self.counter_period_s, 9)) * self.counter_period_s
        if self.counter_reset_at_s is not None and tick >= self.counter_reset_at_s:
            return int(self.integral_mj(tick) - self.integral_mj(self.counter_reset_at_s))
        return self.trace["counter_start_mj"] + int(self.integral_mj(tick))


class ReplayNvml:
    """Stands in for the pynvml module (the subset flopwatt calls), raising pynvml's own errors."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[ReplayGpu], *, init_error: int | None = None, without: tuple[str, ...] = ()) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = 0
        self.calls: list[str] = []
        for name in without:  # functions an old nvidia-ml-py does not define
            setattr(self, name, None)

    def _gpu(self, handle: ReplayGpu, function: str) -> ReplayGpu:
        self.calls.append(function)
        handle.check(function)
        return handle

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> ReplayGpu:
        if index >= len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> ReplayGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> ReplayGpu:
        """NVML accepts domain:bus:device.function in hex, with any number of leading zeros."""
        wanted = _bus_numbers(bus_id)
        for gpu in self.gpus:
            if _bus_numbers(gpu.pci_bus_id) == wanted:
                return gpu
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: ReplayGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: ReplayGpu) -> str:
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: ReplayGpu) -> int:
        return self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption").energy_mj()

    def nvmlDeviceGetPowerUsage(self, handle: ReplayGpu) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetPowerUsage")
        return int(gpu.reading("power_avg_mw" if gpu.averages else "power_mw"))

    def nvmlDeviceGetFieldValues(self, handle: ReplayGpu, field_ids: list[tuple[int, int]]) -> list[Any]:
        """The call succeeds; each field carries its own return code, as NVML's does."""
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        assert field_ids == [(pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_POWER_SCOPE_GPU)]
        code = gpu._error("NVML_FI_DEV_POWER_INSTANT")
        if code is not None:
            return [SimpleNamespace(nvmlReturn=code, value=SimpleNamespace(uiVal=0))]
        return [SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, value=SimpleNamespace(uiVal=int(gpu.reading("power_mw"))))]

    def nvmlDeviceGetClockInfo(self, handle: ReplayGpu, clock_type: int) -> int:
        key = {pynvml.NVML_CLOCK_SM: "sm_clock_mhz", pynvml.NVML_CLOCK_MEM: "mem_clock_mhz"}[clock_type]
        return self._gpu(handle, "nvmlDeviceGetClockInfo").reading(key)

    def nvmlDeviceGetTemperature(self, handle: ReplayGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperature").reading("temperature_c")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: ReplayGpu) -> int:
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").reading("power_limit_mw")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: ReplayGpu) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons").reading("clocks_event_reasons")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: ReplayGpu) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").reading("clocks_event_reasons")


def _bus_numbers(bus_id: str) -> tuple[int, ...]:
    domain_bus_device, _, function = bus_id.rpartition(".")
    return (*(int(part, 16) for part in domain_bus_device.split(":")), int(function, 16))


def replay(name: str, clock: Any = None, **gpu_options: Any) -> tuple[ReplayNvml, ReplayClock]:
    clock = clock or ReplayClock()
    return ReplayNvml([ReplayGpu(load_trace(name), clock, **gpu_options)]), clock


# -- the CUDA driver ---------------------------------------------------------------------------

#: cuda.h's CUresult values the stand-in returns.
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_INVALID_DEVICE = 101
_CU_INIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint)
_CU_COUNT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int))
_CU_GET = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int)
_CU_BUS_ID = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)


class FakeCudaDriver:
    """libcuda's four calls that probes.energy.cuda_devices makes, as real C function pointers.

    ctypes passes the arguments through C as it would to libcuda, so a wrong signature or a
    pointer passed as a value fails here too. `bus_ids` are in CUDA's order, as the driver prints
    them ("0000:02:00.0"); device handles are not their ordinals, as the API allows.
    """

    def __init__(self, bus_ids: list[str], *, init_status: int = 0, failing: str | None = None) -> None:
        self.bus_ids = bus_ids
        self.failing = failing  # the one call that answers CUDA_ERROR_INVALID_DEVICE
        self.cuInit = _CU_INIT(lambda flags: init_status if flags == 0 else CUDA_ERROR_INVALID_VALUE)
        self.cuDeviceGetCount = _CU_COUNT(self._count)
        self.cuDeviceGet = _CU_GET(self._get)
        self.cuDeviceGetPCIBusId = _CU_BUS_ID(self._bus_id)

    def _count(self, count: Any) -> int:
        if self.failing == "cuDeviceGetCount":
            return CUDA_ERROR_INVALID_DEVICE
        count[0] = len(self.bus_ids)
        return 0

    def _get(self, device: Any, ordinal: int) -> int:
        if self.failing == "cuDeviceGet":
            return CUDA_ERROR_INVALID_DEVICE
        device[0] = 100 + ordinal
        return 0

    def _bus_id(self, buffer: int, length: int, device: int) -> int:
        text = self.bus_ids[device - 100].encode() + b"\0"
        if self.failing == "cuDeviceGetPCIBusId":
            return CUDA_ERROR_INVALID_DEVICE
        if len(text) > length:
            return CUDA_ERROR_INVALID_VALUE
        ctypes.memmove(buffer, text, len(text))
        return 0


# -- RAPL --------------------------------------------------------------------------------------

#: MSR_PKG_ENERGY_STATUS is 32 bits of energy units; the kernel masks it with ENERGY_STATUS_MASK.
RAW_COUNTER_MAX = 2**32 - 1


class RaplZone:
    """One powercap zone directory, its counter written as drivers/powercap/intel_rapl_common.c shows it.

    The hardware counts `raw` units of 1/2**esu J (Intel and AMD alike; ESU 14 is 61.04 µJ, 16 is
    15.26 µJ); sysfs shows energy_uj = floor(raw x unit) and max_energy_range_uj = floor((2**32 - 1)
    x unit). After raw 2**32 - 1 comes raw 0, one unit later.
    """

    def __init__(
        self, root: Path, dirname: str, name: str, *, raw: int = 0, esu: int = 14, tdp_w: float | None = None
    ) -> None:
        self.path = root / dirname
        self.path.mkdir(parents=True)
        self.unit_uj = 10**6 / 2**esu  # a binary fraction: raw x unit is exact in a float
        (self.path / "name").write_text(f"{name}\n")
        (self.path / "max_energy_range_uj").write_text(f"{math.floor(RAW_COUNTER_MAX * self.unit_uj)}\n")
        if tdp_w is not None:
            (self.path / "constraint_0_max_power_uw").write_text(f"{round(tdp_w * 1e6)}\n")
        self.raw = raw
        self.write()

    @property
    def max_energy_range_uj(self) -> int:
        return int((self.path / "max_energy_range_uj").read_text())

    def units(self, joules: float) -> int:
        """Whole energy units nearest to `joules`."""
        return round(joules * 1e6 / self.unit_uj)

    def joules(self, units: int) -> float:
        return units * self.unit_uj / 1e6

    def add_units(self, units: int) -> None:
        self.raw = (self.raw + units) % (RAW_COUNTER_MAX + 1)
        self.write()

    def add_joules(self, joules: float) -> float:
        """Count `joules` (to the nearest unit); returns the energy actually added."""
        units = self.units(joules)
        self.add_units(units)
        return self.joules(units)

    def write(self) -> None:
        """Replace the counter atomically: a reader thread must never see a half-written file."""
        write_energy_uj(self.path, math.floor(self.raw * self.unit_uj))


def write_energy_uj(zone: Path, value_uj: int) -> None:
    (zone / "energy_uj.new").write_text(f"{value_uj}\n")
    os.replace(zone / "energy_uj.new", zone / "energy_uj")
