"""`flopwatt swarm` at the command line without a swarm: option errors, a master nobody reaches, the
table and plots drawn from figures whose values are set here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.cli import app
from bench.commands.swarm import loss_plot, render_swarm
from bench.document import RunDocument, RunInfo, utc_now
from probes.inventory import Host
from probes.measurement import Unavailable
from bench.server.app import create_app
from bench.store import Store
from probes.swarm_figures import Context, Curve, factor_figure, strategy_figures
from server_support import LIFTED, db_url, live_server  # noqa: F401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "4"], "error: swarm: --bits must be 16 or 8, got 4"),
        (["--strategy", "gossip"], "error: --strategy must be ddp, diloco or both, got 'gossip'"),
        (["--strategy", "ddp", "--bits", "8"], "DDP always sends fp16 gradients"),
        (["--master", "nohost"], "error: swarm: bad master 'nohost': expected HOST:PORT"),
        (["--rank", "2"], "error: swarm: rank 2 is outside world 2 (0..1)"),
        (["--minutes", "0"], "error: swarm: --minutes must be above 0 and at most 1440, got 0"),
        (["--diloco-h", "0"], "error: swarm: --diloco-h must be at least 1, got 0"),
        (["--max-params", "1000"], "error: swarm: --max-params 1000 is below the smallest model"),
        (["--timeout", "0"], "error: swarm: --timeout must be 1 to 3600 seconds, got 0"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    base = {"--rank": "0", "--world": "2", "--master": "127.0.0.1:29999"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    result = CliRunner().invoke(app, ["swarm", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "swarm", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_a_master_nobody_listens_on_is_named_with_what_to_open() -> None:
    port = _free_port()
    done = _cli("--rank", "1", "--world", "2", "--master", f"127.0.0.1:{port}", "--timeout", "1")
    assert done.returncode == 2
    assert done.stderr == (
        f"error: swarm: rank 1 could not reach the master 127.0.0.1:{port} within 1 s: start rank 0 first and let "
        f"TCP port {port} in on it (behind NAT: forward that port, or join over a VPN such as WireGuard)\n"
    )


def test_a_master_left_alone_says_which_ranks_to_start(tmp_path) -> None:
    port = _free_port()
    done = _cli("--rank", "0", "--world", "3", "--master", f"127.0.0.1:{port}", "--timeout", "1",
                "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: swarm: only 1 of 3 ranks joined master 127.0.0.1:{port} within 1 s; start the missing ranks with "
        f"--world 3 --master 127.0.0.1:{port}"
    )


FLOOR = {"loss_floor": 1.35, "entropy_rate": 1.306, "bigram_entropy": 1.703, "uniform_loss": 4.159}


def _document() -> RunDocument:
    """A two-rank run with both strategies, figures from hand-made records."""
    extra = {"n_layer": 4, "n_embd": 128, "n_head": 4, "seq_len": 64, "vocab_size": 64, "batch_size": 8,
             "dtype": "fp32", "budget_s": 20.0, "backend": "gloo", "rtt_estimate_s": 0.001}
    measurements = []
    curves = {}
    for strategy, losses in (("ddp", [4.2, 3.0, 2.0]), ("diloco", [4.2, 3.2, 2.1])):
        ctx = Context(strategy, 2, 2, 16, "fp32", 1024, 800_000, 1.6e6, extra)
        records = {r: {"interval_s": [0.5, 0.5, 0.6, 0.5] if strategy == "ddp" else [1.2, 1.4],
                       "compute_s": [0.4, 0.4], "busy_s": [0.8, 0.8] if strategy == "ddp" else [0.8, 0.8],
                       "sync_s": [0.3, 0.3], "sync_bytes": [1.7e6, 1.7e6], "device": "cpu", "device_name": "AMD EPYC",
                       "tokens": 4096, "train_s": 2.1, "energy": None} for r in range(2)}
        curve = Curve()
        for i, loss in enumerate(losses):
            curve.add(2048 * i, 1.0 * i, [loss] * 8)
        curves[strategy] = (ctx, curve)
        measurements += strategy_figures(ctx, records, curve, FLOOR)[0]
    measurements.append(factor_figure(curves["diloco"][0], curves["ddp"][1], curves["diloco"][1]))
    now = utc_now()
    return RunDocument(run=RunInfo(id="ab" * 16, started_at=now - timedelta(seconds=60), finished_at=now,
                                   tool_version="0.1.0", command="swarm --world 2"),
                       host=Host(os="Linux", python="3.11", cpu_model="AMD EPYC"), measurements=measurements)


def test_the_table_has_a_row_per_strategy_and_the_token_factor() -> None:
    out = StringIO()
    render_swarm(_document(), Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    assert "Swarm of 2 ranks over gloo" in text and "(0.80M parameters)" in text
    ddp_row = next(line for line in text.splitlines() if line.strip().startswith("ddp ") and "(ref.)" in line)
    # 2 ranks, 4096 tokens, 2048 tokens per 0.5 s step, 300 ms per sync, 2.000 nat at the end
    assert ddp_row.split()[:6] == ["ddp", "2", "4.1k", "2.05k", "300", "ms"]
    assert "2.000" in ddp_row
    diloco_row = next(line for line in text.splitlines() if line.strip().startswith("diloco ") and "ms" in line)
    # DiLoCo reaches 2.1 (its own final loss) at 4096 tokens; DDP got there at 2048 + 2048 * 0.9 = 3891.2
    assert f"{4096 / 3891.2:.2f}" in diloco_row
    assert "Loss floor of the language: 1.350 nat/token" in text
    assert "thousand tokens" in text and "seconds of training" in text


def test_the_plot_draws_both_strategies_and_the_floor() -> None:
    plot = loss_plot({"ddp": ([0, 1, 2], [4.0, 3.0, 2.0]), "diloco": ([0, 1, 3], [4.0, 3.5, 2.5])}, "thousand tokens", 1.35)
    assert "floor 1.350" in plot and "thousand tokens" in plot
    assert "d ddp" in plot and "x diloco" in plot  # the legend
    assert "─" * 20 in plot  # the floor line across the canvas


def test_submit_sends_a_swarm_run_and_the_server_stores_and_exports_it(db_url: str) -> None:  # noqa: F811
    doc = _document()
    Store().save(doc)
    with live_server(create_app(db_url, limits=LIFTED)) as base:
        sent = CliRunner().invoke(app, ["submit", "latest", "--server", base])
        assert sent.exit_code == 0 and f"run {doc.run.id[:12]}: stored on {base}" in sent.stdout, sent.output
        stored = httpx.get(f"{base}/api/v1/runs/{doc.run.id}").json()["document"]
        exported = [json.loads(line) for line in httpx.get(f"{base}/api/v1/export").text.splitlines()]
        csv_rows = httpx.get(f"{base}/api/v1/export?format=csv").text.splitlines()
    back = RunDocument.model_validate(stored)
    assert [(m.metric, m.variant, m.samples) for m in back.measurements] == \
        [(m.metric, m.variant, m.samples) for m in doc.measurements]
    assert [e["id"] for e in exported] == [doc.run.id]
    assert sum(",swarm_token_factor," in row for row in csv_rows) == 1
    assert sum(",swarm_step_s," in row for row in csv_rows) == 2  # ddp and diloco


def test_brackets_in_an_error_are_printed_not_read_as_markup() -> None:
    """An IPv6 master is written [::1]:PORT; rich would take the brackets for a tag and crash."""
    port = _free_port()
    done = _cli("--rank", "1", "--world", "2", "--master", f"[::1]:{port}", "--timeout", "1")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: swarm: rank 1 could not reach the master [::1]:{port} within 1 s"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_gloo_error_reads_as_its_message_without_the_source_location() -> None:
    from probes.collective import error_gist as first_line

    raw = RuntimeError("Rank 1: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection "
                       "closed by peer [10.231.0.3]:65194. This is typically caused by a remote worker crashing.")
    assert first_line(raw) == "Rank 1: Connection closed by peer [10.231.0.3]:65194"
    wrapped = RuntimeError("Got the following error when running the callback: RuntimeError: Read error "
                           "[10.231.0.3]:13963: Connection reset by peer")
    assert first_line(wrapped) == "Read error [10.231.0.3]:13963: Connection reset by peer"
    doc = _document()
    doc.unavailable.append(Unavailable(probe="swarm", reason=f"rank 2 dropped out ({raw})"))
    out = StringIO()
    render_swarm(doc, Console(file=out, width=100, color_system=None))
    assert "pair.cc:553] Connection closed by peer [10.231.0.3]:65194" in " ".join(out.getvalue().split())
