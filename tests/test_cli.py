"""The command line through typer's runner, against a real probe run and a real SQLite file.

Each user mistake must give one line on stderr, exit code 2, and leave what is stored intact.
"""

from __future__ import annotations

import csv
import json
import os
import re
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


# -- every command through the installed `flopwatt` program ----------------------------------------

FLOPWATT = str(Path(sys.executable).with_name("flopwatt"))

#: One mistake per registered command, as a user makes it, and what its one error line must say.
BAD_INPUT = {
    "probe": (["probe", "--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda, cuda:N, mps"),
    "runs": (["runs", "--limit", "0"], "Invalid value for '--limit'"),
    "show": (["show", "latest"], "no runs stored yet in"),
    "compare": (["compare", "abcd", "abce", "--card", "h100"], "--card sets one run beside reference cards; give one run"),
    "export": (["export", "--output", "{tmp}/a-file/export.json"], "cannot write {tmp}/a-file/export.json"),
    "import": (["import", "{tmp}/missing.json"], "cannot read {tmp}/missing.json: No such file or directory"),
    "monitor": (["monitor", "--", "{tmp}/no-such-program"], "cannot run '{tmp}/no-such-program'"),
    "submit": (["submit", "abcd"], "no run 'abcd' in"),
    "project": (["project", "--gpus", "0"], "give exactly one of --card NAME, --run ID (repeatable) or --nodes-csv FILE"),
    "serve": (["serve", "--db", "sqlite:///{tmp}/a-file/server.db"], "cannot use database"),
    "serve-network": (["serve-network", "--iperf3", "{tmp}/no-iperf3"], "{tmp}/no-iperf3 is not an executable iperf3"),
    "swarm": (["swarm", "--rank", "0", "--world", "2", "--master", "127.0.0.1:29500", "--bits", "4"],
              "swarm: --bits must be 16 or 8, got 4"),
}


def run_flopwatt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it (FLOPWATT_DB and HOME are the test's own)."""
    return subprocess.run([FLOPWATT, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_every_registered_command_has_a_bad_input_case() -> None:
    assert sorted(get_command(app).commands) == sorted(BAD_INPUT)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_every_command_refuses_bad_input_with_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("a file where a directory is expected")
    args, expect = BAD_INPUT[command]
    done = run_flopwatt(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expect.format(tmp=tmp_path) in lines[0]


def test_submit_refusals_through_the_real_cli(tmp_path: Path) -> None:
    """A run the server refuses is an error line and exit 2, and stays stored locally."""
    from bench.server.app import create_app
    from server_support import LIFTED, live_server, make_doc

    _fails_cleanly(["submit"], "no runs stored yet in")
    doc = make_doc()
    Store().save(doc)
    with live_server(create_app(f"sqlite:///{tmp_path / 'server.db'}", limits=LIFTED)) as base:
        assert runner.invoke(app, ["submit", "--server", base]).exit_code == 0
        changed = doc.model_copy(update={"run": doc.run.model_copy(update={"tool_version": "9.9"})})
        other_db = f"sqlite:///{tmp_path / 'other.db'}"
        Store(other_db).save(changed)
        _fails_cleanly(["submit", "--server", base, "--db", other_db], f"{base} refused it (409): run.id: a different run")
    assert Store(other_db).get(doc.run.id) == changed


# -- runs, show, export, import: what F14 of the test audit found untested -----------------------


def _runs(n: int) -> list[RunDocument]:
    """n runs an hour apart, oldest first."""
    from server_support import make_doc

    docs = []
    for hours in range(n):
        doc = make_doc(bf16=100e12 + hours * 1e12)
        started = doc.run.started_at.replace(hour=hours)
        docs.append(doc.model_copy(update={"run": doc.run.model_copy(update={"started_at": started})}))
    return docs


def test_runs_limit_shows_the_newest(store: Store) -> None:
    docs = _runs(3)
    store.save_all(docs)
    listed = json.loads(runner.invoke(app, ["runs", "--limit", "2", "--json"]).stdout)
    assert [r["id"] for r in listed] == [docs[2].run.id, docs[1].run.id]


def test_export_without_output_writes_under_results_and_says_so(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr("bench.commands.transfer.PROJECT_ROOT", tmp_path)
    docs = _runs(2)
    store.save_all(docs)
    result = runner.invoke(app, ["export", "--format", "csv"])
    assert result.exit_code == 0, result.output
    [written] = (tmp_path / "results").glob("export-*.csv")
    assert re.fullmatch(r"export-\d{8}-\d{6}\.csv", written.name)
    assert "".join(result.stdout.split()) == "".join(f"Wrote 2 runs (8 figures) to {written}".split())  # rich wraps it


def test_export_csv_holds_each_figure_with_its_values(store: Store, tmp_path: Path) -> None:
    [doc] = _runs(1)
    store.save(doc)
    path = tmp_path / "out.csv"
    assert runner.invoke(app, ["export", "--format", "csv", "--output", str(path)]).exit_code == 0
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(doc.measurements)
    for row, m in zip(rows, doc.measurements):
        assert (row["run_id"], row["device"], row["metric"], row["unit"]) == (doc.run.id, m.device, m.metric, m.unit)
        assert (float(row["value"]), float(row["min"]), float(row["max"]), int(row["n"])) == (m.value, m.min, m.max, 3)
        assert row["dtype"] == (m.dtype or "") and row["variant"] == (m.variant or "")
    assert rows[0]["device_name"] == "NVIDIA GeForce RTX 4090" and float(rows[0]["energy_watts_avg"]) == 400.0
    assert float(rows[0]["energy_joules"]) == 4000.0 and json.loads(rows[0]["params"]) == {"m": 8192, "n": 8192, "k": 8192}


def test_importing_an_export_is_all_or_nothing(store: Store, tmp_path: Path) -> None:
    docs = _runs(3)
    store.save(docs[1])
    path = tmp_path / "export.json"
    path.write_text("[" + ",".join(d.to_json() for d in docs) + "]")
    _fails_cleanly(["import", str(path)], f"run {docs[1].run.id} is already stored")
    assert [r.id for r in store.list_runs()] == [docs[1].run.id]
    path.write_text("[" + ",".join(d.to_json() for d in (docs[0], docs[2], docs[0])) + "]")
    _fails_cleanly(["import", str(path)], "the same run appears twice")
    assert [r.id for r in store.list_runs()] == [docs[1].run.id]
    path.write_text("[" + ",".join(d.to_json() for d in (docs[0], docs[2])) + "]")
    result = runner.invoke(app, ["import", str(path), "--json"])
    assert json.loads(result.stdout) == {"imported": [docs[0].run.id, docs[2].run.id]}
    assert len(store.list_runs()) == 3


def test_an_ambiguous_prefix_and_an_empty_database_are_one_line(store: Store) -> None:
    _fails_cleanly(["show", "latest"], "no runs stored yet in")
    docs = _runs(2)
    ids = ["abcd" + "1" * 28, "abcd" + "2" * 28]
    store.save_all([d.model_copy(update={"run": d.run.model_copy(update={"id": i})}) for d, i in zip(docs, ids)])
    _fails_cleanly(["show", "abcd"], "run reference 'abcd' is ambiguous")
    assert json.loads(runner.invoke(app, ["show", "abcd2", "--json"]).stdout)["run"]["id"] == ids[1]


def test_databases_this_flopwatt_cannot_read_are_one_line(tmp_path: Path) -> None:
    import sqlite3

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    _fails_cleanly(["runs", "--db", f"sqlite:///{foreign}"], "not a flopwatt database (it has tables ['invoices'])")
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    Store(newer)
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("INSERT INTO schema_info (version) VALUES (2)")
    _fails_cleanly(["show", "latest", "--db", newer], "database schema version 2 is not one this flopwatt knows")


def test_compare_shared_through_the_cli(tmp_path: Path) -> None:
    from bench.server.app import create_app
    from server_support import LIFTED, live_server

    docs = _runs(3)
    Store().save_all(docs)
    _fails_cleanly(["compare", docs[0].run.id, docs[1].run.id, "--shared"], "compare --shared takes exactly one run")
    with live_server(create_app(f"sqlite:///{tmp_path / 'server.db'}", limits=LIFTED)) as base:
        assert runner.invoke(app, ["submit", docs[0].run.id, docs[1].run.id, "--server", base]).exit_code == 0
        result = runner.invoke(app, ["compare", docs[2].run.id, "--shared", "--server", base, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    bf16 = next(f for f in figures if f["dtype"] == "bf16")
    # 102 TFLOP/s against the two shared runs (100 and 101): above both
    assert (bf16["device_model"], bf16["percentile"], bf16["same_card"]["count"]) == ("GeForce RTX 4090", 100.0, 2)


def test_probe_options_through_the_cli(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--device cpu and --estimate-cpu-power reach the probes: a powercap tree whose package says its
    TDP (65 W) but whose counter cannot be read gets an estimate of TDP x load."""
    package = tmp_path / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n")
    (package / "constraint_0_max_power_uw").write_text("65000000\n")
    monkeypatch.setenv("FLOPWATT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    result = runner.invoke(app, ["probe", "--quick", "--only", "memory", "--device", "cpu", "--estimate-cpu-power"])
    assert result.exit_code == 0, result.output
    doc = store.get("latest")
    assert doc.run.command == "probe --device cpu --quick --only memory --estimate-cpu-power"
    assert {m.device for m in doc.measurements} == {"cpu"}
    memory = [m for m in doc.measurements if m.probe == "memory"]
    assert len(memory) == 2
    for m in memory:
        assert m.energy is not None and m.energy.method == "estimated", m.energy
        used = m.energy.telemetry
        assert used["tdp_w"] == 65.0 and m.energy.joules == pytest.approx(65.0 * used["cpu_load"] * m.energy.seconds)


def test_a_collective_rank_other_than_zero_stores_nothing_and_says_so(tmp_path: Path) -> None:
    """Two real processes on loopback: rank 0 stores the run, rank 1 only says it is done."""
    from server_support import free_port

    master = f"127.0.0.1:{free_port()}"
    common = ["probe", "--quick", "--only", "collective", "--device", "cpu", "--world", "2", "--master", master]
    db0, db1 = f"sqlite:///{tmp_path / 'rank0.db'}", f"sqlite:///{tmp_path / 'rank1.db'}"
    rank0 = subprocess.Popen([FLOPWATT, *common, "--rank", "0", "--db", db0], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        rank1 = run_flopwatt(*common, "--rank", "1", "--db", db1)
        out0, err0 = rank0.communicate(timeout=120)
    finally:
        rank0.kill()
    assert rank1.returncode == 0 and rank0.returncode == 0, (rank1.stderr, err0)
    assert rank1.stderr.strip() == "collective: this rank is done; rank 0 stores the result"
    assert Store(db1).list_runs() == []
    [stored] = Store(db0).list_runs()
    assert {m.metric for m in Store(db0).get(stored.id).measurements} >= {"allreduce_busbw"}
