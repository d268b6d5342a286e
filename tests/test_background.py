"""What else used the machine while a probe ran: real CPU load from real second processes.

The probe's figures must say when they come from a shared machine, and the report must say so
once per probe, so nobody compares a loaded run with a quiet one unawares. The tests load half
the machine's logical CPUs (one spinner on 2, 32 on 64) and check the share the watch reports
against the CPU time the spinners themselves used in the same window, so they hold on any core
count. Only a machine that other work already saturates is skipped: it leaves nothing to measure.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import psutil
import pytest
from rich.console import Console

from bench.document import new_run_id
from bench.report import comparability_warnings, render_run, warn_machine_load
from bench.runner import ProbeRequest, run_probes
from probes import background
from probes.background import CpuWatch
from probes.measurement import Measurement

CPUS = psutil.cpu_count() or 1
LOAD = max(1, CPUS // 2)
#: Other processes' share of the CPU over which there is too little left to load and measure.
SATURATED = 0.5


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


@contextmanager
def spinners(count: int) -> Iterator[list[psutil.Process]]:
    """`count` other processes each keeping a logical CPU busy, as a game or a build would."""
    popens = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        processes = [psutil.Process(p.pid) for p in popens]
        deadline = time.monotonic() + 10
        while any(p.cpu_times().user < 0.05 for p in processes):  # past interpreter start-up
            assert time.monotonic() < deadline, "the spinners did not start"
            time.sleep(0.02)
        yield processes
    finally:
        for p in popens:
            p.kill()
            p.wait()


def quiet_share(seconds: float = 1.0) -> float:
    """Other processes' share now; skips the test when the machine is already saturated."""
    watch = CpuWatch()
    time.sleep(seconds)
    share = watch.shares()["background_cpu"]
    if share > SATURATED:
        pytest.skip(f"the machine is already busy: other processes used {share:.0%} of its {CPUS} CPUs")
    return share


def test_other_processes_show_as_their_share_of_all_cpus() -> None:
    before_s = quiet_share()
    with spinners(LOAD) as load:
        used_s, started_s, watch = cpu_seconds(load), time.perf_counter(), CpuWatch()
        time.sleep(2.0)
        shares, wall_s = watch.shares(), time.perf_counter() - started_s
        used_s = cpu_seconds(load) - used_s
    after_s = quiet_share()

    spinners_share = used_s / (CPUS * wall_s)
    assert spinners_share > 0.2, f"{LOAD} spinners ran only {spinners_share:.0%} of {CPUS} CPUs"
    assert shares["background_cpu"] - (before_s + after_s) / 2 == pytest.approx(spinners_share, abs=0.1)


def test_this_processs_own_work_is_not_background() -> None:
    """LOAD threads of this process hash 1 MiB blocks (hashlib lets go of the GIL), in parallel."""
    before_s = quiet_share()
    block, stop = bytes(1 << 20), threading.Event()

    def hash_until_stopped() -> None:
        while not stop.is_set():
            hashlib.sha256(block).digest()

    own = psutil.Process()
    threads = [threading.Thread(target=hash_until_stopped) for _ in range(LOAD)]
    own_s, started_s, watch = own.cpu_times(), time.perf_counter(), CpuWatch()
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join()
    shares, wall_s, own_after = watch.shares(), time.perf_counter() - started_s, own.cpu_times()
    after_s = quiet_share()

    own_share = (own_after.user + own_after.system - own_s.user - own_s.system) / (CPUS * wall_s)
    assert own_share > 0.2, f"{LOAD} hashing threads ran only {own_share:.0%} of {CPUS} CPUs"
    assert shares["background_cpu"] == pytest.approx((before_s + after_s) / 2, abs=0.1)


SystemTimes = namedtuple("SystemTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
OwnTimes = namedtuple("OwnTimes", "user system children_user children_system")


def test_the_shares_are_cpu_seconds_over_all_logical_cpus_times_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arithmetic on a 64-CPU machine, from /proc/stat-like counters fed by hand."""
    system = iter(
        [
            SystemTimes(1000, 10, 300, 50000, 20, 5, 5, 100, 200, 0),
            # +40 user (5 of it guest, already inside user), +8 system, +1 irq, +3 steal, +80 idle
            SystemTimes(1040, 10, 308, 50080, 20, 6, 5, 103, 205, 0),
        ]
    )
    own = iter([OwnTimes(50, 10, 1, 1), OwnTimes(56, 12, 2, 1)])  # +9 s: ours, not background
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(background, "psutil", SimpleNamespace(
        cpu_count=lambda: 64, cpu_times=lambda: next(system), Process=lambda: SimpleNamespace(cpu_times=lambda: next(own)),
    ))  # fmt: skip
    monkeypatch.setattr(background, "time", SimpleNamespace(perf_counter=lambda: next(clock)))

    shares = CpuWatch().shares()
    # capacity 64 CPUs x 2 s = 128 CPU-seconds; others (40 + 8 + 1) - 9 = 40 s; steal 3 s
    assert shares == {"background_cpu": round(40 / 128, 3), "steal_cpu": round(3 / 128, 3)}


def test_a_probe_run_records_the_load_and_the_report_names_it_once() -> None:
    quiet_share()
    marks: dict[str, float] = {}
    with spinners(LOAD) as load:

        def progress(step: str, _fraction: float) -> None:
            if step.startswith("memory on cpu: "):  # the probe's own steps, inside its watch
                marks.setdefault("start", cpu_seconds(load))
                marks.setdefault("start_s", time.perf_counter())
                marks["end"], marks["end_s"] = cpu_seconds(load), time.perf_counter()

        run = run_probes(ProbeRequest(only=("memory",), quick=True, command="probe --quick --only memory"), progress)
    doc = run.document
    shares = {m.params["background_cpu"] for m in doc.measurements}
    assert len(shares) == 1  # one window per probe, on every figure of it
    spinners_share = (marks["end"] - marks["start"]) / (CPUS * (marks["end_s"] - marks["start_s"]))
    assert shares.pop() >= spinners_share - 0.1 > 0.05
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
