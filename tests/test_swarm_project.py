"""`flopwatt project --swarm-run`: the link and overlap a swarm run measured, worked out by hand from
figures set here, and the projection of the run's own case beside what it measured."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench import projection as pj
from bench.cli import app
from bench.projection.strategies import NodeStep, overlapped_step
from bench.store import Store
from bench.document import RunDocument
from bench.hardware import get_card
from bench.swarm_run import beside, read_swarm_run, settings_with, with_swarm_link
from test_swarm_cli import _document

runner = CliRunner()

# _document(): 2 ranks, 800k parameters, H = 2, a 1.6 MB payload (ring share 1.6 MB for 2 ranks),
# syncs of 0.3 s, an RTT of 1 ms, compute 0.4 s per step on every rank, DDP steps [0.5, 0.5, 0.6, 0.5].
LINK = 8 * 1.6e6 / (0.3 - 0.001)


def test_the_link_is_the_ring_bytes_over_the_sync_less_the_latency() -> None:
    run = read_swarm_run(_document())
    assert run.uplink_bps.value == pytest.approx(LINK)
    assert run.rtt_s.value == 0.001 and run.world == 2
    node = with_swarm_link(pj.node_from_card(get_card("rtx4090")), run)
    assert (node.uplink_bps.value, node.downlink_bps.value, node.rtt_s.value) == (run.uplink_bps.value,) * 2 + (0.001,)
    assert "swarm run abababab" in run.uplink_bps.source


def _slower_ddp(step_s: float) -> RunDocument:
    doc = _document()
    for m in doc.measurements:
        if m.metric == "swarm_step_s" and m.variant == "ddp":
            m.samples[:] = [step_s] * 3
    return doc


def test_the_overlap_is_what_a_communication_bound_step_hid() -> None:
    run = read_swarm_run(_slower_ddp(0.6))
    # step 0.6 = (1 - f) * compute 0.4 + sync 0.3  ->  f = 1 - (0.6 - 0.3) / 0.4 = 0.25
    assert run.ddp_overlap is not None and run.ddp_overlap.value == pytest.approx(0.25)
    assert settings_with(pj.Settings(), run).ddp_overlap == pytest.approx(0.25)


def test_a_step_that_hid_its_sync_leaves_the_projection_its_own_overlap() -> None:
    run = read_swarm_run(_slower_ddp(0.4))  # no longer than the compute: the sync hid entirely
    assert run.ddp_overlap is None and settings_with(pj.Settings(), run).ddp_overlap == pytest.approx(2 / 3)


def test_the_overlap_share_sets_how_much_compute_the_sync_hides_behind() -> None:
    plan = NodeStep(memory=None, layout="", micro_batches=3, micro_s=1.0, compute_s=3.0,  # type: ignore[arg-type]
                    intra_sync_s=0.0, offload_s=0.25)
    assert overlapped_step(plan, 0.5) == pytest.approx(2 + 1 / 3 + 2 / 3 + 0.25)  # the projection's 2/3
    assert overlapped_step(plan, 0.5, overlap=0.25) == pytest.approx(2 + 0.75 + 0.5 + 0.25)


def test_the_runs_own_case_projected_beside_what_it_measured() -> None:
    rows = {r.strategy: r for r in beside(read_swarm_run(_document()))}
    ddp, diloco = rows["ddp"], rows["diloco"]
    # DDP at the projection's 2/3: 0.4/3 + max(0.8/3, 0.3); measured median 0.5
    assert ddp.step_projected == pytest.approx(0.4 / 3 + 0.3) and ddp.step_measured == 0.5
    assert ddp.utilisation_projected == pytest.approx(0.4 / (0.4 / 3 + 0.3))
    # DiLoCo: compute + sync / H = 0.4 + 0.3 / 2; measured median round 1.3 s / 2
    assert diloco.step_projected == pytest.approx(0.55) and diloco.step_measured == pytest.approx(0.65)
    assert diloco.band is not None and diloco.factor is not None
    assert diloco.band == pj.diloco_token_factor(2, 2, 800_000, 512, tokens=4096)


def test_project_takes_the_swarm_runs_link_and_options_still_win() -> None:
    doc = _document()
    Store().save(doc)
    base = ["project", "--params", "125M", "--card", "rtx4090", "--gpus", "8", "--json"]
    out = json.loads(runner.invoke(app, [*base, "--swarm-run", doc.run.id[:8]]).stdout)
    (group,) = out["swarm"]["groups"]
    assert group["uplink_bps"] == pytest.approx(LINK)
    assert out["swarm"]["figures"]["uplink_bps"].startswith("measured in swarm run abababab")
    assert out["swarm_run"]["ddp_overlap"] == pytest.approx(0.5)
    assert [s["strategy"] for s in out["swarm_run"]["strategies"]] == ["ddp", "diloco"]
    given = json.loads(runner.invoke(app, [*base, "--swarm-run", doc.run.id[:8], "--uplink", "50mbit"]).stdout)
    assert given["swarm"]["groups"][0]["uplink_bps"] == 50e6


def test_project_uses_the_measured_overlap_for_ddp() -> None:
    """The same link given as options, with and without the run: only DDP's overlap differs (0.25 measured
    against the projection's 2/3), and on a link this slow only the compute before the sync grows."""
    doc = _slower_ddp(0.6)
    Store().save(doc)
    base = ["project", "--params", "125M", "--card", "rtx4090", "--gpus", "8", "--json", "--uplink", f"{LINK}bit",
            "--downlink", f"{LINK}bit", "--rtt", "1ms"]
    measured = json.loads(runner.invoke(app, [*base, "--swarm-run", doc.run.id[:8]]).stdout)
    assumed = json.loads(runner.invoke(app, base).stdout)
    ddp = [next(s for s in out["strategies"] if s["strategy"] == "ddp") for out in (measured, assumed)]
    assert ddp[0]["compute_s"] == ddp[1]["compute_s"]
    assert ddp[0]["step_s"] > ddp[1]["step_s"]
    diloco = [next(s for s in out["strategies"] if s["strategy"] == "diloco") for out in (measured, assumed)]
    assert diloco[0]["step_s"] == diloco[1]["step_s"]  # the overlap is DDP's alone


def test_project_prints_the_swarm_run_beside_its_projection() -> None:
    doc = _document()
    Store().save(doc)
    result = runner.invoke(app, ["project", "--params", "125M", "--card", "rtx4090", "--gpus", "8",
                                 "--swarm-run", doc.run.id[:8]], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Swarm run abababab: 2 ranks, a 0.80M-parameter model, H = 2" in result.stdout
    assert "500 ms / 433 ms" in result.stdout  # DDP step: run / projected
    assert "DiLoCo above uses the literature band for 125M" in " ".join(result.stdout.split())


def test_a_run_without_swarm_figures_is_one_line() -> None:
    from server_support import make_doc

    doc = make_doc()
    Store().save(doc)
    result = runner.invoke(app, ["project", "--params", "125M", "--card", "rtx4090", "--swarm-run", doc.run.id[:8]])
    assert result.exit_code == 2
    assert f"run {doc.run.id[:8]} has no swarm sync figures" in result.output
