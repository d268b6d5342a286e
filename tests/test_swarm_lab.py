"""`flopwatt swarm` for real: the CLI, one process per network-namespace host, over tbf-shaped home links.

Two runs, both strategies each: 2 hosts on 100 Mbit/s uplinks and 3 hosts on 25 Mbit/s (where a
ring, 4/3 of the buffer per rank, and a naive exchange, 2x, differ). Links are shaped as
tests/swarm_worker.py shapes them (downlink 4x the uplink, a router's 50 ms queue). The stored run is
checked against what the link and the projection say: bytes per sync within 10 % of the ring's, a
sync's time within 20 % of the ring over the shaped link, the step time within 20 % of
`bench.projection` given the run's own compute and link (as `project --swarm-run` would take them),
DiLoCo's loss falling, the token factor stored with its spread.

Each rank is limited to one thread (three ranks share this machine's two cores), and the model is
sized for a quarter-second step, so a strategy gets 20 s of training: about 3 minutes in all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import projection as pj
from bench.document import RunDocument
from bench.store import Store
from netns import Host, Lab, netns_unavailable
from probes.measurement import Measurement
from swarm_worker import DOWNLINK_FACTOR, shape

_UNAVAILABLE = netns_unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]

RUNS = ((2, 100e6), (3, 25e6))
OPTIONS = ("--minutes", "0.33", "--diloco-h", "8", "--step-seconds", "0.4", "--timeout", "60")
TOLERANCE = 0.20
BYTES_TOLERANCE = 0.10


@dataclass
class Ranks:
    """The processes of one `flopwatt swarm` run, their output files and rank 0's database."""

    procs: list[subprocess.Popen[str]]
    logs: list[Path]
    db: str

    def wait(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.procs]

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")


def start(hosts: list[Host], tmp: Path, *args: str, port: int = 29650, env: dict[str, str] | None = None) -> Ranks:
    """`python -m bench swarm` on each host, rank i on host i, rank 0's host the master; `env` adds
    to each rank's environment."""
    db = f"sqlite:///{tmp / 'swarm.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100", **(env or {})}
    procs, logs = [], []
    for rank, host in enumerate(hosts):
        log = tmp / f"rank{rank}.txt"
        with log.open("w") as out:
            procs.append(host.popen(sys.executable, "-m", "bench", "swarm", "--rank", str(rank), "--world",
                                    str(len(hosts)), "--master", f"{hosts[0].address}:{port}", *args, "--db", db,
                                    stdout=out, stderr=subprocess.STDOUT, env=env))
        logs.append(log)
    return Ranks(procs, logs, db)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, float], tuple[RunDocument, str]]:
    """Each (hosts, uplink) run once: its stored document and rank 0's output."""
    found = {}
    with Lab(hosts=max(n for n, _ in RUNS)) as lab:
        for i, (n, rate) in enumerate(RUNS):
            tmp = tmp_path_factory.mktemp(f"swarm{n}")
            hosts = lab.hosts[:n]
            shape(hosts, rate)
            ranks = start(hosts, tmp, *OPTIONS, port=29650 + i)
            codes = ranks.wait(300)
            assert codes == [0] * n, [ranks.output(r)[-3000:] for r in range(n)]
            found[(n, rate)] = (Store(ranks.db).get("latest"), ranks.output(0))
    return found


CASES = [(n, rate, s) for n, rate in RUNS for s in ("ddp", "diloco")]
IDS = [f"{s}-{n}hosts-{rate / 1e6:g}mbit" for n, rate, s in CASES]


def _figure(doc: RunDocument, metric: str, variant: str) -> Measurement:
    (m,) = [m for m in doc.measurements if m.metric == metric and m.variant == variant]
    return m


@pytest.mark.parametrize(("hosts", "rate", "strategy"), CASES, ids=IDS)
def test_each_rank_sends_the_ring_share_of_the_payload_per_sync(runs, hosts: int, rate: float, strategy: str) -> None:
    doc, _ = runs[(hosts, rate)]
    for rank in range(hosts):
        sent = _figure(doc, "swarm_sync_bytes", f"{strategy} rank {rank}")
        ring = 2 * (hosts - 1) / hosts * sent.params["payload_bytes"]
        assert sent.params["ring_bytes"] == pytest.approx(ring)
        assert abs(sent.value / ring - 1) <= BYTES_TOLERANCE, (rank, sent.value / ring, sent.samples)


def _spec(step: Measurement) -> pj.ModelSpec:
    """The run's model as the projection sees it (built directly: model_spec refuses under 1M parameters)."""
    p = step.params
    return pj.ModelSpec("swarm model", float(p["model_params"]), p["n_layer"], p["n_embd"], p["n_head"], p["seq_len"],
                        p["vocab_size"], float(p["tokens_per_step"]), "the run's model")


def _node(doc: RunDocument, strategy: str) -> tuple[pj.ModelSpec, pj.Node]:
    """A node that computes as fast as the run measured and whose link syncs as fast as the run's syncs:
    an uplink that moves the ring's bytes in the measured sync time less the latency the ring pays."""
    step, comm = _figure(doc, "swarm_step_s", strategy), _figure(doc, "swarm_comm_s", strategy)
    spec, p = _spec(step), step.params
    rank_tokens = p["tokens_per_step"] / p["world"]
    latency = (p["world"] - 1) * p["rtt_estimate_s"]
    link = 8 * comm.params["ring_bytes"] / (comm.value - latency)
    unused = pj.Figure(1.0, "not used: step times only")
    node = pj.Node(name="lab host", dtype="fp32",
                   flops=pj.Figure(rank_tokens * spec.flops_per_token / p["compute_s"], "the run's compute per step"),
                   utilisation=pj.Figure(1.0, "the measured rate is training's own"),
                   memory_bytes=pj.Figure(float(2**34), "not used"), watts=unused, idle_watts=unused)
    return spec, pj.with_link(node, uplink_bps=link, downlink_bps=link, rtt_s=p["rtt_estimate_s"],
                              source="the run's own sync time and tiny all-reduce")


@pytest.mark.parametrize(("hosts", "rate", "strategy"), CASES, ids=IDS)
def test_a_sync_takes_what_the_ring_needs_on_the_link(runs, hosts: int, rate: float, strategy: str) -> None:
    doc, _ = runs[(hosts, rate)]
    comm = _figure(doc, "swarm_comm_s", strategy)
    rtt = comm.params["rtt_estimate_s"]
    # the payload's bytes: what the projection moves (params x bits / 8)
    expected = pj.ring_allreduce_s(comm.params["payload_bytes"], hosts, rate, rate * DOWNLINK_FACTOR, rtt)
    assert abs(comm.value / expected - 1) <= TOLERANCE, (comm.value, expected, comm.samples)


@pytest.mark.parametrize(("hosts", "rate", "strategy"), CASES, ids=IDS)
def test_the_projection_predicts_the_measured_step(runs, hosts: int, rate: float, strategy: str) -> None:
    doc, _ = runs[(hosts, rate)]
    spec, node = _node(doc, strategy)
    step = _figure(doc, "swarm_step_s", strategy)
    swarm = pj.Swarm.uniform(node, hosts)
    if strategy == "ddp":
        projected = pj.ddp(spec, swarm, 1e9, settings=pj.Settings(grad_bits=16))
    else:
        settings = pj.Settings(diloco_h=step.params["h"], diloco_bits=step.params["bits"])
        projected = pj.diloco(spec, swarm, 1e9, settings=settings)
    assert projected.step_s is not None and projected.compute_s == pytest.approx(step.params["compute_s"])
    ratio = step.value / projected.step_s
    assert abs(ratio - 1) <= TOLERANCE, (
        f"measured {step.value:.3f} s, projected {projected.step_s:.3f} s (compute {projected.compute_s:.3f} s, "
        f"communication {projected.comm_s:.3f} s), ratio {ratio:.3f}"
    )


@pytest.mark.parametrize(("hosts", "rate"), RUNS, ids=[f"{n}hosts" for n, _ in RUNS])
def test_diloco_learns_and_the_token_factor_is_stored_with_its_spread(runs, hosts: int, rate: float) -> None:
    doc, _ = runs[(hosts, rate)]
    loss = _figure(doc, "swarm_loss", "diloco").params
    curve = loss["curve_loss"]
    assert len(curve) >= 4
    assert curve[-1] < curve[0] - 1.0  # from ln 64 = 4.16 to below 3.2 nat
    assert curve[-1] > loss["loss_floor"]  # nothing beats the floor
    factor = _figure(doc, "swarm_token_factor", "diloco")
    assert factor.n >= 100 and factor.min < factor.max
    assert factor.params["percentile_5"] <= factor.value <= factor.params["percentile_95"]


@pytest.mark.parametrize(("hosts", "rate"), RUNS, ids=[f"{n}hosts" for n, _ in RUNS])
def test_rank_zero_prints_the_table_and_both_plots(runs, hosts: int, rate: float) -> None:
    doc, out = runs[(hosts, rate)]
    assert f"Swarm of {hosts} ranks over gloo" in out
    assert "Token factor" in out and "thousand tokens" in out and "seconds of training" in out
    assert f"Stored as run {doc.run.id[:12]}" in out
    assert doc.run.status == "complete" and doc.run.command.startswith(f"swarm --world {hosts}")
