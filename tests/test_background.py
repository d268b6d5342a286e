"""What else used the machine while a probe ran: real CPU load from a real second process.

The probe's figures must say when they come from a shared machine, and the report must say so
once per probe, so nobody compares a loaded run with a quiet one unawares.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from bench.document import new_run_id
from bench.report import comparability_warnings, render_run, warn_machine_load
from bench.runner import ProbeRequest, run_probes
from probes.background import CpuWatch
from probes.measurement import Measurement


@contextmanager
def one_core_spinning() -> Iterator[None]:
    """Another process keeping one logical CPU busy, as a game or a build in the background would."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _share_over(seconds: float) -> dict[str, float]:
    watch = CpuWatch()
    time.sleep(seconds)
    return watch.shares()


def test_another_process_shows_as_background_and_our_own_work_does_not() -> None:
    quiet = _share_over(1.5)
    with one_core_spinning():
        loaded = _share_over(1.5)
    # one of the machine's logical CPUs, nearly all of the window (2 CPUs here: about 0.5)
    assert loaded["background_cpu"] > quiet["background_cpu"] + 0.2, (quiet, loaded)
    watch = CpuWatch()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        sum(range(10_000))  # this process's own work is the probe's, not background
    assert watch.shares()["background_cpu"] < loaded["background_cpu"] - 0.2


def test_a_probe_run_records_the_load_and_the_report_names_it_once() -> None:
    with one_core_spinning():
        run = run_probes(ProbeRequest(only=("memory",), quick=True, command="probe --quick --only memory"))
    doc = run.document
    shares = {m.params["background_cpu"] for m in doc.measurements}
    assert len(shares) == 1 and shares.pop() > 0.2  # one window per probe, on every figure of it
    buffer = io.StringIO()
    render_run(doc, Console(file=buffer, width=200, color_system=None))
    warnings = [line for line in buffer.getvalue().splitlines() if "other processes used" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning memory on cpu:"), buffer.getvalue()
    # compare says which of the runs shared its machine
    quiet = doc.model_copy(
        update={
            "run": doc.run.model_copy(update={"id": new_run_id()}),
            "measurements": [m.model_copy(update={"params": {**m.params, "background_cpu": 0.0}}) for m in doc.measurements],
        }
    )
    [note] = comparability_warnings([quiet, doc])
    assert note.startswith(f"run {doc.run.id[:12]} shared its machine: memory on cpu: other processes used")


def _figure(probe: str, device: str, **params: float) -> Measurement:
    return Measurement(probe=probe, metric="matmul_flops", unit="FLOP/s", dtype="fp32", device=device,
                       samples=[1e11, 1e11], params=params)  # fmt: skip


def test_the_warning_takes_the_worst_window_per_probe_and_device_and_names_steal() -> None:
    buffer = io.StringIO()
    warn_machine_load(
        [
            _figure("compute", "cpu", background_cpu=0.01, steal_cpu=0.0),
            _figure("compute", "cpu", background_cpu=0.30, steal_cpu=0.0),
            _figure("compute", "cuda:0", background_cpu=0.02, steal_cpu=0.12),
            _figure("memory", "cpu", background_cpu=0.04),
            _figure("training", "cpu"),  # a run stored before the load was measured
        ],
        Console(file=buffer, width=200, color_system=None),
    )
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("warning compute on cpu: other processes used 30% of the CPU")
    assert lines[1].startswith("warning compute on cuda:0: the hypervisor gave 12%")
