"""The RAPL reader against powercap sysfs trees built in tmp_path.

The figures (wrap ranges, package energies, the MSR/MMIO/psys overlap) are real readings cited in
tests/data/energy/rapl_sources.json. Tests run as root, where chmod 000 stops nothing: an
unreadable counter is a directory, or a reader that raises PermissionError.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections import namedtuple
from pathlib import Path

import pytest

from probes.energy import NullMeter, measure_idle, meter_for, repeat_until_measured
from probes.energy.nvml import NvmlMeter
from probes.energy.rapl import EstimatedCpuMeter, RaplMeter, cpu_meter, powercap_root
from probes.measurement import Measurement, Unavailable

SOURCES = json.loads((Path(__file__).parent / "data" / "energy" / "rapl_sources.json").read_text())
HASWELL_RANGE_UJ: int = SOURCES["haswell_max_energy_range_uj"]
AMD_RANGE_UJ = SOURCES["amd_zen5"]["wrap_s"] * SOURCES["amd_zen5"]["at_w"] * 10**6


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def make_zone(
    root: Path, dirname: str, name: str, energy_uj: int, range_uj: int = HASWELL_RANGE_UJ, tdp_uw: int | None = None
) -> Path:
    zone = root / dirname
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    write_uj(zone, energy_uj)
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    if tdp_uw is not None:
        (zone / "constraint_0_max_power_uw").write_text(f"{tdp_uw}\n")
    return zone


def write_uj(zone: Path, value_uj: int) -> None:
    """Replace the counter atomically: a reader thread must never see a half-written file."""
    (zone / "energy_uj.new").write_text(f"{value_uj}\n")
    os.replace(zone / "energy_uj.new", zone / "energy_uj")


def add_uj(zone: Path, delta_uj: float, range_uj: int = HASWELL_RANGE_UJ) -> None:
    write_uj(zone, (int((zone / "energy_uj").read_text()) + round(delta_uj)) % range_uj)


def rapl(root: Path, clock: FakeClock, **options: object) -> RaplMeter:
    # A reader thread that never wakes: tests poll() by hand where a read between the ends matters.
    return RaplMeter(root, clock=clock, poll_interval_s=3600, **options)  # type: ignore[arg-type]


def test_two_socket_package_counters_are_summed(tmp_path: Path) -> None:
    gnr = SOURCES["granite_rapids"]
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 3 * 10**9)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    add_uj(pkg0, gnr["package_joules"][0] * 1e6)
    add_uj(pkg1, gnr["package_joules"][1] * 1e6)
    clock.advance(gnr["seconds"])
    result = meter.end_window()

    assert result.energy.method == "rapl"
    assert result.energy.joules == pytest.approx(190.462097 + 243.075195)
    assert result.energy.watts_avg == pytest.approx((190.462097 + 243.075195) / 1.001)
    assert result.energy.telemetry["zones"] == {
        "package-0": pytest.approx(190.462097),
        "package-1": pytest.approx(243.075195),
    }


def test_nested_zones_psys_and_the_mmio_twin_are_not_counted(tmp_path: Path) -> None:
    laptop = SOURCES["core_ultra_265h"]
    package = make_zone(tmp_path, "intel-rapl:0", "package-0", 5 * 10**9)
    others = [
        make_zone(tmp_path, "intel-rapl:0:0", "core", 10**9),  # flat entry, as /sys/class/powercap lists it
        make_zone(tmp_path, "intel-rapl:0:1", "uncore", 10**9),
        make_zone(tmp_path, "intel-rapl:0/intel-rapl:0:2", "dram", SOURCES["haswell_dram_energy_uj"]),  # nested
        make_zone(tmp_path, "intel-rapl:1", "psys", 7 * 10**9),
        make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 5 * 10**9),
    ]
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    assert [z.name for z in meter.zones] == ["package-0"]

    meter.begin_window()
    add_uj(package, laptop["msr_package_w"] * 2e6)
    for zone, watts in zip(others, (0.84, 0.21, 1.0, laptop["psys_w"], laptop["mmio_package_w"])):
        add_uj(zone, watts * 2e6)
    clock.advance(2.0)
    result = meter.end_window()

    assert result.energy.watts_avg == pytest.approx(laptop["msr_package_w"])


def test_mmio_zone_is_used_only_without_msr_zones(tmp_path: Path) -> None:
    mmio = make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 10**6)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    add_uj(mmio, 3.78e6)
    clock.advance(1.0)
    assert meter.end_window().energy.joules == pytest.approx(3.78)


def test_a_wrap_between_two_reads_is_undone(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", HASWELL_RANGE_UJ - 5 * 10**6)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    add_uj(pkg, 65e6)  # 5 J to the wrap point, 60 J after it
    clock.advance(1.0)
    result = meter.end_window()
    assert int((pkg / "energy_uj").read_text()) == 60 * 10**6  # the counter really wrapped
    assert result.energy.joules == pytest.approx(65.0)


def test_reader_polls_catch_more_than_one_wrap_range_per_window(tmp_path: Path) -> None:
    # AMD Zen 5: the counter wraps every 234 s at 280 W. A 250 s window at 280 W passes its start
    # value again; only the reads in between can tell 70 kJ from 4.5 kJ.
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9, range_uj=AMD_RANGE_UJ)
    # At the 1000 W ceiling this range wraps in 65 s: one read a second is plenty.
    assert RaplMeter(tmp_path).poll_interval_s == 1.0
    clock = FakeClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    for _ in range(5):
        add_uj(pkg, 280 * 50 * 1e6, AMD_RANGE_UJ)
        clock.advance(50)
        meter.poll()
    result = meter.end_window()

    assert result.energy.joules == pytest.approx(280 * 250)
    assert result.energy.watts_peak == pytest.approx(280)


def test_background_reader_thread_sees_wraps_in_real_time(tmp_path: Path) -> None:
    small_range_uj = 10**6
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 0, range_uj=small_range_uj)
    assert RaplMeter(tmp_path).poll_interval_s == 0.01  # a range this small wraps in 1 ms at 1000 W
    meter = RaplMeter(tmp_path, poll_interval_s=0.005, max_package_w=1e9, min_window_s=0.05)
    polls = 0
    thread_poll = meter.poll

    def counted_poll() -> None:
        nonlocal polls
        thread_poll()
        polls += 1

    meter.poll = counted_poll  # type: ignore[method-assign]
    with meter.window() as w:
        for fraction in (0.6, 0.2, 0.7, 0.3, 0.5):  # wraps after 0.6 and after 0.7
            write_uj(pkg, int(fraction * small_range_uj))
            seen, deadline = polls, time.monotonic() + 5
            while polls < seen + 2:  # the thread, not the test, has read the new value
                assert time.monotonic() < deadline, "the reader thread stopped polling"
                time.sleep(0.002)
    assert w.energy.joules == pytest.approx(2.5)


def test_an_impossible_jump_is_rejected_not_reported(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    add_uj(pkg, 50_000e6)  # 50 kJ in 1 s: 50 kW from one package
    clock.advance(1.0)
    result = meter.end_window()

    assert not result.measured and not result.too_short
    assert "jumped 50000.0 J in 1.000 s" in (result.energy.unavailable_reason or "")

    # The next window starts from the new value and measures normally.
    meter.begin_window()
    add_uj(pkg, 100e6)
    clock.advance(1.0)
    assert meter.end_window().energy.joules == pytest.approx(100.0)


def test_counter_going_backwards_without_a_wrap_point_is_rejected(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9, range_uj=0)  # some kernels report 0
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    write_uj(pkg, 5)
    clock.advance(1.0)
    assert "wrap point is unknown" in (meter.end_window().energy.unavailable_reason or "")


def test_permission_denied_is_reported_with_the_reason(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)

    def read_as_user(path: Path) -> str:
        if path.name == "energy_uj":  # what the Platypus fix made root-only
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    meter = cpu_meter(tmp_path, read_text=read_as_user)
    assert isinstance(meter, NullMeter)
    with meter.window() as w:
        pass
    reason = w.energy.unavailable_reason or ""
    assert f"cannot read {tmp_path / 'intel-rapl:0' / 'energy_uj'}: permission denied" in reason
    assert "CVE-2020-8694" in reason and "--estimate-cpu-power" in reason


def test_an_unreadable_counter_file_is_reported(tmp_path: Path) -> None:
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # unreadable even for root
    with meter_for("cpu", powercap_root=tmp_path).window() as w:
        pass
    assert "Is a directory" in (w.energy.unavailable_reason or "")


def test_missing_powercap_and_the_root_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with meter_for("cpu", powercap_root=tmp_path / "absent").window() as w:
        pass
    assert f"{tmp_path / 'absent'} does not exist" in (w.energy.unavailable_reason or "")

    with meter_for("cpu", powercap_root=tmp_path).window() as w:  # exists, but no zones: a VM
        pass
    assert "no RAPL package zone" in (w.energy.unavailable_reason or "")

    make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    assert powercap_root() == tmp_path
    assert isinstance(meter_for("cpu"), RaplMeter)


def test_estimate_only_when_asked_and_always_labelled(tmp_path: Path) -> None:
    tdp_uw = SOURCES["granite_rapids"]["tdp_w"] * 10**6
    for index in (0, 1):
        zone = make_zone(tmp_path, f"intel-rapl:{index}", f"package-{index}", 10**9, tdp_uw=tdp_uw)
        (zone / "energy_uj").unlink()
        (zone / "energy_uj").mkdir()

    assert isinstance(cpu_meter(tmp_path), NullMeter)
    estimated = cpu_meter(tmp_path, estimate=True)
    assert isinstance(estimated, EstimatedCpuMeter) and estimated.tdp_w == 700.0
    assert isinstance(cpu_meter(tmp_path / "absent", estimate=True), NullMeter)  # no TDP, no guess


def test_estimate_is_tdp_times_load(tmp_path: Path) -> None:
    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    snapshots = iter(
        [
            Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # construction
            Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # window start
            # 150 s busy of 400 s; guest time is part of user time and must not count twice.
            Times(200, 0, 100, 1000, 100, 0, 0, 0, 40, 0),
        ]
    )
    clock = FakeClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=clock)
    meter.begin_window()
    clock.advance(2.0)
    energy = meter.end_window().energy

    assert energy.method == "estimated"
    assert energy.joules == pytest.approx(65.0 * 150 / 400 * 2.0)
    assert "not measured" in energy.telemetry["estimate"]
    assert energy.telemetry["why_not_measured"] == "no RAPL here"


def test_short_window_and_still_counter_are_too_short(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    add_uj(pkg, 20e6)
    clock.advance(0.4)
    short = meter.end_window()
    assert short.too_short and short.energy.joules is None

    meter.begin_window()
    clock.advance(2.0)
    still = meter.end_window()
    assert still.too_short and "did not advance over 2.00 s" in (still.energy.unavailable_reason or "")


def test_repeat_until_measured_doubles_when_the_counter_is_still(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    seen: list[int] = []

    def work(repetitions: int) -> None:
        seen.append(repetitions)
        clock.advance(0.7 * repetitions)
        if repetitions >= 4:  # a counter that only ticks in long windows
            add_uj(pkg, 30e6 * repetitions)

    run = repeat_until_measured(meter, work)
    assert seen == [1, 2, 4]  # 0.7 s too short -> 2 (1.4 s, did not move) -> doubled
    assert run.result.measured and run.result.energy.watts_avg == pytest.approx(30 / 0.7)


def test_idle_baseline_gives_above_idle_figures(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 10**9)
    clock = FakeClock()
    meter = rapl(tmp_path, clock)
    idle_watts = iter([11.0, 12.0, 10.0])

    def idle_sleep(seconds: float) -> None:
        add_uj(pkg, next(idle_watts) * seconds * 1e6)
        clock.advance(seconds)

    idle = measure_idle(meter, 3.0, sleep=idle_sleep)
    assert isinstance(idle, Measurement)
    assert (idle.probe, idle.metric, idle.unit, idle.device) == ("power", "idle_power", "W", "cpu")
    assert idle.samples == pytest.approx([11.0, 12.0, 10.0])
    assert idle.value == pytest.approx(11.0)
    assert idle.energy is not None and idle.energy.joules == pytest.approx(33.0)

    meter.set_idle_watts(idle.value)
    meter.begin_window()
    add_uj(pkg, 61e6)
    clock.advance(1.0)
    energy = meter.end_window().energy
    assert energy.idle_watts == pytest.approx(11.0)
    assert energy.joules_above_idle == pytest.approx(50.0)


def test_idle_on_a_device_without_a_sensor_is_unavailable() -> None:
    result = measure_idle(NullMeter("cuda:0", "no NVML"), 2.0, sleep=lambda _s: None)
    assert isinstance(result, Unavailable)
    assert result.metric == "idle_power" and result.reason == "cuda:0: no NVML"


def test_every_meter_times_its_windows_with_perf_counter() -> None:
    """time.monotonic ticks every 15.6 ms on Windows before Python 3.13: 1.5-3 % of a 1 s window."""
    for cls in (NullMeter, RaplMeter, EstimatedCpuMeter, NvmlMeter):
        assert inspect.signature(cls.__init__).parameters["clock"].default is time.perf_counter, cls
