"""`make bench` for the projection: one projection (target < 10 ms) and a 1,000-point sweep (< 2 s).

Every preset is timed with every strategy, on RTX 4090 nodes over a 25/100 Mbit/s link, and the
slowest one counts (the layout searches differ by model). The sweep uses the slowest preset and
re-matches the datacenter at each point, as the CLI's plot does. Also reports how the colocated
projection compares with published GPU-hours.
"""

from __future__ import annotations

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
    per_preset = {name: _median_s(pj.scenario(pj.model_spec(name), node, 1000), repeats) for name in pj.PRESETS}
    slowest = max(per_preset, key=lambda name: per_preset[name])
    one = per_preset[slowest]
    sc = pj.scenario(pj.model_spec(slowest), node, 1000)
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
        "scenario": f"{sc.model.name} on {sc.nodes} x {sc.node.name} vs {sc.dc_gpus} x {sc.dc_card.name}, all strategies",
        "published_runs": validation,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
