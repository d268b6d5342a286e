"""`flopwatt compare RUN RUN…` on genuinely different runs, through the real CLI and a real SQLite file.

The first run is a real probe of this machine; the others are that run with every sample scaled, so
each expected ratio is known exactly (halving is exact in binary floating point), or with another
torch version, which makes the runs not like for like.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.document import RunDocument, new_run_id
from bench.runner import ProbeRequest, run_probes
from bench.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def measured() -> RunDocument:
    return run_probes(ProbeRequest(only=("memory",), quick=True, command="probe --quick --only memory")).document


@pytest.fixture
def store(isolated_environment: Path) -> Store:
    return Store(os.environ["FLOPWATT_DB"])


def scaled(doc: RunDocument, factor: float, **host: object) -> RunDocument:
    """Another run: every sample times `factor`, a new id, optionally other host facts."""
    return doc.model_copy(update={
        "run": doc.run.model_copy(update={"id": new_run_id()}),
        "host": doc.host.model_copy(update=host),
        "measurements": [m.model_copy(update={"samples": [s * factor for s in m.samples]}) for m in doc.measurements],
    })  # fmt: skip


def test_a_run_at_half_the_speed_is_a_significant_half(measured: RunDocument, store: Store) -> None:
    slower = scaled(measured, 0.5)
    store.save(measured)
    store.save(slower)
    result = runner.invoke(app, ["compare", measured.run.id, slower.run.id, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    base = {m.metric: m.value for m in measured.measurements}
    assert {r["metric"] for r in rows} == set(base) == {"mem_copy_bandwidth", "mem_triad_bandwidth"}
    for row in rows:
        assert row["run"] == slower.run.id and row["baseline"] == measured.run.id
        assert row["baseline_value"] == base[row["metric"]]  # the first run is the baseline, not the other
        assert row["value"] == base[row["metric"]] * 0.5
        assert row["ratio"] == 0.5  # exactly: later over first, never the other way round
        assert row["verdict"] == "0.50x"  # Welch's test finds the difference real: no "n.s."
    table = runner.invoke(app, ["compare", measured.run.id, slower.run.id], env={"COLUMNS": "200"}).stdout
    assert all("0.50x" in line for line in table.splitlines() if line.startswith("│ mem "))


def test_three_runs_give_a_ratio_column_for_each_later_run(measured: RunDocument, store: Store) -> None:
    half, quarter = scaled(measured, 0.5), scaled(measured, 0.25)
    for doc in (measured, half, quarter):
        store.save(doc)
    ids = [measured.run.id, half.run.id, quarter.run.id]
    result = runner.invoke(app, ["compare", *ids], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "Figure" in line)
    assert header.count("ratio") == 2
    assert header.index(ids[0][:12]) < header.index(ids[1][:12]) < header.index(ids[2][:12])
    copy_row = next(line for line in result.stdout.splitlines() if line.startswith("│ mem copy"))
    assert copy_row.index("0.50x") < copy_row.index("0.25x")
    rows = json.loads(runner.invoke(app, ["compare", *ids, "--json"]).stdout)["rows"]
    assert sorted((r["run"], r["ratio"]) for r in rows) == sorted(
        [(half.run.id, 0.5)] * 2 + [(quarter.run.id, 0.25)] * 2
    )


def test_runs_on_another_torch_are_flagged_as_not_like_for_like(measured: RunDocument, store: Store) -> None:
    other = scaled(measured, 1.0, torch="2.4")
    store.save(measured)
    store.save(other)
    expected = f"run {other.run.id[:12]} differs from {measured.run.id[:12]} in torch: 2.4 vs {measured.host.torch}"
    result = runner.invoke(app, ["compare", measured.run.id, other.run.id, "--json"])
    assert expected in json.loads(result.stdout)["warnings"]
    table = runner.invoke(app, ["compare", measured.run.id, other.run.id], env={"COLUMNS": "300"}).stdout
    assert f"warning {expected}" in table
    # the same torch raises no such warning
    same = scaled(measured, 1.0)
    store.save(same)
    warnings = json.loads(runner.invoke(app, ["compare", measured.run.id, same.run.id, "--json"]).stdout)["warnings"]
    assert not [w for w in warnings if "differs from" in w]
