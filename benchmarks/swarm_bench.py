"""`make bench` for the swarm projection: real DDP (with and without gradient accumulation), DiLoCo
and a two-stage pipeline on tbf-shaped links vs bench.projection.

The experiment is tests/swarm_worker.py's, which tests/test_swarm_validation.py asserts on; here
it runs over more rates (10 Mbit/s too) and reports every row: measured and projected step time,
their ratio, the compute the projection was given, and the bytes each rank put on the wire over
what a ring should send. Needs root (network namespaces); without it the result says why.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# The lab and the swarm live with the tests that own them (tests/ is not a package).
_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from netns import Lab, netns_unavailable  # noqa: E402
from swarm_worker import validate  # noqa: E402

RUNS: tuple[tuple[int, tuple[float, ...]], ...] = ((2, (10e6, 25e6, 100e6, 400e6)), (3, (25e6,)))
TOLERANCE = 0.20


def run(runs: tuple[tuple[int, tuple[float, ...]], ...] = RUNS) -> dict[str, Any]:
    """Measured vs projected step time per strategy, host count and uplink rate, with a pass flag each."""
    reason = netns_unavailable()
    if reason is not None:
        return {"skipped": reason}
    with tempfile.TemporaryDirectory() as tmp, Lab(hosts=max(n for n, _ in runs)) as lab:
        result = validate(lab, Path(tmp), runs)
    for row in result["rows"]:
        # A pipeline sends activations, not an all-reduce: no ring to compare its bytes with.
        row["wire_over_ring"] = [] if row["strategy"] == "pipeline" else \
            [b / row["ring_bytes_per_rank"] for b in row["wire_bytes_per_rank"]]
        row["pass"] = abs(row["ratio"] - 1) <= TOLERANCE
    result["target"] = f"measured / projected within 1 ± {TOLERANCE:g}"
    return result


def render(result: dict[str, Any], console: Console) -> None:
    """One table row per (strategy, hosts, rate)."""
    if "skipped" in result:
        console.print(f"swarm emulation skipped: {result['skipped']}")
        return
    table = Table(title=f"Swarm projection vs torch DDP/DiLoCo over gloo on tbf-shaped links "
                  f"({result['model']['params'] / 1e6:.2f}M-param GPT, {result['seconds']:.0f} s)")
    for column in ("Strategy", "Hosts", "Mbit/s", "Compute", "Measured", "Projected", "Ratio", "OK", "Wire/ring"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(
            row["strategy"], str(row["hosts"]), f"{row['uplink_bps'] / 1e6:g}",
            f"{row['compute_s'] * 1e3:.0f} ms" if row["compute_s"] else "-",
            f"{row['measured_s'] * 1e3:.0f} ms", f"{row['projected_s'] * 1e3:.0f} ms", f"{row['ratio']:.3f}",
            "yes" if row["pass"] else "NO", f"{max(row['wire_over_ring']):.3f}" if row["wire_over_ring"] else "-",
        )  # fmt: skip
    console.print(table)
    console.print(f"Target: {result['target']}. DiLoCo times are per inner step (H = {result['plan']['diloco_h']}); "
                  f"ddp_accum: {result['plan']['accum_micro']} micro-batches a step; pipeline: two stages, "
                  f"{result['plan']['pipeline_micro']} micro-batches, compute per micro-batch of the slower stage. "
                  "Compute: steps of the same model without communication, timed beside each phase. "
                  "Wire/ring: the most any host's uplink sent over 2(n-1)/n of the fp16 buffer.")


if __name__ == "__main__":
    render(run(), Console(width=120))
