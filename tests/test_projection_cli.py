"""`flopwatt project` through the real entry point: its JSON, its table, its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.projection import ring_allreduce_s, tree_allreduce_s

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, ["project", *args], prog_name="flopwatt", env={"COLUMNS": "200"})


def fails_cleanly(args: tuple[str, ...], expect: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expect in lines[0]
    assert "Traceback" not in result.output


def as_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_has_every_strategy_with_its_tokens() -> None:
    doc = as_json("--params", "125M", "--tokens", "1B", "--card", "gtx1080", "--gpus", "50")
    assert [s["strategy"] for s in doc["strategies"]] == ["colocated", "ddp", "diloco", "pipeline"]
    for s in doc["strategies"]:
        for key in ("token_factor", "tokens_processed", "token_factor_band", "effective_batch_tokens", "calendar_s",
                    "energy_j", "cost_usd", "cost_includes", "co2_kg", "memory_per_gpu_bytes", "notes"):
            assert key in s
    lo = doc["strategies"][2]
    assert lo["tokens_processed"] == pytest.approx(1e9 * lo["token_factor"])
    assert set(lo["token_factor_band"]) >= {"low", "central", "high", "in_published_range", "source"}
    assert doc["tokens"] == 1e9
    assert doc["swarm"]["figures"]["uplink_bps"].startswith("default home link")
    assert doc["claims"]["nodes_per_reference"]["h200"]["by_flops"] == pytest.approx(989.4 / 8.873)
    assert doc["datacenter"]["watts_per_gpu"] == pytest.approx(10200 / 8)


def test_link_units_reach_the_all_reduce() -> None:
    """Mbit as Mbit, MB/s as 8x that, ms as ms: the ddp step's sync is the formula at those rates."""
    doc = as_json("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--uplink", "50mbit", "--downlink",
                  "12.5MB/s", "--rtt", "20ms", "--strategy", "ddp")
    (d,) = doc["strategies"]
    sync = min(ring_allreduce_s(125e6 * 2, 4, 50e6, 100e6, 0.02), tree_allreduce_s(125e6 * 2, 4, 50e6, 100e6, 0.02))
    a = -(-62 // d["memory_per_gpu_bytes"]["micro_batch_sequences"])  # 62 sequences per node, in a micro-batches
    micro = d["compute_s"] / a
    assert d["step_s"] == pytest.approx((a - 1) * micro + micro / 3 + max(2 * micro / 3, sync), rel=1e-12)


def test_table_claims_and_plots() -> None:
    result = run("--params", "125M", "--card", "rtx3090", "--gpus", "20", "--uplink", "50mbit", "--rtt", "20ms")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "colocated" in out and "diloco" in out and "wall clock" in out and "calendar" in out
    assert "match one H200 SXM in FLOP/s" in out and "owners pays" in out
    assert "Days to train" in out and "Cost in USD" in out and "swarm nodes" in out
    assert "option --uplink" in out and "cost counts" in out


def test_node_watts_reach_the_energy() -> None:
    base = ("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--strategy", "ddp")
    (a,) = as_json(*base, "--node-watts", "95", "--node-idle-watts", "95")["strategies"]
    (b,) = as_json(*base, "--node-watts", "190", "--node-idle-watts", "190")["strategies"]
    assert a["energy_j"] == pytest.approx(4 * 95 * a["wall_clock_s"])
    assert b["energy_j"] == pytest.approx(2 * a["energy_j"])


def test_gpus_per_node_and_rented_datacenter() -> None:
    doc = as_json("--params", "7B", "--card", "h100", "--gpus", "32", "--gpus-per-node", "8", "--uplink", "1gbit",
                  "--downlink", "1gbit", "--dc-gpu-hour-price", "2.5")
    ddp_run = doc["strategies"][1]
    assert ddp_run["feasible"] and ddp_run["nodes"] == 4 and ddp_run["gpus"] == 32
    dc = doc["strategies"][0]
    assert dc["cost_usd"] == pytest.approx(dc["gpu_hours"] * 2.5) and "rented" in dc["cost_includes"]


def test_nodes_csv(tmp_path: Path) -> None:
    csv = tmp_path / "nodes.csv"
    csv.write_text("card,count,uplink,downlink,rtt,hours_per_day\nrtx4090,6,40mbit,200mbit,20ms,24\n"
                   "gtx1080,2,10mbit,50mbit,40ms,8\n")
    doc = as_json("--params", "125M", "--nodes-csv", str(csv), "--strategy", "ddp")
    assert doc["swarm"]["nodes"] == 8 and len(doc["swarm"]["groups"]) == 2
    (d,) = doc["strategies"]
    assert d["calendar_s"] > 2.9 * d["wall_clock_s"]  # 8 hours a day, less the daily download


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--params", "7B", "--gpus", "10"), "--card NAME, --run ID"),
        (("--params", "7B", "--card", "voodoo2", "--gpus", "10"), "unknown card"),
        (("--params", "7B", "--card", "4090", "--gpus", "0"), "gpus"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--uplink", "100M"), "--uplink: cannot read '100M'"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--rtt", "30"), "--rtt: cannot read '30'"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--tokens", "-5B"), "--tokens"),
        (("--params", "7B", "--run", "nosuchrun", "--gpus", "10"), "nosuchrun"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--gpus-per-node", "3"), "whole number of nodes"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--swarm-hardware", "boat"), "--swarm-hardware"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--node-mfu", "2"), "node MFU"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--host-ram", "32G"), "--host-ram"),
        (("--params", "7B", "--card", "4090", "--gpus", "10", "--diloco-token-factor", "-1"), "DiLoCo token factor"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    fails_cleanly(args, message)


def test_a_bad_nodes_csv_is_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "nodes.csv"
    csv.write_text("card,count\nrtx4090,many\n")
    fails_cleanly(("--params", "125M", "--nodes-csv", str(csv)), "count must be a whole number")
