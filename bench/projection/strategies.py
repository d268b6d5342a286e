"""The strategies: the datacenter (`colocated`) and two swarm ones, `ddp` and `diloco`; the pipeline
planner lives in pipeline.py. Each returns a Projection (docs/projection.md names each formula).

Inside a swarm node of G GPUs the model is replicated when it fits one GPU (DDP in the node) and
sharded otherwise (FSDP / ZeRO-3); between nodes it is DDP or DiLoCo over the home links.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.hardware import Card
from bench.projection.collectives import allreduce_s
from bench.projection.energy import PowerGroup, Prices, Projection, account, infeasible
from bench.projection.model import MIN_MFU, Memory, MemoryOptions, ModelSpec, check, largest_micro_batch, memory_advice, \
    memory_per_gpu, recompute_factor
from bench.projection.nodes import DEFAULT_MFU, Fabric, Node, datacenter_watts_per_gpu, default_fabric, node_sources
from bench.projection.quality import DILOCO_BATCH_EXPONENT, TokenFactor, critical_batch_factor, \
    critical_batch_tokens, diloco_token_factor
from bench.projection.swarm import NodeGroup, Swarm, online_share

GIB = 2**30
#: A CPU Adam step reads and writes fp32 weights, momentum and variance and reads the gradient:
#: about 28 bytes per parameter through host memory (ZeRO-Offload, Ren et al. 2021, section 5).
CPU_ADAM_BYTES_PER_PARAM = 28.0


@dataclass(frozen=True)
class Settings:
    """Training choices, each a stated default (docs/projection.md)."""

    #: DiLoCo inner steps between outer syncs: 500 in Douillard et al. 2023.
    diloco_h: int = 500
    #: Bits per value of the DiLoCo pseudo-gradient all-reduce (OpenDiLoCo fp16; INTELLECT-1 int8).
    diloco_bits: int = 8
    #: Override DiLoCo's token factor (1: the same tokens, whatever the quality); None: the band.
    diloco_token_factor: float | None = None
    #: Bits per gradient value in the DDP all-reduce (bf16).
    grad_bits: int = 16
    #: Bits per activation value sent between pipeline stages (16; SWARM used 8-bit compression).
    activation_bits: int = 16
    #: Share of device (and host) memory a training process can use (CUDA context, fragmentation).
    usable_memory: float = 0.9
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    #: Tokens per micro-batch per GPU; None: as many whole sequences as fit.
    micro_batch_tokens: float | None = None
    #: Override the critical batch (tokens); None: Kaplan et al.'s B_crit at the final Chinchilla loss.
    critical_batch_tokens: float | None = None
    #: Share of the last micro-batch's compute DDP's all-reduce can hide behind: its backward, 2/3
    #: (Li et al. 2020); `flopwatt project --swarm-run` puts in what a swarm run measured.
    ddp_overlap: float = 2 / 3

    def validated(self) -> Settings:
        check(self.diloco_h, "DiLoCo H (local steps)", 1, 1e7, low_inclusive=True)
        check(self.diloco_bits, "DiLoCo precision bits", 1, 32, low_inclusive=True)
        if self.diloco_token_factor is not None:
            check(self.diloco_token_factor, "DiLoCo token factor", 0, 1000)
        check(self.grad_bits, "gradient bits", 1, 32, low_inclusive=True)
        check(self.activation_bits, "activation bits", 1, 32, low_inclusive=True)
        check(self.usable_memory, "usable memory share", 0, 1)
        if self.micro_batch_tokens is not None:
            check(self.micro_batch_tokens, "micro-batch tokens", 0, 1e9)
        if self.critical_batch_tokens is not None:
            check(self.critical_batch_tokens, "critical batch tokens", 0, 1e12)
        check(self.ddp_overlap, "DDP overlap share", 0, 1, low_inclusive=True)
        return self


# ------------------------------------------------------------------------------------------------
# Colocated (datacenter)
# ------------------------------------------------------------------------------------------------


def _colocated_plan(model: ModelSpec, dtype: str, gpus: int, budget: float, per_server: int,
                    options: MemoryOptions) -> tuple[int, int, int, Memory] | None:
    """The smallest tp·pp (tp within a server, tp·pp dividing the GPU count) whose memory fits,
    selective recomputation before full. Stages may be uneven: the largest holds ceil(L/pp) layers;
    under 1F1B the first stage keeps min(pp, micro-batches) of them in flight (Narayanan et al. 2021)."""
    for mode in ("selective", "full"):
        found: tuple[int, int, int, Memory] | None = None
        for t in (1, 2, 4, 8):
            if t > min(gpus, per_server) or model.heads % t:
                continue
            # Weights and gradients alone (4 bytes/param, unsharded by ZeRO-1) bound pp from below.
            for p in range(max(1, math.ceil(4 * model.params / (t * budget))), min(model.layers, gpus // t) + 1):
                if found and (t * p, p) >= (found[0] * found[1], found[1]):
                    break
                if gpus % (t * p):
                    continue
                d = gpus // (t * p)
                stage_layers = math.ceil(model.layers / p)
                micro = max(1.0, model.batch_tokens / d / model.seq)
                mem = memory_per_gpu(model, dtype, state_shards=t * model.layers / stage_layers,
                                     optimizer_shards=t * d * model.layers / stage_layers, tp=t,
                                     layers_in_flight=min(p, micro) * stage_layers, recompute=mode,  # type: ignore[arg-type]
                                     options=options)
                if mem.total <= budget:
                    found = (t, p, d, mem)
                    break
        if found:
            return found
    return None


#: The largest datacenter a projection takes.
MAX_GPUS = 1e7


def colocated(model: ModelSpec, card: Card, gpus: int, tokens: float, *, mfu: float = DEFAULT_MFU,
              fabric: Fabric | None = None, prices: Prices = Prices(), settings: Settings = Settings()) -> Projection:
    """Datacenter training with tensor (within a server), pipeline and data parallelism.

    Picks the smallest tp·pp that fits memory (ZeRO-1 shards Adam state over the data-parallel
    replicas). Step time = max(compute at `mfu`, communication): the stated MFU already includes
    the well-overlapped communication of a tuned run, so only communication that cannot hide
    behind compute adds time (docs: "Colocated"). Power: the server's per GPU, times PUE.
    """
    check(gpus, "gpus", 1, MAX_GPUS, low_inclusive=True)
    check(mfu, "utilisation", MIN_MFU, 1, low_inclusive=True)
    fab = fabric or default_fabric(card)
    dtype = card.best_training_dtype
    hardware = f"{gpus} x {card.name}"
    budget = card.memory_bytes * settings.usable_memory
    plan = _colocated_plan(model, dtype, gpus, budget, fab.gpus_per_node, settings.memory)
    if plan is None:
        return infeasible("colocated", f"does not fit {gpus} GPUs: no tp x pp split that divides {gpus} "
                          f"brings it under {budget / GIB:.0f} GiB usable per GPU (a multiple of 8 GPUs helps)",
                          hardware, gpus, tokens)
    t, p, d, mem = plan
    tokens_per_replica = max(model.batch_tokens / d, model.seq)
    batch = tokens_per_replica * d
    steps = tokens / batch
    flops_step = batch * model.flops_per_token * recompute_factor(mem)
    compute = flops_step / (gpus * card.peak[dtype] * mfu)
    # Data-parallel all-reduce of bf16 gradients (ring: 2(d-1)/d x bytes), over NVLink inside a
    # server, else limited by the server's NICs shared by its 8/t data-parallel ranks.
    grad_bytes = 2 * model.params / (t * p)
    spans = t * p * d > fab.gpus_per_node
    dp_bw = min(fab.intra_bw, fab.inter_bw * fab.gpus_per_node / t) if spans else fab.intra_bw
    dp = 2 * (d - 1) / d * grad_bytes / dp_bw if d > 1 else 0.0
    # Tensor parallel: 4 all-reduces of s·h activations per layer per sequence (Megatron), on NVLink.
    tp_bytes = 4 * (model.layers / p) * tokens_per_replica * model.width * 2 * 2 * (t - 1) / t
    tp_s = tp_bytes / fab.intra_bw
    # Pipeline: each boundary sends activations forward and gradients back, s·h·2 bytes per sequence.
    pp_s = 2 * tokens_per_replica * model.width * 2 / fab.inter_bw if p > 1 else 0.0
    comm = dp + tp_s + pp_s
    step = max(compute, comm)
    reason = "" if comm <= compute else "communication-bound: more GPUs than this batch can keep busy"
    server_w = datacenter_watts_per_gpu(card)
    rent = prices.dc_gpu_hour_usd
    price_each = card.launch_price_usd * prices.server_capex_factor
    includes = (f"rented at ${rent:g}/GPU-hour (power and building in the rent)" if rent is not None else
                f"owned: GPU x {prices.server_capex_factor:g} for server, network and building, amortised over "
                f"{prices.amortisation_years:g} years, plus electricity")
    return account(
        strategy="colocated", hardware=hardware, gpus=gpus, nodes=math.ceil(gpus / fab.gpus_per_node), tokens=tokens,
        plan=f"tp={t} pp={p} dp={d:g}, {dtype}, {mem.recompute} recompute, MFU {mfu:.0%}",
        steps=steps, step_s=step, compute_s=compute, comm_s=comm,
        groups=[PowerGroup(gpus, server_w.value, server_w.value, compute, price_each)],
        usd_per_kwh=prices.datacenter_usd_per_kwh, pue=prices.pue, prices=prices, memory=mem, reason=reason,
        cost_includes=includes, rent_usd_per_gpu_hour=rent, effective_batch_tokens=batch,
        sources={"flops": f"datasheet {dtype} peak: {card.source('flops')}", "utilisation": f"MFU {mfu:.0%}",
                 "watts": server_w.source, "price_usd": f"{card.source('price')}; x{prices.server_capex_factor:g} "
                 "for server and network", "fabric": fab.source},
    )


# ------------------------------------------------------------------------------------------------
# One swarm node's step: its GPUs, their memory, their accumulation, the host
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeStep:
    """How one node works through its share of a step (docs: "A node of several GPUs")."""

    memory: Memory
    #: "replicas": the model fits a GPU, the node's GPUs are DDP replicas; "fsdp": sharded (ZeRO-3).
    layout: str
    micro_batches: int
    #: Compute of one micro-batch on each GPU (with FSDP's gathers where they take longer).
    micro_s: float
    compute_s: float
    #: Once per step: the node's own all-reduce between its GPU replicas, and the offloaded optimizer.
    intra_sync_s: float
    offload_s: float


def node_step(model: ModelSpec, node: Node, node_tokens: float, settings: Settings,
              host_extra_bytes: float = 0.0) -> NodeStep | str:
    """The node's plan for `node_tokens` per step, or the reason it cannot hold the model."""
    g = node.gpus
    budget = node.memory_bytes.value * settings.usable_memory
    seqs_per_gpu = max(1, math.ceil(node_tokens / (g * model.seq)))
    most = seqs_per_gpu if settings.micro_batch_tokens is None else \
        max(1, min(seqs_per_gpu, round(settings.micro_batch_tokens / model.seq)))
    layouts = [("replicas", 1.0)] + ([("fsdp", float(g))] if g > 1 else [])
    mem, layout, shards = None, "replicas", 1.0
    for layout, shards in layouts:  # noqa: B007 (the layout that fits is the one used below)
        mem = largest_micro_batch(model, node.dtype, budget, most, state_shards=shards, optimizer_shards=shards,
                                  options=settings.memory)
        if mem is not None:
            break
    if mem is None:
        need = memory_per_gpu(model, node.dtype, recompute="full", state_shards=g, optimizer_shards=g,
                              options=settings.memory)
        return (f"does not fit: needs {need.total / GIB:.1f} GiB per GPU with full recomputation"
                f"{f' sharded over {g} GPUs' if g > 1 else ''}; {node.name} has {budget / GIB:.1f} GiB usable "
                f"of {node.memory_bytes.value / GIB:.1f} ({memory_advice(settings.memory, '--gpus-per-node', 'pipeline')})")
    host_need = mem.host_optimizer * g + host_extra_bytes
    host_usable = node.host_ram_bytes.value * settings.usable_memory
    if host_need > host_usable:
        return (f"host RAM: needs {host_need / GIB:.1f} GiB (offloaded optimizer and DiLoCo's outer state), "
                f"{host_usable / GIB:.1f} GiB usable of {node.host_ram_bytes.value / GIB:.1f} ({node.host_ram_bytes.source})")
    micro = math.ceil(seqs_per_gpu / mem.micro_batch)
    compute = seqs_per_gpu * g * model.seq * model.flops_per_token * recompute_factor(mem) / node.node_flops
    micro_s = compute / micro
    weights = model.params * 2  # bf16 weights and gradients inside the node
    intra_sync = 0.0
    if g > 1 and layout == "fsdp":
        # FSDP per micro-batch: all-gather weights for forward and for backward, reduce-scatter gradients.
        micro_s = max(micro_s, 3 * (g - 1) / g * weights / node.intra_bw.value)
    elif g > 1:
        intra_sync = 2 * (g - 1) / g * weights / node.intra_bw.value
    offload = 0.0
    if settings.memory.offload_optimizer:
        per_gpu_params = model.params / shards
        offload = 4 * per_gpu_params / node.pcie_bw.value + \
            CPU_ADAM_BYTES_PER_PARAM * per_gpu_params * g / node.host_memory_bw.value
    return NodeStep(mem, layout, micro, micro_s, micro * micro_s, intra_sync, offload)


def overlapped_step(plan: NodeStep, sync_s: float, overlap: float = 2 / 3) -> float:
    """DDP under gradient accumulation: only the last micro-batch's backward (`overlap`, 2/3, of it)
    overlaps the all-reduce (PyTorch DDP's no_sync; Li et al. 2020), then the optimizer step (offloaded or not)."""
    last = plan.micro_s
    return (plan.micro_batches - 1) * last + (1 - overlap) * last + max(overlap * last, sync_s) + plan.offload_s


# ------------------------------------------------------------------------------------------------
# Swarm data parallel and DiLoCo
# ------------------------------------------------------------------------------------------------


def _batch(model: ModelSpec, swarm: Swarm) -> float:
    """Tokens per node per step: the global batch shared out, in whole sequences per GPU."""
    most_gpus = max(g.node.gpus for g in swarm.groups)
    seqs = max(1, math.ceil(model.batch_tokens / (swarm.nodes * most_gpus * model.seq)))
    return seqs * most_gpus * model.seq


def _plans(model: ModelSpec, swarm: Swarm, node_tokens: float, settings: Settings,
           host_extra: float = 0.0) -> list[tuple[NodeGroup, NodeStep]] | str:
    plans = []
    for group in swarm.groups:
        plan = node_step(model, group.node, node_tokens, settings, host_extra)
        if isinstance(plan, str):
            return f"{group.node.name}: {plan}" if len(swarm.groups) > 1 else plan
        plans.append((group, plan))
    return plans


def critical_batch(model: ModelSpec, tokens: float, settings: Settings) -> float:
    return settings.critical_batch_tokens or critical_batch_tokens(model.params, tokens)


def _groups(plans: Sequence[tuple[NodeGroup, NodeStep]], prices: Prices) -> list[PowerGroup]:
    """Each group computes its own time per step and waits for the slowest and the network."""
    out = []
    for group, plan in plans:
        node = group.node
        card = node.price_usd.value * node.gpus if node.price_usd else None
        price = {"card": card, "pc": (card or 0.0) + node.host_price_usd.value, "none": None}[prices.swarm_hardware]
        out.append(PowerGroup(group.count, node.active_watts, node.waiting_watts, plan.compute_s, price))
    return out


def swarm_cost_includes(prices: Prices) -> str:
    return {"card": "the cards, at launch price, amortised over the hours they train, plus home electricity",
            "pc": "the whole PCs (cards + assumed host price), amortised over the hours they train, plus home electricity",
            "none": "home electricity only (the machines are owned anyway)"}[prices.swarm_hardware]


def sync_calendar(model: ModelSpec, swarm: Swarm) -> tuple[float, str]:
    """A synchronous ring needs every member online: the shortest day, less its download of the weights
    (assumes their hours overlap: the optimistic reading)."""
    share = min(online_share(g.node, model.params) for g in swarm.groups)
    if share >= 1:
        return 1.0, ""
    return (math.inf if share <= 0 else 1 / share), f"every node online together {share * 24:.1f} h a day"


def ddp(model: ModelSpec, swarm: Swarm, tokens: float, *, prices: Prices = Prices(),
        settings: Settings = Settings()) -> Projection:
    """Swarm data parallel: every node holds the model (sharded over its own GPUs if need be); the
    gradients are all-reduced each step at the slowest member's pace, overlapped with the last
    micro-batch's backward (docs: "Swarm data parallel")."""
    up, down, rtt = swarm.link()
    n, hardware = swarm.nodes, swarm.name
    per_node = _batch(model, swarm)
    plans = _plans(model, swarm, per_node, settings)
    if isinstance(plans, str):
        return infeasible("ddp", plans, hardware, swarm.gpus, tokens, nodes=n)
    comm, algorithm = allreduce_s(model.params * settings.grad_bits / 8, n, up, down, rtt)
    step = max(overlapped_step(plan, comm + plan.intra_sync_s, settings.ddp_overlap) for _, plan in plans)
    compute = max(plan.compute_s for _, plan in plans)
    batch = per_node * n
    b_crit = critical_batch(model, tokens, settings)
    factor = critical_batch_factor(batch, model.batch_tokens, b_crit)
    steps = tokens * factor / batch
    calendar, note = sync_calendar(model, swarm)
    if math.isinf(calendar):
        return infeasible("ddp", "nodes are not online long enough to download the weights", hardware, swarm.gpus,
                          tokens, nodes=n)
    mem, micro = plans[0][1].memory, plans[0][1].micro_batches
    notes = tuple(x for x in (note, _batch_note(batch, model.batch_tokens, b_crit, factor)) if x)
    return account(
        strategy="ddp", hardware=hardware, gpus=swarm.gpus, nodes=n, tokens=tokens,
        plan=f"{per_node:,.0f} tokens/node/step in {micro} micro-batch{'' if micro == 1 else 'es'}, "
             f"{settings.grad_bits}-bit gradients, {algorithm} all-reduce, {mem.recompute} recompute"
             f"{', FSDP in the node' if plans[0][1].layout == 'fsdp' else ''}",
        steps=steps, step_s=step, compute_s=compute, comm_s=step - compute, groups=_groups(plans, prices),
        usd_per_kwh=prices.home_usd_per_kwh, pue=prices.home_pue, prices=prices, memory=mem,
        sources=node_sources(swarm.slowest), cost_includes=swarm_cost_includes(prices), calendar_factor=calendar,
        token_factor=factor, effective_batch_tokens=batch, critical_batch_tokens=b_crit, notes=notes,
    )


def _batch_note(batch: float, nominal: float, b_crit: float, factor: float) -> str:
    if factor <= 1:
        return ""
    return (f"global batch {batch:,.0f} tokens, past the nominal {nominal:,.0f} (critical batch {b_crit:,.0f}): "
            f"x{factor:.2f} tokens (McCandlish et al. 2018)")


def diloco_factor(band: TokenFactor, settings: Settings) -> tuple[float, str]:
    """The token factor a DiLoCo projection uses: the override, else the band's central value inside
    the published range and its pessimistic end outside it."""
    if settings.diloco_token_factor is not None:
        return settings.diloco_token_factor, f"token factor {settings.diloco_token_factor:g} (option)"
    if band.in_published_range:
        return band.central, f"token factor {band.central:.2f} (band {band.low:.2f}-{band.high:.2f})"
    return band.high, (f"outside the published range ({'; '.join(band.outside)}): using the pessimistic "
                       f"{band.high:.3g} of the band {band.low:.3g}-{band.high:.3g}")


def diloco(model: ModelSpec, swarm: Swarm, tokens: float, *, prices: Prices = Prices(),
           settings: Settings = Settings()) -> Projection:
    """DiLoCo between nodes (Douillard et al. 2023): H inner steps, then a blocking all-reduce of the
    pseudo-gradients (N values at `diloco_bits`) and an outer Nesterov step, whose state (an fp32
    copy and momentum, 8 bytes/param) lives in host RAM as OpenDiLoCo and PRIME keep it. Tokens: the
    quality band x the critical-batch factor (docs: "Swarm low-communication")."""
    up, down, rtt = swarm.link()
    n, hardware = swarm.nodes, swarm.name
    per_node = _batch(model, swarm)
    plans = _plans(model, swarm, per_node, settings, host_extra=8 * model.params)
    if isinstance(plans, str):
        return infeasible("diloco", plans, hardware, swarm.gpus, tokens, nodes=n)
    h = settings.diloco_h
    sync, algorithm = allreduce_s(model.params * settings.diloco_bits / 8, n, up, down, rtt)
    inner = max(overlapped_step(plan, plan.intra_sync_s) for _, plan in plans)
    compute = max(plan.compute_s for _, plan in plans)
    try:
        band = diloco_token_factor(n, h, model.params, per_node, tokens)
    except ValueError as exc:  # a fitted gain past all the data term: far outside the fit (1e10 tokens/param)
        return infeasible("diloco", f"outside the DiLoCo fit at {tokens:.3g} tokens for {model.params:.3g} "
                          f"parameters: {exc}", hardware, swarm.gpus, tokens, nodes=n)
    quality, note = diloco_factor(band, settings)
    batch = per_node * n
    b_crit = critical_batch(model, tokens, settings) * n**DILOCO_BATCH_EXPONENT
    batch_factor = critical_batch_factor(batch, model.batch_tokens, b_crit)
    factor = quality * batch_factor
    steps = tokens * factor / batch
    # Elastic: part-time nodes leave and rejoin (DiLoCo section 3.1 "Adaptive compute pool"); the run
    # advances with the nodes online on average.
    online = sum(g.count * online_share(g.node, model.params) for g in swarm.groups)
    if online <= 0:
        return infeasible("diloco", "nodes are not online long enough to download the weights", hardware,
                          swarm.gpus, tokens, nodes=n)
    notes = [note]
    if online < n:
        notes.append(f"{online:,.1f} nodes online on average")
    notes.append(_batch_note(batch, model.batch_tokens, b_crit, batch_factor))
    mem = plans[0][1].memory
    return account(
        strategy="diloco", hardware=hardware, gpus=swarm.gpus, nodes=n, tokens=tokens,
        plan=f"H={h}, {settings.diloco_bits}-bit pseudo-gradients ({algorithm}), {per_node:,.0f} tokens/node/step, "
             f"{steps / h:,.1f} outer syncs, global batch {batch:,.0f}",
        steps=steps, step_s=inner + sync / h, compute_s=compute, comm_s=inner + sync / h - compute,
        groups=_groups(plans, prices), usd_per_kwh=prices.home_usd_per_kwh, pue=prices.home_pue, prices=prices,
        memory=mem, sources=node_sources(swarm.slowest), cost_includes=swarm_cost_includes(prices), calendar_factor=n / online,
        token_factor=factor, token_band=band, effective_batch_tokens=batch, critical_batch_tokens=b_crit,
        outer_syncs=steps / h, notes=tuple(x for x in notes if x),
    )
