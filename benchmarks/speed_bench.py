"""`make bench` section `speed`: how long `flopwatt probe` takes, as a user runs it.

Targets (issue 2): `probe --quick` under 60 s and the full probe under 5 minutes on a 2-core CPU
machine. Each run is a fresh process into a throwaway database, so the figure includes Python and
torch start-up and the store's write, the way a user waits for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.document import RunDocument

TARGETS_S = {"quick": 60.0, "full": 300.0}


def timed_probe(args: list[str], db: str) -> tuple[float, RunDocument]:
    """`flopwatt probe ARGS --json` in a fresh process storing into `db`: its wall seconds and run document."""
    env = {**os.environ, "FLOPWATT_DB": db}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench", "probe", *args, "--json"], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, RunDocument.model_validate_json(out.stdout)


def run() -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'speed.db'}"
        for name, args in (("quick", ["--quick"]), ("full", [])):
            wall, doc = timed_probe(args, db)
            results[name] = {
                "wall_s": wall,
                "run_s": (doc.run.finished_at - doc.run.started_at).total_seconds(),
                "figures": len(doc.measurements),
                "target_s": TARGETS_S[name],
                "pass": wall < TARGETS_S[name],
            }
    return results
