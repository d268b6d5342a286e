"""The RAPL reader against powercap sysfs trees built in tmp_path.

The trees' counters behave as the kernel's (tests/energy_fakes.py's RaplZone: a 32-bit count of
energy units, shown in whole µJ); the figures (units, package energies, the MSR/MMIO/psys
overlap) are real readings cited in tests/data/energy/rapl_sources.json. Tests run as root, where
chmod 000 stops nothing: an unreadable counter is a directory, or a reader that raises
PermissionError.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest

from energy_fakes import RAW_COUNTER_MAX, RaplZone, ReplayClock, ReplayNvml
from probes.energy import NullMeter, cuda_devices, measure_idle, meter_for, meters_for_host, repeat_until_measured
from probes.energy.nvml import NvmlMeter
from probes.energy import rapl as rapl_module
from probes.energy.rapl import EstimatedCpuMeter, RaplMeter, cpu_meter, powercap_root
from probes.measurement import Measurement, Unavailable

SOURCES = json.loads((Path(__file__).parent / "data" / "energy" / "rapl_sources.json").read_text())
HASWELL_ESU: int = SOURCES["haswell_esu"]
AMD_ESU: int = SOURCES["amd_zen5"]["esu"]
#: Whole µJ can lose up to 1 µJ at each of a window's two reads.
READ_UJ = 2e-6

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def rapl(root: Path, clock: ReplayClock, **options: object) -> RaplMeter:
    # A reader thread that never wakes: tests poll() by hand where a read between the ends matters.
    return RaplMeter(root, clock=clock, poll_interval_s=3600, **options)  # type: ignore[arg-type]


def package(root: Path, index: int = 0, **options: object) -> RaplZone:
    return RaplZone(root, f"intel-rapl:{index}", f"package-{index}", **options)  # type: ignore[arg-type]


def test_the_zone_stand_in_matches_the_recorded_haswell_range(tmp_path: Path) -> None:
    assert package(tmp_path, esu=HASWELL_ESU).max_energy_range_uj == SOURCES["haswell_max_energy_range_uj"]


def test_two_socket_package_counters_are_summed(tmp_path: Path) -> None:
    gnr = SOURCES["granite_rapids"]
    pkg0, pkg1 = package(tmp_path, 0, raw=10**7), package(tmp_path, 1, raw=3 * 10**7)
    clock = ReplayClock(1000.0)
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    added0, added1 = pkg0.add_joules(gnr["package_joules"][0]), pkg1.add_joules(gnr["package_joules"][1])
    clock.advance(gnr["seconds"])
    result = meter.end_window()

    assert added0 == pytest.approx(190.462097, abs=31e-6) and added1 == pytest.approx(243.075195, abs=31e-6)
    assert result.energy.method == "rapl"
    assert result.energy.joules == pytest.approx(added0 + added1, abs=2 * READ_UJ)
    assert result.energy.watts_avg == pytest.approx((added0 + added1) / 1.001, abs=2 * READ_UJ)
    assert result.energy.telemetry["zones"] == {
        "package-0": pytest.approx(added0, abs=READ_UJ),
        "package-1": pytest.approx(added1, abs=READ_UJ),
    }


def test_nested_zones_psys_and_the_mmio_twin_are_not_counted(tmp_path: Path) -> None:
    laptop = SOURCES["core_ultra_265h"]
    pkg = package(tmp_path)
    others = [
        RaplZone(tmp_path, "intel-rapl:0:0", "core"),  # flat entry, as /sys/class/powercap lists it
        RaplZone(tmp_path, "intel-rapl:0:1", "uncore"),
        RaplZone(tmp_path, "intel-rapl:0/intel-rapl:0:2", "dram"),  # nested
        RaplZone(tmp_path, "intel-rapl:1", "psys"),
        RaplZone(tmp_path, "intel-rapl-mmio:0", "package-0"),
    ]
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    assert [z.name for z in meter.zones] == ["package-0"]

    meter.begin_window()
    added = pkg.add_joules(laptop["msr_package_w"] * 2)
    for zone, watts in zip(others, (0.84, 0.21, 1.0, laptop["psys_w"], laptop["mmio_package_w"])):
        zone.add_joules(watts * 2)
    clock.advance(2.0)
    result = meter.end_window()

    assert result.energy.joules == pytest.approx(added, abs=READ_UJ)
    assert result.energy.watts_avg == pytest.approx(3.93, abs=1e-4)


def test_every_package_zone_is_found_past_the_ones_skipped(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl").mkdir()  # the control type's own directory, as sysfs has it
    (tmp_path / "intel-rapl:0").mkdir()  # a zone whose name cannot be read
    RaplZone(tmp_path, "intel-rapl:1", "psys")
    RaplZone(tmp_path, "intel-rapl:2", "package-0")
    RaplZone(tmp_path, "intel-rapl:3", "package-1")
    assert [z.name for z in RaplMeter(tmp_path).zones] == ["package-0", "package-1"]


def test_a_jump_is_judged_against_the_package_ceiling_over_at_least_10_ms(tmp_path: Path) -> None:
    pkg = package(tmp_path, esu=HASWELL_ESU)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    pkg.add_units(16_384_000)  # exactly 1000 J: what the 1000 W ceiling allows in 1 s
    clock.advance(1.0)
    meter.poll()
    pkg.add_joules(8)  # 8 J in 5 ms: RAPL updates in lumps, judged as if over 10 ms (10 J allowed)
    clock.advance(0.005)
    meter.poll()
    clock.advance(1.0)
    assert meter.end_window().measured

    meter.begin_window()
    pkg.add_joules(20)  # 20 J in 5 ms: more than 10 ms at 1000 W
    clock.advance(0.005)
    meter.poll()
    clock.advance(1.0)
    assert "jumped 20.0 J in 0.005 s" in (meter.end_window().energy.unavailable_reason or "")


def test_mmio_zone_is_used_only_without_msr_zones(tmp_path: Path) -> None:
    mmio = RaplZone(tmp_path, "intel-rapl-mmio:0", "package-0")
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    added = mmio.add_joules(3.78)
    clock.advance(1.0)
    assert meter.end_window().energy.joules == pytest.approx(added, abs=READ_UJ)


def test_a_wrap_counts_the_unit_from_the_top_of_the_range_back_to_zero(tmp_path: Path) -> None:
    """25 units across the wrap, 10 of them to reach 0: the kernel's energy_uj drops from
    max_energy_range_uj to 0 in the last of those ten, so a reader adding only the range loses 61 µJ."""
    pkg = package(tmp_path, raw=RAW_COUNTER_MAX - 9, esu=HASWELL_ESU)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    pkg.add_units(25)
    clock.advance(1.0)
    result = meter.end_window()
    assert pkg.raw == 15  # the counter really wrapped
    assert result.energy.joules == pytest.approx(25 * 61.03515625e-6, abs=READ_UJ)


def test_a_wrap_between_two_reads_is_undone(tmp_path: Path) -> None:
    pkg = package(tmp_path, esu=HASWELL_ESU)
    pkg.add_units(RAW_COUNTER_MAX + 1 - pkg.units(5.0))  # 5 J before the wrap
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    added = pkg.add_joules(65.0)  # 5 J to the wrap point, 60 J after it
    clock.advance(1.0)
    result = meter.end_window()
    assert pkg.raw == pkg.units(60.0)
    assert result.energy.joules == pytest.approx(added, abs=READ_UJ)


def test_reader_polls_catch_more_than_one_wrap_range_per_window(tmp_path: Path) -> None:
    # AMD Zen 5: the counter wraps every 234 s at 280 W. A 250 s window at 280 W passes its start
    # value again; only the reads in between can tell 70 kJ from 4.5 kJ.
    pkg = package(tmp_path, raw=10**9, esu=AMD_ESU)
    assert pkg.max_energy_range_uj == 65535999984  # 65.536 kJ: 234 s at 280 W, as turbostat says
    # At the 1000 W ceiling this range wraps in 65 s: one read a second is plenty.
    assert RaplMeter(tmp_path).poll_interval_s == 1.0
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    added = 0.0
    for _ in range(5):
        added += pkg.add_joules(280 * 50)
        clock.advance(50)
        meter.poll()
    result = meter.end_window()

    assert added == pytest.approx(280 * 250, abs=1e-4)
    assert result.energy.joules == pytest.approx(added, abs=5 * READ_UJ)
    assert result.energy.watts_peak == pytest.approx(280, abs=1e-6)


def energy_uj(zone: RaplZone) -> int:
    """The counter as the kernel shows it now."""
    return int((zone.path / "energy_uj").read_text())


def test_an_interval_of_exactly_a_tenth_of_a_second_counts_towards_the_peak(tmp_path: Path) -> None:
    """Intervals of 0.1 s and more give the peak; shorter ones are too noisy. Both sides of 0.1 s."""
    pkg = package(tmp_path, esu=HASWELL_ESU)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()  # at 0 s
    start_uj = energy_uj(pkg)
    pkg.add_joules(30)  # 300 W for exactly 0.1 s ...
    clock.advance(0.1)
    meter.poll()
    burst_uj = energy_uj(pkg)
    pkg.add_joules(9)  # ... then 10 W for 0.9 s
    clock.advance(0.9)
    result = meter.end_window()
    assert result.energy.watts_peak == pytest.approx((burst_uj - start_uj) / 1e6 / 0.1, rel=1e-12)

    meter.begin_window()  # at 1 s
    pkg.add_joules(30)  # 30 J in 3/32 s, just under 0.1 s: left out of the peak
    clock.advance(0.09375)
    meter.poll()
    burst_uj = energy_uj(pkg)
    pkg.add_joules(9)
    clock.advance(0.90625)
    result = meter.end_window()
    assert result.energy.watts_peak == pytest.approx((energy_uj(pkg) - burst_uj) / 1e6 / 0.90625, rel=1e-12)


def test_the_reader_polls_four_times_per_shortest_possible_wrap(tmp_path: Path) -> None:
    zone = package(tmp_path, esu=21)  # a 2048 J range: 2.048 s at the 1000 W ceiling
    assert zone.max_energy_range_uj == 2_047_999_999
    assert RaplMeter(tmp_path).poll_interval_s == pytest.approx(2_047_999_999 / 1e9 / 4, abs=1e-12)


def test_background_reader_thread_sees_wraps_in_real_time(tmp_path: Path) -> None:
    # ESU 31 (0.47 nJ units) makes a 2 J range, which the test wraps in milliseconds.
    pkg = package(tmp_path, esu=31)
    assert RaplMeter(tmp_path).poll_interval_s == 0.01  # a range this small wraps in 2 ms at 1000 W
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
            pkg.raw = round(fraction * 2**32)
            pkg.write()
            seen, deadline = polls, time.monotonic() + 5
            while polls < seen + 2:  # the thread, not the test, has read the new value
                assert time.monotonic() < deadline, "the reader thread stopped polling"
                time.sleep(0.002)
    # 0.6 + 0.6 + 0.5 + 0.6 + 0.2 of the 2**32-unit range: 2.5 x 2 J.
    assert w.energy.joules == pytest.approx(5.0, abs=1e-5)


def test_an_impossible_jump_is_rejected_not_reported(tmp_path: Path) -> None:
    pkg = package(tmp_path, raw=10**9)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    pkg.add_joules(50_000)  # 50 kJ in 1 s: 50 kW from one package
    clock.advance(1.0)
    result = meter.end_window()

    assert not result.measured and not result.too_short
    assert "jumped 50000.0 J in 1.000 s" in (result.energy.unavailable_reason or "")

    # The next window starts from the new value and measures normally.
    meter.begin_window()
    added = pkg.add_joules(100)
    clock.advance(1.0)
    assert meter.end_window().energy.joules == pytest.approx(added, abs=READ_UJ)


def test_a_window_reports_its_first_failure_and_reads_nothing_after_it(tmp_path: Path) -> None:
    pkg = package(tmp_path, raw=10**9)
    counter_reads: list[Path] = []

    def read_text(path: Path) -> str:
        if path.name == "energy_uj":
            counter_reads.append(path)
        return path.read_text()

    clock = ReplayClock()
    meter = rapl(tmp_path, clock, read_text=read_text)
    meter.begin_window()
    pkg.add_joules(50_000)  # 50 kW: rejected at the first poll ...
    clock.advance(1.0)
    meter.poll()
    reads = len(counter_reads)
    pkg.add_joules(20_000)  # ... and a later jump neither read nor put in its place
    clock.advance(1.0)
    meter.poll()
    result = meter.end_window()
    assert len(counter_reads) == reads
    assert result.energy.unavailable_reason == (
        "cpu: RAPL package-0 counter jumped 50000.0 J in 1.000 s, "
        "more than a package can draw (1000 W); the window is rejected"
    )

    # A poll between windows (a reader thread's late wake-up) reads no counter either.
    meter.begin_window()
    pkg.add_joules(5)
    clock.advance(1.0)
    assert meter.end_window().measured
    reads = len(counter_reads)
    meter.poll()
    assert len(counter_reads) == reads


def test_counter_going_backwards_without_a_wrap_point_is_rejected(tmp_path: Path) -> None:
    pkg = package(tmp_path, raw=10**9)
    (pkg.path / "max_energy_range_uj").write_text("0\n")  # some kernels report 0
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    meter.begin_window()
    pkg.raw = 5
    pkg.write()
    clock.advance(1.0)
    assert "wrap point is unknown" in (meter.end_window().energy.unavailable_reason or "")


def test_permission_denied_is_reported_with_the_reason(tmp_path: Path) -> None:
    package(tmp_path)

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


def test_a_counter_file_that_is_not_a_number_is_reported(tmp_path: Path) -> None:
    zone = package(tmp_path)
    (zone.path / "energy_uj").write_text("N/A\n")
    with meter_for("cpu", powercap_root=tmp_path).window() as w:
        pass
    assert f"{zone.path / 'energy_uj'} holds 'N/A', not an energy counter" in (w.energy.unavailable_reason or "")


def test_a_window_left_open_does_not_keep_the_program_from_exiting(tmp_path: Path) -> None:
    """The reader thread is a daemon: a crash between the window's ends still lets Python exit."""
    package(tmp_path)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from probes.energy.rapl import RaplMeter\n"
        "meter = RaplMeter(Path(sys.argv[1]), poll_interval_s=0.01)\n"
        "meter.begin_window()\n"
        "print('open', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == "open\n", done.stderr


def test_an_unreadable_counter_file_is_reported(tmp_path: Path) -> None:
    zone = package(tmp_path)
    (zone.path / "energy_uj").unlink()
    (zone.path / "energy_uj").mkdir()  # unreadable even for root
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

    package(tmp_path)
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    assert powercap_root() == tmp_path
    assert isinstance(meter_for("cpu"), RaplMeter)


def test_estimate_only_when_asked_and_always_labelled(tmp_path: Path) -> None:
    for index in (0, 1):
        zone = package(tmp_path, index, tdp_w=SOURCES["granite_rapids"]["tdp_w"])
        (zone.path / "energy_uj").unlink()
        (zone.path / "energy_uj").mkdir()

    assert isinstance(cpu_meter(tmp_path), NullMeter)
    estimated = cpu_meter(tmp_path, estimate=True)
    assert isinstance(estimated, EstimatedCpuMeter) and estimated.tdp_w == 700.0
    assert isinstance(cpu_meter(tmp_path / "absent", estimate=True), NullMeter)  # no TDP, no guess


def test_estimate_is_tdp_times_load() -> None:
    snapshots = iter(
        [
            Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # construction
            Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # window start
            # 150 s busy of 400 s; guest time is part of user time and must not count twice.
            Times(200, 0, 100, 1000, 100, 0, 0, 0, 40, 0),
        ]
    )
    clock = ReplayClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=clock)
    meter.begin_window()
    clock.advance(2.0)
    energy = meter.end_window().energy

    assert energy.method == "estimated"
    assert energy.joules == pytest.approx(65.0 * 150 / 400 * 2.0)
    assert "not measured" in energy.telemetry["estimate"]
    assert energy.telemetry["why_not_measured"] == "no RAPL here"


def test_an_estimate_over_which_no_cpu_time_passed_is_no_load() -> None:
    still = Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)
    clock = ReplayClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: still, clock=clock)
    meter.begin_window()
    clock.advance(1.0)
    energy = meter.end_window().energy
    assert energy.telemetry["cpu_load"] == 0.0 and energy.joules == 0.0


def test_an_estimate_over_one_second_of_cpu_time_has_its_load() -> None:
    """cpu_times are seconds summed over the CPUs: a 1 s window on a one-CPU VM is 1 s of them."""
    snapshots = iter(
        [
            Times(100.0, 0, 50.0, 800.0, 50.0, 0, 0, 0, 0, 0),  # construction
            Times(100.0, 0, 50.0, 800.0, 50.0, 0, 0, 0, 0, 0),  # window start
            Times(100.25, 0, 50.125, 800.5, 50.125, 0, 0, 0, 0, 0),  # 0.375 s busy of 1 s
        ]
    )
    clock = ReplayClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=clock)
    meter.begin_window()
    clock.advance(1.0)
    energy = meter.end_window().energy
    assert energy.telemetry["cpu_load"] == 0.375
    assert energy.joules == 65.0 * 0.375 * 1.0


def test_a_cpu_time_counter_that_went_backwards_is_left_out_of_the_load() -> None:
    """Linux's steal time can jump backwards on a VM (psutil#1210, prometheus/node_exporter#742);
    psutil's own cpu_percent ignores such a field (psutil#1214), and so does the estimate."""
    before = Times(100.0, 0, 50.0, 800.0, 50.0, 0, 0, 900.0, 0, 0)
    after = Times(100.25, 0, 50.125, 800.5, 50.125, 0, 0, 400.0, 0, 0)  # steal 500 s back
    snapshots = iter([before, before, after])
    clock = ReplayClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=clock)
    meter.begin_window()
    clock.advance(1.0)
    assert meter.end_window().energy.telemetry["cpu_load"] == 0.375  # 0.375 s busy of 1 s


def test_the_live_estimate_reads_tdp_times_the_load_since_the_last_reading() -> None:
    snapshots = iter(
        [
            Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0),  # construction
            Times(130, 0, 60, 850, 60, 0, 0, 0, 0, 0),  # 40 s busy of 100 s
            Times(130, 0, 60, 950, 60, 0, 0, 0, 0, 0),  # 0 s busy of 100 s
            Times(190, 0, 70, 975, 65, 0, 0, 0, 0, 0),  # 70 s busy of 100 s
            Times(190, 0, 70, 975, 65, 0, 0, 0, 0, 0),  # no time has passed: no figure
        ]
    )
    clock = ReplayClock()
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=clock)
    clock.advance(1.0)
    assert meter.read().power_w == pytest.approx(65.0 * 40 / 100)
    clock.advance(1.0)
    assert meter.read().power_w == 0.0
    clock.advance(1.0)
    assert meter.read().power_w == pytest.approx(65.0 * 70 / 100)
    assert meter.read().power_w is None


def test_a_clock_reading_equal_to_the_last_is_no_time_passed() -> None:
    """Equal clock values that are distinct float objects (as a real clock's readings are)."""
    snapshots = iter([Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)] * 2)
    meter = EstimatedCpuMeter(65.0, "no RAPL here", cpu_times=lambda: next(snapshots), clock=lambda: float("2.5"))
    assert meter.read().power_w is None


def test_the_live_rapl_reading_is_the_counter_over_the_time_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    meter = RaplMeter(tmp_path, clock=clock)
    added = pkg.add_joules(42.5)
    clock.advance(2.0)
    monkeypatch.setattr(rapl_module.psutil, "cpu_freq", lambda: SimpleNamespace(current=2445.3))  # MHz
    reading = meter.read()
    assert reading.power_w == pytest.approx(added / 2.0, abs=READ_UJ)
    assert reading.clock_hz == pytest.approx(2.4453e9, rel=1e-12)
    monkeypatch.setattr(rapl_module.psutil, "cpu_freq", lambda: None)  # a VM may not say
    assert meter.read().clock_hz is None


def test_short_window_and_still_counter_are_too_short(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)

    meter.begin_window()
    pkg.add_joules(20)
    clock.advance(0.4)
    short = meter.end_window()
    assert short.too_short and short.energy.joules is None

    meter.begin_window()
    clock.advance(2.0)
    still = meter.end_window()
    assert still.too_short and "did not advance over 2.00 s" in (still.energy.unavailable_reason or "")


def test_repeat_until_measured_doubles_when_the_counter_is_still(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    seen: list[int] = []
    added: list[float] = []

    def work(repetitions: int) -> None:
        seen.append(repetitions)
        clock.advance(0.7 * repetitions)
        if repetitions >= 4:  # a counter that only ticks in long windows
            added.append(pkg.add_joules(30 * repetitions))

    run = repeat_until_measured(meter, work)
    assert seen == [1, 2, 4]  # 0.7 s too short -> 2 (1.4 s, did not move) -> doubled
    assert run.result.measured and run.result.energy.watts_avg == pytest.approx(added[0] / 2.8, abs=READ_UJ)


def test_repeat_until_measured_gives_up_once_its_budget_is_spent(tmp_path: Path) -> None:
    package(tmp_path)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    seen: list[int] = []

    def work(repetitions: int) -> None:  # a counter that never moves
        seen.append(repetitions)
        clock.advance(0.7 * repetitions)

    # Windows of 0.7, 1.4, 2.8 ... s: 44.1 s spent after the sixth, 88.9 s after the seventh.
    run = repeat_until_measured(meter, work, max_total_s=44.5)
    assert seen == [1, 2, 4, 8, 16, 32, 64] and run.repetitions == 64
    assert not run.result.measured and "did not advance over 44.80 s" in (run.result.energy.unavailable_reason or "")

    # The default budget is a minute: 0.94 s repetitions spend 59.2 s in six windows, so a seventh runs.
    seen.clear()
    repeat_until_measured(meter, lambda n: (seen.append(n), clock.advance(0.94 * n)))
    assert seen == [1, 2, 4, 8, 16, 32, 64]


def test_the_next_window_is_sized_from_the_time_per_repetition(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    seen: list[int] = []

    def work(repetitions: int) -> None:
        seen.append(repetitions)
        clock.advance(0.125 * repetitions)
        pkg.add_joules(4.0 * repetitions)

    run = repeat_until_measured(rapl(tmp_path, clock), work, repetitions=2)
    # 2 repetitions take 0.25 s: 0.125 s each, so 1.2 x 1 s needs ceil(9.6) = 10 of them.
    assert seen == [2, 10]
    assert run.repetitions == 10 and run.result.measured and run.result.seconds == 1.25


def test_work_that_takes_no_measurable_time_is_grown_not_divided_by_zero(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    seen: list[int] = []

    def work(repetitions: int) -> None:
        seen.append(repetitions)
        if repetitions > 1:  # one repetition is below the clock's resolution
            clock.advance(1e-6 * repetitions)
            pkg.add_joules(1e-6 * repetitions * 20)

    run = repeat_until_measured(rapl(tmp_path, clock), work)
    assert seen == [1, 1_200_000]  # a 0 s window counts as 1 µs a repetition: 1.2 s / 1 µs
    assert run.result.measured

def test_an_idle_baseline_must_be_a_finite_non_negative_power() -> None:
    meter = NullMeter("cpu", "no RAPL")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="idle power must be finite and non-negative"):
            meter.set_idle_watts(bad)
    meter.set_idle_watts(0.0)
    assert meter.idle_watts == 0.0
    meter.set_idle_watts(None)
    assert meter.idle_watts is None


def test_a_cpu_power_estimate_is_only_made_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_devices, "load_cuda_driver", lambda: None)  # no GPU: this machine's driver stays out
    zone = package(tmp_path, tdp_w=65)
    (zone.path / "energy_uj").unlink()
    (zone.path / "energy_uj").mkdir()
    [cpu] = meters_for_host(powercap_root=tmp_path, nvml=ReplayNvml([]))
    assert isinstance(cpu, NullMeter) and "--estimate-cpu-power would estimate it" in cpu.reason
    [cpu] = meters_for_host(powercap_root=tmp_path, estimate_cpu_power=True, nvml=ReplayNvml([]))
    assert isinstance(cpu, EstimatedCpuMeter) and cpu.tdp_w == 65


def test_idle_baseline_gives_above_idle_figures(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()
    meter = rapl(tmp_path, clock)
    idle_watts = iter([11.0, 12.0, 10.0])
    added: list[float] = []

    def idle_sleep(seconds: float) -> None:
        added.append(pkg.add_joules(next(idle_watts) * seconds))
        clock.advance(seconds)

    idle = measure_idle(meter, 3.0, sleep=idle_sleep)
    assert isinstance(idle, Measurement)
    assert idle.energy is not None and idle.energy.watts_peak == pytest.approx(12.0, abs=1e-4)
    # clocks and zones as the last interval saw them: settled at idle
    assert idle.energy.telemetry["zones"]["package-0"] == pytest.approx(added[-1], abs=READ_UJ)
    assert (idle.probe, idle.metric, idle.unit, idle.device) == ("power", "idle_power", "W", "cpu")
    assert idle.samples == pytest.approx([11.0, 12.0, 10.0], abs=1e-4)
    assert idle.value == pytest.approx(11.0, abs=1e-4)
    assert idle.energy is not None and idle.energy.joules == pytest.approx(33.0, abs=1e-4)
    assert idle.energy.watts_avg == pytest.approx(11.0, abs=1e-4) and idle.energy.seconds == 3.0
    assert idle.params == {"seconds": 3.0, "interval_s": 1.0}

    meter.set_idle_watts(idle.value)
    meter.begin_window()
    working = pkg.add_joules(61)
    clock.advance(1.0)
    energy = meter.end_window().energy
    assert energy.idle_watts == pytest.approx(11.0, abs=1e-4)
    assert energy.joules_above_idle == pytest.approx(working - idle.value, abs=READ_UJ)


def test_idle_asked_for_less_than_one_window_still_takes_one(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    clock = ReplayClock()

    def idle_sleep(seconds: float) -> None:
        pkg.add_joules(9.0 * seconds)
        clock.advance(seconds)

    idle = measure_idle(rapl(tmp_path, clock), 0.2, sleep=idle_sleep)
    assert isinstance(idle, Measurement) and idle.samples == [pytest.approx(9.0, abs=1e-4)]
    # 2.6 s of 1 s windows rounds to three
    assert measure_idle(rapl(tmp_path, clock), 2.6, sleep=idle_sleep).n == 3  # type: ignore[union-attr]


def test_idle_on_a_device_without_a_sensor_is_unavailable() -> None:
    result = measure_idle(NullMeter("cuda:0", "no NVML"), 2.0, sleep=lambda _s: None)
    assert isinstance(result, Unavailable)
    assert result.metric == "idle_power" and result.reason == "cuda:0: no NVML"


def test_every_meter_times_its_windows_with_perf_counter() -> None:
    """time.monotonic ticks every 15.6 ms on Windows before Python 3.13: 1.5-3 % of a 1 s window."""
    for cls in (NullMeter, RaplMeter, EstimatedCpuMeter, NvmlMeter):
        assert inspect.signature(cls.__init__).parameters["clock"].default is time.perf_counter, cls
