"""Reports render onto a fixed-width console; verdicts come from Welch's test, never from a guess."""

from __future__ import annotations

import io

from rich.console import Console

from bench.report import measurement_table, relative_spread, verdict, warn_unstable
from bench.units import bytes_, si
from probes.measurement import Energy, Measurement


def _flops(samples: list[float], **kw: object) -> Measurement:
    return Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", dtype="fp32", device="cpu", samples=samples, **kw)


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120, color_system=None), buffer


def test_a_clear_difference_is_a_plain_ratio() -> None:
    base = _flops([100.0, 101.0, 99.0, 100.5, 100.2])
    faster = _flops([200.0, 201.0, 199.0, 200.4, 199.6])
    assert verdict(base, faster) == "2.00x"


def test_an_overlapping_difference_is_not_significant() -> None:
    base = _flops([100.0, 130.0, 80.0, 120.0, 90.0])
    other = _flops([105.0, 125.0, 85.0, 115.0, 95.0])
    assert "n.s." in verdict(base, other)


def test_too_few_samples_are_said_so() -> None:
    assert "too few samples" in verdict(_flops([1.0]), _flops([2.0]))


def test_units_are_humanised_in_si() -> None:
    assert si(153.9e9, "FLOP/s") == "154 GFLOP/s"
    assert si(24.1e6, "bit/s") == "24.1 Mbit/s"
    assert si(0.0123, "s") == "12.3 ms"
    assert si(0.42, "ratio") == "42.0 %"
    assert bytes_(128 * 1024**2) == "128 MiB"
    assert bytes_(1.5 * 1024**3) == "1.5 GiB"


def test_table_shows_energy_and_efficiency_only_when_measured() -> None:
    console, buffer = _console()
    plain = _flops([1e11, 1.1e11, 0.9e11])
    console.print(measurement_table([plain]))
    assert "Energy" not in buffer.getvalue()
    metered = _flops([1e11] * 3, energy=Energy(method="rapl", joules=50.0, watts_avg=25.0, watts_peak=30.0, seconds=2.0))
    console, buffer = _console()
    console.print(measurement_table([plain, metered]))
    out = buffer.getvalue()
    assert "50 J @ 25 W" in out and "4 GFLOP/J" in out


def test_noisy_figures_get_a_warning_that_says_what_to_do() -> None:
    noisy = _flops([100.0, 150.0, 60.0, 140.0, 70.0, 130.0])
    steady = _flops([100.0, 101.0, 99.0, 100.0, 100.5])
    assert relative_spread(noisy) > 0.10 > relative_spread(steady)
    console, buffer = _console()
    warn_unstable([noisy, steady], console)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "close other programs" in lines[0]
    # on a virtual machine the cause is usually the host's other guests, which the user cannot close
    console, buffer = _console()
    warn_unstable([noisy, steady], console, virtualized=True)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "other guests" in lines[0] and "close other programs" not in lines[0]


def test_compare_shows_efficiency_when_both_runs_have_energy() -> None:
    from datetime import datetime, timezone

    from bench.document import RunDocument, RunInfo
    from bench.report import render_compare
    from probes.inventory import Host

    def doc(run_id: str, flops: float, watts: float) -> RunDocument:
        energy = Energy(method="nvml-counter", joules=watts * 10, watts_avg=watts, seconds=10.0)
        now = datetime.now(timezone.utc)
        return RunDocument(
            run=RunInfo(id=run_id, started_at=now, finished_at=now, tool_version="0"),
            host=Host(os="Linux", python="3.11"),
            measurements=[_flops([flops] * 3, energy=energy)],
        )

    console, buffer = _console()
    render_compare([doc("a" * 32, 1e14, 100.0), doc("b" * 32, 2e14, 400.0)], console)
    out = buffer.getvalue()
    assert "per watt" in out and "1 TFLOP/J" in out and "500 GFLOP/J" in out and "0.50x" in out


def test_device_column_only_when_rows_are_on_several_devices() -> None:
    cpu = _flops([1e11] * 3, params={"m": 1024, "n": 1024, "k": 1024})
    console, buffer = _console()
    console.print(measurement_table([cpu, _flops([2e11] * 3, params={"m": 512, "n": 256, "k": 128})]))
    out = buffer.getvalue()
    assert "Device" not in out and "repeats on cpu" in out
    assert "1024³" in out and "512×256×128" in out
    gpu = cpu.model_copy(update={"device": "cuda:0"})
    console, buffer = _console()
    console.print(measurement_table([cpu, gpu]))
    out = buffer.getvalue()
    assert "Device" in out and "cuda:0" in out and "repeats on" not in out
