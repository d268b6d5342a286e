"""The submission client and its commands against a real server on loopback.

What leaves the machine, where the token is kept, what happens when the server is away, and that
sending again never duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.client import REDACTED, SubmitClient, config_dir, request_body, strip_identifying
from bench.cli import app
from bench.commands.submit import compare_shared, shared_figures
from bench.document import RunDocument
from bench.errors import FlopwattError
from bench.server.app import create_app
from bench.store import Store
from probes.measurement import Measurement, Unavailable
from sqlalchemy import create_engine, text

from server_support import LIFTED, count, free_port, live_server, make_doc, wait_until_answering

runner = CliRunner()


def _identifying_doc() -> RunDocument:
    """A run carrying every kind of identifying detail the inventory or a probe could record."""
    doc = make_doc(hostname="alice-desktop")
    gpu = doc.devices[1].model_copy(
        update={"extra": {"pci_bus_id": "00000000:01:00.0", "uuid": "GPU-4b0c1f9e-1d2a-4c3b-9e8f-0a1b2c3d4e5f",
                          "serial": "1324021012345", "mac_address": "3c:ec:ef:12:34:56", "l2_cache_bytes": 75497472,
                          "note": "seen at 192.168.1.23 by alice-desktop"}}  # fmt: skip
    )
    net = Measurement(probe="network", metric="net_upload", unit="bit/s", device="net:192.168.1.23", samples=[24e6],
                      params={"server": "192.168.1.23:5201", "streams": 4, "peer_mac": "3c-ec-ef-12-34-56"})  # fmt: skip
    rtt = Unavailable(probe="network", metric="net_rtt", device="net:lab-server.example.org",
                      reason="no answer from lab-server.example.org within 5 s")  # fmt: skip
    run = doc.run.model_copy(update={"command": f"probe --out {Path.home()}/runs --peer [fe80::1]:5201"})
    return doc.model_copy(update={"run": run, "devices": [doc.devices[0], gpu], "measurements": [*doc.measurements, net],
                                  "unavailable": [rtt]})  # fmt: skip


def test_nothing_identifying_leaves_the_machine_unless_asked() -> None:
    doc = _identifying_doc()
    body = request_body(doc).decode()
    for secret in ("alice-desktop", "00000000:01:00.0", "4b0c1f9e", "1324021012345", "3c:ec:ef", "3c-ec-ef",
                   "192.168.1.23", "fe80::1", str(Path.home()), "lab-server"):  # fmt: skip
        assert secret not in body, secret
    sent = RunDocument.model_validate_json(body)
    assert sent.host.hostname is None
    assert sent.devices[1].extra == {"l2_cache_bytes": 75497472, "note": f"seen at {REDACTED} by {REDACTED}"}
    assert sent.measurements[-1].device == "net:peer" and sent.measurements[-1].params == {"streams": 4}
    assert sent.run.command == f"probe --out {REDACTED}/runs --peer {REDACTED}"
    assert (sent.unavailable[0].device, sent.unavailable[0].reason) == ("net:peer", f"no answer from {REDACTED} within 5 s")
    # Everything that measures stays exactly as it was.
    assert [m.samples for m in sent.measurements] == [m.samples for m in doc.measurements]
    assert (sent.host.cpu_model, sent.devices[1].name, sent.run.id) == (doc.host.cpu_model, doc.devices[1].name, doc.run.id)
    assert strip_identifying(sent) == sent  # stripping twice changes nothing more
    opted_in = request_body(doc, include_identifying=True).decode()
    assert "alice-desktop" in opted_in and "00000000:01:00.0" in opted_in


def test_the_token_is_asked_for_once_and_kept_readable_by_the_user_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    with live_server(create_app(url, limits=LIFTED)) as base:
        with SubmitClient(base) as client:
            assert client.submit(make_doc()).status == "created"
        with SubmitClient(base) as client:
            assert client.submit(make_doc()).status == "created"
        assert count(url, "tokens") == 1
    token_file = config_dir() / "tokens.json"
    assert token_file.parent == Path(os.environ["XDG_CONFIG_HOME"]) / "flopwatt"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert list(json.loads(token_file.read_text())) == [base]


def test_an_unreachable_server_queues_the_run_and_the_queue_never_duplicates(tmp_path: Path) -> None:
    url, port = f"sqlite:///{tmp_path / 'server.db'}", free_port()
    base = f"http://127.0.0.1:{port}"
    doc, other = make_doc(), make_doc()
    with SubmitClient(base, timeout=2) as client:
        outcome = client.submit(doc)
        assert outcome.status == "queued" and "cannot reach" in (outcome.note or "")
        assert [p.read_bytes() for p in client.pending()] == [request_body(doc)]
        with live_server(create_app(url, limits=LIFTED), port=port):
            assert client.submit(other).status == "created"
            # The server stored `other`, but say its answer was lost: the run is queued again.
            client.queue(other.run.id, request_body(other))
            sent = list(client.send_pending())
            assert {(o.run_id, o.status) for o in sent} == {(doc.run.id, "created"), (other.run.id, "existing")}
            assert client.pending() == [] and list(client.send_pending()) == []
            assert client.submit(doc).status == "existing"
    assert count(url, "runs") == count(url, "submissions") == 2


def test_a_token_the_server_forgot_is_renewed(tmp_path: Path) -> None:
    port = free_port()
    with live_server(create_app(f"sqlite:///{tmp_path / 'a.db'}", limits=LIFTED), port=port) as base:
        with SubmitClient(base) as client:
            client.submit(make_doc())
            first = client.token()
    fresh = f"sqlite:///{tmp_path / 'b.db'}"  # the server was reset: it knows no token
    with live_server(create_app(fresh, limits=LIFTED), port=port) as base:
        with SubmitClient(base) as client:
            assert client.submit(make_doc()).status == "created"
            assert client.token() != first
    assert count(fresh, "tokens") == 1


def test_a_refused_run_is_an_error_and_is_not_queued(tmp_path: Path) -> None:
    with live_server(create_app(f"sqlite:///{tmp_path / 's.db'}", limits=LIFTED)) as base:
        with SubmitClient(base) as client:
            doc, queued_later = make_doc(), make_doc()
            client.submit(doc)
            changed = doc.model_copy(update={"run": doc.run.model_copy(update={"tool_version": "2.0"})})
            with pytest.raises(FlopwattError, match=r"refused it \(409\): run.id"):
                client.submit(changed)
            assert client.pending() == []
            # A queued run the server refuses is set aside, and does not block the ones behind it.
            client.queue(changed.run.id, request_body(changed))
            client.queue(queued_later.run.id, request_body(queued_later))
            sent = {o.run_id: o.status for o in client.send_pending()}
            assert sent == {changed.run.id: "refused", queued_later.run.id: "created"}
            assert client.pending() == [] and (client.queue_dir / "refused" / f"{changed.run.id}.json").exists()


# -- the commands --------------------------------------------------------------------------------


def test_submit_dry_run_prints_exactly_what_would_be_sent_and_sends_nothing() -> None:
    doc = _identifying_doc()
    Store().save(doc)
    dead = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["submit", "--dry-run", "--server", dead])
    assert result.exit_code == 0, result.output
    first, body = result.stdout.split("\n", 1)
    assert first.startswith(f"POST {dead}/api/v1/runs (run {doc.run.id},")
    assert body.rstrip("\n") == request_body(doc).decode()
    assert not (config_dir() / "tokens.json").exists()  # not even a token was asked for
    opted = runner.invoke(app, ["submit", doc.run.id[:8], "--dry-run", "--include-identifying", "--server", dead])
    assert "alice-desktop" in opted.stdout


def test_submit_queues_when_away_and_pending_sends_later(tmp_path: Path) -> None:
    url, port = f"sqlite:///{tmp_path / 'server.db'}", free_port()
    base = f"http://127.0.0.1:{port}"
    doc = make_doc(bf16=900e12)
    Store().save(doc)
    away = runner.invoke(app, ["submit", "latest", "--server", base])
    assert away.exit_code == 0 and "queued" in away.stdout and "--pending" in away.stdout
    with live_server(create_app(url, limits=LIFTED), port=port):
        sent = runner.invoke(app, ["submit", "--pending", "--server", base])
        assert sent.exit_code == 0, sent.output
        assert f"run {doc.run.id[:12]}: stored on {base}" in sent.stdout and "flagged" in sent.stdout
        again = runner.invoke(app, ["submit", doc.run.id, "--server", base])
        assert "already stored" in again.stdout
        assert "No queued runs." in runner.invoke(app, ["submit", "--pending", "--server", base]).stdout
    assert count(url, "runs") == 1


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`flopwatt serve` as a user starts it, through the installed program."""
    flopwatt = str(Path(sys.executable).with_name("flopwatt"))
    return subprocess.Popen([flopwatt, "serve", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _stop(process: subprocess.Popen, exit_code: int) -> str:
    """SIGTERM, as a service manager stops it; what it printed, once it has shut down cleanly.

    uvicorn finishes the requests in flight and shuts the app down (our writer stores what is queued).
    One process then raises the signal again, so it ends by SIGTERM as an unhandled one would
    (exit_code -15); with workers, the parent waits for them and exits 0.
    """
    process.terminate()
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == exit_code and "Traceback" not in output, output
    assert "Application shutdown complete" in output and "Finished server process" in output, output
    return output


def test_serve_runs_the_server_until_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    port, secret = free_port(), "a key kept across restarts"
    db = f"sqlite:///{tmp_path / 'served.db'}"
    process = _serve("--db", db, "--host", "127.0.0.2", "--port", str(port), env={"FLOPWATT_SERVER_SECRET": secret})
    try:
        wait_until_answering(f"http://127.0.0.2:{port}", process)
        with pytest.raises(httpx.ConnectError):  # --host: only that address listens
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
        with SubmitClient(f"http://127.0.0.2:{port}") as client:
            assert client.submit(make_doc()).status == "created"
    finally:
        output = _stop(process, -signal.SIGTERM)
    assert f"Uvicorn running on http://127.0.0.2:{port}" in output
    engine = create_engine(db)
    with engine.connect() as conn:
        [client_hash] = conn.execute(text("SELECT client_hash FROM tokens")).scalars().all()
    engine.dispose()
    # The client's address (it connects from 127.0.0.1), keyed with FLOPWATT_SERVER_SECRET.
    assert client_hash == hmac.new(secret.encode(), b"127.0.0.1", hashlib.sha256).hexdigest()[:32]


def test_serve_with_two_workers_on_sqlite(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'workers.db'}"
    process = _serve("--db", db, "--port", str(port), "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, process, timeout_s=90)
        docs = [make_doc(bf16=100e12 + i * 1e12) for i in range(6)]
        with SubmitClient(base) as client:
            assert [client.submit(d).status for d in docs] == ["created"] * 6
            assert [client.submit(d).status for d in docs[:2]] == ["existing"] * 2
        board = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    finally:
        output = _stop(process, 0)
    assert "Started parent process" in output and output.count("Started server process") == 2  # two workers
    assert "Stopping parent process" in output
    assert [(r["count"], r["median"]) for r in board["rows"]] == [(6, 102.5e12)]
    assert count(db, "runs") == 6


def test_compare_shared_places_a_run_among_its_cards_and_the_reference_cards(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    with live_server(create_app(url, limits=LIFTED)) as base:
        with SubmitClient(base) as client:
            for value in (100e12, 120e12, 140e12, 160e12):
                client.submit(make_doc(bf16=value))
            client.submit(make_doc(gpu="NVIDIA H100 80GB HBM3", bf16=700e12, fp32=50e12, watts=650.0))
            mine = make_doc(bf16=130e12)
            figures = shared_figures(mine, client)
        sustained = next(f for f in figures if f.measurement.dtype == "bf16")
        assert sustained.device_model == "GeForce RTX 4090"
        assert sustained.same_card is not None and sustained.same_card.median == 130e12
        assert sustained.percentile == pytest.approx(50.0)  # 2 of 4 shared runs below 130 TFLOP/s
        assert [r.device_model for r in sustained.references] == ["H100 SXM"]
        Store().save(mine)
        out = Console(file=io.StringIO(), width=200)
        compare_shared(mine.run.id, out, server=base)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "matmul_flops bf16 sustained" in text and "130 TFLOP/s (4)" in text and "H100 SXM 700 TFLOP/s" in text
