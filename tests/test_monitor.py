"""`flopwatt monitor`: real commands, real subprocesses, meters over a built RAPL tree and the NVML
replay, and the real CLI (bench.cli.app) with its stored run, exit status and one-line errors."""

from __future__ import annotations

import shlex
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.cli import app
from bench.commands import monitor as monitor_command
from bench.commands.monitor import measure_command, render_readings, watch
from bench.errors import FlopwattError
from bench.store import Store
from energy_fakes import RaplZone, ReplayClock, ReplayGpu, ReplayNvml, load_trace
from probes.energy import NullMeter, PowerReading, cuda_devices
from probes.energy.nvml import NvmlMeter
from probes.energy.rapl import RaplMeter

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_gpu_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds its own meters: keep this machine's NVIDIA drivers, if any, out of them."""
    monkeypatch.setattr(cuda_devices, "load_cuda_driver", lambda: None)
    monkeypatch.setitem(sys.modules, "pynvml", None)


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
    meters = [
        RaplMeter(tmp_path, poll_interval_s=0.01, min_window_s=0.2),
        NvmlMeter.open(0, nvml=ReplayNvml([gpu]), min_window_s=0.2),
        NullMeter("mps", "Apple GPUs report power only through powermetrics"),
    ]
    out_console, out = console()
    command = heating_command(package, 6, 0.05)
    result, exit_code = measure_command(command, meters, out_console)

    assert exit_code == 0
    assert [m.device for m in result.measurements] == ["cpu", "cuda:0"]
    cpu, gpu_figure = result.measurements
    assert (cpu.probe, cpu.metric, cpu.unit) == ("monitor", "command_energy", "J")
    assert cpu.value == 12.0  # six steps of 2 J, read as whole µJ
    assert cpu.energy is not None and cpu.energy.method == "rapl"
    assert gpu_figure.energy is not None and gpu_figure.energy.method == "nvml-counter"
    assert 54.48 - 0.6 < gpu_figure.energy.watts_avg < 55.21 + 0.6  # the recorded 54.5-55.2 W draw
    assert cpu.params["exit_code"] == 0
    assert shlex.split(cpu.params["command"]) == command  # stored so that it runs again as it was
    assert [(u.device, u.reason) for u in result.unavailable] == [
        ("mps", "mps: Apple GPUs report power only through powermetrics")
    ]
    text = out.getvalue()
    assert "command exited with status 0" in text
    assert "12.0 J" in text and "nvml-counter" in text and "sw_power_cap" in text


def test_a_command_too_short_for_the_sensor_is_unavailable_not_zero(tmp_path: Path) -> None:
    RaplZone(tmp_path, "intel-rapl:0", "package-0")
    out_console, _ = console()
    result, _ = measure_command([sys.executable, "-c", "pass"], [RaplMeter(tmp_path)], out_console)

    assert result.measurements == []
    (only,) = result.unavailable
    assert only.device == "cpu" and "too short for the rapl sensor (it needs 1.0 s)" in only.reason


def test_a_failing_command_is_still_measured_with_its_status(tmp_path: Path) -> None:
    package = RaplZone(tmp_path, "intel-rapl:0", "package-0").path
    command = heating_command(package, 3, 0.1)
    command[2] += "sys.exit(3)\n"
    out_console, out = console()
    result, exit_code = measure_command(command, [RaplMeter(tmp_path, min_window_s=0.2)], out_console)

    assert exit_code == 3 and result.measurements[0].params["exit_code"] == 3
    assert result.measurements[0].value == 6.0
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


# -- through the real CLI ------------------------------------------------------------------------


def test_monitor_a_command_stores_it_as_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = RaplZone(tmp_path, "intel-rapl:0", "package-0").path
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    command = heating_command(package, 6, 0.2)
    result = runner.invoke(app, ["monitor", "--", *command], prog_name="flopwatt")
    assert result.exit_code == 0, result.output
    assert "rapl" in result.output and "12.0 J" in result.output

    store = Store()
    [summary] = store.list_runs()
    assert summary.command.startswith("monitor -- ") and summary.command.endswith(str(package / "energy_uj"))
    assert f"Stored as run {summary.id[:12]}" in result.output
    [figure] = store.get(summary.id).measurements
    assert (figure.probe, figure.metric, figure.device, figure.unit) == ("monitor", "command_energy", "cpu", "J")
    assert figure.value == 12.0 and figure.samples == [12.0]
    assert figure.energy is not None and figure.energy.joules == 12.0


def test_monitor_exits_with_the_commands_status_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RaplZone(tmp_path, "intel-rapl:0", "package-0")
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    result = runner.invoke(app, ["monitor", "--", "false"], prog_name="flopwatt")
    assert result.exit_code == 1, result.output
    assert "command exited with status 1" in result.output
    [summary] = Store().list_runs()  # what it measured (here: too short for RAPL) is still stored
    assert summary.command == "monitor -- false"
    assert "too short for the rapl sensor" in Store().get(summary.id).unavailable[0].reason


def test_monitor_of_a_command_that_does_not_exist_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path))
    result = runner.invoke(app, ["monitor", "--", "flopwatt-no-such-command"], prog_name="flopwatt")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: cannot run 'flopwatt-no-such-command': No such file or directory"
    assert Store().list_runs() == []


def test_live_monitor_shows_every_device_until_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's own loop and sleeps, over a RAPL tree whose counter the test moves; the fourth read is Ctrl-C."""
    zone = RaplZone(tmp_path, "intel-rapl:0", "package-0")
    clock = ReplayClock()
    reads = 0

    def read_text(path: Path) -> str:
        nonlocal reads
        if path.name == "energy_uj":
            reads += 1
            if reads == 4:
                raise KeyboardInterrupt
            if reads > 1:  # after the meter's first look: 30 J in each second
                zone.add_joules(30)
                clock.advance(1.0)
        return path.read_text()

    meters = [RaplMeter(tmp_path, read_text=read_text, clock=clock), NullMeter("cuda:0", "no driver")]
    monkeypatch.setattr(monitor_command, "meters_for_host", lambda **_options: meters)
    result = runner.invoke(app, ["monitor", "--interval", "0.1"], prog_name="flopwatt")

    assert result.exit_code == 0, result.output
    assert reads == 4 and "flopwatt monitor (Ctrl-C stops)" in result.output
    cpu_row = next(line for line in result.output.splitlines() if "│ cpu" in line)
    assert "30.0 W" in cpu_row
    assert next(line for line in result.output.splitlines() if "│ cuda:0" in line).rstrip(" │").endswith("no driver")
    assert Store().list_runs() == []  # watching stores nothing


def test_monitor_has_help() -> None:
    result = runner.invoke(app, ["monitor", "--help"], prog_name="flopwatt")
    assert result.exit_code == 0
    assert "--interval" in result.output and "--estimate-cpu-power" in result.output
