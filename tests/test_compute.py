"""The matmul probe on the CPU with real torch: figures, shapes, regimes and the result check."""

from __future__ import annotations

import pytest
import torch

from probes import compute
from probes.compute import MatmulPlan, Operands, measure_matmul

SMALL = MatmulPlan(sizes=[64, 128, 256], sweep_budget_s=2.0, blocks=4, block_s=0.01, sustained_s=0.3, sustain_all_dtypes=False)


def test_burst_and_sustained_figures_are_real_and_consistent() -> None:
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], llc_bytes=1 << 20, plan=SMALL)
    burst = next(m for m in result.measurements if m.variant == "burst")
    sustained = next(m for m in result.measurements if m.variant == "sustained")
    assert burst.metric == "matmul_flops" and burst.unit == "FLOP/s" and burst.dtype == "fp32"
    assert burst.n == SMALL.blocks and all(s > 1e6 for s in burst.samples)
    # the sweep is recorded and the reported shape is the best of it
    sweep = burst.params["sweep"]
    assert [(row["m"], row["backend"]) for row in sweep] == [(s, b) for s in (64, 128, 256) for b in ("torch", "numpy")]
    assert burst.params["m"] == max(sweep, key=lambda row: row["median_flops"])["m"]
    assert burst.value == pytest.approx(max(row["median_flops"] for row in sweep))
    assert burst.params["check_relative_error"] < compute.CHECK_TOLERANCE["fp32"]
    assert sustained.params["window_s"] >= SMALL.sustained_s
    assert sustained.params["m"] == burst.params["m"]


def test_a_broken_kernel_never_posts_a_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that returns garbage is caught by the float64 reference and reported, not stored."""

    def broken_step(self: Operands) -> None:
        i = self.turn % len(self.a)
        self.turn += 1
        self.out[i].zero_()

    monkeypatch.setattr(Operands, "step", broken_step)
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=SMALL)
    assert result.measurements == []
    reasons = [u.reason for u in result.unavailable if u.dtype == "fp32"]
    assert reasons and all("result check failed" in r for r in reasons)


@pytest.mark.parametrize("dtype", ["fp64", "fp32", "bf16"])
def test_reference_check_accepts_correct_products(dtype: str) -> None:
    ops = Operands.random(96, 80, 112, dtype, torch.device("cpu"), sets=2)
    ops.step()
    assert ops.relative_error() < compute.CHECK_TOLERANCE[dtype] / 10


def test_operand_sets_span_four_times_the_cache() -> None:
    sets = compute._operand_sets(256, 256, 256, "fp32", llc_bytes=8 << 20)
    assert sets * 3 * 256 * 256 * 4 >= 4 * (8 << 20) or sets == 8


def test_cpu_dtypes_and_headline() -> None:
    dtypes, skipped = compute.supported_dtypes(torch.device("cpu"), "cpu")
    assert dtypes == ["fp64", "fp32", "bf16"] and skipped == []
    assert compute.HEADLINE_DTYPE["cpu"] in dtypes


def test_gpu_figures_get_their_datasheet_peak() -> None:
    """The runner attaches the card's peak so the table can show the fraction reached."""
    from bench.runner import with_datasheet_peak
    from probes.inventory import Device
    from probes.measurement import Measurement

    h100 = Device(id="cuda:0", kind="cuda", name="NVIDIA H100 80GB HBM3")
    bf16 = Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", dtype="bf16", device="cuda:0", samples=[7.0e14])
    annotated = with_datasheet_peak(bf16, [h100])
    assert annotated.peak is not None and 9e14 < annotated.peak < 1.1e15  # 989 TFLOP/s dense
    assert annotated.peak_fraction == pytest.approx(7.0e14 / annotated.peak)
    assert "H100" in (annotated.peak_source or "")
    cpu = bf16.model_copy(update={"device": "cpu"})
    assert with_datasheet_peak(cpu, [Device(id="cpu", kind="cpu", name="AMD EPYC")]).peak is None


def test_figures_carry_the_energy_of_their_own_work() -> None:
    """With a meter (here the labelled TDP x load estimate, the one this VM can run), burst and
    sustained figures carry energy from windows long enough for the sensor."""
    from probes.energy.rapl import EstimatedCpuMeter

    meter = EstimatedCpuMeter(tdp_w=100.0, why_not_measured="test: no RAPL here")
    plan = MatmulPlan(sizes=[128, 256], sweep_budget_s=1.0, blocks=3, block_s=0.01, sustained_s=1.2, sustain_all_dtypes=False)
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=plan, meter=meter)
    for m in result.measurements:
        assert m.energy is not None and m.energy.method == "estimated"
        assert m.energy.seconds is not None and m.energy.seconds >= meter.min_window_s
        assert 0 < (m.energy.watts_avg or 0) <= 100.0 * 1.01
        assert m.efficiency == pytest.approx(m.value / m.energy.watts_avg)


def test_cpu_sweeps_both_blas_libraries_and_records_the_winner() -> None:
    """torch's BLAS and numpy's are both timed on the same memory; the figure names which won."""
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp64"], plan=SMALL)
    burst = next(m for m in result.measurements if m.variant == "burst")
    rows = burst.params["sweep"]
    assert {r["backend"] for r in rows} == {"torch", "numpy"}
    winner = max(rows, key=lambda r: r["median_flops"])
    assert burst.params["backend"] == winner["backend"] and burst.params["m"] == winner["m"]
    assert burst.params["backend_library"].startswith(winner["backend"])
    assert all(r["check_relative_error"] < compute.CHECK_TOLERANCE["fp64"] for r in rows)


def test_bf16_stays_on_torch() -> None:
    assert compute.backends(torch.device("cpu"), "bf16") == ["torch"]
    assert compute.backends(torch.device("cuda", 0), "fp32") == ["torch"]
