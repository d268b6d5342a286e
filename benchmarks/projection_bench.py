"""`make bench` for the projection: one projection (target < 10 ms) and a 1,000-point sweep (< 2 s).

Every preset is timed with every strategy, on RTX 4090 nodes over a 25/100 Mbit/s link, and the
slowest one counts (the layout and pipeline searches differ by model). The sweep uses the slowest
preset and re-matches the datacenter at each point, as the CLI's plot does. Also reports how the
colocated projection compares with published GPU-hours, and reproduces the published decentralised
runs whose setup is public (`decentralised_runs`): INTELLECT-1's compute per outer round and compute
utilisation, and the communication reductions DiLoCo and INTELLECT-1 report.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from bench import projection as pj
from bench.hardware import get_card

TARGET_ONE_S = 0.010
TARGET_SWEEP_S = 2.0

#: name, model, card, GPUs, tokens, published GPU-hours (sources cited in tests/test_projection.py).
PUBLISHED: tuple[tuple[str, dict[str, Any], str, int, float, float], ...] = (
    ("Llama 2 7B", {"params": "7B"}, "a100", 2048, 2.0e12, 184_320),
    ("Llama 2 13B", {"params": "13B"}, "a100", 2048, 2.0e12, 368_640),
    ("Llama 2 70B", {"params": "70B"}, "a100", 2048, 2.0e12, 1_720_320),
    ("Llama 3.1 70B", {"params": 70.6e9, "layers": 80, "width": 8192, "heads": 64, "seq": 8192, "vocab": 128256},
     "h100", 16384, 15e12, 7.0e6),
    ("Llama 3.1 405B", {"params": "405B"}, "h100", 16384, 15e12, 30.84e6),
    ("BLOOM 176B", {"params": 176e9, "layers": 70, "width": 14336, "heads": 112, "seq": 2048, "vocab": 250880,
                    "batch_tokens": 2048 * 2048}, "a100", 384, 366e9, 1_082_990),
)


def _median_s(sc: pj.Scenario, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pj.project(sc)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(repeats: int = 30) -> dict[str, Any]:
    """Median time of one projection (slowest preset), a 1,000-point sweep, the published-run check."""
    node = pj.with_link(pj.node_from_card(get_card("rtx4090")), uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
    swarm = pj.Swarm.uniform(node, 1000)
    per_preset = {name: _median_s(pj.scenario(pj.model_spec(name), swarm), repeats) for name in pj.PRESETS}
    slowest = max(per_preset, key=lambda name: per_preset[name])
    one = per_preset[slowest]
    sc = pj.scenario(pj.model_spec(slowest), swarm)
    start = time.perf_counter()
    points = pj.sweep(sc, range(1, 1001), match_datacenter=True)
    sweep_s = time.perf_counter() - start
    validation = []
    for name, shape, card, gpus, tokens, published in PUBLISHED:
        r = pj.colocated(pj.model_spec(**shape), get_card(card), gpus, tokens)
        ratio = (r.gpu_hours or 0) / published
        validation.append({"run": name, "projected_gpu_hours": r.gpu_hours, "published_gpu_hours": published,
                           "ratio": ratio, "pass": abs(ratio - 1) <= 0.35})
    return {
        "one_projection_s": one,
        "one_projection_target_s": TARGET_ONE_S,
        "one_projection_pass": one < TARGET_ONE_S,
        "one_projection_by_preset_s": per_preset,
        "sweep_points": len(points),
        "sweep_s": sweep_s,
        "sweep_target_s": TARGET_SWEEP_S,
        "sweep_pass": sweep_s < TARGET_SWEEP_S,
        "scenario": f"{sc.model.name} on {sc.swarm.name} vs {sc.dc_gpus} x {sc.dc_card.name}, all strategies",
        "published_runs": validation,
        "decentralised_runs": decentralised_runs(),
        "review_f1_cases": review_cases(),
    }


def review_cases() -> list[dict[str, Any]]:
    """The review's F1 table (DiLoCo at 25/100 Mbit/s, 30 ms, H = 500, int8), as the model now answers it."""
    rows = []
    for preset, card, n in (("125M", "rtx4090", 1000), ("1B", "rtx5090", 1000), ("1B", "rtx5090", 100),
                            ("1B", "rtx5090", 8)):
        node = pj.with_link(pj.node_from_card(get_card(card)), uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)
        m = pj.model_spec(preset)
        r = pj.diloco(m, pj.Swarm.uniform(node, n), pj.default_tokens(m))
        band = r.token_band
        fastest = pj.best(pj.project(pj.scenario(m, pj.Swarm.uniform(node, n))))
        rows.append({"case": f"{preset} on {n} x {get_card(card).name}", "global_batch": r.effective_batch_tokens,
                     "outer_syncs": r.outer_syncs, "in_published_range": band.in_published_range if band else None,
                     "band": f"{band.low:.3g}-{band.central:.3g}-{band.high:.3g}" if band else "",
                     "token_factor_used": r.token_factor, "diloco_days": (r.calendar_s or 0) / pj.DAY,
                     "fastest_swarm_strategy": fastest.strategy if fastest else None})
    return rows


#: INTELLECT-1 (Jaghouar et al. 2024, arXiv 2412.01152): 10B Llama-3 shape (PrimeIntellect-ai/prime
#: src/zeroband/models/llama: 42 layers, dim 4096, 32 heads, 8 KV heads, FFN 14336, vocab 128256),
#: 8 x H100 per node, 128 x 8192 tokens per node per inner step, H = 100, int8 pseudo-gradients
#: (configs/10B/H100_intellect1.toml). Table 2: 38 min per 100 inner steps at 43.3 % MFU without
#: communication; median all-reduce 103 / 382 / 469 s and compute utilisation 95.7 / 85.6 / 83.0 %
#: (USA / USA + Europe / global).
INTELLECT1_TABLE2 = (("USA", 103.0, 0.957), ("USA + Europe", 382.0, 0.856), ("global", 469.0, 0.830))
INTELLECT1_ROUND_S = 38 * 60
#: Tolerances: compute per round within 10 % (the MFU is theirs, the FLOP count ours); utilisation
#: within 1 point (the reported figures are rounded to 0.1 %, the round time to the minute).
TOL_ROUND = 0.10
TOL_UTILISATION = 0.01


def decentralised_runs() -> list[dict[str, Any]]:
    """Published decentralised runs set up as published, the projection's figure beside the reported one."""
    rows: list[dict[str, Any]] = []
    llama3_10b = pj.model_spec(10.21e9, layers=42, width=4096, heads=32, seq=8192, vocab=128256,
                               batch_tokens=14 * 128 * 8192)  # 1M tokens per node per inner step
    h100_card = get_card("h100")
    # Their MFU is over the datasheet peak, so the node's FLOP/s is the peak here, not mamf-finder's figure.
    h100 = dataclasses.replace(pj.node_from_card(h100_card, utilisation=0.433, gpus=8),
                               flops=pj.Figure(h100_card.peak["bf16"], "datasheet bf16 peak (INTELLECT-1's MFU basis)"))
    swarm = pj.Swarm.uniform(pj.with_link(h100, uplink_bps=1e9, downlink_bps=1e9, rtt_s=0.1), 14)
    settings = pj.Settings(diloco_h=100, diloco_bits=8, diloco_token_factor=1.0)
    r = pj.diloco(llama3_10b, swarm, 1e12, settings=settings)
    per_node = r.effective_batch_tokens / 14 if r.effective_batch_tokens else 0.0
    round_s = 100 * (r.compute_s or 0.0)
    rows.append({"run": "INTELLECT-1: compute per 100 inner steps", "projected": round_s,
                 "reported": INTELLECT1_ROUND_S, "ratio": round_s / INTELLECT1_ROUND_S,
                 "pass": abs(round_s / INTELLECT1_ROUND_S - 1) <= TOL_ROUND,
                 "setup": f"10B, 8 x H100 at 43.3 % MFU, {per_node:,.0f} tokens/node/step, {r.memory.recompute if r.memory else ''} recompute"})
    for where, allreduce, reported in INTELLECT1_TABLE2:
        # The projection's blocking outer step: utilisation = H·compute / (H·compute + all-reduce).
        utilisation = round_s / (round_s + allreduce)
        ring_bits = 2 * 13 / 14 * 10.21e9 * 8
        rows.append({"run": f"INTELLECT-1 {where}: compute utilisation", "projected": utilisation,
                     "reported": reported, "ratio": utilisation / reported,
                     "pass": abs(utilisation - reported) <= TOL_UTILISATION,
                     "setup": f"median all-reduce {allreduce:g} s (measured); a 14-node int8 ring over it implies "
                              f"{ring_bits / allreduce / 1e9:.2f} Gbit/s per node"})
    # Communication reductions, as bytes per inner step against data-parallel's per step:
    node = pj.with_link(pj.node_from_card(get_card("h100"), gpus=8), uplink_bps=1e9, downlink_bps=1e9, rtt_s=0.0)
    nodes = pj.Swarm.uniform(node, 8)
    m = pj.model_spec("1B")
    for name, h, bits, dp_bits, reported in (("DiLoCo (Douillard et al. 2023): H = 500, same precision", 500, 16, 16, 500),
                                             ("INTELLECT-1: H = 100, int8 against fp32 data-parallel", 100, 8, 32, 400)):
        lo = pj.diloco(m, nodes, 1e10, settings=pj.Settings(diloco_h=h, diloco_bits=bits, diloco_token_factor=1.0))
        dp = pj.ddp(m, nodes, 1e10, settings=pj.Settings(grad_bits=dp_bits))
        dp_sync = pj.allreduce_s(m.params * dp_bits / 8, 8, 1e9, 1e9, 0.0)[0]
        lo_sync = (lo.step_s or 0) - (lo.compute_s or 0)
        ratio = dp_sync / lo_sync if lo_sync else 0.0
        rows.append({"run": f"{name}: communication reduction", "projected": ratio, "reported": reported,
                     "ratio": ratio / reported, "pass": abs(ratio / reported - 1) <= 1e-9,
                     "setup": f"8 nodes, ddp feasible: {dp.feasible}"})
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
