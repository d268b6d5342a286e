"""A stored `flopwatt swarm` run as projection inputs, and the projection set beside what it measured.

`flopwatt project --swarm-run RUN` takes from the run what it measured between real machines and
the projection would otherwise assume:

- the link: the rate a sync really got, the ring's bytes over the measured sync time less the
  latency the ring pays ((n-1) round trips), for both directions (a ring moves at its slowest link),
  and the round trip from the run's 8-byte all-reduce;
- DDP's overlap: the share of a step's compute its all-reduce hid behind. The projection's step is
  (1 - f)·compute + max(f·compute, sync), so a communication-bound step gives
  f = 1 - (step - sync) / compute. A step that hid its sync entirely shows only that f was enough,
  and the projection keeps its own 2/3;
- utilisation: compute over wall time, measured for each strategy and set beside what the projection
  gives for the run's own model, ranks, link and compute (this block's other rows, step time and
  token factor, likewise).

The projection's own DiLoCo token band stays the default for the model being projected: the
measured factor holds for the run's model size, replicas and H, and is shown beside the band for
those, where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench import projection as pj
from bench.document import RunDocument
from bench.errors import FlopwattError
from bench.units import seconds
from probes.measurement import Measurement


@dataclass(frozen=True)
class SwarmRun:
    """What `project` takes from a swarm run, each figure with where it came from."""

    run_id: str
    figures: dict[str, dict[str, Measurement]]
    world: int
    uplink_bps: pj.Figure
    rtt_s: pj.Figure
    #: DDP's measured overlap share, or None where the run cannot tell it (no DDP, or its sync hid).
    ddp_overlap: pj.Figure | None

    @property
    def params(self) -> dict[str, Any]:
        return next(iter(next(iter(self.figures.values())).values())).params


def _by_strategy(doc: RunDocument) -> dict[str, dict[str, Measurement]]:
    found: dict[str, dict[str, Measurement]] = {}
    for m in doc.measurements:
        if m.probe == "swarm" and m.variant in ("ddp", "diloco"):
            found.setdefault(m.variant, {})[m.metric] = m
    return found


def read_swarm_run(doc: RunDocument) -> SwarmRun:
    """The link, overlap and figures of a `flopwatt swarm` run; FlopwattError when it has none."""
    label = f"measured in swarm run {doc.run.id[:8]}"
    figures = _by_strategy(doc)
    synced = [(s, f["swarm_comm_s"]) for s, f in figures.items() if "swarm_comm_s" in f]
    if not synced:
        raise FlopwattError(f"run {doc.run.id[:8]} has no swarm sync figures (swarm_comm_s): "
                            "give a run that `flopwatt swarm` stored")
    # DiLoCo's sync is a sync and nothing else; DDP's was timed alone beside training: either tells the link.
    strategy, comm = synced[-1]
    p = comm.params
    latency = (p["world"] - 1) * p["rtt_estimate_s"]
    rate = 8 * p["ring_bytes"] / max(comm.value - latency, 1e-9)
    uplink = pj.Figure(rate, f"{label}: {strategy}'s sync of {p['payload_bytes'] / 1e6:.3g} MB over a ring of "
                             f"{p['world']} in {comm.value:.3g} s")
    rtt = pj.Figure(p["rtt_estimate_s"], f"{label}: an 8-byte all-reduce over {p['world'] - 1} ring steps")
    return SwarmRun(doc.run.id, figures, p["world"], uplink, rtt, _overlap(figures.get("ddp", {}), label))


def _overlap(ddp: dict[str, Measurement], label: str) -> pj.Figure | None:
    step, comm = ddp.get("swarm_step_s"), ddp.get("swarm_comm_s")
    if step is None or comm is None or "compute_s" not in step.params:
        return None
    compute = step.params["compute_s"]
    if step.value <= compute:  # the sync hid entirely: the run shows only that the overlap was enough
        return None
    share = min(1.0, max(0.0, 1 - (step.value - comm.value) / compute))
    return pj.Figure(share, f"{label}: DDP's sync hid behind {share:.0%} of a step's compute")


def with_swarm_link(node: pj.Node, run: SwarmRun) -> pj.Node:
    return pj.with_link(node, uplink_bps=run.uplink_bps.value, downlink_bps=run.uplink_bps.value,
                        rtt_s=run.rtt_s.value, source=run.uplink_bps.source)


def _run_model(p: dict[str, Any]) -> pj.ModelSpec:
    """The run's own model, built directly (model_spec's presets and floor are for projections)."""
    return pj.ModelSpec(f"the run's {p['model_params'] / 1e6:.2f}M", float(p["model_params"]), p["n_layer"],
                        p["n_embd"], p["n_head"], p["seq_len"], p["vocab_size"], float(p["tokens_per_step"]),
                        "flopwatt swarm's model")


@dataclass(frozen=True)
class Beside:
    """One strategy of the run: what it measured, and what the projection gives for the same case."""

    strategy: str
    step_measured: float
    step_projected: float
    utilisation_measured: float | None
    utilisation_projected: float
    factor: Measurement | None
    band: pj.TokenFactor | None


def beside(run: SwarmRun) -> list[Beside]:
    """The projection of the run's own case (its model, ranks, H, bits, measured compute and link)."""
    rows = []
    for strategy, f in run.figures.items():
        step = f.get("swarm_step_s")
        if step is None or "compute_s" not in step.params:
            continue
        p = step.params
        model = _run_model(p)
        rate = p["tokens_per_step"] / p["world"] * model.flops_per_token / p["compute_s"]
        unused = pj.Figure(1.0, "not used: step times only")
        node = pj.Node(name="swarm rank", dtype=p.get("dtype", "fp32"),
                       flops=pj.Figure(rate, "the run's compute per step"),
                       utilisation=pj.Figure(1.0, "the measured rate is training's own"),
                       memory_bytes=pj.Figure(float(2**40), "not used"), watts=unused, idle_watts=unused)
        swarm = pj.Swarm.uniform(with_swarm_link(node, run), run.world)
        settings = pj.Settings(diloco_h=p["h"], diloco_bits=p["bits"], grad_bits=16)
        projected = (pj.ddp if strategy == "ddp" else pj.diloco)(model, swarm, 1e9, settings=settings)
        if projected.step_s is None or projected.compute_s is None:
            continue
        band = None
        if strategy == "diloco":
            band = pj.diloco_token_factor(run.world, p["h"], p["model_params"], p["tokens_per_step"] / p["world"],
                                          tokens=f["swarm_loss"].params["curve_tokens"][-1] if "swarm_loss" in f else None)
        use = f.get("swarm_utilisation")
        rows.append(Beside(strategy, step.value, projected.step_s, use.value if use else None,
                           projected.compute_s / projected.step_s, f.get("swarm_token_factor"), band))
    return rows


def settings_with(settings: pj.Settings, run: SwarmRun) -> pj.Settings:
    """The projection's settings with the run's DDP overlap, where it measured one."""
    return replace(settings, ddp_overlap=run.ddp_overlap.value) if run.ddp_overlap else settings


def load_swarm_run(ref: str, db: str | None) -> SwarmRun:
    from bench.store import Store

    return read_swarm_run(Store(db).get(ref))


def to_json(run: SwarmRun, rows: list[Beside]) -> dict[str, Any]:
    return {
        "run": run.run_id, "ranks": run.world, "model_params": run.params["model_params"], "h": run.params["h"],
        "link_bps": run.uplink_bps.value, "rtt_s": run.rtt_s.value, "link_source": run.uplink_bps.source,
        "ddp_overlap": run.ddp_overlap.value if run.ddp_overlap else None,
        "strategies": [{"strategy": r.strategy, "step_s": {"measured": r.step_measured, "projected": r.step_projected},
                        "utilisation": {"measured": r.utilisation_measured, "projected": r.utilisation_projected},
                        "token_factor": None if r.factor is None else {
                            "measured": r.factor.value, "min": r.factor.min, "max": r.factor.max},
                        "token_band": None if r.band is None else r.band.to_dict()} for r in rows],
    }


def render_swarm_run(run: SwarmRun, rows: list[Beside], projected_model: str, console: Console) -> None:
    """What the run measured beside the projection of the same case, and what was taken from it."""
    p = run.params
    console.print(f"\n[bold]Swarm run {run.run_id[:8]}[/bold]: {run.world} ranks, a {p['model_params'] / 1e6:.2f}M-"
                  f"parameter model, H = {p['h']}; measured beside the projection of the same case")
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("Strategy", "Step run/proj.", "Util. run/proj.", "Token factor", "Literature band"):
        table.add_column(column, justify="left" if column == "Strategy" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.strategy, f"{seconds(r.step_measured)} / {seconds(r.step_projected)}",
            (f"{r.utilisation_measured:.0%}" if r.utilisation_measured is not None else "-")
            + f" / {r.utilisation_projected:.0%}",
            f"{r.factor.value:.2f} ({r.factor.min:.2f}-{r.factor.max:.2f})" if r.factor else "-",
            f"{r.band.low:.2f} {r.band.central:.2f} {r.band.high:.2f}" if r.band else "-",
        )
    console.print(table)
    lines = [("link:", f"{run.uplink_bps.value / 1e6:.3g} Mbit/s each way, RTT {seconds(run.rtt_s.value)}, for every "
                       f"node above unless --uplink, --downlink or --rtt say otherwise ({run.uplink_bps.source})")]
    if run.ddp_overlap:
        lines.append(("overlap:", f"DDP above hides its sync behind {run.ddp_overlap.value:.0%} of the last "
                                  f"micro-batch's compute, as measured, not the assumed 67 % ({run.ddp_overlap.source})"))
    else:
        lines.append(("overlap:", "the projection's own 67 %: the run had no communication-bound DDP step to measure it"))
    band = next((r.band for r in rows if r.band), None)
    if band is not None:
        outside = f"; outside the published range: {'; '.join(band.outside)}" if band.outside else ""
        lines.append(("tokens:", f"DiLoCo above uses the literature band for {projected_model}; the run's factor holds "
                                 f"for its own model, replicas and H, beside the band for those{outside}"))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for tag, text in lines:
        grid.add_row(tag, text)
    console.print(grid)
