"""The command line through typer's runner, against a real probe run and a real SQLite file.

Each user mistake must give one line on stderr, exit code 2, and leave what is stored intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from bench.cli import app
from bench.document import RunDocument, new_run_id
from bench.runner import ProbeRequest, run_probes
from bench.store import Store

runner = CliRunner()


@pytest.fixture(scope="session")
def probed() -> RunDocument:
    """One real (short) probe run of this machine, shared by the tests that need a stored run."""
    return run_probes(ProbeRequest(only=("memory",), quick=True, command="probe --quick --only memory")).document


@pytest.fixture
def store(isolated_environment: Path) -> Store:
    return Store(os.environ["FLOPWATT_DB"])


def _copy_of(doc: RunDocument) -> RunDocument:
    return doc.model_copy(update={"run": doc.run.model_copy(update={"id": new_run_id()})})


def _fails_cleanly(args: list[str], expect: str) -> None:
    result = runner.invoke(app, args, prog_name="flopwatt")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expect in lines[0]
    assert "Traceback" not in result.output


def test_probe_stores_the_run_and_prints_the_table(store: Store) -> None:
    result = runner.invoke(app, ["probe", "--quick", "--only", "memory"])
    assert result.exit_code == 0, result.output
    assert "mem copy" in result.stdout and "mem triad" in result.stdout
    [summary] = store.list_runs()
    assert summary.id[:12] in result.stdout
    doc = store.get(summary.id)
    assert {m.metric for m in doc.measurements} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}
    assert doc.run.command == "probe --quick --only memory"


def test_probe_json_prints_the_stored_document(store: Store) -> None:
    result = runner.invoke(app, ["probe", "--quick", "--only", "memory", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["schema_version"] == 1
    assert store.get(printed["run"]["id"]).model_dump(mode="json") == printed


def test_show_json_then_import_round_trips_without_loss(probed: RunDocument, store: Store, tmp_path: Path) -> None:
    store.save(probed)
    shown = runner.invoke(app, ["show", probed.run.id[:8], "--json"])
    assert shown.exit_code == 0
    path = tmp_path / "run.json"
    path.write_text(shown.stdout)
    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    imported = runner.invoke(app, ["import", str(path), "--db", other_db])
    assert imported.exit_code == 0, imported.output
    again = runner.invoke(app, ["show", probed.run.id, "--json", "--db", other_db])
    assert json.loads(again.stdout) == json.loads(shown.stdout)
    assert Store(other_db).get(probed.run.id) == probed


def test_runs_lists_newest_first(probed: RunDocument, store: Store) -> None:
    later = _copy_of(probed)
    later = later.model_copy(update={"run": later.run.model_copy(update={"started_at": probed.run.started_at.replace(year=2030)})})
    store.save(probed)
    store.save(later)
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert [r["id"] for r in listed] == [later.run.id, probed.run.id]
    assert runner.invoke(app, ["show", "latest", "--json"]).stdout.count(later.run.id) == 1
    table = runner.invoke(app, ["runs"]).stdout
    assert probed.run.id[:12] in table and later.run.id[:12] in table


def test_compare_gives_ratios_and_a_verdict(probed: RunDocument, store: Store) -> None:
    second = _copy_of(probed)
    store.save(probed)
    store.save(second)
    result = runner.invoke(app, ["compare", probed.run.id, second.run.id, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {r["metric"] for r in rows} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}
    assert all(r["ratio"] == pytest.approx(1.0) for r in rows)
    assert all("1.00x" in r["verdict"] for r in rows)
    table = runner.invoke(app, ["compare", probed.run.id, second.run.id]).stdout
    assert "mem copy" in table and "1.00x" in table


def test_export_csv_and_json(probed: RunDocument, store: Store, tmp_path: Path) -> None:
    store.save(probed)
    csv_path = tmp_path / "out.csv"
    result = runner.invoke(app, ["export", "--format", "csv", "--output", str(csv_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"path": str(csv_path), "runs": 1, "measurements": len(probed.measurements)}
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("run_id,") and len(lines) == 1 + len(probed.measurements)
    exported = runner.invoke(app, ["export", "--format", "json", "--output", "-"])
    docs = json.loads(exported.stdout)
    assert [d["run"]["id"] for d in docs] == [probed.run.id]
    # an export imports back into an empty database
    path = tmp_path / "export.json"
    path.write_text(exported.stdout)
    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    assert runner.invoke(app, ["import", str(path), "--db", other_db]).exit_code == 0
    assert Store(other_db).get(probed.run.id) == probed


def test_bare_flopwatt_prints_the_help_not_an_error() -> None:
    result = runner.invoke(app, [], prog_name="flopwatt")
    assert "Commands" in result.output and "probe" in result.output
    assert "error:" not in result.output


def test_every_command_has_help() -> None:
    group = get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help and len(command.help) > 20, f"{name} has no help text"
        assert runner.invoke(app, [name, "--help"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["probe", "--device", "tpu"], "--device 'tpu' is not one of"),
        (["probe", "--only", "compute,warp"], "--only: unknown probe 'warp'"),
        (["probe", "--only", "network"], "--only network needs --server"),
        (["probe", "--device", "cuda:3"], "--device cuda:3"),
        (["show", "abcdef12"], "no run 'abcdef12'"),
        (["show", "ab"], "too short"),
        (["compare", "latest", "--card", "voodoo2"], "unknown card 'voodoo2'"),
        (["import", "/nonexistent/run.json"], "cannot read /nonexistent/run.json"),
        # click's own usage errors, which typer would draw as a box under the usage text
        (["probe", "--bogus"], "No such option: --bogus (see 'flopwatt probe --help')"),
        (["--bogus"], "No such option: --bogus (see 'flopwatt --help')"),
        (["nosuch"], "No such command 'nosuch' (see 'flopwatt --help')"),
        (["show"], "Missing argument 'run'"),
        (["serve", "--workers", "0"], "Invalid value for '--workers'"),
        (["serve", "--port", "http"], "Invalid value for '--port'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expect: str, probed: RunDocument, store: Store) -> None:
    store.save(probed)
    _fails_cleanly(args, expect)
    assert store.get(probed.run.id) == probed


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "not JSON"),
        ('{"schema_version": 99}', "schema_version 99 is not supported"),
        ("[]", "holds no runs"),
        ('"a string"', "a run document is a JSON object"),
    ],
)
def test_import_of_a_malformed_document(content: str, expect: str, tmp_path: Path, probed: RunDocument, store: Store) -> None:
    store.save(probed)
    path = tmp_path / "bad.json"
    path.write_text(content)
    _fails_cleanly(["import", str(path)], expect)
    assert [r.id for r in store.list_runs()] == [probed.run.id]


def test_import_names_the_bad_field(tmp_path: Path, probed: RunDocument, store: Store) -> None:
    raw = json.loads(_copy_of(probed).to_json())
    raw["measurements"][0]["samples"] = [1.0, -5.0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    _fails_cleanly(["import", str(path)], "measurements.0.samples")
    raw["measurements"][0]["samples"] = [1.0]
    raw["measurements"][0]["metric"] = "warp_speed"
    path.write_text(json.dumps(raw))
    _fails_cleanly(["import", str(path)], "unknown metric 'warp_speed'")
    assert store.list_runs() == []


def test_importing_a_stored_run_again_changes_nothing(tmp_path: Path, probed: RunDocument, store: Store) -> None:
    store.save(probed)
    path = tmp_path / "run.json"
    path.write_text(probed.to_json())
    _fails_cleanly(["import", str(path)], "already stored")
    assert len(store.list_runs()) == 1 and store.get(probed.run.id) == probed


def test_a_corrupt_database_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    garbage = b"this is not a database " * 100
    path.write_bytes(garbage)
    _fails_cleanly(["runs", "--db", f"sqlite:///{path}"], "file is not a database")
    _fails_cleanly(["probe", "--quick", "--db", f"sqlite:///{path}"], "file is not a database")
    assert path.read_bytes() == garbage


def test_an_unwritable_database_is_reported_and_left_alone(tmp_path: Path, probed: RunDocument) -> None:
    path = tmp_path / "ro.db"
    Store(f"sqlite:///{path}").save(probed)
    before = path.read_bytes()
    path.chmod(0o444)
    run_file = tmp_path / "run.json"
    run_file.write_text(_copy_of(probed).to_json())
    try:
        if os.geteuid() == 0:
            # root ignores file modes; an immutable-looking target is a read-only URL instead
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        else:
            url = f"sqlite:///{path}"
        _fails_cleanly(["import", str(run_file), "--db", url], "readonly database")
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def test_a_directory_that_cannot_hold_a_database(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails_cleanly(["runs", "--db", f"sqlite:///{blocker}/sub/flopwatt.db"], "cannot use database")


def test_ctrl_c_stops_cleanly_and_stores_nothing(tmp_path: Path) -> None:
    """A real SIGINT to a real probe process: exit 130, a one-line note, an empty database."""
    db = tmp_path / "interrupted.db"
    env = {**os.environ, "FLOPWATT_DB": f"sqlite:///{db}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from bench.cli import main; main()", "probe", "--quick"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not db.exists() and time.monotonic() < deadline:  # the store opens before probing starts
            time.sleep(0.1)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: nothing was stored" in stderr and "Traceback" not in stderr
    assert Store(f"sqlite:///{db}").list_runs() == []


def test_a_failing_network_probe_keeps_the_other_figures(store: Store) -> None:
    """A refused port (on loopback: nothing listens on port 9) is one error line; memory is still stored."""
    result = runner.invoke(app, ["probe", "--quick", "--only", "memory,network", "--server", "127.0.0.1:9", "--seconds", "1"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], result.stderr
    [summary] = store.list_runs()
    doc = store.get(summary.id)
    assert {m.metric for m in doc.measurements} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}
    assert any(u.probe == "network" and "127.0.0.1" in u.reason for u in doc.unavailable)
