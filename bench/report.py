"""Rich tables for runs: one run, the list of runs, and runs side by side.

Every function renders onto the Console it is given, so tests render to a fixed-width buffer.
"""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from bench.document import RunDocument
from bench.store import RunSummary
from bench.units import bytes_, si
from probes.measurement import Measurement

#: torch.utils.benchmark's thresholds: a spread (IQR/median) above these makes a figure suspect.
UNSTABLE_SPREAD = 0.10
#: Welch's test p-value under which a difference between two runs counts as real.
SIGNIFICANCE = 0.05

EFFICIENCY_UNITS = {"FLOP/s": "FLOP/J", "B/s": "B/J", "bit/s": "bit/J", "tokens/s": "tokens/J"}


def relative_spread(m: Measurement) -> float:
    """Interquartile range over median (0 with fewer than 4 samples to say otherwise)."""
    if m.n < 4 or m.value == 0:
        return 0.0
    q1, _, q3 = statistics.quantiles(m.samples, n=4)
    return (q3 - q1) / m.value


def render_run(doc: RunDocument, console: Console) -> None:
    host = doc.host
    console.print(
        f"[bold]Run {doc.run.id[:12]}[/bold]  {doc.run.started_at:%Y-%m-%d %H:%M} UTC  "
        f"({(doc.run.finished_at - doc.run.started_at).total_seconds():.0f} s, flopwatt {doc.run.tool_version})"
    )
    vm = " (virtual machine)" if host.virtualized else ""
    console.print(
        f"{host.cpu_model}, {host.physical_cores} cores / {host.logical_cores} threads, "
        f"{bytes_(host.ram_bytes or 0)} RAM, {host.os} {host.os_release}{vm}; "
        f"Python {host.python}, torch {host.torch} ({host.blas or 'unknown BLAS'}, {host.threads} threads)"
    )
    for device in doc.devices:
        if device.kind == "cpu":
            continue
        extra = ", ".join(
            part
            for part in (
                f"{bytes_(device.memory_bytes)}" if device.memory_bytes else "",
                f"{device.sm_count} SMs" if device.sm_count else "",
                f"sm_{device.compute_capability}" if device.compute_capability else "",
                f"PCIe {device.pcie_generation} x{device.pcie_width}" if device.pcie_generation else "",
                f"{device.power_limit_w:.0f} W limit" if device.power_limit_w else "",
            )
            if part
        )
        console.print(f"{device.id}: {device.name} ({extra})")
    console.print(measurement_table(doc.measurements))
    warn_unstable(doc.measurements, console, host.virtualized)
    warn_machine_load(doc.measurements, console)
    for item in doc.unavailable:
        what = " ".join(x for x in (item.probe, item.metric, item.dtype, item.device) if x)
        console.print(f"[yellow]unavailable[/yellow] {what}: {item.reason}")


#: Short names for the table; the metric names themselves stay the contract in --json.
LABELS = {
    "matmul_flops": "matmul",
    "mem_copy_bandwidth": "mem copy",
    "mem_triad_bandwidth": "mem triad",
    "h2d_bandwidth": "host→device",
    "d2h_bandwidth": "device→host",
    "net_upload": "upload",
    "net_download": "download",
    "net_rtt": "RTT",
    "allreduce_busbw": "all-reduce busbw",
    "allreduce_latency": "all-reduce latency",
    "train_tokens_per_s": "train tokens/s",
    "train_mfu": "train MFU",
    "train_max_params": "max trainable",
    "idle_power": "idle power",
    "command_energy": "command energy",
}


def _label(m: Measurement) -> str:
    return " ".join(x for x in (LABELS.get(m.metric, m.metric), m.dtype, m.variant) if x)


def _spread(m: Measurement) -> str:
    if m.value == 0 or m.n < 2:
        return ""
    return f"-{(m.value - m.min) / m.value:.0%} +{(m.max - m.value) / m.value:.0%}"


def measurement_table(measurements: list[Measurement]) -> Table:
    """One row per figure; columns with nothing to show (no peak known, no energy) are left out."""
    columns: list[tuple[str, str, object]] = [
        ("Figure", "left", _label),
        ("Device", "left", lambda m: m.device or ""),
        ("Median", "right", lambda m: si(m.value, m.unit)),
        ("Spread", "right", _spread),
        ("n", "right", lambda m: str(m.n)),
        ("Peak", "right", lambda m: f"{m.peak_fraction:.0%}" if m.peak_fraction is not None else ""),
        ("Energy", "right", _energy_cell),
        ("Efficiency", "right", _efficiency_cell),
        ("Parameters", "left", _params_cell),
    ]
    cells = [[render(m) for _, _, render in columns] for m in measurements]  # type: ignore[operator]
    # a column earns its width only if it tells rows apart: one device for every row needs no column
    keep = [
        i
        for i, (name, _, _) in enumerate(columns)
        if name in ("Figure", "Median")
        or (any(row[i] for row in cells) and (name != "Device" or len({row[i] for row in cells}) > 1))
    ]
    devices = sorted({m.device or "" for m in measurements})
    on = f" on {devices[0]}" if len(devices) == 1 and devices[0] else ""
    table = Table(title=f"Median of n repeats{on}; spread = min and max relative to it")
    for i in keep:
        table.add_column(columns[i][0], justify=columns[i][1])  # type: ignore[arg-type]
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table


def _efficiency_cell(m: Measurement) -> str:
    return si(m.efficiency, EFFICIENCY_UNITS.get(m.unit, m.unit + "/W")) if m.efficiency else ""


def _energy_cell(m: Measurement) -> str:
    if m.energy is None or m.energy.joules is None:
        return ""  # why is listed once per device below the table (the idle-power line)
    return f"{m.energy.joules:.3g} J @ {m.energy.watts_avg or 0:.0f} W"


def _params_cell(m: Measurement) -> str:
    p = m.params
    if m.metric == "matmul_flops":
        shape = [p.get("m"), p.get("n"), p.get("k")]
        text = f"{shape[0]}³" if len(set(shape)) == 1 else "×".join(map(str, shape))
        if p.get("window_s"):
            text += f", {p['window_s']:.0f} s"
        if p.get("threads"):
            text += f", {p['threads']} thr"
        if p.get("backend", "torch") != "torch":
            text += f", {p['backend']}"  # the faster BLAS on this CPU was numpy's, not torch's
        return text
    if m.metric.startswith("train_") and "n_layer" in p:
        return f"{p['n_layer']}L×{p.get('n_embd')}, seq {p.get('seq_len')}, batch {p.get('batch_size', '-')}"
    if "bytes_per_array" in p:
        return f"{bytes_(p['bytes_per_array'])}, {p.get('threads') or '-'} thr"
    if "bytes" in p:
        return f"{bytes_(p['bytes'])}"
    keep = [f"{k}={v}" for k, v in p.items() if isinstance(v, (int, float, str)) and len(str(v)) < 24]
    return ", ".join(keep[:4])


#: Share of the machine's CPU that other processes (or, in a VM, other guests via steal) may use
#: while a probe runs before its figures are called into question: a few percent is a desktop idling.
BUSY_MACHINE_SHARE = 0.05


def warn_unstable(measurements: list[Measurement], console: Console, virtualized: bool | None = None) -> None:
    """Say which figures are noisy and what to do about it (pyperf's habit).

    On a virtual machine a noisy CPU figure usually comes from other guests on the same host, which
    nothing inside the guest can quiet (docs/measurements.md: numpy and likwid-bench move as much).
    """
    for m in measurements:
        if relative_spread(m) < UNSTABLE_SPREAD:
            continue
        shared = (m.params.get("background_cpu") or 0.0) >= BUSY_MACHINE_SHARE
        if virtualized and m.device == "cpu" and not shared:
            advice = "other guests share this virtual machine's host cores; compare runs made in the same minutes"
        else:
            advice = "close other programs, plug in the power, and re-run"
        console.print(
            f"[yellow]warning[/yellow] {_label(m)} on {m.device}: spread (IQR) is "
            f"{relative_spread(m):.0%} of the median; {advice}"
        )


def warn_machine_load(measurements: list[Measurement], console: Console) -> None:
    """Say which probes shared the machine, once per probe and device (probes.background)."""
    for note in machine_load_notes(measurements):
        console.print(f"[yellow]warning[/yellow] {note}; its figures show a shared machine, not this one alone")


def machine_load_notes(measurements: list[Measurement]) -> list[str]:
    """One line per probe and device whose load passed BUSY_MACHINE_SHARE, such as "compute on cpu:
    other processes used 39% of the CPU while it ran"; the worst window counts where there are several."""
    seen: dict[tuple[str, str | None], tuple[float, float]] = {}
    for m in measurements:
        background, steal = seen.get((m.probe, m.device), (0.0, 0.0))
        seen[(m.probe, m.device)] = (
            max(background, m.params.get("background_cpu") or 0.0),
            max(steal, m.params.get("steal_cpu") or 0.0),
        )
    notes = []
    for (probe, device), (background, steal) in seen.items():
        causes = []
        if background >= BUSY_MACHINE_SHARE:
            causes.append(f"other processes used {background:.0%} of the CPU")
        if steal >= BUSY_MACHINE_SHARE:
            causes.append(f"the hypervisor gave {steal:.0%} of this VM's CPU time to other guests")
        if causes:
            notes.append(f"{probe} on {device}: {' and '.join(causes)} while it ran")
    return notes


def render_runs(runs: list[RunSummary], console: Console) -> None:
    table = Table(title="Stored runs (newest first)")
    table.add_column("Run")
    table.add_column("Started (UTC)")
    table.add_column("Command")
    table.add_column("Devices")
    table.add_column("Figures", justify="right")
    for run in runs:
        table.add_row(
            run.id[:12], f"{run.started_at:%Y-%m-%d %H:%M:%S}", run.command, ", ".join(run.devices), str(run.measurements)
        )
    console.print(table)


def verdict(base: Measurement, other: Measurement) -> str:
    """"1.23x" with a word on whether the difference is real, by Welch's t-test on the samples."""
    ratio = other.value / base.value if base.value else float("nan")
    if base.n < 2 or other.n < 2:
        return f"{ratio:.2f}x (too few samples to test)"
    if statistics.pstdev(base.samples) == 0 and statistics.pstdev(other.samples) == 0:
        return f"{ratio:.2f}x" if base.value != other.value else "1.00x (identical)"
    from scipy import stats  # here, not at the top: importing scipy.stats takes ~2 s that `runs` and `show` need not wait

    p = stats.ttest_ind(base.samples, other.samples, equal_var=False).pvalue
    if p != p:  # NaN: the test could not be computed; say so rather than guess.
        return f"{ratio:.2f}x (untestable)"
    if p >= SIGNIFICANCE:
        return f"{ratio:.2f}x (n.s., p={p:.2f})"
    return f"{ratio:.2f}x"


#: Keys that make runs incomparable if they differ (pyperf's _CHECKED_METADATA idea).
def comparability_warnings(docs: list[RunDocument]) -> list[str]:
    base = docs[0]
    warnings = []
    for doc in docs[1:]:
        for label, a, b in (
            ("CPU", base.host.cpu_model, doc.host.cpu_model),
            ("torch", base.host.torch, doc.host.torch),
            ("GPU driver", base.host.gpu_driver, doc.host.gpu_driver),
            ("flopwatt", base.run.tool_version, doc.run.tool_version),
            ("devices", [d.name for d in base.devices], [d.name for d in doc.devices]),
        ):
            if a != b:
                warnings.append(f"run {doc.run.id[:12]} differs from {base.run.id[:12]} in {label}: {b} vs {a}")
    for doc in docs:
        warnings += [f"run {doc.run.id[:12]} shared its machine: {note}" for note in machine_load_notes(doc.measurements)]
    return warnings


def _efficiency_row(sample: Measurement, base: Measurement | None, figures: list[Measurement | None]) -> list[str]:
    """The same figure per watt, as a ratio to the baseline's (no test: one window each)."""
    unit = EFFICIENCY_UNITS.get(sample.unit, sample.unit + "/W")
    row = ["  per watt", ""]
    for i, m in enumerate(figures):
        row.append(si(m.efficiency, unit) if m and m.efficiency else "-")
        if i:
            both = base and base.efficiency and m and m.efficiency
            row.append(f"{m.efficiency / base.efficiency:.2f}x" if both else "")  # type: ignore[union-attr,operator]
    return row


def render_compare(docs: list[RunDocument], console: Console) -> None:
    """Runs side by side; each later run as a ratio to the first, with Welch's test."""
    table = Table(title=f"Compared with run {docs[0].run.id[:12]} (ratio > 1: higher figure; n.s.: not significant)")
    table.add_column("Figure")
    table.add_column("Device")
    for i, doc in enumerate(docs):
        table.add_column(f"{doc.run.id[:12]}", justify="right")
        if i:
            table.add_column("ratio", justify="right")
    by_run = [{m.key: m for m in doc.measurements} for doc in docs]
    keys = list(dict.fromkeys(k for figures in by_run for k in figures))
    for key in keys:
        sample = next(figures[key] for figures in by_run if key in figures)
        row = [_label(sample), sample.device or ""]
        base = by_run[0].get(key)
        for i, figures in enumerate(by_run):
            m = figures.get(key)
            row.append(si(m.value, m.unit) if m else "-")
            if i:
                row.append(verdict(base, m) if base and m else "")
        table.add_row(*row)
        if any(figures.get(key) and figures[key].efficiency for figures in by_run):
            table.add_row(*_efficiency_row(sample, base, [figures.get(key) for figures in by_run]))
    console.print(table)
    for warning in comparability_warnings(docs):
        console.print(f"[yellow]warning[/yellow] {warning}")
