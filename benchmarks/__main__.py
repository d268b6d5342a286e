"""`make bench`: every speed and accuracy claim, as ratios against a peer measured in the same run.

Prints a table and writes everything it measured to results/bench-<time>.json. Pass section
names to run only some: `python -m benchmarks accuracy projection`.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from bench.store import PROJECT_ROOT
from bench.units import si
from benchmarks import accuracy, network_bench, projection_bench, server_bench, speed_bench, swarm_bench, training_bench

SECTIONS: dict[str, Callable[[], dict]] = {"accuracy": accuracy.run, "speed": speed_bench.run, "projection": projection_bench.run, "network": network_bench.run, "training": training_bench.run, "swarm": swarm_bench.run, "server": server_bench.run}


def _figure(value: object, unit: str) -> str:
    return si(value, unit) if isinstance(value, (int, float)) else str(value)


def render(results: dict, console: Console) -> None:
    acc = results.get("accuracy")
    if acc:
        table = Table(title="Accuracy: probe vs a peer, same run, same cores")
        for column in ("Figure", "Probe", "Peer", "Ratio", "Target", "OK", "Peer is"):
            table.add_column(column)
        for row in acc["matmul"] + acc["memory"]:
            unit = "FLOP/s" if row["figure"].startswith("matmul") else "B/s"
            table.add_row(
                row["figure"], _figure(row["probe"], unit), _figure(row["peer"], unit),
                f"{row['ratio']:.3f}" if row["ratio"] else "n/a", row["target"], "yes" if row["pass"] else "NO",
                row["peer_name"],
            )  # fmt: skip
        for row in acc["matmul"]:
            if row["likwid_peakflops"]:
                table.add_row(
                    f"{row['figure']} / peak", f"{row['probe_fraction_of_likwid_peak']:.1%}",
                    f"{row['numpy_fraction_of_likwid_peak']:.1%}", "", "", "", "likwid-bench peakflops (FMA kernel)",
                )  # fmt: skip
        rep = acc["repeatability"]
        for name, spread in rep["spread"].items():
            table.add_row(
                f"repeat {name}", f"{spread:.1%}", "", "", rep["target"], "yes" if spread < 0.03 else "NO",
                f"max/min - 1 over {rep['runs']} `probe --quick` runs",
            )  # fmt: skip
        console.print(table)
    for name, section in results.items():
        if name != "accuracy" and isinstance(section, dict):
            console.print(f"[bold]{name}[/bold]: " + json.dumps(section, default=str)[:2000])


def main(argv: list[str]) -> None:
    chosen = argv or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        sys.exit(f"unknown bench section(s) {unknown}; choose from {list(SECTIONS)}")
    results: dict = {
        "machine": {"node": platform.node(), "processor": platform.processor(), "python": platform.python_version()},
        "started_at": datetime.now(timezone.utc).isoformat(),
    }
    console = Console()
    for name in chosen:
        console.print(f"running {name}...")
        results[name] = SECTIONS[name]()
    results["finished_at"] = datetime.now(timezone.utc).isoformat()
    render(results, console)
    path = PROJECT_ROOT / "results" / f"bench-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
