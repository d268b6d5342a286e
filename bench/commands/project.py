"""`flopwatt project`: train a model on a swarm of machines like this one, or in a datacenter?

Thin on purpose: parse options into a projection.Scenario, call the pure projection, render. The
rendering functions take the rich Console from the caller so tests can capture them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from bench import projection as pj
from bench.errors import FlopwattError
from bench.hardware import get_card
from bench.units import bytes_, seconds

#: Option defaults come from the projection's own stated defaults (docs/projection.md).
_PRICES = pj.Prices()
_SETTINGS = pj.Settings()
#: The link assumed for a datasheet card when no option gives one: a common cable/DSL home line.
DEFAULT_LINK = ("25mbit", "100mbit", "30ms")

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(bit|b|bps)?(?:/s)?\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$", re.IGNORECASE)


def parse_bitrate(text: str, what: str) -> float:
    """"25mbit", "25 Mbit/s", "1gbit", "100M", "25mbps" -> bit/s (a bare number is bit/s)."""
    match = _RATE.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} (write e.g. 25mbit, 1gbit)")
    scale = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match.group(2).lower()]
    return float(match.group(1)) * scale


def parse_duration(text: str, what: str) -> float:
    """"30ms", "0.03s", "250us" -> seconds (a bare number is seconds)."""
    match = _TIME.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} (write e.g. 30ms)")
    scale = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}[(match.group(2) or "").lower()]
    return float(match.group(1)) * scale


def load_run_document(ref: str, db: str | None = None) -> dict[str, Any]:
    """The stored run `ref` as a plain run-document dict (the one place this command touches the store)."""
    from bench.store import Store

    return Store(db).get(ref).model_dump(mode="json")


def project(
    params: Annotated[Optional[str], typer.Option(
        "--params", help="Model size: 125M, 1B, 3B, 7B, 13B, 70B, 405B (presets) or a count such as 6.5e9.")] = None,
    tokens: Annotated[Optional[str], typer.Option(
        "--tokens", help="Training tokens, e.g. 140B (default: 20 per parameter, Chinchilla).")] = None,
    card: Annotated[Optional[str], typer.Option(
        "--card", help="Swarm nodes are this reference card (datasheet figures), e.g. rtx4090, gtx1080.")] = None,
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Swarm nodes are like this stored run (its measured figures); id, prefix or 'latest'.")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="Number of swarm nodes (one GPU each).")] = 100,
    node_watts: Annotated[Optional[float], typer.Option(
        "--node-watts", help="With --run: the node's power while training, in W (a wall-meter reading), where "
        "the run has no power figure or to replace it.")] = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="auto (all), colocated, ddp, diloco or pipeline.")] = "auto",
    uplink: Annotated[Optional[str], typer.Option(
        "--uplink", help=f"Home upload, e.g. 25mbit (default: the run's, or {DEFAULT_LINK[0]} for --card).")] = None,
    downlink: Annotated[Optional[str], typer.Option(
        "--downlink", help=f"Home download (default: the run's, or {DEFAULT_LINK[1]} for --card).")] = None,
    rtt: Annotated[Optional[str], typer.Option(
        "--rtt", help=f"Round trip between nodes (default: the run's, or {DEFAULT_LINK[2]} for --card).")] = None,
    dc_card: Annotated[Optional[str], typer.Option(
        "--dc-card", help="The datacenter's GPU (default: --card if it is a datacenter card, else h100).")] = None,
    dc_gpus: Annotated[Optional[int], typer.Option(
        "--dc-gpus", help="Datacenter GPUs (default: as many as match the swarm's training FLOP/s).")] = None,
    mfu: Annotated[float, typer.Option("--mfu", help="Datacenter model FLOPs utilisation.")] = pj.DEFAULT_MFU,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Model shape: transformer layers.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Model shape: hidden size.")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Model shape: attention heads.")] = None,
    seq: Annotated[Optional[int], typer.Option("--seq", help="Model shape: sequence length.")] = None,
    vocab: Annotated[Optional[int], typer.Option("--vocab", help="Model shape: vocabulary size.")] = None,
    batch_tokens: Annotated[Optional[str], typer.Option(
        "--batch-tokens", help="Global batch in tokens per optimizer step, e.g. 4M.")] = None,
    diloco_h: Annotated[int, typer.Option("--diloco-h", help="DiLoCo local steps between syncs.")] = _SETTINGS.diloco_h,
    diloco_bits: Annotated[int, typer.Option("--diloco-bits", help="DiLoCo pseudo-gradient bits (8 = int8).")] = _SETTINGS.diloco_bits,
    home_kwh: Annotated[float, typer.Option("--kwh-price", help="Home electricity, USD per kWh.")] = _PRICES.home_usd_per_kwh,
    dc_kwh: Annotated[float, typer.Option("--dc-kwh-price", help="Datacenter electricity, USD per kWh.")] = _PRICES.datacenter_usd_per_kwh,
    pue: Annotated[float, typer.Option("--pue", help="Datacenter power usage effectiveness.")] = _PRICES.pue,
    years: Annotated[float, typer.Option("--amortise-years", help="Hardware write-off period.")] = _PRICES.amortisation_years,
    gco2: Annotated[float, typer.Option("--gco2-per-kwh", help="Grid carbon intensity.")] = _PRICES.grid_gco2_per_kwh,
    swarm_hardware: Annotated[bool, typer.Option(
        "--swarm-hardware/--no-swarm-hardware", help="Charge the swarm's own GPUs, amortised.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    db: Annotated[Optional[str], typer.Option("--db", help="Results database URL (for --run).")] = None,
) -> None:
    """Project time, energy, cost and CO2 of training a model: datacenter vs a swarm of home machines."""
    if (card is None) == (run is None):
        raise FlopwattError("give exactly one of --card NAME or --run ID")
    if node_watts is not None and run is None:
        raise FlopwattError("--node-watts goes with --run (a --card node has its datasheet power)")
    if card is not None and dc_card is None and get_card(card).datacenter:
        dc_card = card
    if card is not None:
        node = pj.with_link(pj.node_from_card(get_card(card)), uplink_bps=parse_bitrate(DEFAULT_LINK[0], "--uplink"),
                            downlink_bps=parse_bitrate(DEFAULT_LINK[1], "--downlink"),
                            rtt_s=parse_duration(DEFAULT_LINK[2], "--rtt"),
                            source=f"default home link {'/'.join(DEFAULT_LINK)}")
    else:
        node = pj.node_from_run(load_run_document(run or "latest", db), watts=node_watts)
    node = pj.with_link(node, uplink_bps=parse_bitrate(uplink, "--uplink") if uplink else None,
                        downlink_bps=parse_bitrate(downlink, "--downlink") if downlink else None,
                        rtt_s=parse_duration(rtt, "--rtt") if rtt else None)
    model = pj.model_spec(params, layers=layers, width=width, heads=heads, seq=seq, vocab=vocab,
                          batch_tokens=pj.parse_quantity(batch_tokens, "--batch-tokens") if batch_tokens else None)
    prices = pj.Prices(datacenter_usd_per_kwh=dc_kwh, home_usd_per_kwh=home_kwh, pue=pue, amortisation_years=years,
                       grid_gco2_per_kwh=gco2, charge_swarm_hardware=swarm_hardware)
    settings = pj.Settings(diloco_h=diloco_h, diloco_bits=diloco_bits)
    sc = pj.scenario(model, node, gpus, tokens=pj.parse_quantity(tokens, "--tokens") if tokens else None,
                     dc_card=dc_card or "h100", dc_gpus=dc_gpus, strategy=strategy, prices=prices, settings=settings, mfu=mfu)
    results = pj.project(sc)
    answers = pj.claims(sc, pj.project(replace(sc, strategies=pj.STRATEGIES)) if strategy != "auto" else results)
    if as_json:
        print(json.dumps(to_json(sc, results, answers), indent=2))
        return
    console = Console(highlight=False)
    render_projection(sc, results, console)
    render_claims(sc, answers, console)
    everything = replace(sc, strategies=pj.STRATEGIES)
    render_sweep(sc, pj.sweep(everything, sweep_counts(gpus), match_datacenter=dc_gpus is None), console)


def sweep_counts(gpus: int, points: int = 24) -> list[int]:
    """Node counts for the plot: log-spaced from 1 to ten times the chosen count."""
    top = max(10, min(10 * gpus, 1_000_000))
    return sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)})


def to_json(sc: pj.Scenario, results: list[pj.Projection], answers: pj.Claims) -> dict[str, Any]:
    """The --json document: the question, one object per strategy considered, the claims."""
    m = sc.model
    return {
        "model": {"name": m.name, "params": m.params, "layers": m.layers, "width": m.width, "heads": m.heads,
                  "seq": m.seq, "vocab": m.vocab, "batch_tokens": m.batch_tokens, "source": m.source},
        "tokens": sc.tokens,
        "swarm": {"node": sc.node.name, "nodes": sc.nodes, "figures": pj.node_sources(sc.node)},
        "datacenter": {"card": sc.dc_card.name, "gpus": sc.dc_gpus, "mfu": sc.mfu},
        "strategies": [r.to_dict() for r in results],
        "claims": {
            "nodes_per_reference": {k: {"by_flops": f, "by_memory": mem} for k, (f, mem) in
                                    answers.nodes_per_reference.items()},
            "link_ratios": dict(answers.link_ratios),
            "swarm_energy_per_token_j": answers.swarm_energy_per_token_j,
            "datacenter_energy_per_token_j": answers.datacenter_energy_per_token_j,
            "swarm_power_bill_usd": answers.swarm_power_bill_usd,
            "datacenter_purchase_usd": answers.datacenter_purchase_usd,
            "datacenter_cost_usd": answers.datacenter_cost_usd,
            "power_bill_exceeds_datacenter": answers.power_bill_exceeds_datacenter,
        },
    }


def _scaled(v: float, units: tuple[tuple[float, str], ...], digits: int = 3) -> str:
    """v in the largest unit it reaches; below them all, in the last (smallest) one."""
    scale, name = next(((s, n) for s, n in units if abs(v) >= s), units[-1])
    return f"{v / scale:.{digits}g}{name}"


def _usd(v: float | None) -> str:
    return "-" if v is None else "$" + _scaled(v, ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")))


def _count(v: float) -> str:
    return _scaled(v, ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")))


def _energy(joules: float) -> str:
    kwh = joules / 3.6e6
    return _scaled(kwh, ((1e6, " GWh"), (1e3, " MWh"), (1, " kWh")))


def _co2(kg: float) -> str:
    return _scaled(kg, ((1e3, " t"), (1, " kg")))


def render_projection(sc: pj.Scenario, results: list[pj.Projection], console: Console) -> None:
    """Strategies side by side: the datacenter next to the swarm strategies."""
    m = sc.model
    console.print(f"[bold]Training {m.name}[/bold] ({_count(m.params)} parameters, {m.layers} layers x {m.width}) "
                  f"on {_count(sc.tokens)} tokens: {sc.dc_gpus} x {sc.dc_card.name} in a datacenter vs "
                  f"{sc.nodes} x {sc.node.name} at home")
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    for r in results:
        table.add_column(r.strategy + ("" if r.feasible else " (no)"), justify="right")

    def row(label: str, fmt: Any) -> None:
        table.add_row(label, *[fmt(r) if r.feasible else "-" for r in results])

    table.add_row("hardware", *[r.hardware for r in results])
    table.add_row("feasible", *["yes" if r.feasible else f"[red]{r.reason}[/red]" for r in results])
    row("plan", lambda r: r.plan)
    row("wall clock", lambda r: seconds(r.wall_clock_s))
    row("GPU-hours", lambda r: f"{r.gpu_hours:,.0f}")
    row("step: compute", lambda r: seconds(r.compute_s))
    row("step: communication", lambda r: seconds(r.comm_s))
    row("step: total", lambda r: seconds(r.step_s))
    row("energy", lambda r: _energy(r.energy_j))
    row("energy per token", lambda r: f"{r.energy_per_token_j:.3g} J")
    row("cost: electricity", lambda r: _usd(r.energy_cost_usd))
    row("cost: hardware (amortised)", lambda r: _usd(r.hardware_cost_usd))
    row("cost: total", lambda r: _usd(r.cost_usd))
    row("CO2", lambda r: _co2(r.co2_kg))
    row("memory per GPU", lambda r: f"{bytes_(r.memory.total)} ({r.memory.recompute} recompute)")
    console.print(table)
    for key, label in (("flops", "node FLOP/s"), ("utilisation", "node utilisation"), ("watts", "node power"),
                       ("uplink_bps", "uplink")):
        src = pj.node_sources(sc.node).get(key)
        if src:
            console.print(f"  {label}: {src}", style="dim")


def render_claims(sc: pj.Scenario, answers: pj.Claims, console: Console) -> None:
    """The common claims, answered for these nodes."""
    console.print("\n[bold]The claims, for these nodes[/bold]")
    for key, (by_flops, by_memory) in answers.nodes_per_reference.items():
        console.print(f"  {by_flops:,.1f} x {sc.node.name} match one {get_card(key).name} in FLOP/s; "
                      f"{by_memory:,.1f} in memory")
    if answers.link_ratios:
        r = answers.link_ratios
        console.print(f"  H200 HBM moves {r['hbm']:,.0f}x, NVLink 4 {r['nvlink4']:,.0f}x and NVLink 5 "
                      f"{r['nvlink5']:,.0f}x what this uplink does")
    sw, dc = answers.swarm_energy_per_token_j, answers.datacenter_energy_per_token_j
    if sw and dc:
        console.print(f"  energy per token: swarm {sw:.3g} J vs datacenter {dc:.3g} J ({sw / dc:,.1f}x)")
    bill = answers.power_bill_exceeds_datacenter
    if bill is not None:
        verdict = "more" if bill else "less"
        console.print(f"  the swarm's power bill for this job ({_usd(answers.swarm_power_bill_usd)}) costs {verdict} "
                      f"than buying the datacenter ({_usd(answers.datacenter_purchase_usd)}, GPUs x "
                      f"{sc.prices.server_capex_factor:g} for servers and network)")
    else:
        console.print("  no swarm strategy is feasible for this model on these nodes")


def ascii_plot(xs: list[float], series: dict[str, list[float | None]], *, width: int = 60, height: int = 12,
               title: str = "") -> list[str]:
    """A log-log scatter in plain text: one marker (the series name's first letter) per series."""
    pts = [(x, y, name[0]) for name, ys in series.items() for x, y in zip(xs, ys) if y and y > 0 and x > 0]
    if not pts:
        return [f"{title}: nothing feasible to plot"]
    lx = [math.log10(x) for x, _, _ in pts]
    ly = [math.log10(y) for _, y, _ in pts]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    y0, y1 = min(ly), max(ly) if max(ly) > min(ly) else min(ly) + 1
    grid = [[" "] * width for _ in range(height)]
    for (_, _, mark), a, b in zip(pts, lx, ly):
        col = round((a - x0) / (x1 - x0) * (width - 1))
        row = height - 1 - round((b - y0) / (y1 - y0) * (height - 1))
        grid[row][col] = mark if grid[row][col] in (" ", mark) else "*"
    label_top, label_bottom = f"{10 ** y1:.3g}", f"{10 ** y0:.3g}"
    pad = max(len(label_top), len(label_bottom))
    lines = [title]
    for i, cells in enumerate(grid):
        label = label_top if i == 0 else label_bottom if i == height - 1 else ""
        lines.append(f"{label:>{pad}} |{''.join(cells)}")
    lines.append(" " * pad + " +" + "-" * width)
    lines.append(" " * pad + f"  {10 ** x0:<.3g} nodes (log)".ljust(width - 8) + f"{10 ** x1:.3g}")
    return lines


def render_sweep(sc: pj.Scenario, points: list[tuple[int, list[pj.Projection]]], console: Console) -> None:
    """Days and cost of the fastest swarm strategy against node count, the datacenter for reference."""
    xs = [float(n) for n, _ in points]
    swarm = [pj.best(rs) for _, rs in points]
    dc = [next((r for r in rs if r.strategy == "colocated" and r.feasible), None) for _, rs in points]
    days = {"swarm": [r.wall_clock_s / pj.DAY if r and r.wall_clock_s else None for r in swarm],
            "datacenter (FLOP-matched)": [r.wall_clock_s / pj.DAY if r and r.wall_clock_s else None for r in dc]}
    cost = {"swarm": [r.cost_usd if r else None for r in swarm],
            "datacenter (FLOP-matched)": [r.cost_usd if r else None for r in dc]}
    console.print()
    for line in ascii_plot(xs, days, title="Days to train (s = fastest swarm strategy, d = datacenter)"):
        console.print(line, markup=False, highlight=False)
    console.print()
    for line in ascii_plot(xs, cost, title="Cost in USD (s = fastest swarm strategy, d = datacenter)"):
        console.print(line, markup=False, highlight=False)
