"""`flopwatt monitor`: watch power, clocks and temperature live, or measure the energy of a command.

Measuring (`measure_command`, `watch`'s readings) is kept apart from rendering (`render_*`), and
both take the meters and the rich Console from the caller, so tests pass their own. With --json,
stdout holds only JSON: the stored run document, or one line of readings per interval when
watching; the tables and the measured command's own output go to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bench.document import utc_now
from bench.errors import FlopwattError
from bench.options import DbOption, EstimateCpuPowerOption, JsonOption
from bench.store import Store
from probes.energy import EnergyMeter, PowerReading, WindowResult, meters_for_host
from probes.measurement import Measurement, ProbeResult, Unavailable


def monitor(
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between live readings.")
    ] = 1.0,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="A command to run and measure, after --; without one, watch live.", show_default=False),
    ] = None,
    estimate_cpu_power: EstimateCpuPowerOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> ProbeResult | None:
    """Watch power, clocks and temperature of every device (Ctrl-C stops), or measure a command's energy."""
    console = Console(stderr=as_json)
    meters = meters_for_host(estimate_cpu_power=estimate_cpu_power)
    try:
        if not command:
            if as_json:
                watch_json(meters, interval_s=interval)
            else:
                watch(meters, console, interval_s=interval)
            return None
        from bench.runner import inventory, run_document  # torch, which only this branch needs

        store = Store(db)  # opened first: a bad database fails before the command runs
        started = utc_now()
        # with --json the command's own output goes to stderr (file descriptor 2), keeping stdout JSON
        result, exit_code = measure_command(command, meters, console, command_stdout=2 if as_json else None)
        host, devices, missing = inventory()
        doc = run_document("monitor -- " + shlex.join(command), started, host, devices, result)
        doc.unavailable.extend(missing)
        store.save(doc)
        console.print(f"Stored as run [bold]{doc.run.id[:12]}[/bold] in {store.url}")
        if as_json:
            print(doc.to_json())
        if exit_code != 0:  # as `time CMD` does: a script can still tell the command failed
            raise typer.Exit(exit_code)
        return result
    finally:
        for meter in meters:
            meter.close()


# -- measuring -------------------------------------------------------------------------------


def _run(command: Sequence[str], stdout: int | None = None) -> int:
    try:
        return subprocess.run(list(command), check=False, stdout=stdout).returncode
    except OSError as exc:
        raise FlopwattError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc


def measure_command(
    command: Sequence[str], meters: Sequence[EnergyMeter], console: Console, *, command_stdout: int | None = None
) -> tuple[ProbeResult, int]:
    """Run `command` (its output goes to the terminal, or to `command_stdout`, a file descriptor) inside
    one energy window per device.

    Returns one "command_energy" measurement (J) per device that gave a figure and an Unavailable,
    with the reason, per device that did not; and the command's exit status (also in the params).
    """
    for meter in meters:
        meter.begin_window()
    started_s = time.perf_counter()
    try:
        exit_code = _run(command, command_stdout)
    finally:
        # Always closed, so no sampler thread outlives a command that could not start.
        results = [(meter, meter.end_window()) for meter in meters]
    seconds = time.perf_counter() - started_s
    params = {"command": shlex.join(command), "exit_code": exit_code, "seconds": seconds}

    outcome = ProbeResult()
    for meter, result in results:
        if result.measured:
            outcome.measurements.append(
                Measurement(
                    probe="monitor",
                    metric="command_energy",
                    unit="J",
                    samples=[result.energy.joules or 0.0],
                    device=meter.device,
                    params=params,
                    energy=result.energy,
                )
            )
        else:
            outcome.unavailable.append(
                Unavailable(probe="monitor", metric="command_energy", device=meter.device, reason=_why(meter, result))
            )
    console.print(render_summary(outcome, exit_code=exit_code, seconds=seconds))
    return outcome, exit_code


def _why(meter: EnergyMeter, result: WindowResult) -> str:
    if result.too_short:
        # A user's command is not repeated behind their back: say what would work instead.
        return (
            f"{meter.device}: the command ran {result.seconds:.2f} s, too short for the {meter.method} "
            f"sensor (it needs {meter.min_window_s:.1f} s); measure a longer run"
        )
    return result.energy.unavailable_reason or f"{meter.device}: no energy figure"


def watch(
    meters: Sequence[EnergyMeter],
    console: Console,
    *,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Redraw a table of readings every `interval_s` until Ctrl-C."""
    try:
        with Live(render_readings([m.read() for m in meters]), console=console, auto_refresh=False) as live:
            while True:
                sleep(interval_s)
                live.update(render_readings([m.read() for m in meters]), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the user stops watching, not an error


def watch_json(
    meters: Sequence[EnergyMeter],
    *,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    file: TextIO | None = None,
) -> None:
    """`watch` for scripts: one JSON object per interval, {"time": ..., "readings": [...]}, until Ctrl-C.
    `file` defaults to stdout."""
    try:
        while True:
            readings = [dataclasses.asdict(m.read()) for m in meters]
            print(json.dumps({"time": utc_now().isoformat(), "readings": readings}), file=file, flush=True)
            sleep(interval_s)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the user stops watching, not an error


# -- rendering -------------------------------------------------------------------------------


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def _or_dash(value: float | None, unit: str) -> str:
    return "-" if value is None else _si(value, unit)


def render_readings(readings: Sequence[PowerReading]) -> Table:
    table = Table(title="flopwatt monitor (Ctrl-C stops)")
    for column in ("Device", "Power", "Clock", "Memory clock", "Temp", "Power limit", "Throttle / note"):
        table.add_column(column, justify="left" if column in ("Device", "Throttle / note") else "right")
    for r in readings:
        note = ", ".join(r.throttle_reasons) or (r.unavailable_reason or "")
        table.add_row(
            r.device,
            _or_dash(r.power_w, "W"),
            _or_dash(r.clock_hz, "Hz"),
            _or_dash(r.mem_clock_hz, "Hz"),
            "-" if r.temperature_c is None else f"{r.temperature_c:.0f} °C",
            _or_dash(r.power_limit_w, "W"),
            note,
        )
    return table


def render_summary(result: ProbeResult, *, exit_code: int, seconds: float) -> Table:
    table = Table(title=f"command exited with status {exit_code} after {seconds:.2f} s")
    for column in ("Device", "Method", "Energy", "Avg power", "Peak power", "Throttle / note"):
        table.add_column(column, justify="left" if column in ("Device", "Method", "Throttle / note") else "right")
    for m in result.measurements:
        energy = m.energy
        assert energy is not None and energy.joules is not None
        reasons = energy.telemetry.get("throttle_reasons") or []
        note = ", ".join(reasons) or str(energy.telemetry.get("estimate", ""))
        table.add_row(
            m.device or "-",
            energy.method,
            _si(energy.joules, "J"),
            _or_dash(energy.watts_avg, "W"),
            _or_dash(energy.watts_peak, "W"),
            note,
        )
    for u in result.unavailable:
        table.add_row(u.device or "-", "unavailable", "-", "-", "-", u.reason.removeprefix(f"{u.device}: "))
    return table
