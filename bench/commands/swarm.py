"""`flopwatt swarm`: train together across machines with DDP and DiLoCo; rank 0 stores what was measured.

The work is in probes.swarm (which imports torch, so only this command pays for it); here the
options are parsed, the run is assembled and stored in one transaction, and the table and the plots
are drawn.
"""

from __future__ import annotations

import os
import shlex
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich import box
from rich.table import Table

from bench.document import RunDocument, utc_now
from bench.errors import FlopwattError
from bench.options import DbOption, JsonOption, stdout
from bench.store import Store
from bench.units import si
from probes.measurement import Measurement

STRATEGY_CHOICES = {"ddp": ("ddp",), "diloco": ("diloco",), "both": ("ddp", "diloco")}
PLOT_SIZE = (76, 18)


def swarm(
    rank: Annotated[Optional[int], typer.Option(min=0, help="This machine's rank [default: $RANK].")] = None,
    world: Annotated[Optional[int], typer.Option(min=2, help="Number of machines [default: $WORLD_SIZE].")] = None,
    master: Annotated[
        Optional[str], typer.Option(help="Rank 0's HOST:PORT [default: $MASTER_ADDR:$MASTER_PORT].")
    ] = None,
    strategy: Annotated[str, typer.Option(help="ddp, diloco or both (one after the other, same model and data).")] = "both",
    minutes: Annotated[float, typer.Option(help="Training time per strategy, above 0 and up to 1440.")] = 5.0,
    diloco_h: Annotated[
        int, typer.Option("--diloco-h", help="DiLoCo's inner steps per outer step; both are evaluated this often.")
    ] = 16,
    bits: Annotated[int, typer.Option(help="Bits per value of DiLoCo's pseudo-gradients on the wire: 16 or 8.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    step_seconds: Annotated[
        float, typer.Option(help="Size the model so the slowest rank steps in about this long.")
    ] = 1.0,
    max_params: Annotated[
        float, typer.Option(help="Largest model to try; past it the micro-batch grows instead.")
    ] = 25e6,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the ranks to join, and for any sync before a rank counts as lost.")
    ] = 120.0,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Train a small GPT together with other machines, DDP and DiLoCo, and store what it took (rank 0)."""
    # c10d logs every failed connection attempt with a C++ stack trace; the error line says it all.
    # Set before torch loads; a TORCH_CPP_LOG_LEVEL the user exports wins.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from bench.runner import inventory, run_document, with_machine_load
    from probes.background import CpuWatch
    from probes.swarm import check_options, measure_swarm
    from probes.swarm_link import rendezvous

    strategies = STRATEGY_CHOICES.get(strategy)
    if strategies is None:
        raise FlopwattError(f"--strategy must be ddp, diloco or both, got {strategy!r}")
    check_options(strategies, minutes, diloco_h, bits, step_seconds, timeout, max_params)
    rv = rendezvous(rank, world, master, os.environ)
    store = Store(db) if rv.rank == 0 else None  # a bad database fails before minutes of training
    command = ["swarm", "--world", str(rv.world), "--strategy", strategy, "--minutes", f"{minutes:g}",
               "--diloco-h", str(diloco_h), "--bits", str(bits), "--step-seconds", f"{step_seconds:g}",
               "--max-params", f"{max_params:g}"] + (["--device", device] if device != "auto" else [])
    started = utc_now()
    host, devices, _ = inventory(device if device != "auto" else "auto")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as bar:  # into a file or pipe, a bar is only a stray blank line
        task = bar.add_task("starting", total=1.0)
        watch = CpuWatch()
        try:
            out = measure_swarm(rank=rv.rank, world=rv.world, master=rv.master, strategies=strategies, minutes=minutes,
                                h=diloco_h, bits=bits, device=device, step_s=step_seconds, max_params=max_params,
                                timeout_s=timeout,
                                progress=lambda step, done: bar.update(task, description=step, completed=done))
        except KeyboardInterrupt:
            bar.stop()
            err.print("interrupted: nothing was stored" if rv.rank == 0 else
                      "interrupted: this rank left the swarm; rank 0 stores what was measured before")
            raise typer.Exit(130) from None
    if rv.rank != 0:
        err.print(f"swarm: rank {rv.rank} is done; rank 0 ({rv.master}) stores the run")
        return
    assert store is not None
    result = with_machine_load(out.result, watch.shares())
    doc = run_document(shlex.join(command), started, host, devices, result)
    if out.aborted:
        doc = doc.model_copy(update={"run": doc.run.model_copy(update={"status": "aborted"})})
    store.save(doc)
    if as_json:
        print(doc.to_json())
    else:
        console = stdout()
        render_swarm(doc, console)
        console.print(f"Stored as run [bold]{doc.run.id[:12]}[/bold] in {store.url}")
    if out.aborted:
        err.print(f"[red]error:[/red] swarm: {escape(out.aborted)}")
        raise typer.Exit(2)


def _by_variant(doc: RunDocument) -> dict[str, dict[str, Measurement]]:
    found: dict[str, dict[str, Measurement]] = {}
    for m in doc.measurements:
        if m.probe == "swarm" and m.variant:
            found.setdefault(m.variant, {})[m.metric] = m
    return found


def _table_title(figures: dict[str, dict[str, Measurement]], strategies: list[str]) -> str:
    """Medians, and what one sync moves for each strategy."""
    sizes = []
    for strategy in strategies:
        comm = figures[strategy].get("swarm_comm_s")
        if comm:
            sizes.append(f"{strategy} {si(comm.params['payload_bytes'], 'B')} ({comm.params['bits']}-bit)")
    return "Medians; a sync moves " + ", ".join(sizes) if sizes else "Medians"


def _count(value: float) -> str:
    """12345 -> "12.3k": tokens without their unit, to keep the table in 80 columns."""
    return si(value, "").replace(" ", "")


def render_swarm(doc: RunDocument, console: Console) -> None:
    """The strategies side by side, one row per rank, then loss against tokens and against time."""
    figures = _by_variant(doc)
    strategies = [s for s in ("ddp", "diloco") if s in figures]
    if not strategies:
        console.print("No swarm figures in this run.")
        for item in doc.unavailable:
            console.print(f"[yellow]unavailable[/yellow] {item.probe}: {escape(item.reason)}")
        return
    first = next(iter(figures[strategies[0]].values())).params
    console.print(
        f"Swarm of {first['world']} ranks over {first['backend']}, loss in nat/token: GPT {first['n_layer']} layers x {first['n_embd']} "
        f"({first['model_params'] / 1e6:.2f}M parameters), {first['batch_size']} sequences of {first['seq_len']} "
        f"tokens per rank and step, {first['dtype']}; {first['budget_s']:.0f} s of training per strategy, "
        f"evaluated every {first['h']} steps"
    )
    table = Table(title=_table_title(figures, strategies), box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("Strategy", "Ranks", "Tokens", "Tokens/s", "Comm/sync", "Util.", "Loss", "Token factor"):
        table.add_column(column, justify="left" if column == "Strategy" else "right", no_wrap=True)
    for strategy in strategies:
        f = figures[strategy]
        speed, comm, busy, loss = (f.get(k) for k in ("swarm_tokens_per_s", "swarm_comm_s", "swarm_utilisation", "swarm_loss"))
        factor = f.get("swarm_token_factor")
        table.add_row(
            strategy,
            str(speed.params["world"]) if speed else "",
            _count(speed.params["tokens"]) if speed else "-",
            _count(speed.value) if speed else "-",
            si(comm.value, "s") if comm else "-",
            f"{busy.value:.0%}" if busy else "-",
            f"{loss.value:.3f}" if loss else "-",
            (f"{factor.value:.2f} ({factor.min:.2f}-{factor.max:.2f})" if factor else
             "1 (ref.)" if strategy == "ddp" and "diloco" in figures else "-"),
        )
    console.print(table)
    _rank_table(figures, strategies, console)
    loss = next((figures[s]["swarm_loss"] for s in strategies if "swarm_loss" in figures[s]), None)
    if loss is not None:
        p = loss.params
        console.print(f"Loss floor of the language: {p['loss_floor']:.3f} nat/token (entropy rate {p['entropy_rate']:.3f}; "
                      f"a model reading one token back gets {p['bigram_entropy']:.3f} at best, a uniform guess "
                      f"{p['uniform_loss']:.3f})")
    factor = figures.get("diloco", {}).get("swarm_token_factor")
    if factor is not None:
        p = factor.params
        console.print(f"Token factor: DiLoCo needed {p['diloco_tokens']:,.0f} tokens to reach {p['level']:.3f} nat, "
                      f"synchronous training {p['ddp_tokens']:,.0f} ({p['level_from']}); spread over "
                      f"{p['resamples']} resamples of the held-out sequences")
    for item in doc.unavailable:
        what = " ".join(x for x in (item.probe, item.metric, item.device) if x)
        console.print(f"[yellow]unavailable[/yellow] {escape(what)}: {escape(item.reason)}")
    curves = {s: figures[s]["swarm_loss"].params for s in strategies if "swarm_loss" in figures[s]}
    if curves:
        floor = next(iter(curves.values()))["loss_floor"]
        for key, scale, axis in (("curve_tokens", 1e-3, "thousand tokens"), ("curve_seconds", 1.0, "seconds of training")):
            series = {s: ([x * scale for x in c[key]], c["curve_loss"]) for s, c in curves.items()}
            console.print(loss_plot(series, axis, floor), markup=False, highlight=False)


def _rank_table(figures: dict[str, dict[str, Measurement]], strategies: list[str], console: Console) -> None:
    table = Table(title="Per rank", box=box.SIMPLE_HEAD)
    missing: dict[str, list[str]] = {}
    for column in ("Strategy", "Rank", "Device", "Compute per step", "Sent per sync", "vs ring", "Energy"):
        table.add_column(column, justify="left" if column in ("Strategy", "Device") else "right")
    for strategy in strategies:
        for variant in sorted(v for v in figures if v.startswith(f"{strategy} rank ")):
            f = figures[variant]
            compute, sent, own = f.get("swarm_compute_s"), f.get("swarm_sync_bytes"), f.get("swarm_tokens_per_s")
            energy = own.energy if own else None
            table.add_row(
                strategy, variant.rsplit(" ", 1)[1], compute.params.get("device_name", "") if compute else "",
                si(compute.value, "s") if compute else "-",
                si(sent.value, "B") if sent else "-",
                f"{sent.value / sent.params['ring_bytes']:.3f}" if sent else "-",
                f"{energy.joules:.3g} J" if energy and energy.joules is not None else
                ("n/a" if energy else "-"),
            )
            if energy and energy.unavailable_reason:
                missing.setdefault(energy.unavailable_reason, []).append(f"{strategy} rank {variant.rsplit(' ', 1)[1]}")
    console.print(table)
    for reason, where in missing.items():
        console.print(f"[yellow]unavailable[/yellow] energy ({', '.join(where)}): {escape(reason)}")


def loss_plot(series: dict[str, tuple[list[float], list[float]]], axis: str, floor: float) -> str:
    """Held-out loss against `axis` for each strategy, with the language's floor as a line.

    Each strategy has x values of its own (its evaluations fall at other tokens and seconds), which
    bench.plots.line_plot, with one x list for all series, does not take; hence plotext directly.
    """
    import plotext as plt

    plt.clf()
    plt.plotsize(*PLOT_SIZE)
    plt.theme("clear")
    for (name, (xs, ys)), marker in zip(series.items(), "dx"):
        plt.plot(xs, ys, label=f"{marker} {name}", marker=marker)
    plt.hline(floor)
    plt.title(f"held-out loss, nat/token (the line: floor {floor:.3f})")
    plt.xlabel(axis)
    text = plt.uncolorize(plt.build())
    plt.clf()
    return text
