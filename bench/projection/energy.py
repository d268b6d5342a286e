"""Energy, money and CO2 of a job, and the `Projection` each strategy answers with.

energy = PUE · Σ nodes · (P_active · busy + P_waiting · (wall − busy)), whole machines on both sides:
a PC with its card(s), a datacenter GPU at its server's share (docs/projection.md, "Energy, cost, CO2").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

from bench.projection.model import HOUR, YEAR, Memory, check
from bench.projection.quality import TokenFactor

Strategy = Literal["colocated", "ddp", "diloco", "pipeline"]
SwarmHardware = Literal["card", "pc", "none"]


@dataclass(frozen=True)
class Prices:
    """Money and carbon. Defaults are stated in docs/projection.md with their sources."""

    #: US industrial average 2024, about $0.08/kWh (EIA Electric Power Monthly, table 5.6.A).
    datacenter_usd_per_kwh: float = 0.08
    #: US residential average 2024, about $0.165/kWh (same table); much of Europe pays $0.25-0.40.
    home_usd_per_kwh: float = 0.165
    #: Large modern datacenters report 1.1-1.2 (Google 1.10, Meta 1.08); industry average 1.56 (Uptime 2024).
    pue: float = 1.2
    #: A home has no cooling plant charged to the PC; its waste heat is the room's.
    home_pue: float = 1.0
    #: GPUs are commonly written off over 4-6 years; hyperscalers use 5-6 for servers.
    amortisation_years: float = 4.0
    #: Datacenter capital per GPU over the GPU's own price: the server, CPUs, NICs, switches and
    #: building around it (assumed; a DGX H100 with 8 GPUs was reported at about $300-400k).
    server_capex_factor: float = 1.5
    #: World average grid intensity ~ 480 gCO2/kWh (IEA/Ember 2023); France ~ 60, US ~ 370.
    grid_gco2_per_kwh: float = 480.0
    #: What of the swarm's own hardware is charged, amortised over the hours it trains: its card(s),
    #: the whole PC, or nothing (machines people own anyway).
    swarm_hardware: SwarmHardware = "card"
    #: Rent datacenter GPUs at this price per GPU-hour (power and building included) instead of
    #: owning them; None: owned, amortised, electricity paid.
    dc_gpu_hour_usd: float | None = None

    def validated(self) -> Prices:
        check(self.datacenter_usd_per_kwh, "datacenter electricity price", 0, 10, low_inclusive=True)
        check(self.home_usd_per_kwh, "home electricity price", 0, 10, low_inclusive=True)
        check(self.pue, "PUE", 1, 5, low_inclusive=True)
        check(self.home_pue, "home PUE", 1, 5, low_inclusive=True)
        check(self.amortisation_years, "amortisation years", 1e-3, 50, low_inclusive=True)  # 9 hours
        check(self.server_capex_factor, "server capex factor", 1, 10, low_inclusive=True)
        check(self.grid_gco2_per_kwh, "grid carbon intensity", 0, 5000, low_inclusive=True)
        if self.dc_gpu_hour_usd is not None:
            check(self.dc_gpu_hour_usd, "datacenter GPU-hour price", 0, 1000)
        return self


@dataclass(frozen=True)
class Projection:
    """One strategy's answer. Figures are None when the strategy is not feasible."""

    strategy: Strategy
    feasible: bool
    reason: str
    hardware: str
    gpus: int
    #: Tokens of the target: the loss synchronous training reaches on them is the goal.
    tokens: float
    nodes: int = 0
    plan: str = ""
    steps: float | None = None
    step_s: float | None = None
    compute_s: float | None = None
    comm_s: float | None = None
    #: Hours the swarm (or datacenter) trains, in seconds.
    wall_clock_s: float | None = None
    #: Calendar time: the wall clock stretched over the hours a day the nodes are online, with the
    #: time each returning node spends downloading the weights.
    calendar_s: float | None = None
    gpu_hours: float | None = None
    energy_j: float | None = None
    energy_cost_usd: float | None = None
    hardware_cost_usd: float | None = None
    cost_usd: float | None = None
    co2_kg: float | None = None
    #: What the cost counts (owned card, whole PC, rented GPU-hours...).
    cost_includes: str = ""
    memory: Memory | None = None
    #: Tokens processed over tokens of the target (DiLoCo's quality cost, the critical batch).
    token_factor: float = 1.0
    token_band: TokenFactor | None = None
    effective_batch_tokens: float | None = None
    critical_batch_tokens: float | None = None
    outer_syncs: float | None = None
    notes: tuple[str, ...] = ()
    #: Where the inputs came from: figure -> label.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def tokens_processed(self) -> float:
        return self.tokens * self.token_factor

    @property
    def energy_per_token_j(self) -> float | None:
        """Energy per token of the target (not per processed token: the waste counts)."""
        return self.energy_j / self.tokens if self.energy_j is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape: flat figures, the token band, memory per GPU in bytes."""
        skip = ("memory", "sources", "token_band", "notes")
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["tokens_processed"] = self.tokens_processed
        out["token_factor_band"] = self.token_band.to_dict() if self.token_band else None
        mem = self.memory
        out["memory_per_gpu_bytes"] = None if mem is None else {
            "weights": mem.weights, "gradients": mem.gradients, "optimizer": mem.optimizer,
            "activations": mem.activations, "logits": mem.logits, "total": mem.total, "recompute": mem.recompute,
            "micro_batch_sequences": mem.micro_batch, "host_optimizer": mem.host_optimizer,
        }
        out["notes"] = list(self.notes)
        out["sources"] = dict(self.sources)
        return out


def infeasible(strategy: Strategy, reason: str, hardware: str, gpus: int, tokens: float,
               memory: Memory | None = None, nodes: int = 0) -> Projection:
    return Projection(strategy, False, reason, hardware, gpus, tokens, nodes=nodes, memory=memory)


@dataclass(frozen=True)
class PowerGroup:
    """Machines that draw alike: how many, their power computing and waiting, their compute per step,
    and the hardware price charged per machine (None: nothing charged)."""

    count: int
    active_w: float
    waiting_w: float
    compute_s: float
    price_usd: float | None


def account(*, strategy: Strategy, hardware: str, gpus: int, nodes: int, tokens: float, plan: str,
            steps: float, step_s: float, compute_s: float, comm_s: float, groups: Sequence[PowerGroup],
            usd_per_kwh: float, pue: float, prices: Prices, memory: Memory, sources: Mapping[str, str],
            cost_includes: str, rent_usd_per_gpu_hour: float | None = None, calendar_factor: float = 1.0,
            reason: str = "", **extra: Any) -> Projection:
    """Turn a per-step time split into wall clock, energy, cost and CO2 (docs: "Energy, cost, CO2").

    Each group computes `compute_s` of every `step_s` and waits the rest. Owned hardware is charged
    price x hours trained / hours in its amortisation period; rented GPUs are charged by the hour,
    their electricity included in the rent (the energy and CO2 are still the job's).
    """
    wall = steps * step_s
    energy = pue * sum(g.count * (g.active_w * steps * g.compute_s + g.waiting_w * max(0.0, wall - steps * g.compute_s))
                       for g in groups)
    kwh = energy / 3.6e6
    energy_cost = kwh * usd_per_kwh
    if rent_usd_per_gpu_hour is not None:
        hw_cost = gpus * wall / HOUR * rent_usd_per_gpu_hour
        total = hw_cost
    else:
        hw_cost = sum(g.count * g.price_usd for g in groups if g.price_usd) * wall / (prices.amortisation_years * YEAR)
        total = energy_cost + hw_cost
    return Projection(
        strategy=strategy, feasible=True, reason=reason, hardware=hardware, gpus=gpus, tokens=tokens, nodes=nodes,
        plan=plan, steps=steps, step_s=step_s, compute_s=compute_s, comm_s=comm_s, wall_clock_s=wall,
        calendar_s=wall * calendar_factor, gpu_hours=gpus * wall / HOUR, energy_j=energy, energy_cost_usd=energy_cost,
        hardware_cost_usd=hw_cost, cost_usd=total, co2_kg=kwh * prices.grid_gco2_per_kwh / 1000,
        cost_includes=cost_includes, memory=memory, sources=MappingProxyType(dict(sources)), **extra,
    )
