"""`flopwatt monitor`: a real command, real subprocesses, meters over a built RAPL tree and the NVML replay."""

from __future__ import annotations

import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from bench.commands.monitor import measure_command, monitor, render_readings, watch
from bench.errors import FlopwattError
from probes.energy import NullMeter, PowerReading
from probes.energy.nvml import NvmlMeter
from probes.energy.rapl import RaplMeter
from energy_fakes import RaplZone, ReplayClock, ReplayGpu, ReplayNvml, load_trace


def console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=160, color_system=None), out


def heating_command(zone: Path, steps: int, step_s: float) -> list[str]:
    """A command that adds 2 J to the package counter every `step_s`, as a busy CPU would."""
    script = (
        "import os, sys, time\n"
        "path = sys.argv[1]\n"
        f"for _ in range({steps}):\n"
        "    value = int(open(path).read()) + 2_000_000\n"
        "    open(path + '.new', 'w').write(str(value))\n"
        "    os.replace(path + '.new', path)\n"
        f"    time.sleep({step_s})\n"
    )
    return [sys.executable, "-c", script, str(zone / "energy_uj")]


def test_a_command_is_measured_on_every_device(tmp_path: Path) -> None:
    package = RaplZone(tmp_path, "intel-rapl:0", "package-0").path
    start_s = time.monotonic()
    # A counter that follows the power (period 0), so this sub-second window can be checked against the draw.
    gpu = ReplayGpu(load_trace("rtx3070_laptop_driver610"), lambda: time.monotonic() - start_s, counter_period_s=0)
    nvml = ReplayNvml([gpu])
    meters = [
        RaplMeter(tmp_path, poll_interval_s=0.01, min_window_s=0.2),
        NvmlMeter.open(0, nvml=nvml, min_window_s=0.2),
        NullMeter("mps", "Apple GPUs report power only through powermetrics"),
    ]
    out_console, out = console()
    result = measure_command(heating_command(package, 6, 0.05), meters, out_console)

    assert [m.device for m in result.measurements] == ["cpu", "cuda:0"]
    cpu, gpu = result.measurements
    assert (cpu.probe, cpu.metric, cpu.unit) == ("monitor", "command_energy", "J")
    assert cpu.value == pytest.approx(12.0)  # six steps of 2 J
    assert cpu.energy is not None and cpu.energy.method == "rapl"
    assert gpu.energy is not None and gpu.energy.method == "nvml-counter"
    assert gpu.energy.watts_avg == pytest.approx(54.76, abs=0.6)  # the recorded 54.5-55.2 W draw
    assert cpu.params["exit_code"] == 0 and cpu.params["command"].startswith(sys.executable)
    assert [(u.device, u.reason) for u in result.unavailable] == [
        ("mps", "mps: Apple GPUs report power only through powermetrics")
    ]
    text = out.getvalue()
    assert "command exited with status 0" in text
    assert "12.0 J" in text and "nvml-counter" in text and "sw_power_cap" in text


def test_a_command_too_short_for_the_sensor_is_unavailable_not_zero(tmp_path: Path) -> None:
    RaplZone(tmp_path, "intel-rapl:0", "package-0")
    out_console, _ = console()
    result = measure_command([sys.executable, "-c", "pass"], [RaplMeter(tmp_path)], out_console)

    assert result.measurements == []
    (only,) = result.unavailable
    assert only.device == "cpu" and "too short for the rapl sensor (it needs 1.0 s)" in only.reason


def test_a_failing_command_is_still_measured_with_its_status(tmp_path: Path) -> None:
    package = RaplZone(tmp_path, "intel-rapl:0", "package-0").path
    command = heating_command(package, 3, 0.1)
    command[2] += "sys.exit(3)\n"
    out_console, out = console()
    result = measure_command(command, [RaplMeter(tmp_path, min_window_s=0.2)], out_console)

    assert result.measurements[0].params["exit_code"] == 3
    assert result.measurements[0].value == pytest.approx(6.0)
    assert "command exited with status 3" in out.getvalue()


def test_a_command_that_cannot_start_is_one_clear_error_and_closes_the_windows(tmp_path: Path) -> None:
    RaplZone(tmp_path, "intel-rapl:0", "package-0")
    meter = RaplMeter(tmp_path)
    out_console, _ = console()
    with pytest.raises(FlopwattError, match=r"^cannot run 'flopwatt-no-such-command': No such file or directory$"):
        measure_command(["flopwatt-no-such-command"], [meter], out_console)
    meter.begin_window()  # would raise "a window is already open" had the error left it open
    meter.end_window()


def test_watch_redraws_readings_until_ctrl_c(tmp_path: Path) -> None:
    zone = RaplZone(tmp_path, "intel-rapl:0", "package-0")
    cpu_clock, gpu_clock = ReplayClock(), ReplayClock()
    nvml = ReplayNvml([ReplayGpu(load_trace("rtx3070_laptop_driver610"), gpu_clock)])
    meters = [RaplMeter(tmp_path, clock=cpu_clock), NvmlMeter.open(0, nvml=nvml, clock=gpu_clock)]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        sleeps.append(seconds)
        zone.add_joules(30)  # 30 J per second: 30 W
        cpu_clock.advance(seconds)
        gpu_clock.advance(0.1)

    out_console, out = console()
    watch(meters, out_console, interval_s=1.0, sleep=sleep)

    assert sleeps == [1.0, 1.0]
    text = out.getvalue()
    assert "30.0 W" in text  # the CPU row, from two counter reads a second apart
    # The last redraw, 0.2 s into the replay: the third recorded reading, 55.21 W at 1920 MHz.
    assert "55.2 W" in text and "1.92 GHz" in text and "7.00 GHz" in text and "62 °C" in text
    assert "55.0 W" in text and "sw_power_cap" in text


def test_render_readings_says_why_a_device_has_no_power() -> None:
    out_console, out = console()
    out_console.print(render_readings([PowerReading(device="cpu", unavailable_reason="no RAPL package zone")]))
    row = next(line for line in out.getvalue().splitlines() if "cpu" in line)
    assert "no RAPL package zone" in row and row.count(" - ") >= 4


def test_cli_runs_a_command_and_has_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = RaplZone(tmp_path, "intel-rapl:0", "package-0").path
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    app = typer.Typer()
    app.command()(monitor)
    app.command("other")(lambda: None)  # with two commands, typer dispatches on the name as flopwatt's CLI does

    help_result = CliRunner().invoke(app, ["monitor", "--help"])
    assert help_result.exit_code == 0
    assert "--interval" in help_result.output and "--estimate-cpu-power" in help_result.output

    result = CliRunner().invoke(app, ["monitor", "--", *heating_command(package, 6, 0.2)])
    assert result.exit_code == 0, result.output
    assert "rapl" in result.output and "12.0 J" in result.output
