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


def _store_run(run_id: str, device, measurements: list) -> None:  # type: ignore[no-untyped-def]
    """A run with these measurements on one device, saved in the test's database."""
    from bench.document import RunDocument, RunInfo, utc_now
    from bench.store import Store
    from probes.inventory import Host

    now = utc_now()
    Store().save(RunDocument(run=RunInfo(id=run_id, started_at=now, finished_at=now, tool_version="test"),
                             host=Host(os="Linux", python="3.12", ram_bytes=32 * 2**30), devices=[device],
                             measurements=measurements))


def _gtx1080_run(run_id: str, upload: float) -> None:
    from probes.inventory import Device
    from probes.measurement import Energy, Measurement

    _store_run(
        run_id,
        Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce GTX 1080", memory_bytes=8 * 2**30),
        [
            Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", samples=[8.1e12, 8.2e12, 8.3e12],
                        dtype="fp32", device="cuda:0", variant="sustained",
                        energy=Energy(method="nvml-counter", joules=1700.0, seconds=10.0, watts_avg=170.0)),
            Measurement(probe="network", metric="net_upload", unit="bit/s", samples=[upload], device="net:x"),
            Measurement(probe="network", metric="net_download", unit="bit/s", samples=[200e6], device="net:x"),
            Measurement(probe="network", metric="net_rtt", unit="s", samples=[0.025], device="net:x"),
        ],
    )  # fmt: skip


def test_from_a_stored_run_and_an_uneven_swarm_of_runs() -> None:
    _gtx1080_run("abcdef0123456789", 20e6)
    doc = as_json("--params", "125M", "--run", "abcdef01", "--gpus", "10", "--strategy", "diloco")
    assert [s["strategy"] for s in doc["strategies"]] == ["diloco"]
    assert doc["swarm"]["figures"]["flops"].startswith("measured in run abcdef01")
    assert doc["swarm"]["figures"]["uplink_bps"] == "measured in run abcdef01: net_upload"
    assert doc["swarm"]["figures"]["host_ram"] == "measured in run abcdef01: host RAM"
    _gtx1080_run("fedcba9876543210", 5e6)
    uneven = as_json("--params", "125M", "--run", "abcdef01*6", "--run", "fedcba98*2", "--strategy", "ddp")
    assert [g["count"] for g in uneven["swarm"]["groups"]] == [6, 2] and uneven["swarm"]["nodes"] == 8
    assert min(g["uplink_bps"] for g in uneven["swarm"]["groups"]) == 5e6  # the ring runs at this one


def test_a_run_without_power_needs_node_watts_and_then_uses_it() -> None:
    """A CPU-only run (no RAPL, as on a VM or a Mac) has no power figure: refused with the way out."""
    from probes.inventory import Device
    from probes.measurement import Energy, Measurement

    _store_run(
        "cafe0123456789ab",
        Device(id="cpu", kind="cpu", name="AMD EPYC 7763 64-Core Processor", memory_bytes=32 * 2**30),
        [Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", samples=[1.6e11, 1.7e11], dtype="fp32",
                     device="cpu", variant="sustained",
                     energy=Energy(method="unavailable", unavailable_reason="no RAPL in this VM"))],
    )
    fails_cleanly(("--params", "125M", "--run", "cafe0123", "--gpus", "10"), "--node-watts")
    link = ("--uplink", "20mbit", "--downlink", "100mbit", "--rtt", "30ms")
    doc = as_json("--params", "125M", "--run", "cafe0123", "--gpus", "10", "--node-watts", "95", *link)
    assert doc["swarm"]["figures"]["watts"] == "option --node-watts (the whole node, per GPU)"
    fails_cleanly(("--params", "125M", "--run", "cafe0123", "--gpus", "10", "--node-watts", "-1", *link), "node watts")


def test_outside_the_published_range_is_said_in_the_table() -> None:
    result = run("--params", "125M", "--card", "rtx4090", "--gpus", "1000", "--strategy", "diloco")
    assert result.exit_code == 0, result.output
    assert "outside the published range" in result.output and "pessimistic" in result.output


def test_hours_per_day_stretch_the_calendar() -> None:
    (d,) = as_json("--params", "125M", "--card", "rtx4090", "--gpus", "8", "--strategy", "ddp",
                   "--hours-per-day", "12")["strategies"]
    join = 2 * 125e6 * 8 / 100e6  # the bf16 weights over the default 100 Mbit/s downlink, once a day
    assert d["calendar_s"] == pytest.approx(d["wall_clock_s"] / ((12 * 3600 - join) / 86400), rel=1e-12)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("--card", "m1-max-32c"), "card m1-max-32c has no datasheet memory size, board power, host link, price"),
        (("--card", "m2-max-38c"), "card m2-max-38c has no datasheet FLOP/s, memory size, board power, host link, price"),
        (("--card", "gtx1080", "--dc-card", "m1-ultra-64c"), "datacenter card m1-ultra-64c has no datasheet memory size"),
    ],
)
def test_an_apple_gpu_cannot_be_projected_from_a_datasheet_apple_does_not_publish(
    args: tuple[str, ...], expect: str
) -> None:
    fails_cleanly(("--params", "125M", *args), expect)


def test_link_ratios_are_bytes_per_direction_in_bits_over_the_uplink() -> None:
    """H200 HBM 4.8 TB/s, NVLink 4 900 GB/s and NVLink 5 1.8 TB/s both ways (450 and 900 per
    direction), x 8 bits, over 50 Mbit/s: 768,000, 72,000 and 144,000, printed as such."""
    base = ("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--uplink", "50mbit")
    ratios = as_json(*base)["claims"]["link_ratios"]
    assert ratios["hbm"] == pytest.approx(4.8e12 * 8 / 50e6, rel=1e-12)
    assert ratios["nvlink4"] == pytest.approx(900e9 / 2 * 8 / 50e6, rel=1e-12)
    assert ratios["nvlink5"] == pytest.approx(1.8e12 / 2 * 8 / 50e6, rel=1e-12)
    result = run(*base)
    assert result.exit_code == 0, result.output
    assert "H200 HBM moves 768,000x, NVLink 4 72,000x and NVLink 5 144,000x what this uplink does" in result.output


def test_amortisation_years_up_to_fifty() -> None:
    """Fifty years is the last accepted (the cards' price over 50 years of hours), 50.5 and 0 are refused,
    as is anything under a thousandth of a year (9 h; 5e-324 overflowed the step count)."""
    (d,) = as_json("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--strategy", "ddp",
                   "--amortise-years", "50")["strategies"]
    assert d["hardware_cost_usd"] == pytest.approx(4 * 1599 * d["wall_clock_s"] / (50 * 365.25 * 86400), rel=1e-12)
    base = ("--params", "125M", "--card", "rtx4090", "--gpus", "4")
    for given in ("50.5", "0", "5e-324"):
        fails_cleanly((*base, "--amortise-years", given), f"amortisation years must be >= 0.001 and <= 50, got {given}")


def _ddp_step_on_four_4090s(d: dict[str, Any], rtt: float) -> float:
    """The ddp step of 125M on 4 RTX 4090s at 50 Mbit/s up, 100 Mbit/s down, as in the link-units test."""
    sync = min(ring_allreduce_s(125e6 * 2, 4, 50e6, 100e6, rtt), tree_allreduce_s(125e6 * 2, 4, 50e6, 100e6, rtt))
    a = -(-62 // d["memory_per_gpu_bytes"]["micro_batch_sequences"])
    micro = d["compute_s"] / a
    return (a - 1) * micro + micro / 3 + max(2 * micro / 3, sync)


def test_a_nodes_csv_rtt_reaches_the_all_reduce_and_a_blank_one_is_the_default(tmp_path: Path) -> None:
    """An `rtt` cell of 20ms is the ring's round trip (its source the CSV line); a blank one leaves the
    default home link's 30 ms. The step is the ddp formula at 0.02 s, then at 0.03 s."""
    csv = tmp_path / "nodes.csv"
    base = ("--params", "125M", "--nodes-csv", str(csv), "--strategy", "ddp")
    csv.write_text("card,count,uplink,downlink,rtt\nrtx4090,4,50mbit,100mbit,20ms\n")
    doc = as_json(*base)
    assert doc["swarm"]["figures"]["rtt_s"] == "nodes CSV line 2"
    (given,) = doc["strategies"]
    assert given["step_s"] == pytest.approx(_ddp_step_on_four_4090s(given, 0.02), rel=1e-12)
    csv.write_text("card,count,uplink,downlink,rtt\nrtx4090,4,50mbit,100mbit,\n")
    doc = as_json(*base)
    assert doc["swarm"]["figures"]["rtt_s"] == "default home link 25mbit/100mbit/30ms"
    (blank,) = doc["strategies"]
    assert blank["step_s"] == pytest.approx(_ddp_step_on_four_4090s(blank, 0.03), rel=1e-12)


def test_diloco_bits_from_one_to_thirty_two() -> None:
    """1-bit pseudo-gradients are accepted (N/8 bytes per all-reduce), 0 and 33 refused. 125M on 4 RTX
    4090s at H = 100: the 8-bit step less the 1-bit one is (sync(N bytes) - sync(N/8 bytes)) / H, each
    sync the faster of the ring and the tree at 50 Mbit/s up, 100 Mbit/s down, 20 ms."""
    base = ("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--uplink", "50mbit", "--downlink", "100mbit",
            "--rtt", "20ms", "--strategy", "diloco", "--diloco-h", "100")

    def sync(size: float) -> float:
        return min(ring_allreduce_s(size, 4, 50e6, 100e6, 0.02), tree_allreduce_s(size, 4, 50e6, 100e6, 0.02))

    (one,) = as_json(*base, "--diloco-bits", "1")["strategies"]
    (eight,) = as_json(*base, "--diloco-bits", "8")["strategies"]
    assert "1-bit pseudo-gradients" in one["plan"]
    assert eight["step_s"] - one["step_s"] == pytest.approx((sync(125e6) - sync(125e6 / 8)) / 100, rel=1e-9)
    fails_cleanly((*base, "--diloco-bits", "0"), "DiLoCo precision bits must be >= 1 and <= 32, got 0")
    fails_cleanly((*base, "--diloco-bits", "33"), "DiLoCo precision bits must be >= 1 and <= 32, got 33")


def test_datacenter_activations_count_the_replicas_fractional_sequences() -> None:
    """A 4-layer, 16,384-wide model with one head (so no tensor parallelism; N = 12·4·16384² +
    32000·16384 = 13,409,189,888) on 6 H100s, batch 10,240 tokens of s = 2,048. At pp = 1, dp = 6:
    2N + 2N + 12N/6 = 6N = 80.5e9 bytes > 0.9·80 GiB, so pp = 2, dp = 3: each replica's
    10,240/3 = 3,413.3 tokens are 1.667 sequences, fewer than the 2 stages, all in flight on the first
    stage's 2 layers: 34·s·h·(10240/3/2048)·2 bytes of activations (not 3,413 whole tokens)."""
    doc = as_json("--card", "h100", "--strategy", "colocated", "--dc-gpus", "6", "--layers", "4", "--width", "16384",
                  "--heads", "1", "--seq", "2048", "--batch-tokens", "10240", "--tokens", "1e9")
    (dc,) = doc["strategies"]
    n = 12 * 4 * 16384**2 + 32000 * 16384
    assert n == 13_409_189_888 and 6 * n > 0.9 * 80 * 2**30
    assert dc["plan"].startswith("tp=1 pp=2 dp=3, bf16, selective recompute")
    mem = dc["memory_per_gpu_bytes"]
    activations = 34 * 2048 * 16384 * (10240 / 3 / 2048) * 2
    assert mem["activations"] == pytest.approx(activations, rel=1e-12)
    logits = 4 * 1024 * 32000  # one Liger chunk: ceil(V/h) = 2, ceil(2048/2) = 1024 tokens
    assert mem["total"] == pytest.approx(2 * n / 2 + 2 * n / 2 + 12 * n / 6 + activations + logits, rel=1e-12)


def test_the_datacenter_is_communication_bound_only_when_communication_exceeds_compute() -> None:
    """125M at s = 256 on 32 H100s, 8,192 tokens a step: one sequence per replica computes in
    8192·(6N + 12·12·768·256) / (32·989.4e12·MFU) while the ring of bf16 gradients across 4 servers
    takes 2·31/32·2N / min(450e9, 8 x 400 Gb/s) = 1.21 ms. At 40 % MFU (0.50 ms) it is communication-
    bound and says so; at the MFU where the two are equal (16.6 %) and at 10 % (2.01 ms) it is not."""
    compute_at_full = 8192 * (6 * 125e6 + 12 * 12 * 768 * 256) / (32 * 989.4e12)
    ring = 2 * 31 / 32 * (2 * 125e6) / min(450e9, 400e9 / 8 * 8)
    base = ("--params", "125M", "--seq", "256", "--batch-tokens", "8192", "--card", "h100", "--dc-gpus", "32",
            "--strategy", "colocated")
    bound = "communication-bound: more GPUs than this batch can keep busy"
    crossing = compute_at_full / ring
    for mfu, reason in ((0.4, bound), (crossing, ""), (0.1, "")):
        (dc,) = as_json(*base, "--mfu", repr(mfu))["strategies"]
        assert dc["feasible"] and dc["plan"].startswith("tp=1 pp=1 dp=32")
        assert dc["compute_s"] == pytest.approx(compute_at_full / mfu, rel=1e-12)
        assert dc["comm_s"] == pytest.approx(ring, rel=1e-12)
        assert dc["reason"] == reason
        if mfu == crossing:
            assert dc["compute_s"] == dc["comm_s"]  # exactly at the threshold
