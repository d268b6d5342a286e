"""`flopwatt project`: train a model on a swarm of machines like this one, or in a datacenter?

Thin on purpose: parse options into a projection.Scenario, call the pure projection, render. The
rendering functions take the rich Console from the caller so tests can capture them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from bench import projection as pj
from bench.errors import FlopwattError
from bench.hardware import get_card
from bench.plots import duration_ticks, line_plot
from bench.projection.model import check
from bench.projection.nodes import MAX_GPUS_PER_NODE
from bench.swarm_run import beside, load_swarm_run, render_swarm_run, settings_with, with_swarm_link
from bench.swarm_run import to_json as swarm_run_json
from bench.units import bytes_, co2, count, duration_label, energy, parse_bitrate, parse_duration, parse_size, \
    seconds, usd

#: Option defaults come from the projection's own stated defaults (docs/projection.md).
_PRICES = pj.Prices()
_SETTINGS = pj.Settings()
#: The link assumed for a datasheet card when no option gives one: a common cable/DSL home line.
DEFAULT_LINK = ("25mbit", "100mbit", "30ms")


def load_run_document(ref: str, db: str | None = None) -> dict[str, Any]:
    """The stored run `ref` as a plain run-document dict (the one place this command touches the store)."""
    from bench.store import Store

    return Store(db).get(ref).model_dump(mode="json")


def _card_node(name: str, gpus_per_node: int, node_mfu: float | None) -> pj.Node:
    node = pj.node_from_card(get_card(name), utilisation=node_mfu, gpus=gpus_per_node)
    return pj.with_link(node, uplink_bps=parse_bitrate(DEFAULT_LINK[0], "--uplink"),
                        downlink_bps=parse_bitrate(DEFAULT_LINK[1], "--downlink"),
                        rtt_s=parse_duration(DEFAULT_LINK[2], "--rtt"), source=f"default home link {'/'.join(DEFAULT_LINK)}")


def _run_node(ref: str, db: str | None, gpus_per_node: int, node_mfu: float | None,
              node_watts: float | None = None) -> pj.Node:
    node = pj.node_from_run(load_run_document(ref, db), watts=node_watts)
    if node_mfu is not None:
        node = replace(node, utilisation=pj.Figure(node_mfu, "option --node-mfu"))
    return replace(node, gpus=gpus_per_node) if gpus_per_node != 1 else node


def build_swarm(*, card: str | None, runs: list[str], nodes_csv: Path | None, gpus: int, gpus_per_node: int,
                node_mfu: float | None, db: str | None, node_watts: float | None = None) -> pj.Swarm:
    """The swarm from --card, one or more --run (ID or ID*COUNT), or a --nodes-csv file."""
    given = sum(x is not None and x != [] for x in (card, runs or None, nodes_csv))
    if given != 1:
        raise FlopwattError("give exactly one of --card NAME, --run ID (repeatable) or --nodes-csv FILE")
    # Before `gpus % gpus_per_node`, and for a run's node too, which takes the count as given.
    check(gpus_per_node, "gpus per node", 1, MAX_GPUS_PER_NODE, low_inclusive=True)
    if nodes_csv is not None:
        try:
            text = nodes_csv.read_text()
        except OSError as exc:
            raise FlopwattError(f"--nodes-csv: cannot read {nodes_csv}: {exc.strerror}") from None

        def resolve(kind: str, name: str) -> pj.Node:
            return _card_node(name, gpus_per_node, node_mfu) if kind == "card" else \
                _run_node(name, db, gpus_per_node, node_mfu, node_watts)

        return pj.parse_nodes_csv(text, resolve)
    if card is not None:
        if gpus % gpus_per_node:
            raise FlopwattError(f"--gpus {gpus} is not a whole number of nodes of --gpus-per-node {gpus_per_node}")
        return pj.Swarm.uniform(_card_node(card, gpus_per_node, node_mfu), gpus // gpus_per_node)
    if len(runs) == 1 and "*" not in runs[0]:
        if gpus % gpus_per_node:
            raise FlopwattError(f"--gpus {gpus} is not a whole number of nodes of --gpus-per-node {gpus_per_node}")
        return pj.Swarm.uniform(_run_node(runs[0], db, gpus_per_node, node_mfu, node_watts), gpus // gpus_per_node)
    groups = []
    for ref in runs:
        name, _, times = ref.partition("*")
        try:
            n = int(times) if times else 1
        except ValueError:
            raise FlopwattError(f"--run {ref!r}: write ID or ID*COUNT") from None
        groups.append(pj.NodeGroup(_run_node(name, db, gpus_per_node, node_mfu, node_watts), n))
    return pj.Swarm(tuple(groups))


def _map_nodes(swarm: pj.Swarm, fn: Any) -> pj.Swarm:
    return pj.Swarm(tuple(pj.NodeGroup(fn(g.node), g.count) for g in swarm.groups))


def project(
    params: Annotated[Optional[str], typer.Option(
        "--params", help="Model size: 125M, 1B, 3B, 7B, 13B, 70B, 405B (presets) or a count such as 6.5e9.")] = None,
    tokens: Annotated[Optional[str], typer.Option(
        "--tokens", help="Training tokens, e.g. 140B (default: 20 per parameter, Chinchilla).")] = None,
    card: Annotated[Optional[str], typer.Option(
        "--card", help="Swarm nodes are this reference card (datasheet figures), e.g. rtx4090, gtx1080.")] = None,
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", help="Swarm nodes are like this stored run (its measured figures): id, prefix or 'latest'; "
        "repeat as ID*COUNT for an uneven swarm.")] = None,
    nodes_csv: Annotated[Optional[Path], typer.Option(
        "--nodes-csv", help="An uneven swarm: CSV with card or run, count, and optional uplink, downlink, rtt, "
        "hours_per_day.")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs in the swarm, all nodes together.")] = 100,
    gpus_per_node: Annotated[int, typer.Option(
        "--gpus-per-node", help="GPUs per swarm node (sharded with FSDP inside the node when the model needs it).")] = 1,
    node_mfu: Annotated[Optional[float], typer.Option(
        "--node-mfu", help="Swarm nodes' training share of their FLOP/s (default: measured, or 40% of peak).")] = None,
    node_watts: Annotated[Optional[float], typer.Option(
        "--node-watts", help="The whole node's power while training, in W (a wall-meter reading).")] = None,
    node_idle_watts: Annotated[Optional[float], typer.Option(
        "--node-idle-watts", help="The whole node's power while waiting on the network, in W.")] = None,
    host_watts: Annotated[Optional[float], typer.Option(
        "--host-watts", help="The rest of the PC beside its GPUs while training, in W (default 150, assumed).")] = None,
    host_idle_watts: Annotated[Optional[float], typer.Option(
        "--host-idle-watts", help="The rest of the PC while waiting, in W (default 60, assumed).")] = None,
    host_ram: Annotated[Optional[str], typer.Option(
        "--host-ram", help="Host RAM per node, e.g. 64GiB (default: the run's, or 32GiB).")] = None,
    hours_per_day: Annotated[Optional[float], typer.Option(
        "--hours-per-day", help="Hours a day each node is online for the job (default 24).")] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="auto (all), colocated, ddp, diloco or pipeline.")] = "auto",
    uplink: Annotated[Optional[str], typer.Option(
        "--uplink", help=f"Home upload, bits or bytes: 25mbit, 100MB/s (default: the run's, or {DEFAULT_LINK[0]}).")] = None,
    downlink: Annotated[Optional[str], typer.Option(
        "--downlink", help=f"Home download (default: the run's, or {DEFAULT_LINK[1]}).")] = None,
    rtt: Annotated[Optional[str], typer.Option(
        "--rtt", help=f"Round trip between nodes (default: the run's, or {DEFAULT_LINK[2]}).")] = None,
    dc_card: Annotated[Optional[str], typer.Option(
        "--dc-card", help="The datacenter's GPU (default: --card if it is a datacenter card, else h100).")] = None,
    dc_gpus: Annotated[Optional[int], typer.Option(
        "--dc-gpus", help="Datacenter GPUs (default: as many as match the swarm's training FLOP/s at --mfu).")] = None,
    dc_gpu_hour_price: Annotated[Optional[float], typer.Option(
        "--dc-gpu-hour-price", help="Rent the datacenter at this USD per GPU-hour instead of owning it.")] = None,
    mfu: Annotated[float, typer.Option("--mfu", help="Datacenter model FLOPs utilisation.")] = pj.DEFAULT_MFU,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Model shape: transformer layers.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Model shape: hidden size.")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Model shape: attention heads.")] = None,
    seq: Annotated[Optional[int], typer.Option("--seq", help="Model shape: sequence length.")] = None,
    vocab: Annotated[Optional[int], typer.Option("--vocab", help="Model shape: vocabulary size.")] = None,
    batch_tokens: Annotated[Optional[str], typer.Option(
        "--batch-tokens", help="Global batch in tokens per optimizer step, e.g. 4M.")] = None,
    critical_batch: Annotated[Optional[str], typer.Option(
        "--critical-batch", help="Critical batch in tokens (default: Kaplan et al. 2020 at the final loss).")] = None,
    diloco_h: Annotated[int, typer.Option("--diloco-h", help="DiLoCo local steps between syncs.")] = _SETTINGS.diloco_h,
    diloco_bits: Annotated[int, typer.Option(
        "--diloco-bits", help="DiLoCo pseudo-gradient bits (8 = int8).")] = _SETTINGS.diloco_bits,
    diloco_token_factor: Annotated[Optional[float], typer.Option(
        "--diloco-token-factor", help="Tokens DiLoCo needs over synchronous training (1: the same tokens, whatever "
        "the quality); default: the literature band.")] = None,
    grad_bits: Annotated[int, typer.Option("--grad-bits", help="Bits per gradient value all-reduced.")] = _SETTINGS.grad_bits,
    activation_bits: Annotated[int, typer.Option(
        "--activation-bits", help="Bits per activation sent between pipeline stages.")] = _SETTINGS.activation_bits,
    chunked_ce: Annotated[bool, typer.Option(
        "--chunked-ce/--full-logits", help="Cross-entropy in chunks (no full fp32 logits), as practitioners do.")] = True,
    optimizer_8bit: Annotated[bool, typer.Option("--optimizer-8bit", help="Adam moments in 8 bits.")] = False,
    offload_optimizer: Annotated[bool, typer.Option(
        "--offload-optimizer", help="Optimizer state and step in host RAM (ZeRO-Offload).")] = False,
    home_kwh: Annotated[float, typer.Option("--kwh-price", help="Home electricity, USD per kWh.")] = _PRICES.home_usd_per_kwh,
    dc_kwh: Annotated[float, typer.Option("--dc-kwh-price", help="Datacenter electricity, USD per kWh.")] = _PRICES.datacenter_usd_per_kwh,
    pue: Annotated[float, typer.Option("--pue", help="Datacenter power usage effectiveness.")] = _PRICES.pue,
    years: Annotated[float, typer.Option("--amortise-years", help="Hardware write-off period.")] = _PRICES.amortisation_years,
    gco2: Annotated[float, typer.Option("--gco2-per-kwh", help="Grid carbon intensity.")] = _PRICES.grid_gco2_per_kwh,
    swarm_hardware: Annotated[str, typer.Option(
        "--swarm-hardware", help="Charge the swarm's card(s), its whole pc, or none (power bill only).")] = "card",
    swarm_run: Annotated[Optional[str], typer.Option(
        "--swarm-run", help="Take the link and DDP's overlap from this `flopwatt swarm` run, and show what it "
        "measured beside the projection of its own case.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    db: Annotated[Optional[str], typer.Option("--db", help="Results database URL (for --run).")] = None,
) -> None:
    """Project time, energy, cost and CO2 of training a model: datacenter vs a swarm of home machines."""
    if swarm_hardware not in ("card", "pc", "none"):
        raise FlopwattError(f"--swarm-hardware must be card, pc or none, got {swarm_hardware!r}")
    if card is not None and dc_card is None and get_card(card).datacenter:
        dc_card = card
    swarm = build_swarm(card=card, runs=run or [], nodes_csv=nodes_csv, gpus=gpus, gpus_per_node=gpus_per_node,
                        node_mfu=node_mfu, db=db, node_watts=node_watts)
    up = parse_bitrate(uplink, "--uplink") if uplink else None
    down = parse_bitrate(downlink, "--downlink") if downlink else None
    delay = parse_duration(rtt, "--rtt") if rtt else None
    ram = parse_size(host_ram, "--host-ram") if host_ram else None

    def adjust(node: pj.Node) -> pj.Node:
        node = pj.with_link(node, uplink_bps=up, downlink_bps=down, rtt_s=delay)
        node = pj.with_power(node, node_watts=node_watts, node_idle_watts=node_idle_watts, host_watts=host_watts,
                             host_idle_watts=host_idle_watts)
        return replace(node, host_ram_bytes=pj.Figure(ram, "option --host-ram")) if ram else node

    measured = load_swarm_run(swarm_run, db) if swarm_run else None
    if measured:  # before the options, which beat a measurement
        swarm = _map_nodes(swarm, lambda node: with_swarm_link(node, measured))
    swarm = _map_nodes(swarm, adjust)
    if hours_per_day is not None:
        from bench.projection.swarm import with_hours

        swarm = with_hours(swarm, hours_per_day)
    model = pj.model_spec(params, layers=layers, width=width, heads=heads, seq=seq, vocab=vocab,
                          batch_tokens=pj.parse_quantity(batch_tokens, "--batch-tokens") if batch_tokens else None)
    prices = pj.Prices(datacenter_usd_per_kwh=dc_kwh, home_usd_per_kwh=home_kwh, pue=pue, amortisation_years=years,
                       grid_gco2_per_kwh=gco2, swarm_hardware=swarm_hardware,  # type: ignore[arg-type]
                       dc_gpu_hour_usd=dc_gpu_hour_price)
    settings = pj.Settings(diloco_h=diloco_h, diloco_bits=diloco_bits, diloco_token_factor=diloco_token_factor,
                           grad_bits=grad_bits, activation_bits=activation_bits,
                           memory=pj.MemoryOptions(chunked_cross_entropy=chunked_ce, optimizer_8bit=optimizer_8bit,
                                                   offload_optimizer=offload_optimizer),
                           critical_batch_tokens=pj.parse_quantity(critical_batch, "--critical-batch")
                           if critical_batch else None)
    settings = settings_with(settings, measured) if measured else settings
    sc = pj.scenario(model, swarm, tokens=pj.parse_quantity(tokens, "--tokens") if tokens else None,
                     dc_card=dc_card or "h100", dc_gpus=dc_gpus, strategy=strategy, prices=prices, settings=settings,
                     mfu=mfu)
    results = pj.project(sc)
    answers = pj.claims(sc, pj.project(replace(sc, strategies=pj.STRATEGIES)) if strategy != "auto" else results)
    if as_json:
        out = to_json(sc, results, answers)
        if measured:
            out["swarm_run"] = swarm_run_json(measured, beside(measured))
        print(json.dumps(out, indent=2))
        return
    console = Console(highlight=False)
    render_projection(sc, results, console)
    if measured:
        render_swarm_run(measured, beside(measured), sc.model.name, console)
    render_claims(sc, answers, console)
    everything = replace(sc, strategies=pj.STRATEGIES)
    render_sweep(pj.sweep(everything, sweep_counts(swarm.nodes), match_datacenter=dc_gpus is None), console)


def sweep_counts(nodes: int, points: int = 24) -> list[int]:
    """Node counts for the plot: log-spaced from 1 to ten times the chosen count."""
    top = max(10, min(10 * nodes, 1_000_000))
    return sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)})


def to_json(sc: pj.Scenario, results: list[pj.Projection], answers: pj.Claims) -> dict[str, Any]:
    """The --json document: the question, one object per strategy considered, the claims."""
    m = sc.model
    dc_watts = pj.datacenter_watts_per_gpu(sc.dc_card)
    return {
        "model": {"name": m.name, "params": m.params, "layers": m.layers, "width": m.width, "heads": m.heads,
                  "seq": m.seq, "vocab": m.vocab, "batch_tokens": m.batch_tokens, "source": m.source},
        "tokens": sc.tokens,
        "swarm": {"node": sc.swarm.slowest.name, "nodes": sc.swarm.nodes, "gpus": sc.swarm.gpus,
                  "groups": [{"node": g.node.name, "count": g.count, "gpus_per_node": g.node.gpus,
                              "hours_per_day": g.node.hours_per_day.value,
                              "uplink_bps": g.node.uplink_bps.value if g.node.uplink_bps else None}
                             for g in sc.swarm.groups],
                  "figures": pj.node_sources(sc.swarm.slowest)},
        "datacenter": {"card": sc.dc_card.name, "gpus": sc.dc_gpus, "mfu": sc.mfu, "watts_per_gpu": dc_watts.value,
                       "watts_source": dc_watts.source, "rented_usd_per_gpu_hour": sc.prices.dc_gpu_hour_usd},
        "strategies": [r.to_dict() for r in results],
        "claims": {
            "nodes_per_reference": {k: {"by_flops": f, "by_memory": mem} for k, (f, mem) in
                                    answers.nodes_per_reference.items()},
            "link_ratios": dict(answers.link_ratios),
            "swarm_strategy": answers.swarm_strategy,
            "swarm_energy_per_token_j": answers.swarm_energy_per_token_j,
            "datacenter_energy_per_token_j": answers.datacenter_energy_per_token_j,
            "swarm_power_bill_usd": answers.swarm_power_bill_usd,
            "datacenter_purchase_usd": answers.datacenter_purchase_usd,
            "datacenter_cost_usd": answers.datacenter_cost_usd,
            "power_bill_exceeds_datacenter": answers.power_bill_exceeds_datacenter,
            "owners": answers.owners,
            "owner_power_bill_usd": answers.owner_power_bill_usd,
            "owner_power_bill_per_month_usd": answers.owner_power_bill_per_month_usd,
            "owner_datacenter_share_usd": answers.owner_datacenter_share_usd,
            "notes": list(answers.notes),
        },
    }


class Footnotes:
    """Numbered lines under the table for what a cell cannot hold (reasons, plans, notes, what a cost
    counts): the same text gets one number, whichever columns point to it."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[str]] = {}

    def ref(self, strategy: str, kind: str, text: str) -> str:
        who = self._entries.setdefault((kind, text), [])
        if strategy not in who:
            who.append(strategy)
        return f"[{list(self._entries).index((kind, text)) + 1}]"

    def lines(self) -> list[tuple[str, str]]:
        return [(f"[{i}]", f"{', '.join(who)}{' ' + kind if kind else ''}: {text}")
                for i, ((kind, text), who) in enumerate(self._entries.items(), start=1)]


def print_lines(console: Console, lines: list[tuple[str, str]], style: str = "") -> None:
    """Tagged lines wrapped under their text, not under the tag; a word wider than the line (a URL)
    is folded, never cut."""
    grid = Table.grid(padding=(0, 1), pad_edge=True)
    grid.add_column(no_wrap=True, style=style)
    grid.add_column(overflow="fold", style=style)
    for tag, text in lines:
        grid.add_row(tag, text)
    console.print(grid)


def plan_in_brief(r: pj.Projection) -> str:
    """The split a strategy chose, in a few words (tp/pp/dp, stages x pipelines, H): the plan's first
    clause, or the tokens each node takes per step for data parallel."""
    if r.strategy == "ddp" and r.effective_batch_tokens and r.nodes:
        return f"{count(r.effective_batch_tokens / r.nodes)} tokens per node"
    return r.plan.split(", ")[0]


def render_projection(sc: pj.Scenario, results: list[pj.Projection], console: Console) -> None:
    """Strategies side by side, the datacenter next to the swarm strategies. Cells stay short enough
    for an 80-column terminal; whatever is longer (why a strategy is out, the whole plan, its notes,
    what its cost counts) is a numbered line under the table, in full."""
    m = sc.model
    console.print(f"[bold]Training {m.name}[/bold] ({count(m.params)} parameters, {m.layers} layers x {m.width}) "
                  f"on {count(sc.tokens)} tokens: {sc.dc_gpus} x {sc.dc_card.name} in a datacenter vs "
                  f"{sc.swarm.name} at home")
    notes = Footnotes()
    table = Table(show_header=True, header_style="bold")
    table.add_column("", no_wrap=True)
    for r in results:
        table.add_column(r.strategy, justify="right", overflow="fold")

    def row(label: str, fmt: Any) -> None:
        """A figure's row, left out when no strategy is feasible (a column of dashes says nothing)."""
        if any(r.feasible for r in results):
            table.add_row(label, *[fmt(r) if r.feasible else "-" for r in results])

    def feasible(r: pj.Projection) -> str:
        if not r.feasible:
            return f"[red]no, see {notes.ref(r.strategy, '', r.reason)}[/red]"
        # DiLoCo outside the published range takes the band's pessimistic end, unless --diloco-token-factor says.
        outside = next((n for n in r.notes if n.startswith("outside the published range")), None)
        if outside is not None:
            return f"[yellow]yes, see {notes.ref(r.strategy, '', outside)}[/yellow]"
        return f"yes, see {notes.ref(r.strategy, '', r.reason)}" if r.reason else "yes"

    table.add_row("feasible", *[feasible(r) for r in results])
    row("plan", lambda r: f"{plan_in_brief(r)} {notes.ref(r.strategy, 'plan', r.plan)}")
    table.add_row("GPUs", *[f"{r.gpus:,}" for r in results])
    row("token factor", lambda r: f"x{r.token_factor:.2f}")
    if any(r.token_band for r in results):
        row("token band", lambda r: "-" if r.token_band is None else
            f"{r.token_band.low:.2f} {r.token_band.central:.2f} {r.token_band.high:.2f}")
    row("tokens", lambda r: count(r.tokens_processed))
    row("global batch", lambda r: count(r.effective_batch_tokens or 0))
    row("wall clock", lambda r: seconds(r.wall_clock_s))
    row("calendar", lambda r: seconds(r.calendar_s))
    row("GPU-hours", lambda r: f"{r.gpu_hours:,.0f}")
    row("step: compute", lambda r: seconds(r.compute_s))
    row("step: comm", lambda r: seconds(r.comm_s))
    row("step: total", lambda r: seconds(r.step_s))
    row("energy", lambda r: energy(r.energy_j))
    row("energy/token", lambda r: f"{r.energy_per_token_j:.3g} J")
    row("cost: power", lambda r: usd(r.energy_cost_usd))
    row("cost: hardware", lambda r: usd(r.hardware_cost_usd))
    row("cost: total", lambda r: f"{usd(r.cost_usd)} {notes.ref(r.strategy, 'cost counts', r.cost_includes)}")
    row("CO2", lambda r: co2(r.co2_kg))
    row("memory/GPU", lambda r: bytes_(r.memory.total))
    row("recompute", lambda r: r.memory.recompute)
    if any(r.notes for r in results):
        table.add_row("notes", *[" ".join(notes.ref(r.strategy, "", n) for n in r.notes) or "-" for r in results])
    console.print(table)
    print_lines(console, notes.lines())
    sources = pj.node_sources(sc.swarm.slowest)
    legend = [(f"{label}:", sources[key]) for key, label in (
        ("flops", "node FLOP/s"), ("utilisation", "node utilisation"), ("watts", "GPU power"),
        ("host_watts", "host power"), ("uplink_bps", "uplink")) if sources.get(key)]
    legend.append(("energy:", "the whole machines (GPUs, the rest of the PC or server, PUE); per token: over the "
                              "tokens of the target, so tokens a strategy wastes count against it"))
    if any(r.token_band for r in results):
        legend.append(("token band:", f"DiLoCo's tokens over synchronous training, low central high: "
                                      f"{pj.quality.SOURCE}"))
    print_lines(console, legend, style="dim")


def render_claims(sc: pj.Scenario, answers: pj.Claims, console: Console) -> None:
    """The common claims, answered for these nodes, then where their figures come from."""
    node = sc.swarm.slowest
    claims = [f"{by_flops:,.1f} x {node.name} match one {get_card(key).name} in FLOP/s; {by_memory:,.1f} in memory"
              for key, (by_flops, by_memory) in answers.nodes_per_reference.items()]
    if answers.link_ratios:
        r = answers.link_ratios
        claims.append(f"H200 HBM moves {r['hbm']:,.0f}x, NVLink 4 {r['nvlink4']:,.0f}x and NVLink 5 "
                      f"{r['nvlink5']:,.0f}x what this uplink does")
    sw, dc = answers.swarm_energy_per_token_j, answers.datacenter_energy_per_token_j
    if sw and dc:
        claims.append(f"energy per token: swarm ({answers.swarm_strategy}) {sw:.3g} J vs datacenter {dc:.3g} J "
                      f"({sw / dc:,.1f}x)")
    bill = answers.power_bill_exceeds_datacenter
    if bill is None:
        claims.append("no swarm strategy is feasible for this model on these nodes")
    else:
        claims.append(f"the swarm's power bill for this job ({usd(answers.swarm_power_bill_usd)}) costs "
                      f"{'more' if bill else 'less'} than buying the datacenter "
                      f"({usd(answers.datacenter_purchase_usd)}, GPUs x {sc.prices.server_capex_factor:g} for "
                      "servers and network)")
        claims.append(f"each of the {answers.owners:,} owners pays {usd(answers.owner_power_bill_usd)} on their own "
                      f"power bill for the job ({usd(answers.owner_power_bill_per_month_usd)} a month while it runs); "
                      f"their share of the datacenter would be {usd(answers.owner_datacenter_share_usd)}")
    console.print("\n[bold]The claims, for these nodes[/bold]")
    print_lines(console, [("", claim) for claim in claims])
    print_lines(console, [(f"{tag}:", text) for tag, _, text in (n.partition(": ") for n in answers.notes)],
                style="dim")


def render_sweep(points: list[tuple[int, list[pj.Projection]]], console: Console) -> None:
    """Calendar time and cost of the fastest swarm strategy against node count, the datacenter for reference."""
    xs = [float(n) for n, _ in points]
    swarm = [pj.best(rs) for _, rs in points]
    dc = [next((r for r in rs if r.strategy == "colocated" and r.feasible), None) for _, rs in points]
    days = {"fastest swarm strategy": [r.calendar_s if r else None for r in swarm],
            "datacenter (FLOP-matched)": [r.calendar_s if r else None for r in dc]}
    cost = {"fastest swarm strategy": [r.cost_usd if r else None for r in swarm],
            "datacenter (FLOP-matched)": [r.cost_usd if r else None for r in dc]}
    width = min(100, max(60, console.width - 2))
    console.print()
    console.print(line_plot(xs, days, title="Days to train", xlabel="swarm nodes", ylabel="calendar", width=width,
                            y_ticks=duration_ticks, y_format=duration_label), markup=False, highlight=False)
    console.print()
    console.print(line_plot(xs, cost, title="Cost in USD", xlabel="swarm nodes", ylabel="USD", width=width,
                            y_format=usd), markup=False, highlight=False)
