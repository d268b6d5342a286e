"""The NVML meter against a stand-in NVML that replays readings recorded on real cards.

The stand-in has pynvml's function names and raises pynvml's own NVMLError with NVML's codes;
its readings come from tests/data/energy/*.json, each of which cites where they were recorded.
"""

from __future__ import annotations

import ast
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from probes.energy import meter_for, repeat_until_measured
from probes.energy.nvml import NvmlMeter, decode_clock_event_reasons, visible_cuda_devices

DATA = Path(__file__).parent / "data" / "energy"


def load_trace(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


class ReplayClock:
    """Time the test moves by hand, so every window lasts exactly what the test says."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class ReplayGpu:
    """One GPU replaying a trace: reading k is at k * sample_interval_s, cycling; power and the
    energy counter interpolate linearly between readings (so the counter is the power's integral)."""

    def __init__(
        self,
        trace: dict[str, Any],
        clock: Any,
        *,
        lost_at_s: float | None = None,
        not_supported: tuple[str, ...] = (),
    ) -> None:
        self.trace = trace
        self.name = trace["gpu"]
        self.uuid = trace["uuid"]
        self.clock = clock
        self.lost_at_s = lost_at_s
        self.not_supported = set(trace["not_supported"]) | set(not_supported)
        self.missing = set(trace["missing_in_driver"])
        self.readings = trace["readings"]
        self.dt_s = trace["sample_interval_s"]

    def check(self, function: str) -> None:
        if self.lost_at_s is not None and self.clock() >= self.lost_at_s:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function in self.missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if function in self.not_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _position(self) -> tuple[int, float]:
        steps = round(self.clock() / self.dt_s, 9)  # 0.7 / 0.1 is 6.999...: still reading 7
        return math.floor(steps), steps - math.floor(steps)

    def reading(self, key: str) -> Any:
        k, _ = self._position()
        return self.readings[k % len(self.readings)][key]

    def power_mw(self) -> float:
        k, frac = self._position()
        p0 = self.readings[k % len(self.readings)]["power_mw"]
        p1 = self.readings[(k + 1) % len(self.readings)]["power_mw"]
        return p0 + (p1 - p0) * frac

    def energy_mj(self) -> int:
        """counter_start_mj plus the trapezoid integral of the interpolated power up to now."""
        k, frac = self._position()
        energy_mj = 0.0
        for i in range(k):
            a = self.readings[i % len(self.readings)]["power_mw"]
            b = self.readings[(i + 1) % len(self.readings)]["power_mw"]
            energy_mj += (a + b) / 2 * self.dt_s
        p0 = self.readings[k % len(self.readings)]["power_mw"]
        energy_mj += (p0 + self.power_mw()) / 2 * frac * self.dt_s
        return self.trace["counter_start_mj"] + int(energy_mj)


class ReplayNvml:
    """Stands in for the pynvml module (the subset flopwatt calls)."""

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

    def nvmlDeviceGetUUID(self, handle: ReplayGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: ReplayGpu) -> str:
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: ReplayGpu) -> int:
        return self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption").energy_mj()

    def nvmlDeviceGetPowerUsage(self, handle: ReplayGpu) -> int:
        return int(self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw())

    def nvmlDeviceGetFieldValues(self, handle: ReplayGpu, field_ids: list[tuple[int, int]]) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        assert field_ids == [(pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_POWER_SCOPE_GPU)]
        if "NVML_FI_DEV_POWER_INSTANT" in gpu.not_supported:
            return [SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, value=SimpleNamespace(uiVal=0))]
        return [SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, value=SimpleNamespace(uiVal=int(gpu.power_mw())))]

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


def replay(name: str, clock: Any = None, **gpu_options: Any) -> tuple[ReplayNvml, ReplayClock]:
    clock = clock or ReplayClock()
    return ReplayNvml([ReplayGpu(load_trace(name), clock, **gpu_options)]), clock


def open_meter(nvml: ReplayNvml, clock: Any, **options: Any) -> NvmlMeter:
    # A sampler that never wakes: the test takes every sample itself with poll().
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock, poll_interval_s=3600, telemetry_every=1, **options)
    assert isinstance(meter, NvmlMeter)
    return meter


def run_window(meter: NvmlMeter, clock: ReplayClock, seconds: float, step_s: float = 0.1) -> Any:
    meter.begin_window()
    for _ in range(round(seconds / step_s)):
        clock.advance(step_s)
        meter.poll()
    return meter.end_window()


def test_energy_counter_is_used_where_the_card_has_one() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)
    start_mj = nvml.gpus[0].energy_mj()
    result = run_window(meter, clock, 2.0)

    assert meter.method == "nvml-counter"
    energy = result.energy
    assert energy.method == "nvml-counter"
    assert energy.seconds == pytest.approx(2.0)
    assert energy.joules == (nvml.gpus[0].energy_mj() - start_mj) / 1000
    # The recorded draws alternate 176.98 W and 163.50 W: the average lies between them.
    assert 163.5 < energy.watts_avg < 176.98
    assert energy.watts_peak == pytest.approx(176.98)


def test_telemetry_falls_back_to_the_throttle_reasons_call_on_an_old_driver() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)
    telemetry = run_window(meter, clock, 1.0).energy.telemetry

    assert telemetry["gpu"] == "GeForce RTX 2080"
    assert telemetry["sm_clock_hz"]["min"] == 1965e6 and telemetry["sm_clock_hz"]["max"] == 1980e6
    assert telemetry["mem_clock_hz"]["max"] == 7199e6
    assert telemetry["temperature_c"]["min"] == 40.0 and telemetry["temperature_c"]["max"] == 45.0
    assert telemetry["power_limit_w"]["max"] == 200.0
    # R535 renamed the call; driver 440 only has the old one, and the reasons are still read.
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls
    assert telemetry["throttle_reasons"] == []
    # Driver 440 predates the instant-power field: power comes from the 1 s average call.
    assert telemetry["power_source"] == "nvmlDeviceGetPowerUsage"


def test_pre_volta_card_without_a_counter_integrates_polled_power() -> None:
    nvml, clock = replay("gtx1060_pascal")
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 1.5)

    assert result.energy.method == "nvml-polling"
    # One recorded reading, 6697 mW, replayed throughout: the integral is exact.
    assert result.energy.joules == pytest.approx(6.697 * 1.5)
    assert result.energy.watts_avg == pytest.approx(6.697)
    assert result.energy.telemetry["throttle_reasons"] == ["gpu_idle"]
    assert "Not Supported" in meter.unsupported["energy_counter"]


def test_instant_power_field_is_preferred_and_integrates_to_the_counter() -> None:
    counter_nvml, clock = replay("rtx3070_laptop_driver610")
    with_counter = run_window(open_meter(counter_nvml, clock), clock, 3.0).energy

    polled_nvml, clock = replay("rtx3070_laptop_driver610", not_supported=("nvmlDeviceGetTotalEnergyConsumption",))
    meter = open_meter(polled_nvml, clock)
    polled = run_window(meter, clock, 3.0).energy

    assert polled.method == "nvml-polling" and with_counter.method == "nvml-counter"
    assert polled.telemetry["power_source"] == "instant power field"
    assert "nvmlDeviceGetPowerUsage" not in polled_nvml.calls
    # Sampled at the replay's own instants, trapezoid integration matches the counter to the mJ.
    assert polled.joules == pytest.approx(with_counter.joules, abs=0.002)
    assert polled.watts_peak == pytest.approx(55.21)
    assert polled.telemetry["throttle_reasons"] == ["sw_power_cap"]


def test_geforce_without_power_readings_is_unavailable_but_still_shows_clocks() -> None:
    nvml, clock = replay("gtx1050ti_no_power")
    meter = meter_for("cuda:0", nvml=nvml)
    with meter.window() as w:
        pass

    assert w.result is not None and not w.result.measured and not w.result.too_short
    reason = w.energy.unavailable_reason or ""
    assert reason.startswith("cuda:0: GeForce GTX 1050 Ti reports neither an energy counter nor power")
    assert "Not Supported" in reason
    reading = meter.read()
    assert reading.power_w is None and "Not Supported" in (reading.unavailable_reason or "")
    assert reading.temperature_c == 67 and reading.power_limit_w == 90.0


def test_function_missing_from_an_old_nvidia_ml_py_falls_back_to_polling() -> None:
    clock = ReplayClock()
    nvml = ReplayNvml(
        [ReplayGpu(load_trace("rtx2080_driver440"), clock)], without=("nvmlDeviceGetTotalEnergyConsumption",)
    )
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 1.0)

    assert result.energy.method == "nvml-polling"
    assert "upgrade nvidia-ml-py" in meter.unsupported["energy_counter"]
    assert result.energy.joules == pytest.approx((176.98 + 163.50) / 2, rel=0.02)


def test_gpu_lost_mid_window_keeps_the_run_going_with_a_reason() -> None:
    # As in LSSI-ETH/plmfit#40: "NVML: Failed to get usage(15): GPU is lost" on a TITAN RTX mid-run.
    nvml, clock = replay("rtx2080_driver440", lost_at_s=0.55)
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 1.5)

    assert not result.measured and not result.too_short
    assert "GPU is lost" in (result.energy.unavailable_reason or "")
    # The GPU is not asked again: the next window and reading fail at once, without raising.
    calls_before = len(nvml.calls)
    second = run_window(meter, clock, 1.5)
    assert "GPU is lost" in (second.energy.unavailable_reason or "")
    assert "GPU is lost" in (meter.read().unavailable_reason or "")
    assert len(nvml.calls) == calls_before


def test_short_window_and_still_counter_are_too_short_not_measured() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)
    short = run_window(meter, clock, 0.5)
    assert short.too_short and not short.measured
    assert "shorter than the 1.0 s" in (short.energy.unavailable_reason or "")

    # A counter that has not ticked (here: no time passes on the replay) is not a measurement either.
    meter.begin_window()
    still = meter.end_window()
    assert still.too_short and still.energy.joules is None


def test_repeat_until_measured_grows_the_work_until_the_window_is_long_enough() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)

    def work(repetitions: int) -> None:
        clock.advance(0.25 * repetitions)  # each repetition takes 0.25 s of GPU time

    run = repeat_until_measured(meter, work)
    assert run.repetitions == 5  # 1 rep = 0.25 s, too short; 1.2 s / 0.25 s -> 5
    assert run.result.measured and run.result.energy.seconds == pytest.approx(1.25)


def test_missing_nvml_gives_a_null_meter_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    no_driver = ReplayNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = meter_for("cuda:0", nvml=no_driver)
    with meter.window() as w:
        pass
    assert "no NVIDIA driver is installed" in (w.energy.unavailable_reason or "")

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with meter_for("cuda:0").window() as w:
        pass
    assert "nvidia-ml-py is not installed" in (w.energy.unavailable_reason or "")


def test_cuda_visible_devices_maps_cuda_indices_to_nvml_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ReplayClock()
    nvml = ReplayNvml(
        [ReplayGpu(load_trace("gtx1060_pascal"), clock), ReplayGpu(load_trace("rtx2080_driver440"), clock)]
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock)
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce RTX 2080"
    assert visible_cuda_devices(nvml=nvml) == ["cuda:0"]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-22b2c6ac")  # a UUID prefix, as CUDA accepts
    assert NvmlMeter.open(0, nvml=nvml, clock=clock).gpu_name == "GeForce RTX 2080"  # type: ignore[attr-defined]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5b4c8e0e-1d2a-5b8f-9c3e-7f6a5d4c3b2a")
    with meter_for("cuda:0", nvml=nvml).window() as w:
        pass
    assert "MIG instance" in (w.energy.unavailable_reason or "")


def test_an_initialised_torch_maps_cuda_n_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA puts the fastest GPU first, NVML goes by PCI order: only the UUID says which is which.
    clock = ReplayClock()
    nvml = ReplayNvml(
        [ReplayGpu(load_trace("gtx1060_pascal"), clock), ReplayGpu(load_trace("rtx2080_driver440"), clock)]
    )
    props = SimpleNamespace(uuid="22b2c6ac-2d49-4863-197c-9c469071178a")
    cuda = SimpleNamespace(is_initialized=lambda: True, get_device_properties=lambda index: props)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock)
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce RTX 2080"


def test_close_balances_nvml_init() -> None:
    nvml, clock = replay("gtx1060_pascal")
    meter = open_meter(nvml, clock)
    assert nvml.initialised == 1
    meter.close()
    meter.close()
    assert nvml.initialised == 0


#: The RTX 3070 Laptop trace's draws: every window's average lies between them. The margin covers
#: the counter's whole-mJ reads and a scheduler delay of ~2 ms between reading the clock and the
#: counter over a 1 s window.
LAPTOP_3070_WATTS = (54.48 - 0.1, 55.21 + 0.1)


def test_background_sampler_polls_during_a_real_window() -> None:
    start_s = time.monotonic()
    nvml, _ = replay("rtx3070_laptop_driver610", clock=lambda: time.monotonic() - start_s)
    meter = NvmlMeter.open(0, nvml=nvml, poll_interval_s=0.01, min_window_s=0.2)
    assert isinstance(meter, NvmlMeter)
    with meter.window() as w:
        time.sleep(1.0)
    assert w.result is not None and w.result.measured
    assert w.energy.telemetry["power_samples"] >= 5  # begin + end would be 2 without the thread
    assert LAPTOP_3070_WATTS[0] <= w.energy.watts_avg <= LAPTOP_3070_WATTS[1]


class SlowPowerGpu(ReplayGpu):
    """A driver whose power read takes 40 ms, as NVML's can on a busy system."""

    def power_mw(self) -> float:
        time.sleep(0.04)
        return super().power_mw()


def test_a_slow_sampler_does_not_stretch_the_counter_window() -> None:
    """The window's end is read after the sampler thread stops, and the counter right after it.

    Stopping the thread waits for a poll in progress. When the counter was read after that wait
    (and after the end's own slow power read), this window read 58.6 W: energy the clock did not
    count.
    """
    start_s = time.monotonic()
    gpu = SlowPowerGpu(load_trace("rtx3070_laptop_driver610"), lambda: time.monotonic() - start_s)
    meter = NvmlMeter.open(0, nvml=ReplayNvml([gpu]), poll_interval_s=0.001, min_window_s=0.2)
    assert isinstance(meter, NvmlMeter) and meter.method == "nvml-counter"
    with meter.window() as w:
        time.sleep(0.5)
    assert LAPTOP_3070_WATTS[0] <= w.energy.watts_avg <= LAPTOP_3070_WATTS[1]


def test_decode_clock_event_reasons_names_every_bit() -> None:
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_clock_event_reasons(0x1 | 0x10000) == ["gpu_idle", "unknown_0x10000"]
    # The bits are nvml.h's: check them against the real binding.
    assert decode_clock_event_reasons(pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown) == ["hw_power_brake_slowdown"]


def test_the_energy_modules_import_one_way_only() -> None:
    """meter.py (the base classes) imports no sensor module; the sensors and the chooser form no circle."""
    package = Path(__file__).parents[1] / "probes" / "energy"
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        if path.stem == "__init__":
            continue
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function bodies too: a local import is an edge
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("probes.energy."):
                found.add(node.module.removeprefix("probes.energy."))
        imports[path.stem] = found
    assert imports["meter"] == set()
    assert imports["choose"] >= {"nvml", "rapl", "meter"}
    # No circle: visiting from every module never comes back to it.
    for start in imports:
        seen, todo = set(), list(imports[start])
        while todo:
            name = todo.pop()
            assert name != start, f"import circle through probes.energy.{start}"
            if name not in seen:
                seen.add(name)
                todo.extend(imports.get(name, ()))
