"""The common claims of DESIGN.md, answered for a scenario (docs/projection.md, "The claims")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from bench.hardware import get_card
from bench.projection.energy import Projection
from bench.projection.model import DAY
from bench.projection.sweep import Scenario, best

MONTH = 30.44 * DAY


@dataclass(frozen=True)
class Claims:
    """The claims, for this swarm and scenario."""

    #: How many of the slowest node equal one reference GPU: key -> (by FLOP/s, by memory).
    nodes_per_reference: Mapping[str, tuple[float, float]]
    #: Reference bandwidth (bit/s) over the slowest uplink: "hbm" (H200), "nvlink4", "nvlink5".
    link_ratios: Mapping[str, float]
    swarm_energy_per_token_j: float | None
    datacenter_energy_per_token_j: float | None
    swarm_power_bill_usd: float | None
    datacenter_purchase_usd: float
    datacenter_cost_usd: float | None
    #: The owners' side: each PC owner's power bill for the job and per month of it, beside each one's
    #: share of buying and running (or renting) the datacenter for the same job.
    owners: int
    owner_power_bill_usd: float | None
    owner_power_bill_per_month_usd: float | None
    owner_datacenter_share_usd: float | None
    swarm_strategy: str | None
    notes: tuple[str, ...]

    @property
    def power_bill_exceeds_datacenter(self) -> bool | None:
        """Does the swarm's electricity for this job cost more than buying the datacenter's GPUs?"""
        if self.swarm_power_bill_usd is None:
            return None
        return self.swarm_power_bill_usd > self.datacenter_purchase_usd


def claims(sc: Scenario, results: Sequence[Projection]) -> Claims:
    """Answer the claims from the nodes' figures and the projections (the fastest swarm strategy,
    with DiLoCo at its pessimistic end wherever it leaves the published range)."""
    node = sc.swarm.slowest
    per_ref = {}
    # Like with like: a measured node against the reference's measured achievable rate where there
    # is one, a datasheet node against the datasheet peak.
    measured = node.flops.source.startswith("measured")
    for key in ("h100", "h200"):
        ref = get_card(key)
        dtype = ref.best_training_dtype
        achieved = ref.achievable(dtype) if measured else None
        ref_flops = achieved.value if achieved else ref.peak[dtype]
        per_ref[key] = (ref_flops / (node.flops.value * node.gpus),
                        ref.memory_bytes / (node.memory_bytes.value * node.gpus))
    h200 = get_card("h200")
    kind = "measured achievable" if measured and h200.achievable(h200.best_training_dtype) else "datasheet"
    ratios: dict[str, float] = {}
    notes = [f"reference FLOP/s: the H100's and H200's {kind} {h200.best_training_dtype} matmul, against the node "
             "FLOP/s above"]
    if all(g.node.uplink_bps is not None for g in sc.swarm.groups):
        up = sc.swarm.link()[0]
        h200, b200 = get_card("h200"), get_card("b200")
        ratios["hbm"] = h200.memory_bandwidth * 8 / up
        ratios["nvlink4"] = (h200.nvlink_bandwidth or 0) / 2 * 8 / up
        ratios["nvlink5"] = (b200.nvlink_bandwidth or 0) / 2 * 8 / up
        notes.append("link ratios: H200 HBM 4.8 TB/s, NVLink 4 450 GB/s and NVLink 5 900 GB/s per direction, "
                     "over the slowest uplink")
    swarm = best(results)
    dc = next((r for r in results if r.strategy == "colocated" and r.feasible), None)
    purchase = sc.dc_gpus * sc.dc_card.launch_price_usd * sc.prices.server_capex_factor
    owners = sc.swarm.nodes
    bill = swarm.energy_cost_usd if swarm else None
    months = max(1.0, (swarm.calendar_s or 0) / MONTH) if swarm else None
    if dc is None:
        share = None
    elif sc.prices.dc_gpu_hour_usd is not None:
        share = (dc.cost_usd or 0) / owners
        notes.append("datacenter share: the rent for the job, split between the owners")
    else:
        share = (purchase + (dc.energy_cost_usd or 0)) / owners
        notes.append("datacenter share: buying its GPUs and servers outright plus the job's electricity, split "
                     "between the owners")
    return Claims(
        nodes_per_reference=MappingProxyType(per_ref),
        link_ratios=MappingProxyType(ratios),
        swarm_energy_per_token_j=swarm.energy_per_token_j if swarm else None,
        datacenter_energy_per_token_j=dc.energy_per_token_j if dc else None,
        swarm_power_bill_usd=bill,
        datacenter_purchase_usd=purchase,
        datacenter_cost_usd=dc.cost_usd if dc else None,
        owners=owners,
        owner_power_bill_usd=bill / owners if bill is not None else None,
        owner_power_bill_per_month_usd=bill / owners / months if bill is not None and months else None,
        owner_datacenter_share_usd=share,
        swarm_strategy=swarm.strategy if swarm else None,
        notes=tuple(notes),
    )
