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
from benchmarks import (
    accuracy,
    energy_bench,
    network_bench,
    projection_bench,
    server_bench,
    speed_bench,
    swarm_bench,
    swarm_factor_bench,
    training_bench,
)

SECTIONS: dict[str, Callable[[], dict]] = {
    "accuracy": accuracy.run,
    "speed": speed_bench.run,
    "projection": projection_bench.run,
    "network": network_bench.run,
    "training": training_bench.run,
    "swarm": swarm_bench.run,
    "swarm-factor": swarm_factor_bench.run,
    "server": server_bench.run,
    "energy": energy_bench.run,
}


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
            peer = rep["peer_spread"].get(name)
            table.add_row(
                f"repeat {name}", f"{spread:.1%}", f"{peer:.1%}" if peer is not None else "", "", rep["target"],
                "yes" if spread < 0.03 else "NO", f"max/min - 1 over {rep['runs']} `probe --quick` runs (peer: same minutes)",
            )  # fmt: skip
        load = rep.get("machine_load_per_run", {})
        if load:
            table.add_row(
                "repeat: machine load, worst run", f"{max(load.get('background_cpu', [0.0])):.1%} other processes",
                f"{max(load.get('steal_cpu', [0.0])):.1%} steal", "", "", "", "near 0: the spread is the host's",
            )  # fmt: skip
        console.print(table)
    for name in SECTIONS:
        if name != "accuracy" and isinstance(results.get(name), dict):
            render_section(name, results[name], console)


def render_section(name: str, section: dict, console: Console) -> None:
    """A section's figures as `path  value` rows, and each list of records as a table of its own.

    Every section returns its own shape of dict; the JSON file keeps it all, this is for reading.
    """
    table = Table(title=name, show_header=False)
    records: list[tuple[str, list[dict]]] = []

    def walk(path: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}.{key}" if path else str(key), item)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            records.append((path, value))
        elif isinstance(value, list):
            shown = ", ".join(_cell(item) for item in value[:6])
            table.add_row(path, shown + (f", … ({len(value)} in all)" if len(value) > 6 else ""))
        else:
            table.add_row(path, _cell(value))

    walk("", section)
    console.print(table)
    for path, rows in records:
        columns = list(dict.fromkeys(key for row in rows for key, item in row.items() if not isinstance(item, (dict, list))))
        sub = Table(title=f"{name}: {path}")
        for column in columns:
            sub.add_column(column)
        for row in rows:
            sub.add_row(*(_cell(row.get(column)) for column in columns))
        console.print(sub)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


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
