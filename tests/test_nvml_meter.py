"""The NVML meter against a stand-in NVML that replays readings recorded on real cards.

The stand-in (tests/energy_fakes.py) has pynvml's function names and raises pynvml's own error
classes; its readings come from tests/data/energy/*.json, each of which says where they were
recorded and what is synthetic. Expected figures are worked out here from the trace files, not
from the stand-in's own arithmetic.
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from energy_fakes import FakeCudaDriver, ReplayClock, ReplayGpu, ReplayNvml, load_trace, replay
from probes.energy import cuda_devices, measure_idle, meter_for, meters_for_host, repeat_until_measured
from probes.energy.cuda_devices import CUDA_ERROR_NO_DEVICE, cuda_pci_bus_ids
from probes.energy.meter import NullMeter, SensorLost, SensorUnavailable
from probes.energy.nvml import (
    NVML_MIN_WINDOW_S,
    NvmlFailure,
    NvmlGpuLost,
    NvmlMeter,
    decode_clock_event_reasons,
    error_for,
    visible_cuda_devices,
)
from probes.measurement import Measurement

H100 = load_trace("h100_pcie_fp8_burst")


@pytest.fixture(autouse=True)
def no_cuda_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in NVML describes its own machine: this one's CUDA driver, if any, must not speak."""
    monkeypatch.setattr(cuda_devices, "load_cuda_driver", lambda: None)


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


def h100_mj(t_s: float, key: str = "power_mw") -> float:
    """Energy of the recorded H100 trace from 0 to t_s (mJ), each reading held until the next."""
    readings = H100["readings"]
    total = 0.0
    for reading, following in zip(readings, [*readings[1:], None]):
        start = reading["t_s"]
        end = following["t_s"] if following else float("inf")
        if start >= t_s:
            break
        total += reading[key] * (min(end, t_s) - start)
    return total


def h100_at(t_s: float, key: str) -> float:
    """The H100 reading in force at t_s."""
    return [r[key] for r in H100["readings"] if r["t_s"] <= t_s + 1e-9][-1]


# -- the energy counter ------------------------------------------------------------------------


def test_energy_counter_is_used_where_the_card_has_one() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 5.0)

    assert meter.method == "nvml-counter"
    energy = result.energy
    assert energy.method == "nvml-counter"
    assert energy.seconds == pytest.approx(5.0)
    # 25 tenths at each of the two recorded draws: 25 x 0.1 s x (176.98 + 163.50) W.
    assert energy.joules == pytest.approx(851.2, abs=0.001)
    assert energy.watts_avg == pytest.approx(170.24, abs=0.01)
    assert energy.watts_peak == pytest.approx(176.98)


def test_a_window_reads_the_counter_as_it_last_stepped_at_both_ends() -> None:
    """The H100 from idle into an FP8 matmul: the counter steps every 0.1 s, the window does not.

    Opened at 4.55 s and closed at 10.55 s, the window sees the counter of 4.5 s and of 10.5 s:
    the energy of those 6 s, divided by the window's own 6 s.
    """
    nvml, clock = replay("h100_pcie_fp8_burst", ReplayClock(4.55))
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 6.0)

    start, end = H100["counter_start_mj"] + int(h100_mj(4.5)), H100["counter_start_mj"] + int(h100_mj(10.5))
    assert result.energy.joules == pytest.approx((end - start) / 1000, abs=1e-9)
    assert result.energy.seconds == pytest.approx(6.0)
    assert result.energy.watts_avg == pytest.approx((end - start) / 1000 / 6.0, abs=1e-6)
    assert result.energy.watts_peak == pytest.approx(max(h100_at(4.55 + k / 10, "power_mw") for k in range(61)) / 1000)


def test_nvml_windows_shorter_than_five_seconds_are_repeated_not_reported() -> None:
    nvml, clock = replay("h100_pcie_fp8_burst", ReplayClock(5.45))
    meter = open_meter(nvml, clock)
    assert meter.min_window_s == NVML_MIN_WINDOW_S == 5.0
    short = run_window(meter, clock, 4.9)
    assert short.too_short and not short.measured and short.energy.joules is None
    assert "window of 4.90 s is shorter than the 5.0 s the nvml-counter sensor needs" in (
        short.energy.unavailable_reason or ""
    )


def test_a_counter_that_did_not_advance_over_a_real_window_is_not_a_measurement() -> None:
    # A counter that updates only every 10 s (or has stopped): 2 s of work, and it reads the same.
    nvml, clock = replay("h100_pcie_fp8_burst", ReplayClock(0.5), counter_period_s=10.0)
    meter = open_meter(nvml, clock, min_window_s=1.0)
    still = run_window(meter, clock, 2.0)
    assert still.too_short and not still.measured and still.energy.joules is None
    assert "the nvml-counter counter did not advance over 2.00 s" in (still.energy.unavailable_reason or "")


def test_a_counter_that_goes_backwards_voids_the_window() -> None:
    nvml, clock = replay("h100_pcie_fp8_burst", ReplayClock(0.5), counter_reset_at_s=3.0)
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 6.0)
    assert not result.measured and not result.too_short
    assert "the NVML energy counter went backwards (driver reloaded?)" in (result.energy.unavailable_reason or "")


@pytest.mark.parametrize(
    ("rep_s", "repetitions"),
    [(0.35, 18), (1.3, 5)],  # 1 rep is too short; then 1.2 x 5 s / rep_s, rounded up: 17.1 -> 18, 4.6 -> 5
)
def test_repeat_until_measured_grows_the_work_past_six_seconds(rep_s: float, repetitions: int) -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)

    def work(n: int) -> None:
        clock.advance(rep_s * n)  # each repetition takes rep_s of GPU time

    run = repeat_until_measured(meter, work)
    assert run.repetitions == repetitions
    assert run.result.measured and run.result.energy.seconds == pytest.approx(rep_s * repetitions)


def test_a_window_after_a_driver_reload_counts_from_the_new_zero() -> None:
    # The counter restarts at 0 at 0.5 s; the window sees it at 45 J and at 1.4 kJ.
    nvml, clock = replay("h100_pcie_fp8_burst", ReplayClock(1.0), counter_reset_at_s=0.5)
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 6.0)
    counter0 = int(h100_mj(1.0) - h100_mj(0.5))
    counter1 = int(h100_mj(7.0) - h100_mj(0.5))
    assert counter1 > 2 * counter0  # far from the old zero: only their difference gives the energy
    assert result.energy.joules == pytest.approx((counter1 - counter0) / 1000, abs=1e-9)


def test_idle_power_of_an_nvml_meter_takes_one_five_second_window() -> None:
    nvml, clock = replay("h100_pcie_fp8_burst")
    meter = open_meter(nvml, clock)
    idle = measure_idle(meter, 3.0, sleep=clock.advance)

    assert isinstance(idle, Measurement)
    expected_w = (int(h100_mj(5.0)) - int(h100_mj(0.0))) / 1000 / 5.0
    assert idle.samples == [pytest.approx(expected_w, abs=1e-9)]
    assert idle.params == {"seconds": pytest.approx(5.0), "interval_s": 5.0}
    assert idle.energy is not None and idle.energy.method == "nvml-counter"


# -- polled power ------------------------------------------------------------------------------


def test_pre_volta_card_without_a_counter_integrates_polled_power() -> None:
    nvml, clock = replay("gtx1060_pascal")
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 5.0)

    assert result.energy.method == "nvml-polling"
    # One recorded reading, 6697 mW, replayed throughout: the integral is exact.
    assert result.energy.joules == pytest.approx(6.697 * 5.0)
    assert result.energy.watts_avg == pytest.approx(6.697)
    assert result.energy.telemetry["throttle_reasons"] == ["gpu_idle"]
    assert "Not Supported" in meter.unsupported["energy_counter"]


def test_the_instant_power_field_is_polled_where_the_driver_has_it() -> None:
    nvml, clock = replay("rtx3070_laptop_driver610", not_supported=("nvmlDeviceGetTotalEnergyConsumption",))
    meter = open_meter(nvml, clock)
    polled = run_window(meter, clock, 6.0).energy

    assert polled.method == "nvml-polling"
    assert polled.telemetry["power_source"] == "instant power field"
    assert "nvmlDeviceGetPowerUsage" not in nvml.calls
    # Twenty rounds of the three recorded draws, each held 0.1 s, sampled as they change.
    assert polled.joules == pytest.approx(20 * 0.1 * (54.48 + 54.60 + 55.21), abs=1e-9)
    assert polled.watts_peak == pytest.approx(55.21)
    assert polled.telemetry["throttle_reasons"] == ["sw_power_cap"]


def test_polling_the_one_second_average_lags_a_step_in_power() -> None:
    """Without counter or instant field, nvmlDeviceGetPowerUsage is all there is: on Hopper a 1 s average."""
    nvml, clock = replay(
        "h100_pcie_fp8_burst",
        ReplayClock(4.5),
        not_supported=("nvmlDeviceGetTotalEnergyConsumption", "NVML_FI_DEV_POWER_INSTANT"),
    )
    meter = open_meter(nvml, clock)
    polled = run_window(meter, clock, 6.0).energy

    assert polled.method == "nvml-polling" and polled.telemetry["power_source"] == "nvmlDeviceGetPowerUsage"
    samples_w = [h100_at(4.5 + k / 10, "power_avg_mw") / 1000 for k in range(61)]
    trapezoids_j = sum((a + b) / 2 * 0.1 for a, b in zip(samples_w, samples_w[1:]))
    assert polled.joules == pytest.approx(trapezoids_j, abs=1e-6)
    # The recorded average trails the recorded instant power by about half a second at the step:
    # 1.73 kJ against 1.84 kJ drawn, 6.0 % low (a 1.2 s window from 5.4 s reads 27.6 % low).
    assert polled.joules == pytest.approx(1731.32, abs=0.01)
    assert (h100_mj(10.5) - h100_mj(4.5)) / 1000 == pytest.approx(1842.46, abs=0.01)


def test_function_missing_from_an_old_nvidia_ml_py_falls_back_to_polling() -> None:
    clock = ReplayClock()
    nvml = ReplayNvml(
        [ReplayGpu(load_trace("rtx2080_driver440"), clock)], without=("nvmlDeviceGetTotalEnergyConsumption",)
    )
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 5.0)

    assert result.energy.method == "nvml-polling"
    assert "upgrade nvidia-ml-py" in meter.unsupported["energy_counter"]
    # Samples alternate 176.98 and 163.50 W every 0.1 s: every trapezoid is their mean.
    assert result.energy.joules == pytest.approx(170.24 * 5.0, abs=1e-6)
    assert result.energy.watts_avg == pytest.approx(170.24, abs=0.01)


def test_power_failing_mid_window_costs_the_peak_not_the_counter_energy() -> None:
    nvml, clock = replay(
        "h100_pcie_fp8_burst", failing={"NVML_FI_DEV_POWER_INSTANT": (pynvml.NVMLError_NotSupported, 3.0)}
    )
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 6.0)

    assert result.measured
    assert result.energy.joules == pytest.approx((int(h100_mj(6.0)) - int(h100_mj(0.0))) / 1000, abs=1e-9)
    # Samples at 0.0-2.9 s only: the highest of them is the peak.
    assert result.energy.watts_peak == pytest.approx(max(h100_at(k / 10, "power_mw") for k in range(30)) / 1000)
    assert meter.power_source is None and result.energy.telemetry["power_source"] is None
    assert "return code 3" in result.energy.telemetry["unavailable"]["power"]


def test_a_counter_card_without_any_power_reading_still_measures_energy() -> None:
    """Only a card with neither counter nor power has no energy: the counter alone is enough."""
    nvml, clock = replay("rtx2080_driver440", not_supported=("nvmlDeviceGetPowerUsage",))
    meter = open_meter(nvml, clock)
    assert meter.method == "nvml-counter" and meter.power_source is None
    energy = run_window(meter, clock, 5.0).energy

    # As with its power readings: 25 tenths at each of the two recorded draws.
    assert energy.method == "nvml-counter" and energy.joules == pytest.approx(851.2, abs=0.001)
    assert energy.watts_peak is None and energy.telemetry["power_samples"] == 0
    assert "Not Supported" in energy.telemetry["unavailable"]["power"]
    assert meter.read().power_w is None


def test_a_passing_power_error_skips_one_sample_and_keeps_the_source() -> None:
    nvml, clock = replay("h100_pcie_fp8_burst", failing={"NVML_FI_DEV_POWER_INSTANT": (pynvml.NVMLError_Unknown, 5.95)})
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 6.0)

    assert result.measured and meter.power_source == "instant power field"
    assert result.energy.telemetry["power_samples"] == 60  # 0.0-5.9 s; the read at 6.0 s failed
    assert "return code 999" in result.energy.telemetry["telemetry_errors"]["power"]


def test_an_instant_field_failing_when_the_meter_opens_falls_back_to_the_average() -> None:
    nvml, clock = replay("h100_pcie_fp8_burst", failing={"NVML_FI_DEV_POWER_INSTANT": (pynvml.NVMLError_Unknown, 0.0)})
    meter = open_meter(nvml, clock)
    assert meter.method == "nvml-counter" and meter.power_source == "nvmlDeviceGetPowerUsage"
    assert "return code 999" in meter.unsupported["instant_power"]
    assert run_window(meter, clock, 5.0).measured


def test_polled_power_failing_mid_window_voids_it() -> None:
    nvml, clock = replay(
        "gtx1060_pascal", failing={"nvmlDeviceGetPowerUsage": (pynvml.NVMLError_Unknown, 2.0)}
    )
    result = run_window(open_meter(nvml, clock), clock, 5.0)
    assert not result.measured and not result.too_short
    assert "power reading stopped working" in (result.energy.unavailable_reason or "")


# -- errors: telemetry never costs the energy, a lost GPU does ----------------------------------

#: NVML return codes after which asking again gets the same answer (nvml.h).
REFUSING = {"InvalidArgument", "NotSupported", "NoPermission", "DriverNotLoaded", "LibraryNotFound",
            "FunctionNotFound", "LibRmVersionMismatch", "Deprecated"}  # fmt: skip
LOSING = {"GpuIsLost", "ResetRequired", "GpuNotFound"}
ERROR_CLASSES = sorted(
    (name.removeprefix("NVMLError_"), cls)
    for name, cls in vars(pynvml).items()
    if name.startswith("NVMLError_") and isinstance(cls, type)
)


@pytest.mark.parametrize(("name", "error_class"), ERROR_CLASSES, ids=[n for n, _ in ERROR_CLASSES])
def test_every_nvml_error_class_maps_to_what_it_means(name: str, error_class: type[pynvml.NVMLError]) -> None:
    error = error_for(error_class().value, "NVML call")
    if name in LOSING:
        assert isinstance(error, NvmlGpuLost)
    elif name in REFUSING:
        assert isinstance(error, SensorUnavailable) and not isinstance(error, SensorLost)
    else:
        assert isinstance(error, NvmlFailure)


@pytest.mark.parametrize(("name", "error_class"), ERROR_CLASSES, ids=[n for n, _ in ERROR_CLASSES])
def test_a_failing_clock_reading_voids_the_window_only_when_the_gpu_is_lost(
    name: str, error_class: type[pynvml.NVMLError]
) -> None:
    nvml, clock = replay("rtx2080_driver440", failing={"nvmlDeviceGetClockInfo": (error_class, 0.95)})
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 5.0)

    if name in LOSING:
        assert not result.measured and "GPU" in (result.energy.unavailable_reason or "")
        return
    assert result.measured and result.energy.joules == pytest.approx(851.2, abs=0.001)
    telemetry = result.energy.telemetry
    assert telemetry["sm_clock_hz"] == {"min": 1965e6, "median": pytest.approx(1972.5e6), "max": 1980e6}
    assert telemetry["temperature_c"]["max"] == 45.0  # the other fields are still read
    if name in REFUSING:  # noted once, never asked again
        assert "sm_clock_hz" in telemetry["unavailable"] and "telemetry_errors" not in telemetry
        assert "sm_clock_hz" not in run_window(meter, clock, 5.0).energy.telemetry
    else:  # passing: skipped this time, asked again next time
        assert telemetry["telemetry_errors"]["sm_clock_hz"].startswith("NVML nvmlDeviceGetClockInfo: ")
        assert "sm_clock_hz" not in telemetry["unavailable"]


def test_telemetry_is_read_every_few_polls_and_at_both_ends() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock, poll_interval_s=3600, telemetry_every=4)
    assert isinstance(meter, NvmlMeter)
    calls_before = nvml.calls.count("nvmlDeviceGetTemperature")
    run_window(meter, clock, 5.0)  # 50 polls
    # The window's start, polls 4, 8, ... 48, and its end.
    assert nvml.calls.count("nvmlDeviceGetTemperature") - calls_before == 1 + 12 + 1
    assert nvml.calls.count("nvmlDeviceGetPowerUsage") >= 52  # power at every poll


def test_telemetry_falls_back_to_the_throttle_reasons_call_on_an_old_driver() -> None:
    nvml, clock = replay("rtx2080_driver440")
    meter = open_meter(nvml, clock)
    telemetry = run_window(meter, clock, 5.0).energy.telemetry

    assert telemetry["gpu"] == "GeForce RTX 2080"
    assert telemetry["sm_clock_hz"]["min"] == 1965e6 and telemetry["sm_clock_hz"]["max"] == 1980e6
    assert telemetry["mem_clock_hz"]["max"] == 7199e6
    assert telemetry["temperature_c"]["min"] == 40.0 and telemetry["temperature_c"]["max"] == 45.0
    assert telemetry["power_limit_w"]["max"] == 200.0
    # R535 renamed the call; driver 440 only has the old one, and the reasons are still read.
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls
    assert telemetry["throttle_reasons"] == []
    # Driver 440 predates the instant-power field: power comes from nvmlDeviceGetPowerUsage.
    assert telemetry["power_source"] == "nvmlDeviceGetPowerUsage"


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


def test_gpu_lost_mid_window_keeps_the_run_going_with_a_reason() -> None:
    # As in LSSI-ETH/plmfit#40: "NVML: Failed to get usage(15): GPU is lost" on a TITAN RTX mid-run.
    nvml, clock = replay("rtx2080_driver440", lost_at_s=0.55)
    meter = open_meter(nvml, clock)
    result = run_window(meter, clock, 5.0)

    assert not result.measured and not result.too_short
    assert "GPU is lost" in (result.energy.unavailable_reason or "")
    # The GPU is not asked again: the next window and reading fail at once, without raising.
    calls_before = len(nvml.calls)
    second = run_window(meter, clock, 5.0)
    assert "GPU is lost" in (second.energy.unavailable_reason or "")
    assert "GPU is lost" in (meter.read().unavailable_reason or "")
    assert len(nvml.calls) == calls_before


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


# -- which GPU is cuda:N -----------------------------------------------------------------------


def test_cuda_visible_devices_maps_cuda_indices_to_nvml_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ReplayClock()
    nvml = ReplayNvml(
        [ReplayGpu(load_trace("gtx1060_pascal"), clock), ReplayGpu(load_trace("rtx2080_driver440"), clock)]
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock)
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce RTX 2080"
    assert visible_cuda_devices(nvml=nvml) == ["cuda:0"]

    with meter_for("cuda:3", nvml=nvml).window() as w:
        pass
    assert w.energy.unavailable_reason == "cuda:3: cuda:3 is not visible (CUDA_VISIBLE_DEVICES=1)"

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

    # A UUID NVML does not know (a ROCm build's, say): the next way of mapping still finds cuda:0.
    props.uuid = "00000000-0000-0000-0000-000000000000"
    meter = NvmlMeter.open(0, nvml=nvml, clock=clock)
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce GTX 1060 3GB"


def two_different_cards() -> ReplayNvml:
    """NVML's order is the PCI bus's: the GTX 1060 in the first slot, the RTX 2080 in the second."""
    clock = ReplayClock()
    return ReplayNvml(
        [
            ReplayGpu(load_trace("gtx1060_pascal"), clock, pci_bus_id="00000000:01:00.0"),
            ReplayGpu(load_trace("rtx2080_driver440"), clock, pci_bus_id="00000000:02:00.0"),
        ]
    )


def test_without_torch_cuda_n_is_matched_to_nvml_by_pci_bus_id(tmp_path: Path) -> None:
    # CUDA's default FASTEST_FIRST puts the RTX 2080 first; NVML's index 0 is the GTX 1060.
    nvml, cuda = two_different_cards(), FakeCudaDriver(["0000:02:00.0", "0000:01:00.0"])
    assert cuda_pci_bus_ids(cuda) == ["0000:02:00.0", "0000:01:00.0"]
    first, second = meter_for("cuda:0", nvml=nvml, cuda=cuda), meter_for("cuda:1", nvml=nvml, cuda=cuda)
    assert isinstance(first, NvmlMeter) and first.gpu_name == "GeForce RTX 2080"
    assert isinstance(second, NvmlMeter) and second.gpu_name == "GeForce GTX 1060 3GB"

    meters = meters_for_host(nvml=nvml, cuda=cuda, powercap_root=tmp_path)
    assert [(m.device, getattr(m, "gpu_name", None)) for m in meters] == [
        ("cpu", None), ("cuda:0", "GeForce RTX 2080"), ("cuda:1", "GeForce GTX 1060 3GB"),
    ]  # fmt: skip


def test_a_bus_id_nvml_does_not_know_falls_back_to_the_environments_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passed-through GPU in a VM can show CUDA a bus id NVML does not list: NVML's order is used."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = meter_for("cuda:0", nvml=two_different_cards(), cuda=FakeCudaDriver(["0000:09:00.0"]))
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce GTX 1060 3GB"


def test_a_device_name_built_at_run_time_finds_its_meter(tmp_path: Path) -> None:
    """Device names come from the command line, not only from literals: compared by value."""
    built = "".join(["c", "pu"])
    assert meter_for(built, powercap_root=tmp_path).reason == meter_for("cpu", powercap_root=tmp_path).reason  # no ValueError


def test_the_cuda_driver_decides_which_gpus_this_process_sees() -> None:
    nvml = two_different_cards()
    only_second = FakeCudaDriver(["0000:02:00.0"])  # as CUDA_VISIBLE_DEVICES=1 would leave it
    assert visible_cuda_devices(nvml, cuda=only_second) == ["cuda:0"]
    with meter_for("cuda:1", nvml=nvml, cuda=only_second).window() as w:
        pass
    assert w.energy.unavailable_reason == "cuda:1: cuda:1 is not visible: CUDA shows this process 1 GPU(s)"

    no_gpu = FakeCudaDriver([], init_status=CUDA_ERROR_NO_DEVICE)
    assert cuda_pci_bus_ids(no_gpu) == [] and visible_cuda_devices(nvml, cuda=no_gpu) == []


@pytest.mark.parametrize("call", ["cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetPCIBusId"])
def test_a_cuda_call_that_fails_gives_no_bus_ids(call: str) -> None:
    assert cuda_pci_bus_ids(FakeCudaDriver(["0000:02:00.0"], failing=call)) is None


def test_a_cuda_driver_that_fails_leaves_the_pci_order_assumption() -> None:
    nvml, broken = two_different_cards(), FakeCudaDriver(["0000:02:00.0"], init_status=999)
    assert cuda_pci_bus_ids(broken) is None
    assert visible_cuda_devices(nvml, cuda=broken) == ["cuda:0", "cuda:1"]  # NVML's count
    meter = meter_for("cuda:0", nvml=nvml, cuda=broken)
    assert isinstance(meter, NvmlMeter) and meter.gpu_name == "GeForce GTX 1060 3GB"  # NVML's index 0


def test_each_kind_of_device_gets_its_meter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mps = meter_for("mps")
    assert isinstance(mps, NullMeter) and mps.device == "mps" and "powermetrics" in mps.reason
    for unknown in ("tpu:0", "amd:0", "cuda:x", "gpu:01"):
        with pytest.raises(ValueError, match=f"unknown device '{unknown}'"):
            meter_for(unknown)
    nvml = two_different_cards()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert [m.device for m in meters_for_host(nvml=nvml, powercap_root=tmp_path)] == ["cpu", "cuda:0", "cuda:1", "mps"]
    monkeypatch.setattr(sys, "platform", "cygwin")
    assert [m.device for m in meters_for_host(nvml=nvml, powercap_root=tmp_path)] == ["cpu", "cuda:0", "cuda:1"]


def test_close_balances_nvml_init() -> None:
    nvml, clock = replay("gtx1060_pascal")
    meter = open_meter(nvml, clock)
    assert nvml.initialised == 1
    meter.close()
    meter.close()
    assert nvml.initialised == 0


class FailingNvml(ReplayNvml):
    """A driver that fails where flopwatt cannot do anything about it."""

    def nvmlDeviceGetCount(self) -> int:
        raise pynvml.NVMLError_Unknown()

    def nvmlShutdown(self) -> None:
        raise pynvml.NVMLError_Uninitialized()


def test_nvml_failing_to_count_or_to_shut_down_costs_nothing() -> None:
    clock = ReplayClock()
    nvml = FailingNvml([ReplayGpu(load_trace("gtx1060_pascal"), clock)])
    assert visible_cuda_devices(nvml) == []  # no GPU to watch, no traceback
    meter = open_meter(nvml, clock)
    meter.close()  # raises nothing


def test_the_cuda_driver_is_looked_for_by_each_platforms_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # this test wants the real loader
    opened: list[str] = []

    def cdll(name: str) -> str:
        opened.append(name)
        if name == "missing":
            raise OSError(name)
        return f"library {name}"

    monkeypatch.setattr(cuda_devices.ctypes, "CDLL", cdll)
    for platform, loaded in (("linux", "library libcuda.so.1"), ("win32", "library nvcuda.dll"), ("darwin", None)):
        monkeypatch.setattr(sys, "platform", platform)
        assert cuda_devices.load_cuda_driver() == loaded
    assert opened == ["libcuda.so.1", "nvcuda.dll"]  # macOS has no CUDA driver to look for
    monkeypatch.setattr(cuda_devices.ctypes, "CDLL", lambda name: cdll("missing"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert cuda_devices.load_cuda_driver() is None
    assert cuda_pci_bus_ids(SimpleNamespace()) is None  # a library without the driver API


# -- the sampler thread, in real time ----------------------------------------------------------

#: The RTX 3070 Laptop trace's draws: every window's average lies between them. The margin covers
#: the counter's whole-mJ reads and a scheduler delay of ~2 ms between reading the clock and the
#: counter over a 1 s window.
LAPTOP_3070_WATTS = (54.48 - 0.1, 55.21 + 0.1)


def test_background_sampler_polls_during_a_real_window() -> None:
    start_s = time.monotonic()
    nvml, _ = replay("rtx3070_laptop_driver610", clock=lambda: time.monotonic() - start_s, counter_period_s=0)
    meter = NvmlMeter.open(0, nvml=nvml, poll_interval_s=0.01, min_window_s=0.2)
    assert isinstance(meter, NvmlMeter)
    with meter.window() as w:
        time.sleep(1.0)
    assert w.result is not None and w.result.measured
    assert w.energy.telemetry["power_samples"] >= 5  # begin + end would be 2 without the thread
    assert LAPTOP_3070_WATTS[0] <= w.energy.watts_avg <= LAPTOP_3070_WATTS[1]


def test_the_sampler_polls_about_twenty_times_a_second_by_default() -> None:
    start_s = time.monotonic()
    nvml, _ = replay("rtx3070_laptop_driver610", clock=lambda: time.monotonic() - start_s)
    meter = NvmlMeter.open(0, nvml=nvml, min_window_s=0.2)
    with meter.window() as w:
        time.sleep(0.6)
    # 0.6 s at 0.05 s is 12 polls; a busy machine delays some, none should be a second late.
    assert w.energy.telemetry["power_samples"] >= 2 + 5


class SlowPowerGpu(ReplayGpu):
    """A driver whose power read takes 40 ms, as NVML's can on a busy system."""

    def reading(self, key: str) -> Any:
        if key == "power_mw":
            time.sleep(0.04)
        return super().reading(key)


def test_a_slow_sampler_does_not_stretch_the_counter_window() -> None:
    """The window's end is read after the sampler thread stops, and the counter right after it.

    Stopping the thread waits for a poll in progress. When the counter was read after that wait
    (and after the end's own slow power read), this window read 58.6 W: energy the clock did not
    count.
    """
    start_s = time.monotonic()
    gpu = SlowPowerGpu(load_trace("rtx3070_laptop_driver610"), lambda: time.monotonic() - start_s, counter_period_s=0)
    meter = NvmlMeter.open(0, nvml=ReplayNvml([gpu]), poll_interval_s=0.001, min_window_s=0.2)
    assert isinstance(meter, NvmlMeter) and meter.method == "nvml-counter"
    with meter.window() as w:
        time.sleep(0.5)
    assert LAPTOP_3070_WATTS[0] <= w.energy.watts_avg <= LAPTOP_3070_WATTS[1]


# -- small parts -------------------------------------------------------------------------------


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
