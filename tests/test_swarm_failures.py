"""`flopwatt swarm` when things go wrong: a rank killed mid-run, Ctrl-C on either side, a peer out of reach.

Real CLI processes in network-namespace hosts, as in tests/test_swarm_lab.py. A rank is stopped once
its progress line shows training steps counted, so it always falls mid-training, after a step.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from bench.store import Store
from netns import Host, Lab, netns_unavailable
from test_swarm_lab import Ranks, start

_UNAVAILABLE = netns_unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]

QUICK = ("--minutes", "0.3", "--diloco-h", "4", "--step-seconds", "0.2", "--timeout", "30")
#: rich draws the progress line into the rank's log file as on a terminal, without colour.
SHOW_PROGRESS = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "NO_COLOR": "1"}
#: Once every rank is done, how long the others may take to notice a lost rank and finish.
BOUND_S = 30.0


def _shape(hosts: list[Host], rate: float) -> None:
    for host in hosts:  # tbf on the uplink: a home-like link, slow enough that a rank falls mid-step
        host.shape_uplink(rate)


def _when_training(ranks: Ranks, rank: int, limit_s: float = 120) -> None:
    """Wait until `rank`'s progress line reports a ddp step after the first: its clock has counted
    steps. (The bytes a link has carried cannot tell: sizing and DDP's warm-up pass send a model's
    gradients too, and under load a rank stopped at 3 MB had not finished a step.)"""
    deadline = time.monotonic() + limit_s
    while not re.search(r"ddp step [1-9]", ranks.output(rank)):
        assert all(p.poll() is None for p in ranks.procs), "a rank ended before training began"
        assert time.monotonic() < deadline, "no training step was counted"
        time.sleep(0.2)


def test_a_rank_that_dies_ends_the_run_everywhere_and_rank_0_stores_what_was_measured(tmp_path: Path) -> None:
    with Lab(hosts=3) as lab:
        _shape(lab.hosts, 100e6)
        ranks = start(lab.hosts, tmp_path, *QUICK, port=29670, env=SHOW_PROGRESS)
        _when_training(ranks, 2)
        ranks.procs[2].kill()
        killed = time.monotonic()
        codes = ranks.wait(BOUND_S)
        assert time.monotonic() - killed < BOUND_S
    assert codes[0] == 2 and codes[1] == 2, [ranks.output(r)[-2000:] for r in range(3)]
    assert "error: swarm: rank 2 dropped out" in ranks.output(0)
    assert "rank 0 stores what was measured" in ranks.output(1)
    doc = Store(ranks.db).get("latest")
    assert doc.run.status == "aborted"
    assert any("rank 2 dropped out during ddp" in u.reason for u in doc.unavailable), doc.unavailable
    step = [m for m in doc.measurements if m.metric == "swarm_step_s" and m.variant == "ddp"]
    assert step and step[0].n >= 1  # the steps before the loss are kept


def test_ctrl_c_on_rank_0_stores_nothing_and_the_others_stop(tmp_path: Path) -> None:
    with Lab(hosts=2) as lab:
        _shape(lab.hosts, 100e6)
        ranks = start(lab.hosts, tmp_path, *QUICK, port=29671, env=SHOW_PROGRESS)
        _when_training(ranks, 1)
        ranks.procs[0].send_signal(signal.SIGINT)
        codes = ranks.wait(BOUND_S)
    assert codes == [130, 2], [ranks.output(r)[-2000:] for r in range(2)]
    assert "interrupted: nothing was stored" in ranks.output(0)
    assert "rank 0 was stopped (Ctrl-C)" in ranks.output(1) or "lost the master" in ranks.output(1)
    assert Store(ranks.db).list_runs() == []


def test_ctrl_c_on_another_rank_is_that_rank_leaving(tmp_path: Path) -> None:
    with Lab(hosts=2) as lab:
        _shape(lab.hosts, 100e6)
        ranks = start(lab.hosts, tmp_path, *QUICK, port=29672, env=SHOW_PROGRESS)
        _when_training(ranks, 1)
        ranks.procs[1].send_signal(signal.SIGINT)
        codes = ranks.wait(BOUND_S)
    assert codes == [2, 130], [ranks.output(r)[-2000:] for r in range(2)]
    assert "this rank left the swarm" in ranks.output(1)
    doc = Store(ranks.db).get("latest")
    assert doc.run.status == "aborted"
    assert any("rank 1 was stopped (Ctrl-C)" in u.reason for u in doc.unavailable), doc.unavailable


def test_a_peer_out_of_reach_is_one_line_naming_it_and_what_to_open(tmp_path: Path) -> None:
    """Ranks 1 and 2 both reach the master but not each other (a route refuses the traffic): every
    rank stops before training with one line naming the unreachable host and port."""
    with Lab(hosts=3) as lab:
        for host, other in ((lab.hosts[1], lab.hosts[2]), (lab.hosts[2], lab.hosts[1])):
            host.run("ip", "route", "add", "prohibit", f"{other.address}/32")
        ranks = start(lab.hosts, tmp_path, "--timeout", "20", "--minutes", "0.1", port=29673)
        codes = ranks.wait(90)
    assert codes == [2, 2, 2], [ranks.output(r) for r in range(3)]
    expected = {1: f"rank 2 at {lab.hosts[2].address}:", 2: f"rank 1 at {lab.hosts[1].address}:"}
    for rank in range(3):
        (line,) = ranks.output(rank).strip().splitlines()  # one line, no traceback
        assert line.startswith("error: swarm:") and "VPN such as WireGuard" in line, line
        assert any(e in line for e in expected.values()) if rank == 0 else expected[rank] in line, line
    assert Store(ranks.db).list_runs() == []
