"""Hand-worked cases: every number the projection prints, computed here from docs/projection.md's
formulas (not by calling the code that computes it) and compared exactly."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest

from bench.errors import FlopwattError
from bench.hardware import get_card
from bench.projection import (
    Figure,
    Node,
    Prices,
    Settings,
    Swarm,
    claims,
    colocated,
    datacenter_watts_per_gpu,
    ddp,
    diloco,
    matched_dc_gpus,
    memory_per_gpu,
    model_spec,
    node_from_card,
    pipeline,
    project,
    scenario,
    with_link,
    with_power,
)
from bench.projection import strategies
from bench.projection.nodes import default_fabric
from bench.projection.pipeline import pipeline_schedule_s, stage_transfer_s
from bench.projection.swarm import NodeGroup
from bench.projection.swarm import join_s as swarm_join_s

YEAR = 365.25 * 86400


def chinchilla(n: float, d: float) -> float:
    return 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28


def b_crit(n: float, d: float) -> float:
    return 2e8 / chinchilla(n, d) ** (1 / 0.21)


def lab_node(**kw: object) -> Node:
    """A made-up node with round figures: 50 TFLOP/s of training, 80 GiB, 300/60 W GPU, 100/40 W host."""
    node = Node(name="test node", dtype="bf16", flops=Figure(1e14, "t"), utilisation=Figure(0.5, "t"),
                memory_bytes=Figure(80 * 2**30, "t"), watts=Figure(300.0, "t"), idle_watts=Figure(60.0, "t"),
                price_usd=Figure(1000.0, "t"), host_watts=Figure(100.0, "t"), host_idle_watts=Figure(40.0, "t"),
                host_price_usd=Figure(500.0, "t"))
    node = with_link(node, uplink_bps=100e6, downlink_bps=400e6, rtt_s=0.02)
    return node if not kw else Node(**{**node.__dict__, **kw})


M125 = model_spec("125M")  # GPT-3 Small: 12 x 768, s = 2048, batch 0.5M tokens
FPT = 6 * 125e6 + 12 * 12 * 768 * 2048  # FLOPs per token
SEQS = math.ceil(0.5e6 / (4 * 2048))  # 62 sequences per node per step on 4 nodes
NODE_TOKENS = SEQS * 2048
BATCH = 4 * NODE_TOKENS
COMPUTE = NODE_TOKENS * FPT / (1e14 * 0.5)
RING = 2 * 3 / 4 * (125e6 * 2) * 8 / 100e6 + 3 * 0.02  # bf16 gradients, 4 nodes, 100 Mbit/s up


def test_ddp_step_under_gradient_accumulation_energy_cost_and_co2() -> None:
    """One sequence per micro-batch: 62 micro-batches, only the last one's backward hides the ring."""
    tokens = 1e9
    prices = Prices(home_usd_per_kwh=0.2, grid_gco2_per_kwh=400, amortisation_years=4)
    r = ddp(M125, Swarm.uniform(lab_node(), 4), tokens, prices=prices, settings=Settings(micro_batch_tokens=2048))
    micro = COMPUTE / SEQS
    step = (SEQS - 1) * micro + micro / 3 + max(2 * micro / 3, RING)
    assert r.step_s == pytest.approx(step, rel=1e-12)
    factor = (1 + BATCH / b_crit(125e6, tokens)) / (1 + 0.5e6 / b_crit(125e6, tokens))
    assert r.token_factor == pytest.approx(factor, rel=1e-12)
    steps = tokens * factor / BATCH
    wall = steps * step
    assert r.wall_clock_s == pytest.approx(wall, rel=1e-12)
    busy = steps * COMPUTE
    joules = 4 * ((300 + 100) * busy + (60 + 40) * (wall - busy))  # home PUE 1.0
    assert r.energy_j == pytest.approx(joules, rel=1e-12)
    kwh = joules / 3.6e6
    assert r.energy_cost_usd == pytest.approx(0.2 * kwh, rel=1e-12)
    assert r.co2_kg == pytest.approx(0.4 * kwh, rel=1e-12)
    assert r.hardware_cost_usd == pytest.approx(4 * 1000 * wall / (4 * YEAR), rel=1e-12)
    assert r.cost_usd == pytest.approx(0.2 * kwh + 4 * 1000 * wall / (4 * YEAR), rel=1e-12)
    assert r.energy_per_token_j == pytest.approx(joules / tokens)
    # The whole PC charged instead of the card: card + host price.
    pc = ddp(M125, Swarm.uniform(lab_node(), 4), tokens, prices=Prices(swarm_hardware="pc"),
             settings=Settings(micro_batch_tokens=2048))
    assert pc.hardware_cost_usd == pytest.approx(4 * 1500 * wall / (4 * YEAR), rel=1e-12)


def test_ddp_overlaps_the_whole_step_when_one_micro_batch_holds_it() -> None:
    r = ddp(M125, Swarm.uniform(lab_node(), 4), 1e9)  # 80 GiB holds all 62 sequences at once
    assert r.memory is not None and r.memory.micro_batch == SEQS
    assert r.step_s == pytest.approx(COMPUTE / 3 + max(2 * COMPUTE / 3, RING), rel=1e-12)


def test_review_f7_accumulation_overlaps_only_the_last_micro_batch() -> None:
    """125M on 8 x 4090 at 10 Gbit/s, one sequence per micro-batch (the review measured 1.36x)."""
    node = Node(**{**lab_node().__dict__, "flops": Figure(165.2e12, "t"), "utilisation": Figure(0.4, "t")})
    node = with_link(node, uplink_bps=10e9, downlink_bps=10e9, rtt_s=0.03)
    r = ddp(M125, Swarm.uniform(node, 8), 1e9, settings=Settings(micro_batch_tokens=2048))
    seqs = math.ceil(0.5e6 / (8 * 2048))
    c = seqs * 2048 * FPT / (165.2e12 * 0.4)
    ring = 2 * 7 / 8 * 250e6 * 8 / 10e9 + 7 * 0.03
    tree = 2 * 250e6 * 8 / 10e9 + 2 * 3 * 0.015  # 8 nodes: the tree's 6 hops beat the ring's 14
    sync = min(ring, tree)
    assert sync == tree
    assert r.step_s == pytest.approx((seqs - 1) * c / seqs + c / seqs / 3 + max(2 * c / seqs / 3, sync), rel=1e-12)
    assert r.step_s > 1.3 * (c / 3 + max(2 * c / 3, sync))  # the old formula hid the sync behind the whole step


def test_diloco_step_and_tokens() -> None:
    tokens, h = 1e10, 100
    r = diloco(M125, Swarm.uniform(lab_node(), 4), tokens, settings=Settings(diloco_h=h, diloco_bits=8))
    ring8 = 2 * 3 / 4 * 125e6 * 8 / 100e6 + 3 * 0.02
    assert r.step_s == pytest.approx(COMPUTE + ring8 / h, rel=1e-12)
    # The band's central value (in range: 4 replicas, 125M, H = 100, 197 outer syncs), by the fit:
    pct = -0.2663 + 0.6966 * 0.125 ** (-0.2842) * (4**0.5818 - 1) * (1 + 0.289 * math.log10(100 / 30))
    quality = (1 + pct / 100 * chinchilla(125e6, tokens) / (410.7 / tokens**0.28)) ** (1 / 0.28)
    crit = b_crit(125e6, tokens) * 4**0.3399
    batch = (1 + BATCH / crit) / (1 + 0.5e6 / crit)
    assert r.token_band is not None and r.token_band.in_published_range
    assert r.token_factor == pytest.approx(quality * batch, rel=1e-4)
    assert r.outer_syncs == pytest.approx(tokens * quality * batch / BATCH / h, rel=1e-4)


def test_pipeline_fill_and_drain_by_hand() -> None:
    # m = 8 micro-batches, k = 4 stages of 0.6 s (forward 0.2, backward 0.4), transfers 0.3 s, RTT 30 ms
    steady = 7 * (max(0.2, 0.3) + max(0.4, 0.3))
    assert pipeline_schedule_s(8, 4, 0.6, 0.3, 0.03) == pytest.approx(steady + 4 * 0.6 + 2 * 3 * 0.3 + 3 * 0.03)
    assert pipeline_schedule_s(1, 2, 0.6, 0.0, 0.0) == pytest.approx(2 * 0.6)  # one micro-batch: no overlap
    m = model_spec("7B")
    assert stage_transfer_s(m, 16, 25e6, 100e6) == pytest.approx(4096 * 4096 * 16 / 25e6)
    assert stage_transfer_s(m, 8, 100e6, 25e6, sequences=2) == pytest.approx(2 * 4096 * 4096 * 8 / 25e6)


def test_pipeline_plan_step_by_hand() -> None:
    """7B on 40 x RTX 4090: the planner's chosen stages, replicas and micro-batches give this step."""
    node = with_link(Node(**{**lab_node().__dict__, "memory_bytes": Figure(24 * 2**30, "t")}),
                     uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    m = model_spec("7B")
    r = pipeline(m, Swarm.uniform(node, 40), 1e10)
    assert r.feasible, r.reason
    k, reps, micro = (int(x) for x in __import__("re").findall(r"(\d+) stages x (\d+) pipelines, (\d+) micro", r.plan)[0])
    # 7 stages of 5 layers, and as many pipelines as the 40 nodes hold: 40 // 7 = 5 (never 8, 56 nodes).
    assert (k, reps) == (7, 5) and r.nodes == 35 and "5 nodes unused" in r.notes
    layers = math.ceil(32 / k)
    stage_params = layers * (6.74e9 - 2 * 32000 * 4096) / 32 + 32000 * 4096
    stage_flops = 6 * stage_params + 12 * layers * 4096 * 4096
    factor = 8 / 6 if r.memory and r.memory.recompute == "full" else 1.0
    stage_s = 4096 * stage_flops * factor / 5e13
    transfer = 4096 * 4096 * 16 / 25e6
    fwd, bwd = stage_s / 3, 2 * stage_s / 3
    schedule = (micro - 1) * (max(fwd, transfer) + max(bwd, transfer)) + k * stage_s + 2 * (k - 1) * transfer \
        + (k - 1) * 0.03
    assert micro == math.ceil(4e6 / (reps * 4096))
    if "all-reduce" in r.plan:
        ring = 2 * (reps - 1) / reps * stage_params * 2 * 8 / 25e6 + (reps - 1) * 0.03
        tree = 2 * stage_params * 2 * 8 / 25e6 + 2 * math.ceil(math.log2(reps)) * 0.015 if reps > 1 else 0.0
        sync = min(ring, tree) if reps > 1 else 0.0
    else:
        ring = 2 * (reps - 1) / reps * stage_params * 8 / 25e6 + (reps - 1) * 0.03
        sync = ring / 500
    assert r.step_s == pytest.approx(schedule + sync, rel=1e-9)
    assert r.compute_s == pytest.approx(micro * stage_s, rel=1e-9)


def test_colocated_power_is_the_server_share_times_pue() -> None:
    prices = Prices(datacenter_usd_per_kwh=0.1, pue=1.5, grid_gco2_per_kwh=500, amortisation_years=5)
    r = colocated(model_spec("7B"), get_card("h100"), 64, 1e11, prices=prices)
    assert r.wall_clock_s and r.energy_j
    watts = 10200 / 8  # DGX H100: 10.2 kW for 8 GPUs
    assert r.energy_j == pytest.approx(64 * watts * r.wall_clock_s * 1.5, rel=1e-12)
    kwh = r.energy_j / 3.6e6
    assert r.energy_cost_usd == pytest.approx(0.1 * kwh)
    assert r.co2_kg == pytest.approx(0.5 * kwh)
    capex = 64 * get_card("h100").launch_price_usd * 1.5
    assert r.hardware_cost_usd == pytest.approx(capex * r.wall_clock_s / (5 * YEAR), rel=1e-12)
    assert r.gpu_hours == pytest.approx(64 * r.wall_clock_s / 3600)
    rented = colocated(model_spec("7B"), get_card("h100"), 64, 1e11, prices=Prices(dc_gpu_hour_usd=2.5))
    assert rented.cost_usd == pytest.approx(64 * (rented.wall_clock_s or 0) / 3600 * 2.5, rel=1e-12)


def test_mfu_resizes_the_flop_matched_datacenter() -> None:
    nodes = Swarm.uniform(lab_node(), 100)  # 100 x 50 TFLOP/s
    for mfu in (0.4, 0.2):
        sc = scenario(M125, nodes, mfu=mfu)
        assert sc.dc_gpus == 8 * math.ceil(100 * 5e13 / (989.4e12 * mfu) / 8)


def test_part_time_nodes_and_the_slowest_member() -> None:
    fast, slow = lab_node(), lab_node(uplink_bps=Figure(20e6, "t"), hours_per_day=Figure(6.0, "t"))
    uneven = Swarm((NodeGroup(fast, 3), NodeGroup(slow, 1)))
    r = ddp(M125, uneven, 1e9)
    ring = 2 * 3 / 4 * 250e6 * 8 / 20e6 + 3 * 0.02  # the ring at its slowest uplink
    assert r.step_s == pytest.approx(COMPUTE / 3 + max(2 * COMPUTE / 3, ring), rel=1e-12)
    join = 2 * 125e6 * 8 / 400e6  # the weights in bf16 over its downlink, once a day
    share = (6 * 3600 - join) / 86400
    assert r.calendar_s == pytest.approx((r.wall_clock_s or 0) / share, rel=1e-12)
    lo = diloco(M125, uneven, 1e10, settings=Settings(diloco_h=100))
    assert lo.calendar_s == pytest.approx((lo.wall_clock_s or 0) * 4 / (3 + share), rel=1e-12)


def test_claims_per_owner_by_hand() -> None:
    nodes = Swarm.uniform(lab_node(), 10)
    sc = scenario(M125, nodes, dc_gpus=8, prices=Prices(home_usd_per_kwh=0.3))
    results = project(sc)
    c = claims(sc, results)
    swarm = min((r for r in results if r.strategy != "colocated" and r.feasible), key=lambda r: r.calendar_s or 0)
    dc = results[0]
    assert c.swarm_strategy == swarm.strategy
    assert c.owner_power_bill_usd == pytest.approx((swarm.energy_cost_usd or 0) / 10)
    months = max(1.0, (swarm.calendar_s or 0) / (30.44 * 86400))
    assert c.owner_power_bill_per_month_usd == pytest.approx((swarm.energy_cost_usd or 0) / 10 / months)
    purchase = 8 * get_card("h100").launch_price_usd * 1.5
    assert c.datacenter_purchase_usd == pytest.approx(purchase)
    assert c.owner_datacenter_share_usd == pytest.approx((purchase + (dc.energy_cost_usd or 0)) / 10)
    assert c.power_bill_exceeds_datacenter is ((swarm.energy_cost_usd or 0) > purchase)
    assert c.nodes_per_reference["h200"] == pytest.approx((989.4e12 / 1e14, 141 / 80))


def test_colocated_step_by_hand() -> None:
    """7B on 64 H100: tp = pp = 1, d = 64 fits 80 GB with ZeRO-1; the ring crosses servers at 400 GB/s."""
    r = colocated(model_spec("7B"), get_card("h100"), 64, 1e11)
    assert r.plan.startswith("tp=1 pp=1 dp=64")
    fpt = 6 * 6.74e9 + 12 * 32 * 4096 * 4096
    compute = 4e6 * fpt / (64 * 989.4e12 * 0.4)
    ring = 2 * 63 / 64 * (2 * 6.74e9) / min(450e9, 400e9 / 8 * 8)  # NVLink 4 per direction vs 8 x 400 Gb/s NICs
    assert r.compute_s == pytest.approx(compute, rel=1e-12)
    assert r.comm_s == pytest.approx(ring, rel=1e-12)
    assert r.step_s == pytest.approx(max(compute, ring), rel=1e-12)
    assert r.wall_clock_s == pytest.approx(1e11 / 4e6 * max(compute, ring), rel=1e-12)


def test_two_gpu_node_of_replicas_and_an_offloaded_optimizer_by_hand() -> None:
    """A node of 2 GPUs that each hold 125M: they all-reduce inside the node (2(G-1)/G·2N over the
    16 GB/s link between them) before the ring between nodes; offloading adds PCIe and a CPU Adam."""
    node = lab_node(gpus=2, intra_bw=Figure(16e9, "t"))
    r = ddp(M125, Swarm.uniform(node, 4), 1e9)
    seqs = math.ceil(0.5e6 / (4 * 2 * 2048))  # per GPU: 31 sequences, one micro-batch
    c = 2 * seqs * 2048 * FPT / (2 * 1e14 * 0.5)
    intra = 2 * 1 / 2 * 2 * 125e6 / 16e9
    assert r.step_s == pytest.approx(c / 3 + max(2 * c / 3, RING + intra), rel=1e-12)
    from bench.projection import MemoryOptions
    off = ddp(M125, Swarm.uniform(lab_node(), 4), 1e9, settings=Settings(memory=MemoryOptions(offload_optimizer=True)))
    offload = 4 * 125e6 / 16e9 + 28 * 125e6 / 40e9  # grads down, weights up; CPU Adam at 40 GB/s
    assert off.step_s == pytest.approx(COMPUTE / 3 + max(2 * COMPUTE / 3, RING) + offload, rel=1e-12)
    assert off.memory is not None and off.memory.optimizer == 0 and off.memory.host_optimizer == 12 * 125e6


def test_pipeline_planner_tries_the_largest_power_of_two_below_the_node_count_by_hand() -> None:
    """7B with a nominal batch of 4 sequences on 10 nodes of 80 GiB, B_crit of one token, DiLoCo's
    quality taken as parity: a fifth pipeline adds a fifth sequence to the batch, costing 5/4 the
    tokens for no shorter step, so 2 stages x 4 pipelines (a power of two below 10 // 2 = 5) beats
    2 x 5, and the planner must try it. Every candidate's wall is worked out here by the formulas."""
    m = model_spec("7B", batch_tokens=4 * 4096)
    node = with_link(lab_node(), uplink_bps=1e9, downlink_bps=1e9, rtt_s=0.03)
    tokens = 1e10
    r = pipeline(m, Swarm.uniform(node, 10), tokens, settings=Settings(critical_batch_tokens=1.0,
                                                                       diloco_token_factor=1.0))
    stage_params = 16 * (6.74e9 - 2 * 32000 * 4096) / 32 + 32000 * 4096
    stage_s = 4096 * (6 * stage_params + 12 * 16 * 4096 * 4096) / 5e13  # 16 layers, selective recompute
    transfer = 4096 * 4096 * 16 / 1e9

    def allreduce(nbytes: float, n: int) -> float:
        ring = 2 * (n - 1) / n * nbytes * 8 / 1e9 + (n - 1) * 0.03
        tree = 2 * nbytes * 8 / 1e9 + math.ceil(math.log2(n)) * 0.03
        return min(ring, tree) if n > 1 else 0.0

    walls = {}
    for reps in (1, 2, 4, 5):  # 10 // 2 and the powers of two below it
        micro = math.ceil(4 / reps)
        schedule = (micro - 1) * (max(stage_s / 3, transfer) + max(2 * stage_s / 3, transfer)) + 2 * stage_s \
            + 2 * transfer + 0.03
        batch = reps * micro * 4096
        factor = (1 + batch / 1.0) / (1 + 4 * 4096 / 1.0) if batch > 4 * 4096 else 1.0
        walls[(reps, "all-reduce")] = (tokens * factor / batch * (schedule + allreduce(stage_params * 2, reps)),
                                       schedule + allreduce(stage_params * 2, reps), factor)
        if reps > 1:
            sync = allreduce(stage_params * 1, reps) / 500  # int8 pseudo-gradients every H = 500 steps
            walls[(reps, "DiLoCo")] = (tokens * factor / batch * (schedule + sync), schedule + sync, factor)
    (reps, sync), (wall, step, factor) = min(walls.items(), key=lambda kv: kv[1][0])
    assert (reps, sync) == (4, "DiLoCo")
    assert r.plan == "2 stages x 4 pipelines, 1 micro-batches/step, 16-bit activations, DiLoCo H=500 between pipelines"
    assert r.nodes == 8 and "2 nodes unused" in r.notes
    assert r.step_s == pytest.approx(step, rel=1e-12)
    assert r.token_factor == pytest.approx(factor, rel=1e-12) and factor == 1.0
    assert r.wall_clock_s == pytest.approx(wall, rel=1e-12)
    assert walls[(5, "DiLoCo")][0] > wall  # the fifth pipeline the planner would otherwise take
    # one micro-batch a step: a stage computes for stage_s of it, the rest is the fill, the transfers and the sync
    assert r.compute_s == pytest.approx(stage_s, rel=1e-12) and r.comm_s == pytest.approx(step - stage_s, rel=1e-12)


def test_a_pipeline_count_that_does_not_fit_leaves_larger_ones_to_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """More pipelines split the batch into fewer micro-batches each, so fewer are in flight and a
    stage holds less: when 2 stages x 1 or 2 pipelines (4 or 2 micro-batches, 2 in flight) do not
    fit, 2 x 4 (1 in flight) still may. With memory that holds only one stage's 16 layers in flight,
    the planner finds the plan of the test above, where everything fitted: 2 x 4 was the best then."""
    pipeline_module = importlib.import_module("bench.projection.pipeline")  # the package exports its function
    real_fit = pipeline_module.fit

    def one_micro_batch_of_16_layers(*args: object, layers_in_flight: float, **kwargs: object) -> object:
        return real_fit(*args, layers_in_flight=layers_in_flight, **kwargs) if layers_in_flight <= 16 else None

    monkeypatch.setattr(pipeline_module, "fit", one_micro_batch_of_16_layers)
    m = model_spec("7B", batch_tokens=4 * 4096)
    node = with_link(lab_node(), uplink_bps=1e9, downlink_bps=1e9, rtt_s=0.03)
    r = pipeline(m, Swarm.uniform(node, 10), 1e10, settings=Settings(critical_batch_tokens=1.0,
                                                                      diloco_token_factor=1.0))
    assert r.plan == "2 stages x 4 pipelines, 1 micro-batches/step, 16-bit activations, DiLoCo H=500 between pipelines"


def test_colocated_tensor_parallel_all_reduces_by_hand() -> None:
    """A 4-layer, 16,384-wide model (N = 12·4·16384² + 32000·16384) on 8 H100s: at tp = pp = 1 its
    4N of weights and gradients, 12N/8 of ZeRO-1 Adam and 4 layers of 34·s·h overflow 72 GiB, so
    tp·pp = 2, tp = 2 (fewer stages first), dp = 4. Each replica's 1M tokens make 4 all-reduces of
    s·h bf16 activations per layer (ring: 2·(t-1)/t of them) over NVLink 4's 450 GB/s, beside the
    data-parallel ring of its half of the bf16 gradients."""
    m = model_spec(layers=4, width=16384)
    n = 12 * 4 * 16384**2 + 32000 * 16384
    assert m.params == n
    assert 4 * n + 12 * n / 8 + 34 * 4096 * 16384 * 4 > 0.9 * 80 * 2**30
    r = colocated(m, get_card("h100"), 8, 1e10)
    assert r.plan.startswith("tp=2 pp=1 dp=4")
    tokens_per_replica = 4e6 / 4
    tp = 4 * 4 * tokens_per_replica * 16384 * 2 * 2 * (2 - 1) / 2 / 450e9
    dp = 2 * 3 / 4 * (2 * n / 2) / 450e9
    assert r.comm_s == pytest.approx(tp + dp, rel=1e-12)
    compute = 4e6 * (6 * n + 12 * 4 * 16384 * 4096) / (8 * 989.4e12 * 0.4)
    assert r.step_s == pytest.approx(max(compute, tp + dp), rel=1e-12) and compute > tp + dp


def test_a_synchronous_swarm_says_how_long_all_its_nodes_are_online_together() -> None:
    """Online 6 h a day over a 1 Mbit/s downlink: rejoining downloads 2 x 125M bf16 bytes, 2,000 s,
    so each node trains (6 x 3600 - 2000) / 3600 = 5.44 h a day, printed 5.4."""
    node = lab_node(downlink_bps=Figure(1e6, "t"), hours_per_day=Figure(6.0, "t"))
    r = ddp(M125, Swarm.uniform(node, 4), 1e9)
    share = (6 * 3600 - 2 * 125e6 * 8 / 1e6) / 86400
    assert f"{share * 24:.1f}" == "5.4"
    assert "every node online together 5.4 h a day" in r.notes
    assert r.calendar_s == pytest.approx((r.wall_clock_s or 0) / share, rel=1e-12)


def test_ddp_under_accumulation_overlaps_two_thirds_of_the_last_micro_batch_by_default() -> None:
    """4 micro-batches of 3 s and a 1.5 s sync: 3 x 3 + 1 + max(2, 1.5) = 12 s; a 5 s sync: 15 s."""
    plan = strategies.NodeStep(memory=None, layout="replicas", micro_batches=4, micro_s=3.0, compute_s=12.0,  # type: ignore[arg-type]
                               intra_sync_s=0.0, offload_s=0.0)
    assert strategies.overlapped_step(plan, 1.5) == pytest.approx(12.0, rel=1e-12)
    assert strategies.overlapped_step(plan, 5.0) == pytest.approx(15.0, rel=1e-12)


def test_claims_compare_a_reference_gpu_with_every_gpu_of_a_two_gpu_node() -> None:
    """A node of 2 x 50 TFLOP/s-of-datasheet (1e14 peak each) and 2 x 80 GiB: an H200's 989.4 TFLOP/s
    bf16 peak is 989.4 / 200 = 4.947 such nodes, its 141 GiB is 141 / 160 of one; an H100's 80 GiB half."""
    nodes = Swarm.uniform(lab_node(gpus=2), 10)
    sc = scenario(M125, nodes, dc_gpus=8)
    c = claims(sc, project(sc))
    assert c.nodes_per_reference["h200"] == pytest.approx((989.4e12 / 2e14, 141 / 160), rel=1e-12)
    assert c.nodes_per_reference["h100"] == pytest.approx((989.4e12 / 2e14, 0.5), rel=1e-12)


def test_the_datacenter_trains_round_the_clock_so_its_calendar_is_its_wall_clock() -> None:
    """Nothing stretches a datacenter's calendar: no part-time hours, no rejoining downloads."""
    r = colocated(model_spec("7B"), get_card("h100"), 64, 1e11)
    compute = 4e6 * (6 * 6.74e9 + 12 * 32 * 4096 * 4096) / (64 * 989.4e12 * 0.4)  # as in the colocated step above
    assert r.wall_clock_s == pytest.approx(1e11 / 4e6 * compute, rel=1e-12)
    assert r.calendar_s == pytest.approx(1e11 / 4e6 * compute, rel=1e-12)


def test_a_pipeline_stage_on_a_two_gpu_node_waits_for_its_fsdp_gather_and_scatter() -> None:
    """7B on 40 nodes of 2 x 24 GiB joined by a slow 1 GB/s link: each micro-batch gathers and scatters
    the stage's bf16 weights inside the node, 3 (G-1)/G · 2 · N_stage bytes = 3 N_stage bytes at G = 2,
    which takes longer than the stage's compute, so a stage's busy time is micro-batches x that."""
    node = with_link(lab_node(gpus=2, memory_bytes=Figure(24 * 2**30, "t"), intra_bw=Figure(1e9, "t")),
                     uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    r = pipeline(model_spec("7B"), Swarm.uniform(node, 40), 1e10)
    assert r.feasible, r.reason
    k, micro = (int(x) for x in __import__("re").findall(r"(\d+) stages x \d+ pipelines, (\d+) micro", r.plan)[0])
    layers = math.ceil(32 / k)
    stage_params = layers * (6.74e9 - 2 * 32000 * 4096) / 32 + 32000 * 4096
    gather = 3 * (2 - 1) / 2 * 2 * stage_params / 1e9
    compute = 4096 * (6 * stage_params + 12 * layers * 4096 * 4096) * 8 / 6 / (2 * 5e13)  # even with full recompute
    assert gather > compute
    assert r.compute_s == pytest.approx(micro * gather, rel=1e-12)


def test_ddp_communication_is_the_step_less_the_compute_by_hand() -> None:
    """62 one-sequence micro-batches on 4 lab nodes: the step of the first test here, of which the
    node's compute is COMPUTE and the rest, what the ring adds past the last backward, is communication."""
    r = ddp(M125, Swarm.uniform(lab_node(), 4), 1e9, settings=Settings(micro_batch_tokens=2048))
    micro = COMPUTE / SEQS
    step = (SEQS - 1) * micro + micro / 3 + max(2 * micro / 3, RING)
    assert r.compute_s == pytest.approx(COMPUTE, rel=1e-12)
    assert r.comm_s == pytest.approx(step - COMPUTE, rel=1e-12)
    assert r.comm_s == pytest.approx(RING - 2 * micro / 3, rel=1e-9)  # the ring outlasts the backward it hides behind


def test_a_pipeline_charges_the_whole_pc_as_card_plus_host_by_hand() -> None:
    """The 2 x 4 pipeline plan above on 8 lab nodes: with the whole PC charged each node costs its
    $1000 card + $500 host, amortised over 4 years of the hours trained; with the card alone, $1000."""
    m = model_spec("7B", batch_tokens=4 * 4096)
    node = with_link(lab_node(), uplink_bps=1e9, downlink_bps=1e9, rtt_s=0.03)
    settings = Settings(critical_batch_tokens=1.0, diloco_token_factor=1.0)
    pc = pipeline(m, Swarm.uniform(node, 10), 1e10, settings=settings, prices=Prices(swarm_hardware="pc"))
    card = pipeline(m, Swarm.uniform(node, 10), 1e10, settings=settings)
    assert pc.nodes == card.nodes == 8 and pc.wall_clock_s == card.wall_clock_s
    wall = pc.wall_clock_s or 0.0
    assert pc.hardware_cost_usd == pytest.approx(8 * (1000 + 500) * wall / (4 * YEAR), rel=1e-12)
    assert card.hardware_cost_usd == pytest.approx(8 * 1000 * wall / (4 * YEAR), rel=1e-12)


def test_colocated_tensor_parallel_memory_per_gpu_by_hand() -> None:
    """The tp = 2 plan above (4 x 16,384, N = 12·4·16384² + 32000·16384, 8 H100s, dp = 4): each GPU
    holds half the bf16 weights and gradients (2N/2 each), Adam's 12N sharded over all 8 GPUs (tp
    times ZeRO-1's dp), and half of the 4 layers' 34·s·h activations, since sequence parallelism
    splits them over tp (Korthikanti et al. 2022). The chunked fp32 logits: ceil(32000/16384) = 2
    chunks of 4096/2 = 2048 tokens, 4·2048·32000 bytes, also split over tp."""
    m = model_spec(layers=4, width=16384)
    n = 12 * 4 * 16384**2 + 32000 * 16384
    r = colocated(m, get_card("h100"), 8, 1e10)
    assert r.plan.startswith("tp=2 pp=1 dp=4") and "selective recompute" in r.plan
    mem = r.memory
    assert mem is not None and mem.recompute == "selective" and mem.micro_batch == 1
    assert mem.weights == pytest.approx(2 * n / 2, rel=1e-12)
    assert mem.gradients == pytest.approx(2 * n / 2, rel=1e-12)
    assert mem.optimizer == pytest.approx(12 * n / 8, rel=1e-12)
    assert mem.activations == pytest.approx(34 * 4096 * 16384 * 4 / 2, rel=1e-12)
    assert mem.logits == pytest.approx(4 * 2048 * 32000 / 2, rel=1e-12)


def test_a_pipeline_of_two_gpu_nodes_shares_its_activations_and_charges_both_cards_by_hand() -> None:
    """7B on 40 nodes of 2 x 24 GiB (the FSDP-stage case above): 3 stages of ceil(32/3) = 11 layers
    x 13 pipelines, 76 micro-batches, so min(3, 76) = 3 micro-batches in flight on the first stage,
    their 3·11 layers of activations shared by the node's 2 GPUs: 16.5 layers per GPU. 34·s·h bytes a
    layer overflow 90 % of 24 GiB, so full recomputation: 2·s·h stored per layer in flight plus one
    layer's 34·s·h. The stage's weights (11 layers + an embedding) are FSDP-sharded over the 2 GPUs:
    2 bytes each of weights and gradients, 12 of Adam, per param / 2. Hardware: each node's two
    $1000 cards, amortised over 4 years of the wall clock."""
    node = with_link(lab_node(gpus=2, memory_bytes=Figure(24 * 2**30, "t"), intra_bw=Figure(1e9, "t")),
                     uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    r = pipeline(model_spec("7B"), Swarm.uniform(node, 40), 1e10)
    assert r.plan.startswith("3 stages x 13 pipelines, 76 micro-batches/step") and r.nodes == 39 and r.gpus == 78
    stage_params = 11 * (6.74e9 - 2 * 32000 * 4096) / 32 + 32000 * 4096
    sh = 4096 * 4096
    mem = r.memory
    assert mem is not None and mem.recompute == "full"
    assert 34 * sh * 16.5 + 16 * stage_params / 2 > 0.9 * 24 * 2**30  # why not selective
    assert mem.activations == pytest.approx(2 * sh * 16.5 + 34 * sh, rel=1e-12)
    assert mem.weights == pytest.approx(2 * stage_params / 2, rel=1e-12)
    assert mem.optimizer == pytest.approx(12 * stage_params / 2, rel=1e-12)
    assert mem.logits == pytest.approx(4 * 512 * 32000, rel=1e-12)  # one chunk: 4096 / ceil(32000/4096) tokens
    wall = r.wall_clock_s or 0.0
    assert r.hardware_cost_usd == pytest.approx(39 * 2 * 1000 * wall / (4 * YEAR), rel=1e-12)


def test_free_home_electricity_costs_only_the_hardware_and_a_negative_price_is_refused() -> None:
    """$0/kWh at home (own solar) is a valid price: the 4 lab nodes' ddp run (125M on 1e9 tokens, the
    step of the tests above) draws its energy as ever, pays nothing for it and still pays its cards,
    4 x $1000 over 4 years of the wall clock. A cent below zero is refused with its one line."""
    sc = scenario(M125, Swarm.uniform(lab_node(), 4), tokens=1e9, strategy="ddp", prices=Prices(home_usd_per_kwh=0.0))
    (r,) = project(sc)
    step = COMPUTE / 3 + max(2 * COMPUTE / 3, RING)
    factor = (1 + BATCH / b_crit(125e6, 1e9)) / (1 + 0.5e6 / b_crit(125e6, 1e9))
    wall = 1e9 * factor / BATCH * step
    busy = 1e9 * factor / BATCH * COMPUTE
    joules = 4 * ((300 + 100) * busy + (60 + 40) * (wall - busy))
    assert r.wall_clock_s == pytest.approx(wall, rel=1e-12)
    assert r.energy_j == pytest.approx(joules, rel=1e-12)
    assert r.co2_kg == pytest.approx(joules / 3.6e6 * 0.48, rel=1e-12)  # the default 480 g/kWh grid
    assert r.energy_cost_usd == 0.0
    assert r.hardware_cost_usd == pytest.approx(4 * 1000 * wall / (4 * YEAR), rel=1e-12)
    assert r.cost_usd == pytest.approx(4 * 1000 * wall / (4 * YEAR), rel=1e-12)
    with pytest.raises(FlopwattError, match=r"^home electricity price must be >= 0 and <= 10, got -0\.01$"):
        scenario(M125, Swarm.uniform(lab_node(), 4), prices=Prices(home_usd_per_kwh=-0.01))


def test_diloco_communication_is_the_outer_all_reduce_spread_over_h_by_hand() -> None:
    """125M on the 4 lab nodes, H = 100, int8: the inner step is the node's compute alone (one
    micro-batch, nothing to sync inside the node), the outer ring of 125M bytes takes
    2·3/4·1e9 bit / 100 Mbit/s + 3 x 20 ms = 15.06 s, so each step carries 15.06 / 100 = 150.6 ms of it."""
    r = diloco(M125, Swarm.uniform(lab_node(), 4), 1e10, settings=Settings(diloco_h=100, diloco_bits=8))
    ring8 = 2 * 3 / 4 * 125e6 * 8 / 100e6 + 3 * 0.02
    assert ring8 == pytest.approx(15.06, rel=1e-12)
    assert r.compute_s == pytest.approx(COMPUTE, rel=1e-12)
    assert r.comm_s == pytest.approx(0.1506, rel=1e-9)
    assert r.step_s == pytest.approx(COMPUTE + 0.1506, rel=1e-12)


def test_colocated_pipeline_sends_by_hand_with_a_fractional_batch_per_replica() -> None:
    """Llama 2 13B with a single attention head (so no tensor parallelism) on 24 H100s: tp = pp = 1
    needs 4N = 52 GB of weights and gradients + 12N/24 of ZeRO-1 Adam + 40 layers of 34·s·h, over
    the 0.9 x 80 GiB usable; pp = 2 (20 layers, 2 micro-batches in flight) fits, dp = 24/2 = 12. Each
    replica's 4M/12 = 333,333.3 tokens cross the stage boundary as s·h·2 bytes per sequence forward and
    again back over the 400 Gb/s NIC per GPU (50 GB/s); the bf16 gradient ring of each stage's half of
    2N bytes spans 3 servers: min(NVLink 450 GB/s, 8 x 50 GB/s) = 400 GB/s."""
    n = 13e9
    m = model_spec("13B", heads=1)
    assert 4 * n + 12 * n / 24 + 34 * 4096 * 5120 * 40 > 0.9 * 80 * 2**30
    r = colocated(m, get_card("h100"), 24, 1e10)
    assert r.plan.startswith("tp=1 pp=2 dp=12, bf16, selective recompute")
    per_replica = 4e6 / 12
    sends = 2 * per_replica * 5120 * 2 / 50e9
    ring = 2 * 11 / 12 * (2 * n / 2) / 400e9
    assert sends == pytest.approx(0.1365333333333333, rel=1e-12)
    assert r.comm_s == pytest.approx(sends + ring, rel=1e-12)
    compute = 4e6 * (6 * n + 12 * 40 * 5120 * 4096) / (24 * 989.4e12 * 0.4)
    assert r.compute_s == pytest.approx(compute, rel=1e-12)
    assert r.step_s == pytest.approx(max(compute, sends + ring), rel=1e-12)


def test_a_one_gpu_node_has_no_link_between_gpus_to_wait_for_in_a_pipeline() -> None:
    """A pipeline stage on a one-GPU node gathers nothing from other GPUs: the 7B plan of the
    24 GiB nodes above is the same whether the (absent) link between GPUs is 16 GB/s or 0."""
    node = with_link(Node(**{**lab_node().__dict__, "memory_bytes": Figure(24 * 2**30, "t")}),
                     uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    r = pipeline(model_spec("7B"), Swarm.uniform(node, 40), 1e10)
    none = pipeline(model_spec("7B"), Swarm.uniform(Node(**{**node.__dict__, "intra_bw": Figure(0.0, "t")}), 40), 1e10)
    assert r.feasible and none.feasible
    assert (none.plan, none.step_s, none.compute_s, none.wall_clock_s) == (r.plan, r.step_s, r.compute_s, r.wall_clock_s)


def test_claims_compare_a_datasheet_node_with_the_datasheet_peak_and_a_measured_one_with_the_measured_rate() -> None:
    """Like with like: a node whose FLOP/s are a datasheet figure against the H200's 989.4 TFLOP/s bf16
    peak, labelled "datasheet"; a measured node against the 794.5 TFLOP/s mamf-finder measured on an
    H100 SXM (the H200's row of stas00/ml-engineering's achievable-matmul table), labelled so."""
    def answer(node: Node) -> tuple[float, str]:
        sc = scenario(M125, Swarm.uniform(node, 10), dc_gpus=8)
        c = claims(sc, project(sc))
        return c.nodes_per_reference["h200"][0], c.notes[0]

    ratio, note = answer(lab_node())
    assert ratio == pytest.approx(989.4e12 / 1e14, rel=1e-12)
    assert note == "reference FLOP/s: the H100's and H200's datasheet bf16 matmul, against the node FLOP/s above"
    ratio, note = answer(lab_node(flops=Figure(1e14, "measured in run 3f2a9c0d: matmul bf16 sustained")))
    assert ratio == pytest.approx(794.5e12 / 1e14, rel=1e-12)
    assert note == ("reference FLOP/s: the H100's and H200's measured achievable bf16 matmul, against the node "
                    "FLOP/s above")


def test_claims_datacenter_cost_is_the_colocated_projections_and_none_when_it_cannot_train() -> None:
    nodes = Swarm.uniform(lab_node(), 10)
    sc = scenario(M125, nodes, dc_gpus=8)
    results = project(sc)
    dc = next(r for r in results if r.strategy == "colocated")
    assert dc.feasible and dc.cost_usd is not None and dc.cost_usd > 0
    assert claims(sc, results).datacenter_cost_usd == dc.cost_usd
    # 70B on one H100: 16 bytes/param of weights, gradients and Adam is 1.1 TB against 80 GB.
    sc = scenario(model_spec("70B"), nodes, dc_gpus=1)
    results = project(sc)
    assert not next(r for r in results if r.strategy == "colocated").feasible
    c = claims(sc, results)
    assert c.datacenter_cost_usd is None and c.datacenter_energy_per_token_j is None
    assert c.owner_datacenter_share_usd is None


def test_fp32_training_doubles_the_activations_by_hand() -> None:
    """125M in fp32: 4 + 4 + 8 bytes/param of weights, gradients and Adam; activations 34·s·h·L at
    16 bits with selective recomputation, doubled at 32: 2 x 34 x 2048 x 768 x 12 = 1,283,457,024;
    with full recomputation 2 x (2·s·h·L + 34·s·h) = 2 x 91,226,112 = 182,452,224."""
    selective = memory_per_gpu(M125, "fp32", recompute="selective")
    assert selective.activations == 1_283_457_024 == 2 * 34 * 2048 * 768 * 12
    assert (selective.weights, selective.gradients, selective.optimizer) == (4 * 125e6, 4 * 125e6, 8 * 125e6)
    full = memory_per_gpu(M125, "fp32", recompute="full")
    assert full.activations == 182_452_224 == 2 * (2 * 2048 * 768 * 12 + 34 * 2048 * 768)
    assert memory_per_gpu(M125, "bf16", recompute="selective").activations == 1_283_457_024 / 2


# 125M at one sequence per micro-batch (docs/projection.md, "Memory"): 16 bytes/param + 34·s·h·L of
# selective activations + one 32-token Liger chunk of fp32 logits (ceil(V/h) = 66, ceil(2048/66) = 32).
M125_AT_ONE = 16 * 125e6 + 34 * 2048 * 768 * 12 + 4 * 32 * 50257


def test_a_node_whose_memory_is_exactly_one_sequence_trains_one_sequence_per_micro_batch() -> None:
    """A node of exactly 2,648,161,408 bytes, all usable, holds one sequence with selective
    recomputation: its 62 sequences a step (0.5M tokens over 4 nodes) run as 62 micro-batches. One
    byte less falls back to full recomputation, 58·s·h per sequence: 6 sequences take
    2e9 + 6 x 91,226,112 + 4 x 256 x V (ceil(12,288/66) = 187, to the power of two 256) =
    2,598,819,840 bytes, 7 take 2,690,045,952, over; so ceil(62/6) = 11 micro-batches."""
    assert M125_AT_ONE == 2_648_161_408
    whole = Settings(usable_memory=1.0)

    def plan(memory: float) -> tuple[str, float, str]:
        r = ddp(M125, Swarm.uniform(lab_node(memory_bytes=Figure(memory, "t")), 4), 1e9, settings=whole)
        assert r.memory is not None
        return r.plan, r.memory.total, r.memory.recompute

    text, total, mode = plan(M125_AT_ONE)
    assert (total, mode) == (M125_AT_ONE, "selective")
    assert text.startswith("126,976 tokens/node/step in 62 micro-batches, 16-bit gradients, ")
    text, total, mode = plan(M125_AT_ONE - 1)
    assert 2e9 + 7 * 58 * 2048 * 768 + 4 * 256 * 50257 > M125_AT_ONE - 1
    assert (total, mode) == (2e9 + 6 * 58 * 2048 * 768 + 4 * 256 * 50257, "full")
    assert text.startswith("126,976 tokens/node/step in 11 micro-batches, 16-bit gradients, ")


def test_a_ddp_plan_of_one_sequence_per_node_says_one_micro_batch() -> None:
    """0.5M tokens over 248 nodes: ceil(0.5e6 / (248 x 2048)) = 1 sequence each, one micro-batch."""
    r = ddp(M125, Swarm.uniform(lab_node(), 248), 1e9)
    assert r.plan.startswith("2,048 tokens/node/step in 1 micro-batch, 16-bit gradients, ")


@pytest.mark.parametrize(("gpus", "node_watts", "per_gpu"), [(2, 900.0, 450.0), (4, 1000.0, 250.0)])
def test_a_whole_node_wall_reading_is_shared_between_its_gpus(gpus: int, node_watts: float, per_gpu: float) -> None:
    """--node-watts is the wall reading of the whole node: each GPU gets its share, the host none."""
    node = with_power(lab_node(gpus=gpus), node_watts=node_watts, node_idle_watts=node_watts / 5)
    assert (node.watts.value, node.host_watts.value) == (per_gpu, 0.0)
    assert (node.idle_watts.value, node.host_idle_watts.value) == (per_gpu / 5, 0.0)
    assert (node.active_watts, node.waiting_watts) == (node_watts, node_watts / 5)
    assert node.watts.source == "option --node-watts (the whole node, per GPU)"


def test_the_datacenter_fabric_says_which_link_and_nic_it_assumed() -> None:
    """DGX H100: NVLink 4 at 900 / 2 GB/s and 400 Gb/s NICs; DGX A100: 600 / 2 and 200 Gb/s; an L40S
    server (no NVLink) on PCIe 4.0 x16 (31.5 GB/s) with the 200 Gb/s of a PCIe 4 server; a consumer
    card on PCIe behind one 100 Gb/s NIC per server."""
    source = {k: default_fabric(get_card(k)).source for k in ("h100", "a100", "l40s", "rtx4090")}
    assert source == {
        "h100": "DGX-style server: 8 GPUs, NVLink 450 GB/s per direction, 400 Gb/s NIC per GPU",
        "a100": "DGX-style server: 8 GPUs, NVLink 300 GB/s per direction, 200 Gb/s NIC per GPU",
        "l40s": "DGX-style server: 8 GPUs, PCIe 4.0 32 GB/s per direction, 200 Gb/s NIC per GPU",
        "rtx4090": "assumed: 8 GPUs on PCIe 32 GB/s, one 100 Gb/s NIC per server",
    }
    assert default_fabric(get_card("l40s")).inter_bw == 200e9 / 8


def test_a_datacenter_card_without_its_own_dgx_figure_takes_the_dgx_h100_ratio_by_hand() -> None:
    """DGX H100: 10.2 kW for 8 GPUs of 700 W board power, 1,275 W per GPU, 1.82x its board power.
    An L40S (350 W) in such a server: 350 x 1,275 / 700 = 637.5 W; its host share 637.5 - 350."""
    server = datacenter_watts_per_gpu(get_card("l40s"))
    assert server.value == pytest.approx(637.5, rel=1e-12)
    assert server.source == "assumed: board power x 1.82, DGX H100's server-to-GPU power ratio"
    node = node_from_card(get_card("l40s"), gpus=2)
    assert node.host_watts.value == pytest.approx(2 * (637.5 - 350), rel=1e-12)


def test_a_diloco_swarm_counts_its_nodes_online_on_average_only_when_some_are_part_time() -> None:
    """Three nodes online all day and one 6 h a day, less its daily download of the bf16 weights
    (2 x 125e6 x 8 bit over 400 Mbit/s = 5 s): 3 + (21,600 - 5) / 86,400 = 3.2499 nodes on average."""
    settings = Settings(diloco_h=100)
    full = diloco(M125, Swarm.uniform(lab_node(), 4), 1e10, settings=settings)
    assert full.feasible and not any("online on average" in note for note in full.notes)
    part = lab_node(hours_per_day=Figure(6.0, "t"))
    mixed = diloco(M125, Swarm((NodeGroup(lab_node(), 3), NodeGroup(part, 1))), 1e10, settings=settings)
    online = 3 + (6 * 3600 - 2 * 125e6 * 8 / 400e6) / 86400
    assert online == pytest.approx(3.2499421296296297, rel=1e-12)
    assert "3.2 nodes online on average" in mixed.notes
    assert mixed.calendar_s == pytest.approx((mixed.wall_clock_s or 0) * 4 / online, rel=1e-12)


def test_the_flop_matched_datacenter_is_whole_servers_and_at_least_one() -> None:
    """An H100 at 40 % MFU trains at 0.4 x 989.4 = 395.76 TFLOP/s; a lab node at 50 TFLOP/s. One
    node: 0.13 of a GPU, still one 8-GPU server; 63 nodes (7.96 GPUs) one server; 64 (8.09) two."""
    h100 = get_card("h100")
    assert 63 * 5e13 / 395.76e12 < 8 < 64 * 5e13 / 395.76e12
    assert [matched_dc_gpus(Swarm.uniform(lab_node(), n), h100) for n in (1, 63, 64)] == [8, 8, 16]
    assert scenario(M125, Swarm.uniform(lab_node(), 1)).dc_gpus == 8


def test_a_colocated_plan_under_full_recomputation_pays_8_6_of_the_flops_by_hand() -> None:
    """36 x 3,072 (N = 12·36·3072² + 32000·3072) on one H100 (72 GiB usable): 16N of weights,
    gradients and Adam plus 36 layers of 34·s·h selective activations overflow it; full
    recomputation keeps 2·s·h per layer plus one layer's 34·s·h and fits. Its 4M tokens a step then
    cost 8/6 of 6N + 12·L·h·s FLOPs each (docs/projection.md, "Model")."""
    m = model_spec(layers=36, width=3072)
    n = 12 * 36 * 3072**2 + 32000 * 3072
    sh = 4096 * 3072
    logits = 4 * 512 * 32000  # next_pow2(ceil(4096 / ceil(32000 / 3072))) = 512 tokens a chunk
    assert 16 * n + 34 * sh * 36 + logits > 0.9 * 80 * 2**30 >= 16 * n + (2 * 36 + 34) * sh + logits
    r = colocated(m, get_card("h100"), 1, 1e10)
    assert r.plan.startswith("tp=1 pp=1 dp=1, bf16, full recompute")
    assert r.memory is not None and r.memory.total == pytest.approx(16 * n + (2 * 36 + 34) * sh + logits, rel=1e-12)
    compute = 4e6 * (6 * n + 12 * 36 * 3072 * 4096) * 8 / 6 / (989.4e12 * 0.4)
    assert r.compute_s == pytest.approx(compute, rel=1e-9)
    assert r.step_s == pytest.approx(compute, rel=1e-9) and r.comm_s == 0
    assert r.wall_clock_s == pytest.approx(1e10 / 4e6 * compute, rel=1e-9)


def test_a_node_that_cannot_hold_the_model_says_what_it_needs_in_gib_by_hand() -> None:
    """7B on one RTX 4090 (24 GiB, 90 % usable): 16N of weights, gradients and Adam, 2·s·h per layer
    plus one layer's 34·s·h of activations, chunked logits of 4096 / ceil(32000 / 4096) = 512 tokens:
    16 x 6.74e9 + 98 x 4096² + 4 x 512 x 32000 = 109,549,703,168 bytes = 102.0 GiB."""
    need = 16 * 6.74e9 + (2 * 32 + 34) * 4096 * 4096 + 4 * 512 * 32000
    assert need == 109_549_703_168
    node = with_link(node_from_card(get_card("rtx4090")), uplink_bps=100e6, downlink_bps=400e6, rtt_s=0.02)
    r = ddp(model_spec("7B"), Swarm.uniform(node, 4), 1e9)
    assert not r.feasible
    assert r.reason == (f"does not fit: needs {need / 2**30:.1f} GiB per GPU with full recomputation; GeForce RTX "
                        f"4090 has {0.9 * 24:.1f} GiB usable of 24.0 (try --optimizer-8bit, --offload-optimizer, "
                        "--gpus-per-node or pipeline)")
    assert f"{need / 2**30:.1f}" == "102.0"


def test_a_shape_without_heads_gets_one_head_per_128_of_width_and_at_least_one() -> None:
    """docs/projection.md, "Model": a Llama-like head of 128 wide; 4096 // 128 = 32, 255 // 128 = 1, 64 -> 1."""
    assert [model_spec(layers=4, width=w).heads for w in (4096, 255, 64)] == [32, 1, 1]


def test_micro_batch_tokens_below_half_a_sequence_still_make_micro_batches_of_one_sequence() -> None:
    """--micro-batch-tokens 1000 on 2,048-token sequences rounds to 0 sequences: one is the fewest, so
    each node's 62 sequences a step run as 62 micro-batches, as at exactly one sequence."""
    r = ddp(M125, Swarm.uniform(lab_node(), 4), 1e9, settings=Settings(micro_batch_tokens=1000))
    assert r.memory is not None and r.memory.micro_batch == 1
    assert r.plan.startswith("126,976 tokens/node/step in 62 micro-batches, ")
    micro = COMPUTE / SEQS
    assert r.step_s == pytest.approx((SEQS - 1) * micro + micro / 3 + max(2 * micro / 3, RING), rel=1e-12)


def test_a_node_online_23_hours_a_day_is_part_time_and_downloads_the_weights_each_day() -> None:
    """23 h a day over a 1 Mbit/s downlink: rejoining downloads 2 x 125M bf16 bytes, 2,000 s, so each
    node trains (23 x 3600 - 2000) / 86400 of the day; a synchronous swarm's calendar is wall / that."""
    node = lab_node(downlink_bps=Figure(1e6, "t"), hours_per_day=Figure(23.0, "t"))
    r = ddp(M125, Swarm.uniform(node, 4), 1e9)
    share = (23 * 3600 - 2 * 125e6 * 8 / 1e6) / 86400
    assert f"{share * 24:.1f}" == "22.4"
    assert "every node online together 22.4 h a day" in r.notes
    assert r.calendar_s == pytest.approx((r.wall_clock_s or 0) / share, rel=1e-12)


def test_each_owner_pays_the_bill_over_the_calendar_months_the_job_runs() -> None:
    """7B on 1,000 RTX 4090s runs for over a year on the calendar (the pipeline): each owner's bill
    per month is their bill over the months it runs, a month being 365.25 / 12 days (docs/projection.md,
    "The claims"; the code rounds it to 30.44 d, 8e-5 away)."""
    node = with_link(node_from_card(get_card("rtx4090")), uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    sc = scenario(model_spec("7B"), Swarm.uniform(node, 1000))
    results = project(sc)
    answers = claims(sc, results)
    fastest = min((r for r in results if r.feasible and r.strategy != "colocated"), key=lambda r: r.calendar_s)
    months = fastest.calendar_s / (365.25 / 12 * 86400)
    assert months > 12
    assert answers.owner_power_bill_usd == pytest.approx(fastest.energy_cost_usd / 1000, rel=1e-12)
    assert answers.owner_power_bill_per_month_usd == pytest.approx(answers.owner_power_bill_usd / months, rel=1e-4)


def part_time(hours: float, count: int) -> Swarm:
    return Swarm.uniform(lab_node(hours_per_day=Figure(hours, "t")), count)


def test_a_ring_whose_nodes_are_never_online_long_enough_to_download_the_weights_cannot_train() -> None:
    """Online 3.6 ms a day, less than the 125M weights take to download at 400 Mbit/s: the share of
    the day left is 0, so DDP's synchronous ring never runs (infeasible, with the reason)."""
    r = ddp(M125, part_time(1e-6, 4), 1e9)
    assert not r.feasible and r.reason == "nodes are not online long enough to download the weights"


def test_a_batch_exactly_at_the_nominal_one_costs_no_extra_tokens_and_says_nothing() -> None:
    """125M with a nominal batch of 16 sequences on 16 nodes: one sequence each, 32,768 tokens, exactly
    the nominal batch and far below the critical one, so the token factor is 1 and no batch note."""
    model = dataclasses.replace(M125, batch_tokens=16 * 2048)
    r = ddp(model, Swarm.uniform(lab_node(), 16), 1e9)
    assert r.effective_batch_tokens == 32_768 and r.token_factor == 1.0
    assert not any(note.startswith("global batch") for note in r.notes)


def test_diloco_runs_with_less_than_one_node_online_on_average() -> None:
    """Two nodes online 12 h a day, less their daily download: under one node online on average, and
    DiLoCo still runs (its calendar stretched by 2 over that average), where a ring could not keep up."""
    swarm = part_time(12.0, 2)
    online = 2 * (12 * 3600 - swarm_join_s(swarm.groups[0].node, M125.params)) / 86400
    assert 0 < online < 1
    r = diloco(M125, swarm, 1e9)
    assert r.feasible and f"{online:,.1f} nodes online on average" in r.notes
    assert r.wall_clock_s is not None and r.calendar_s == pytest.approx(r.wall_clock_s * 2 / online, rel=1e-12)


def test_a_pipeline_of_pcs_without_a_card_price_charges_their_host_price_alone() -> None:
    """The 7B pipeline of 40 two-GPU nodes above (3 stages x 13 pipelines: 39 nodes used), counted as
    whole PCs, when the node has no card price (a stored run of an unknown card): each used node costs
    its $500 host over 4 years of the wall clock, nothing for a card it has no price for."""
    node = with_link(lab_node(gpus=2, memory_bytes=Figure(24 * 2**30, "t"), intra_bw=Figure(1e9, "t"), price_usd=None),
                     uplink_bps=100e6, downlink_bps=400e6, rtt_s=0.02)
    r = pipeline(model_spec("7B"), Swarm.uniform(node, 40), 1e10, prices=Prices(swarm_hardware="pc"))
    assert r.feasible and r.plan.startswith("3 stages x 13 pipelines")
    assert r.hardware_cost_usd == pytest.approx(39 * 500 * (r.wall_clock_s or 0.0) / (4 * YEAR), rel=1e-12)


def test_a_node_assumes_32_gib_of_host_ram_and_a_pcie_4_x8_link_where_nothing_says_otherwise() -> None:
    """The defaults docs/projection.md gives a PC: 32 GiB of RAM (a card node), and 16 GB/s (PCIe 4.0
    x8: 8 lanes x 2 GB/s) between two GPUs of a node whose card has no PCIe figure."""
    node = node_from_card(get_card("rtx4090"), gpus=2)
    assert node.host_ram_bytes.value == 32 * 2**30 and node.host_ram_bytes.source == "assumed: 32 GiB host RAM"
    bare = lab_node()
    assert bare.intra_bw.value == 16e9 and bare.intra_bw.source == "assumed: PCIe 4.0 x8 between GPUs"
