"""`flopwatt compare RUN --card NAME` through the real CLI and a real SQLite file.

A GPU run cannot be made on this machine, so the GPU document is built from figures of the kind a
probe records (an RTX 4090's matmul and memory figures with an NVML energy window); the CPU run is a
real probe of this machine. Every expected number is worked out here from the stored figure and the
card's row, not read back from the code under test.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.document import RunDocument, RunInfo, new_run_id
from bench.runner import ProbeRequest, run_probes
from bench.store import Store
from probes.inventory import Device, Host
from probes.measurement import Energy, Measurement

runner = CliRunner()
GIB = 2**30


def gpu_run() -> RunDocument:
    """An RTX 4090 PC: bf16 and fp32 matmul on the GPU (bf16 with 412 W average), GPU memory copy."""
    started = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    energy = Energy(method="nvml-counter", joules=4120.0, watts_avg=412.0, watts_peak=447.0, seconds=10.0)

    def figure(metric: str, unit: str, samples: list[float], **kw: object) -> Measurement:
        probe = "compute" if metric == "matmul_flops" else "memory"
        return Measurement(probe=probe, metric=metric, unit=unit, device="cuda:0", samples=samples, **kw)  # type: ignore[arg-type]

    return RunDocument(
        run=RunInfo(id=new_run_id(), started_at=started, finished_at=started + timedelta(seconds=90),
                    tool_version="0.1.0", command="probe --quick"),
        host=Host(os="Linux", python="3.11.7", torch="2.13.0+cu130", cpu_model="AMD Ryzen 9 7950X",
                  ram_bytes=64 * GIB, gpu_driver="580.65"),
        devices=[
            Device(id="cpu", kind="cpu", name="AMD Ryzen 9 7950X", memory_bytes=64 * GIB),
            Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce RTX 4090", memory_bytes=24 * GIB),
        ],
        measurements=[
            figure("matmul_flops", "FLOP/s", [150.1e12, 152.3e12, 151.0e12], dtype="bf16", variant="burst",
                   energy=energy),
            figure("matmul_flops", "FLOP/s", [61.0e12, 60.2e12, 60.7e12], dtype="fp32", variant="burst"),
            figure("mem_copy_bandwidth", "B/s", [905e9, 911e9, 908e9]),
        ],
    )  # fmt: skip


@pytest.fixture
def store(isolated_environment: Path) -> Store:
    return Store(os.environ["FLOPWATT_DB"])


@pytest.fixture(scope="module")
def cpu_run() -> RunDocument:
    """A real (short) probe of this machine: CPU memory bandwidth only."""
    return run_probes(ProbeRequest(only=("memory",), quick=True, command="probe --quick --only memory")).document


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["compare", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _row(rows: list[dict], metric: str, card: str, *, dtype: str | None = None, per_watt: bool = False) -> dict:
    [row] = [r for r in rows if r["metric"] == metric and r["card"] == card and r["dtype"] == dtype
             and r["per_watt"] == per_watt]  # fmt: skip
    return row


def test_a_gpu_run_beside_named_cards_pins_every_ratio(store: Store) -> None:
    doc = gpu_run()
    store.save(doc)
    out = _json(doc.run.id, "--card", "h100", "--card", "rx7900xtx")
    assert [c["key"] for c in out["cards"]] == ["h100", "rx7900xtx"]
    rows = out["rows"]
    bf16 = 151.0e12  # the median of the stored samples

    # bf16 against H100: mamf-finder measured 794.5 TFLOP/s, so the ratio is taken against that
    row = _row(rows, "matmul_flops", "h100", dtype="bf16")
    assert row["value"] == bf16 and row["datasheet"] == 989.4e12 and row["achieved"] == 794.5e12
    assert row["basis"] == "achieved" and "mamf-finder" in row["achieved_source"] and row["achieved_date"] == "2025-01-05"
    assert row["ratio"] == pytest.approx(bf16 / 794.5e12)
    assert row["machines_per_card"] == pytest.approx(794.5e12 / bf16)

    # fp32 against H100: nobody published a measured figure, so the datasheet's 67 TFLOP/s, not bf16's
    row = _row(rows, "matmul_flops", "h100", dtype="fp32")
    assert row["datasheet"] == 67e12 and row["achieved"] is None and row["basis"] == "datasheet"
    assert row["ratio"] == pytest.approx(60.7e12 / 67e12)
    assert row["machines_per_card"] == pytest.approx(67e12 / 60.7e12)

    # the Radeon has no published bf16 rate: no figure, rather than its fp16 one
    row = _row(rows, "matmul_flops", "rx7900xtx", dtype="bf16")
    assert row["datasheet"] is None and row["ratio"] is None and row["machines_per_card"] is None
    assert _row(rows, "matmul_flops", "rx7900xtx", dtype="fp32")["ratio"] == pytest.approx(60.7e12 / 61.4e12)

    # per watt: the run's FLOP/J against the datasheet peak over board power; no "N machines" for efficiency
    row = _row(rows, "matmul_flops", "h100", dtype="bf16", per_watt=True)
    assert row["unit"] == "FLOP/J" and row["value"] == pytest.approx(bf16 / 412.0)
    assert row["datasheet"] == pytest.approx(989.4e12 / 700)
    assert row["ratio"] == pytest.approx((bf16 / 412.0) / (989.4e12 / 700))
    assert row["machines_per_card"] is None
    assert not [r for r in rows if r["per_watt"] and r["dtype"] == "fp32"]  # fp32 had no energy window

    # memory bandwidth in bytes per second on both sides (BabelStream copy on H100: 2.90 TB/s)
    row = _row(rows, "mem_copy_bandwidth", "h100")
    assert row["value"] == 908e9 and row["datasheet"] == 3350e9 and row["achieved"] == 2.90e12
    assert row["ratio"] == pytest.approx(908e9 / 2.90e12)
    assert row["machines_per_card"] == pytest.approx(2.90e12 / 908e9)

    # memory size: the GPU's 24 GiB against H100's 80 GiB
    row = [r for r in rows if r["metric"] == "memory_bytes" and r["device"] == "cuda:0" and r["card"] == "h100"][0]
    assert row["value"] == 24 * GIB and row["datasheet"] == 80 * GIB
    assert row["machines_per_card"] == pytest.approx(80 / 24) and row["ratio"] == pytest.approx(24 / 80)


def test_without_card_the_default_set_starts_with_the_runs_own_card(store: Store) -> None:
    doc = gpu_run()
    store.save(doc)
    out = _json(doc.run.id)
    assert [(c["key"], c["own"]) for c in out["cards"]] == [
        ("rtx4090", True), ("gtx1080", False), ("h100", False), ("h200", False)
    ]
    # the run against its own card's datasheet: 151 of 165.2 TFLOP/s
    row = _row(out["rows"], "matmul_flops", "rtx4090", dtype="bf16")
    assert row["basis"] == "datasheet" and row["ratio"] == pytest.approx(151.0e12 / 165.2e12)
    # against GTX 1080 in bf16: that card has no bf16 rate at all
    assert _row(out["rows"], "matmul_flops", "gtx1080", dtype="bf16")["datasheet"] is None


def test_the_table_cites_every_card_figure(store: Store) -> None:
    doc = gpu_run()
    store.save(doc)
    result = runner.invoke(app, ["compare", doc.run.id[:8], "--card", "h100"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "matmul bf16 burst on cuda:0: this run 151 TFLOP/s" in out
    lines = [line for line in out.splitlines() if line.startswith("│ H100 SXM")]
    # bf16 row: datasheet, achieved with a source number each, ratio 151/794.5, N = 794.5/151
    assert any("989 TFLOP/s [" in line and "794 TFLOP/s [" in line and "0.19x" in line and "5.26" in line
               for line in lines), lines  # fmt: skip
    sources = out[out.index("Sources"):]
    assert "ml-engineering" in sources and "resources.nvidia.com" in sources and "Azure/AI-benchmarking-guide" in sources


def test_a_real_cpu_run_against_the_default_cards(cpu_run: RunDocument, store: Store) -> None:
    store.save(cpu_run)
    out = _json(cpu_run.run.id)
    assert [c["key"] for c in out["cards"]] == ["gtx1080", "rtx4090", "h100", "h200"]
    copy = next(m for m in cpu_run.measurements if m.metric == "mem_copy_bandwidth")
    row = _row(out["rows"], "mem_copy_bandwidth", "h200")
    assert row["value"] == copy.value and row["achieved"] == 4.01e12
    assert row["machines_per_card"] == pytest.approx(4.01e12 / copy.value)
    row = _row(out["rows"], "mem_copy_bandwidth", "gtx1080")
    assert row["basis"] == "datasheet" and row["machines_per_card"] == pytest.approx(320e9 / copy.value)
    ram = next(d for d in cpu_run.devices if d.id == "cpu").memory_bytes
    row = [r for r in out["rows"] if r["metric"] == "memory_bytes" and r["card"] == "h200"][0]
    assert row["machines_per_card"] == pytest.approx(141 * GIB / ram)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--card", "rtx 4095"], "unknown card 'rtx 4095'; did you mean rtx4090"),
        (["--card", "h100", "--shared"], "compare --shared takes exactly one run and no --card"),
    ],
)
def test_bad_card_requests_are_one_line_and_exit_2(args: list[str], expect: str, store: Store) -> None:
    doc = gpu_run()
    store.save(doc)
    result = runner.invoke(app, ["compare", doc.run.id, *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expect}"), result.stderr


def test_card_with_two_runs_is_refused(store: Store) -> None:
    a, b = gpu_run(), gpu_run()
    store.save(a)
    store.save(b)
    result = runner.invoke(app, ["compare", a.run.id, b.run.id, "--card", "h100"])
    assert result.exit_code == 2 and "give one run, not several" in result.stderr


def mac_run() -> RunDocument:
    """An M1 Max (32-core GPU) Mac: fp32 and bf16 matmul and a memory copy on the GPU (MPS); fp32 carries an
    energy window (flopwatt has no macOS meter yet, so an estimated one) to show no per-watt card figure."""
    started = datetime(2026, 5, 2, 9, 0, tzinfo=timezone.utc)
    energy = Energy(method="estimated", joules=380.0, watts_avg=38.0, watts_peak=41.0, seconds=10.0)

    def figure(metric: str, unit: str, samples: list[float], **kw: object) -> Measurement:
        probe = "compute" if metric == "matmul_flops" else "memory"
        return Measurement(probe=probe, metric=metric, unit=unit, device="mps", samples=samples, **kw)  # type: ignore[arg-type]

    return RunDocument(
        run=RunInfo(id=new_run_id(), started_at=started, finished_at=started + timedelta(seconds=60),
                    tool_version="0.1.0", command="probe --quick"),
        host=Host(os="Darwin", python="3.11.7", torch="2.13.0", cpu_model="Apple M1 Max", ram_bytes=64 * GIB),
        devices=[
            Device(id="cpu", kind="cpu", name="Apple M1 Max", memory_bytes=64 * GIB),
            Device(id="mps", kind="mps", name="Apple M1 Max GPU (32-core)", memory_bytes=64 * GIB,
                   extra={"gpu_cores": 32}),
        ],
        measurements=[
            figure("matmul_flops", "FLOP/s", [8.1e12, 8.3e12, 8.2e12], dtype="fp32", variant="burst", energy=energy),
            figure("matmul_flops", "FLOP/s", [9.0e12, 9.2e12, 9.1e12], dtype="bf16", variant="burst"),
            figure("mem_copy_bandwidth", "B/s", [331e9, 335e9, 333e9]),
        ],
    )  # fmt: skip


def test_a_mac_run_beside_its_apple_gpu_row(store: Store) -> None:
    """Only what Apple published is compared: FP32 (10.4 TFLOPS) and bandwidth (400 GB/s); no bf16,
    no memory size, no per-watt figure (Apple states no GPU power)."""
    doc = mac_run()
    store.save(doc)
    out = _json(doc.run.id[:8], "--card", "M1 Max 32-core")
    assert [c["key"] for c in out["cards"]] == ["m1-max-32c"]
    rows = out["rows"]
    row = _row(rows, "matmul_flops", "m1-max-32c", dtype="fp32")
    assert row["datasheet"] == 10.4e12 and row["basis"] == "datasheet" and "10.4 teraflops" in row["datasheet_source"]
    assert row["ratio"] == pytest.approx(8.2e12 / 10.4e12)
    assert row["machines_per_card"] == pytest.approx(10.4e12 / 8.2e12)
    row = _row(rows, "matmul_flops", "m1-max-32c", dtype="bf16")
    assert row["datasheet"] is None and row["ratio"] is None
    row = _row(rows, "mem_copy_bandwidth", "m1-max-32c")
    assert row["datasheet"] == 400e9 and row["ratio"] == pytest.approx(333e9 / 400e9)
    row = _row(rows, "matmul_flops", "m1-max-32c", dtype="fp32", per_watt=True)
    assert row["value"] == pytest.approx(8.2e12 / 38.0) and row["datasheet"] is None and row["ratio"] is None
    row = [r for r in rows if r["metric"] == "memory_bytes" and r["device"] == "mps"][0]
    assert row["datasheet"] is None and row["machines_per_card"] is None


def test_a_mac_runs_own_apple_gpu_leads_the_default_cards(store: Store) -> None:
    doc = mac_run()
    store.save(doc)
    out = _json(doc.run.id)
    assert [(c["key"], c["own"]) for c in out["cards"]][:2] == [("m1-max-32c", True), ("gtx1080", False)]
    # the table renders a card without power, memory size or host link
    result = runner.invoke(app, ["compare", doc.run.id[:8]], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Apple M1 Max 32-core GPU" in result.stdout


def test_an_apple_chip_without_its_core_count_is_one_line_naming_its_configurations(store: Store) -> None:
    doc = mac_run()
    store.save(doc)
    result = runner.invoke(app, ["compare", doc.run.id, "--card", "M1 Max"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown card 'M1 Max'; did you mean m1-max-32c, m1-max-24c?"
