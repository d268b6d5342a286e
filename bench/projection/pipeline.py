"""SWARM-style pipelines over home links, and the planner that picks stages, replicas, micro-batches
and how the replicas sync (docs/projection.md, "Swarm pipeline").

A pipeline of k nodes holds the model in k stages (layers split evenly, the embedding on the first,
the output head on the last); r such pipelines share the batch and sync their gradients each step
(an all-reduce) or every H steps (DiLoCo across the pipeline replicas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.projection.collectives import allreduce_s
from bench.projection.energy import PowerGroup, Prices, Projection, account, infeasible
from bench.projection.model import Memory, ModelSpec, fit, memory_advice, memory_per_gpu, recompute_factor
from bench.projection.nodes import node_sources
from bench.projection.quality import critical_batch_factor, diloco_token_factor
from bench.projection.strategies import GIB, Settings, critical_batch, swarm_cost_includes, sync_calendar, diloco_factor, node_step
from bench.projection.swarm import Swarm


def stage_params(model: ModelSpec, stages: int) -> float:
    """Parameters of the largest stage: ceil(L/k) layers plus an embedding matrix (first or last)."""
    return math.ceil(model.layers / stages) * model.layer_params + model.vocab * model.width


def stage_flops_per_token(model: ModelSpec, stages: int) -> float:
    """The largest stage's share of 6N + 12·L·h·s."""
    return 6 * stage_params(model, stages) + 12 * math.ceil(model.layers / stages) * model.width * model.seq


def stage_transfer_s(model: ModelSpec, bits: int, uplink: float, downlink: float, sequences: float = 1) -> float:
    """One micro-batch's s·h activations (or their gradients) over one boundary: the sender's uplink
    and the receiver's downlink, whichever is slower. A GPipe phase sends one such message per link."""
    bits_moved = sequences * model.seq * model.width * bits
    return max(bits_moved / uplink, bits_moved / downlink)


def pipeline_schedule_s(micro_batches: int, stages: int, stage_s: float, transfer_s: float, rtt_s: float) -> float:
    """GPipe (Huang et al. 2019): all forwards, then all backwards, each phase a pipeline whose stages
    are the k compute stages and the k - 1 links between them. A phase takes its fill and drain (k
    computes, k - 1 transfers and latencies) plus (m - 1) slots of its slowest stage, compute or link.
    Forward is a third of a stage's compute, backward two thirds (6N = 2N + 4N)."""
    forward, backward = stage_s / 3, 2 * stage_s / 3
    steady = (micro_batches - 1) * (max(forward, transfer_s) + max(backward, transfer_s))
    return steady + stages * stage_s + 2 * (stages - 1) * transfer_s + (stages - 1) * rtt_s


@dataclass(frozen=True)
class _Plan:
    stages: int
    replicas: int
    micro: int
    sync: str
    step_s: float
    stage_s: float
    wall: float
    factor: float
    memory: Memory
    band: object
    note: str
    batch: float
    algorithm: str


def _stage_counts(model: ModelSpec, first: int, last: int) -> list[int]:
    """The fewest stages for each distinct stage size ceil(L/k): more stages of the same size only
    lengthen the fill and drain and take nodes from replicas."""
    out, seen = [], set()
    for k in range(first, last + 1):
        size = math.ceil(model.layers / k)
        if size not in seen:
            seen.add(size)
            out.append(k)
    return out


def pipeline(model: ModelSpec, swarm: Swarm, tokens: float, *, prices: Prices = Prices(),
             settings: Settings = Settings()) -> Projection:
    """The fastest pipeline plan for a model that does not fit one node; every node is its slowest."""
    up, down, rtt = swarm.link()
    n, hardware = swarm.nodes, swarm.name
    node = min((g.node for g in swarm.groups), key=lambda x: (x.memory_bytes.value, x.node_flops))
    slow = swarm.slowest
    if not isinstance(node_step(model, node, model.seq * node.gpus, settings), str):
        return infeasible("pipeline", "model fits one node: no pipeline needed (see ddp, diloco)", hardware,
                          swarm.gpus, tokens, nodes=n)
    budget = node.memory_bytes.value * settings.usable_memory
    g = node.gpus
    k_min = max(2, math.ceil(4 * model.params / (budget * g)))
    b_crit = critical_batch(model, tokens, settings)
    calendar, availability = sync_calendar(model, swarm)
    best: _Plan | None = None
    transfer = stage_transfer_s(model, settings.activation_bits, up, down)
    bands: dict[int, tuple[object, float, str]] = {}  # DiLoCo across r replicas does not depend on k
    for k in _stage_counts(model, k_min, min(n, model.layers)):
        layers = math.ceil(model.layers / k)
        params = stage_params(model, k)
        shards = model.params / params * g  # weights of one stage, sharded over the node's GPUs
        flops = stage_flops_per_token(model, k)
        fits: dict[int, Memory | None] = {}  # by micro-batches in flight
        top = n // k
        for r in sorted({top, *(2**i for i in range(int(math.log2(top)) + 1))}):
            m = max(1, math.ceil(model.batch_tokens / (r * model.seq)))
            in_flight = min(k, m)
            if in_flight not in fits:
                fits[in_flight] = fit(model, node.dtype, budget, state_shards=shards, optimizer_shards=shards,
                                      layers_in_flight=in_flight * layers / g, options=settings.memory)
            mem = fits[in_flight]
            if mem is None:
                continue  # more pipelines split the batch finer: fewer micro-batches in flight may fit
            stage = model.seq * flops * recompute_factor(mem) / slow.node_flops
            if g > 1:  # FSDP inside the stage's node: gather and scatter its weights each micro-batch
                stage = max(stage, 3 * (g - 1) / g * 2 * params / slow.intra_bw.value)
            schedule = pipeline_schedule_s(m, k, stage, transfer, rtt)
            batch = r * m * model.seq
            batch_factor = critical_batch_factor(batch, model.batch_tokens, b_crit)
            grads, algorithm = allreduce_s(params * settings.grad_bits / 8, r, up, down, rtt)
            plans = [("all-reduce", grads, 1.0, None, "")]
            if r > 1:
                if r not in bands:
                    band = diloco_token_factor(r, settings.diloco_h, model.params, m * model.seq, tokens)
                    bands[r] = (band, *diloco_factor(band, settings))
                band, quality, note = bands[r]
                pseudo, _ = allreduce_s(params * settings.diloco_bits / 8, r, up, down, rtt)
                plans.append((f"DiLoCo H={settings.diloco_h}", pseudo / settings.diloco_h, quality, band, note))
            for sync, sync_s, quality, band, note in plans:
                factor = quality * batch_factor
                step = schedule + sync_s
                wall = tokens * factor / batch * step
                if best is None or wall < best.wall:
                    best = _Plan(k, r, m, sync, step, stage, wall, factor, mem, band, note, batch, algorithm)
    if best is None:
        k_need = min(model.layers, math.ceil(16 * model.params / (budget * g)))
        if k_need > n:
            return infeasible("pipeline", f"not enough nodes: a stage may hold {budget * g / GIB:.1f} GiB, so the "
                              f"model needs at least {k_need} nodes per pipeline, there are {n}", hardware,
                              swarm.gpus, tokens, nodes=n)
        smallest = memory_per_gpu(model, node.dtype, recompute="full", state_shards=model.params / stage_params(model,
                                  model.layers) * g, optimizer_shards=model.params / stage_params(model, model.layers) * g,
                                  layers_in_flight=1 / g, options=settings.memory)
        return infeasible("pipeline", f"no split fits: a stage of one layer and an embedding needs "
                          f"{smallest.total / GIB:.1f} GiB per GPU, {node.name} has {budget / GIB:.1f} GiB usable "
                          f"({memory_advice(settings.memory, '--gpus-per-node')})", hardware, swarm.gpus, tokens,
                          nodes=n)
    used = best.stages * best.replicas
    steps = tokens * best.factor / best.batch
    busy = best.micro * best.stage_s
    card = node.price_usd.value * g if node.price_usd else None
    price = {"card": card, "pc": (card or 0.0) + node.host_price_usd.value, "none": None}[prices.swarm_hardware]
    notes = [x for x in (best.note if best.sync.startswith("DiLoCo") else "", availability,
                         f"{n - used} nodes unused" if used < n else "",
                         "uneven swarm: every node taken as its slowest and smallest" if len(swarm.groups) > 1 else "")
             if x]
    return account(
        strategy="pipeline", hardware=hardware, gpus=used * g, nodes=used, tokens=tokens,
        plan=f"{best.stages} stages x {best.replicas} pipelines, {best.micro} micro-batches/step, "
             f"{settings.activation_bits}-bit activations, {best.sync} between pipelines",
        steps=steps, step_s=best.step_s, compute_s=busy, comm_s=best.step_s - busy,
        groups=[PowerGroup(used, slow.active_watts, slow.waiting_watts, busy, price)],
        usd_per_kwh=prices.home_usd_per_kwh, pue=prices.home_pue, prices=prices, memory=best.memory,
        sources=node_sources(slow), cost_includes=swarm_cost_includes(prices), calendar_factor=calendar,
        token_factor=best.factor, token_band=best.band, effective_batch_tokens=best.batch,  # type: ignore[arg-type]
        critical_batch_tokens=b_crit, outer_syncs=steps / settings.diloco_h if best.sync.startswith("DiLoCo") else None,
        notes=tuple(notes),
    )
