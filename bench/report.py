"""Rich tables for runs: one run, the list of runs, and runs side by side.

Every function renders onto the Console it is given, so tests render to a fixed-width buffer.
"""

from __future__ import annotations

import ipaddress
import re
import statistics

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.cards import CardFigure
from bench.document import RunDocument
from bench.hardware import normalize_dtype
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
    console.print("Median of n repeats; spread = min and max relative to the median")
    for table in measurement_tables(doc.measurements, console.width):
        console.print(table)
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
    return " ".join(x for x in (LABELS.get(m.metric, m.metric), _short_dtype(m.dtype), _variant(m.variant)) if x)


def _short_dtype(dtype: str | None) -> str | None:
    """"float32" -> "fp32": the table's spelling, whatever the probe wrote."""
    return normalize_dtype(dtype) if dtype else None


def _variant(variant: str | None) -> str | None:
    """A message size such as "4194304B" reads as "4 MiB"."""
    if variant and re.fullmatch(r"\d+B", variant):
        return bytes_(int(variant[:-1]))
    return variant


def _spread(m: Measurement) -> str:
    if m.value == 0 or m.n < 2:
        return ""
    return f"-{(m.value - m.min) / m.value:.0%} +{(m.max - m.value) / m.value:.0%}"


def measurement_tables(measurements: list[Measurement], width: int | None = None) -> list[Table]:
    """One table per probe and device, in the order the probes ran: each shows only the columns its
    figures need, so a run with GPU dtypes and all-reduce sizes still fits 80 columns."""
    groups: dict[tuple[str, str | None], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.probe, m.device), []).append(m)
    return [
        measurement_table(group, title=f"{probe} on {device}" if device else probe, width=width)
        for (probe, device), group in groups.items()
    ]


#: The Parameters column needs this much room to be worth showing; narrower, it is left out.
PARAMETERS_MIN_WIDTH = 14


def measurement_table(measurements: list[Measurement], *, title: str | None = None, width: int | None = None) -> Table:
    """One row per figure; columns with nothing to show (no peak known, no energy) are left out, and
    Parameters too where `width` leaves them no room (`show --json` has them all). Figure names and
    numbers never wrap."""
    columns: list[tuple[str, str, object]] = [
        ("Figure", "left", _label),
        ("Device", "left", lambda m: m.device or ""),
        ("Median", "right", lambda m: si(m.value, m.unit)),
        ("Spread", "right", _spread),
        ("n", "right", lambda m: str(m.n)),
        ("Peak", "right", lambda m: f"{m.peak_fraction:.0%}" if m.peak_fraction is not None else ""),
        ("Power", "right", _power_cell),
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
    fixed = [i for i in keep if columns[i][0] != "Parameters"]
    needed = sum(max(len(columns[i][0]), *(len(row[i]) for row in cells)) for i in fixed) + 2 * len(fixed)
    caption = None
    if width is not None and len(fixed) < len(keep) and needed + PARAMETERS_MIN_WIDTH > width:
        keep, caption = fixed, "parameters left out at this width: see flopwatt show RUN --json"
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)  # fmt: skip
    for i in keep:
        name, justify, _ = columns[i]
        wraps = name == "Parameters"
        table.add_column(name, justify=justify, no_wrap=not wraps, min_width=PARAMETERS_MIN_WIDTH if wraps else None)  # type: ignore[arg-type]
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table


def _efficiency_cell(m: Measurement) -> str:
    return si(m.efficiency, EFFICIENCY_UNITS.get(m.unit, m.unit + "/W")) if m.efficiency else ""


def _power_cell(m: Measurement) -> str:
    """Average power over the figure's window (its joules and seconds are in --json)."""
    if m.energy is None or not m.energy.watts_avg:
        return ""  # why is listed once per device below the table (the idle-power line)
    return f"{m.energy.watts_avg:.0f} W"


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
    if m.probe == "collective":
        size = bytes_(p["bytes"]) if m.metric == "allreduce_latency" and p.get("bytes") else ""  # busbw: in the name
        return ", ".join(x for x in (size, f"{p['world']} ranks" if p.get("world") else "", p.get("backend", ""),
                                     f"{p['iterations']} iter" if p.get("iterations") else "") if x)  # fmt: skip
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
    """Say which figures are noisy and what to do about it (pyperf's habit): one line per probe, device
    and cause, however many figures share it.

    A probe that shared the machine is left to warn_machine_load, which names that cause. A
    collective whose ranks all ran on this machine is noisy because its peers share the cores: that
    is expected, and the advice says so. On a virtual machine a noisy CPU figure usually comes from
    other guests on the same host, which nothing inside the guest can quiet (docs/measurements.md:
    numpy and likwid-bench move as much).
    """
    groups: dict[tuple[str, str | None, str], list[Measurement]] = {}
    for m in measurements:
        if relative_spread(m) < UNSTABLE_SPREAD or (_busy(m) and not same_host_peers(m)):
            continue
        groups.setdefault((m.probe, m.device, _noise_advice(m, virtualized)), []).append(m)
    for (probe, device, advice), noisy in groups.items():
        spreads = sorted(relative_spread(m) for m in noisy)
        if len(noisy) == 1:
            what = f"{_label(noisy[0])} on {device}: spread (IQR) is {spreads[0]:.0%} of the median"
        else:
            labels = [_label(m) for m in noisy]
            named = ", ".join(labels) if len(labels) <= 3 else f"{labels[0]} … {labels[-1]}"
            what = (f"{probe} on {device}: {len(noisy)} figures ({named}) spread (IQR) "
                    f"{spreads[0]:.0%}-{spreads[-1]:.0%} of their median")  # fmt: skip
        console.print(f"[yellow]warning[/yellow] {what}; {advice}")


def _noise_advice(m: Measurement, virtualized: bool | None) -> str:
    peers = same_host_peers(m)
    if peers:
        who = "its peer rank runs" if peers == 1 else f"its {peers} peer ranks run"
        shares = "shares" if peers == 1 else "share"
        return (f"expected: {who} on this machine (rank 0 at {m.params.get('master')}) and {shares} its cores, so "
                "these figures measure this machine, not a link; run the ranks on separate machines for that")
    if virtualized and m.device == "cpu":
        return "other guests share this virtual machine's host cores; compare runs made in the same minutes"
    return "close other programs, plug in the power, and re-run"


def same_host_peers(m: Measurement) -> int:
    """How many other ranks of a collective ran on this machine, where that is certain: all of them
    when rank 0 listened on a loopback address, which only this machine's processes can reach."""
    if m.probe != "collective":
        return 0
    host = str(m.params.get("master") or "").rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return max(0, int(m.params.get("world") or 1) - 1) if loopback else 0


def _busy(m: Measurement) -> bool:
    return max(m.params.get("background_cpu") or 0.0, m.params.get("steal_cpu") or 0.0) >= BUSY_MACHINE_SHARE


def warn_machine_load(measurements: list[Measurement], console: Console) -> None:
    """Say which probes shared the machine, once per probe and device (probes.background)."""
    for note in machine_load_notes(measurements):
        console.print(f"[yellow]warning[/yellow] {note}; its figures show a shared machine, not this one alone")


def machine_load_notes(measurements: list[Measurement]) -> list[str]:
    """One line per probe and device whose load passed BUSY_MACHINE_SHARE, such as "compute on cpu:
    other processes used 39% of the CPU while it ran"; the worst window counts where there are several.

    The CPU that a collective's peer ranks on this same machine use is the probe's own work, not another
    program's, so it is not counted (the hypervisor's steal still is)."""
    seen: dict[tuple[str, str | None], tuple[float, float]] = {}
    for m in measurements:
        background, steal = seen.get((m.probe, m.device), (0.0, 0.0))
        seen[(m.probe, m.device)] = (
            max(background, 0.0 if same_host_peers(m) else m.params.get("background_cpu") or 0.0),
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


# -- one run beside reference cards (compare RUN --card) -------------------------------------------


def render_cards(doc: RunDocument, figures: list[CardFigure], own: set[str], console: Console) -> None:
    """One table per figure of the run, a row per card; every card figure cites its source below."""
    console.print(
        f"Run {doc.run.id[:12]} beside reference cards. Ratio: this run ÷ the card's figure, the one measured "
        "and published where there is one (Achieved), else the datasheet's. N: how many of this machine "
        "add up to one card."
    )
    sources: dict[str, int] = {}

    def cite(value: float | None, unit: str, source: str | None) -> str:
        if value is None or source is None:
            return "–"
        number = sources.setdefault(source, len(sources) + 1)
        return f"{_figure(value, unit)} [{number}]"

    groups: dict[tuple[str, str | None, str | None, str | None, bool], list[CardFigure]] = {}
    for f in figures:
        groups.setdefault((f.metric, f.dtype, f.variant, f.device, f.per_watt), []).append(f)
    for rows in groups.values():
        first = rows[0]
        label = _card_label(first) + (" per watt" if first.per_watt else "")
        on = f" on {first.device}" if first.device else ""
        table = Table(title=f"{label}{on}: this run {_figure(first.value, first.unit)}", title_justify="left")
        for column in ("Card", "Datasheet", "Achieved", "Ratio", "N"):
            table.add_column(column, justify="left" if column == "Card" else "right")
        for f in rows:
            name = f.card.name + (" (this run's)" if f.card.key in own else "")
            achieved = cite(f.achieved.value, f.unit, f"{f.achieved.source} ({f.achieved.date})") if f.achieved else "–"
            table.add_row(name, cite(f.datasheet, f.unit, f.datasheet_source), achieved,
                          _times(f.ratio), _count(f.machines_per_card))  # fmt: skip
        console.print(table)
    console.print("Sources")
    for source, number in sources.items():
        console.print(f"[{number}] {escape(source)}", soft_wrap=True)


def _card_label(f: CardFigure) -> str:
    if f.metric == "memory_bytes":
        return "memory size"
    return " ".join(x for x in (LABELS.get(f.metric, f.metric), _short_dtype(f.dtype), f.variant) if x)


def _figure(value: float, unit: str) -> str:
    return bytes_(value) if unit == "B" else si(value, unit)


def _times(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def _count(n: float | None) -> str:
    if n is None:
        return ""
    return f"{n:,.0f}" if n >= 100 else f"{n:.3g}"
