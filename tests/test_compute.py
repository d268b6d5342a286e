"""The matmul probe on the CPU with real torch: figures, shapes, regimes, the result check, and
what happens when a dtype fails.

FLOP/s arithmetic is pinned with the timer replaced by one that runs the real product once (so
the reference check has something to check) and reports known seconds per call. The GPU-only
branches (fp8 gate, memory budget, TDR cap) are driven by fed numbers and fakes, never by a claim
about what a GPU does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from probes import compute
from probes.compute import MatmulPlan, Operands, measure_matmul
from probes.timing import DeviceTimer, Timing

#: The budget is far above what three small shapes take (about 1.5 s), so every size is swept.
SMALL = MatmulPlan(sizes=[64, 128, 256], sweep_budget_s=10.0, blocks=4, block_s=0.01, sustained_s=0.3, sustain_all_dtypes=False)
CPU = torch.device("cpu")


def test_burst_and_sustained_figures_are_real_and_consistent() -> None:
    seen: list[tuple[str, float]] = []
    result = measure_matmul(
        "cpu", "cpu", quick=True, dtypes=["fp32"], llc_bytes=1 << 20, plan=SMALL, progress=lambda s, f: seen.append((s, f))
    )
    assert seen == [
        ("matmul fp32 on cpu: sweeping shapes", 0.0),
        ("matmul fp32 on cpu: sustained 0 s", 0.5),
        ("matmul on cpu: done", 1.0),
    ]
    burst = next(m for m in result.measurements if m.variant == "burst")
    sustained = next(m for m in result.measurements if m.variant == "sustained")
    assert burst.metric == "matmul_flops" and burst.unit == "FLOP/s" and burst.dtype == "fp32"
    assert burst.n == SMALL.blocks
    # the sweep is recorded and the reported shape is the best of it
    sweep = burst.params["sweep"]
    assert [(row["m"], row["backend"]) for row in sweep] == [(s, b) for s in (64, 128, 256) for b in ("torch", "numpy")]
    assert burst.params["m"] == max(sweep, key=lambda row: row["median_flops"])["m"]
    assert burst.params["check_relative_error"] < compute.CHECK_TOLERANCE["fp32"]
    assert burst.params["sweep_stopped"] is None
    assert sustained.params["window_s"] >= SMALL.sustained_s
    assert sustained.params["regime"] == compute.sustained_regime(SMALL.sustained_s)
    assert sustained.params["m"] == burst.params["m"]


#: Seconds per call the fake timer reports for each square size: 128 is the fastest per FLOP.
SECONDS = {64: 1e-3, 128: 1e-3, 256: 1e-1}
WINDOW_SECONDS = 4e-3


@pytest.fixture
def known_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeviceTimer reports SECONDS[size] per call after running the real product once."""

    def measure(self: DeviceTimer, fn, *, blocks: int, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        size = fn.__self__.a[0].shape[0]
        return Timing([SECONDS[size]] * blocks, calls_per_block=7, warmup_calls=2, elapsed_s=0.01)

    def measure_window(self: DeviceTimer, fn, *, window_s: float, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        return Timing([WINDOW_SECONDS] * 5, calls_per_block=3, warmup_calls=1, elapsed_s=window_s)

    monkeypatch.setattr(DeviceTimer, "measure", measure)
    monkeypatch.setattr(DeviceTimer, "measure_window", measure_window)


@pytest.mark.usefixtures("known_seconds")
def test_flops_are_two_m_n_k_over_the_seconds_of_one_call() -> None:
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=SMALL)
    burst = next(m for m in result.measurements if m.variant == "burst")
    sustained = next(m for m in result.measurements if m.variant == "sustained")
    assert (burst.params["m"], burst.params["n"], burst.params["k"]) == (128, 128, 128)
    assert burst.samples == [2 * 128**3 / 1e-3] * SMALL.blocks
    assert burst.value == 4_194_304_000.0  # 2 * 128^3 = 4,194,304 FLOP in 1 ms, worked out by hand
    assert (burst.params["calls_per_block"], burst.params["warmup_calls"]) == (7, 2)
    assert [row["median_flops"] for row in burst.params["sweep"]] == [
        2 * size**3 / SECONDS[size] for size in (64, 64, 128, 128, 256, 256)
    ]
    assert sustained.samples == [2 * 128**3 / WINDOW_SECONDS] * 5
    assert sustained.value == 1_048_576_000.0  # the same FLOP in 4 ms


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
    assert len(reasons) == 6 and all(r.startswith("result check failed at (") for r in reasons)
    assert all(r.endswith(": relative error 1.00e+00 > 1e-04") for r in reasons)


def test_an_error_in_one_dtype_costs_that_dtype_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA error a build without kernels for the card raises, here injected for fp64 only."""
    real = Operands.random

    def random(m: int, n: int, k: int, dtype: str, device: torch.device, sets: int) -> Operands:
        if dtype == "fp64":
            raise RuntimeError(
                "CUDA error: no kernel image is available for execution on the device\n"
                "CUDA kernel errors might be asynchronously reported at some other API call"
            )
        return real(m, n, k, dtype, device, sets)

    monkeypatch.setattr(Operands, "random", staticmethod(random))
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp64", "fp32"], plan=SMALL)
    assert {(m.dtype, m.variant) for m in result.measurements} == {("fp32", "burst"), ("fp32", "sustained")}
    [lost] = result.unavailable
    assert (lost.probe, lost.metric, lost.dtype, lost.device) == ("compute", "matmul_flops", "fp64", "cpu")
    assert lost.reason == "RuntimeError: CUDA error: no kernel image is available for execution on the device"


def test_ctrl_c_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_: object) -> Operands:
        raise KeyboardInterrupt

    monkeypatch.setattr(Operands, "random", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=SMALL)


@pytest.mark.parametrize("dtype", ["fp64", "fp32", "bf16"])
def test_reference_check_accepts_correct_products(dtype: str) -> None:
    ops = Operands.random(96, 80, 112, dtype, CPU, sets=2)
    ops.step()
    assert ops.relative_error() < compute.CHECK_TOLERANCE[dtype] / 10


class ColumnLog:
    """B as the reference check reads it, noting the columns each chunk takes."""

    def __init__(self, b: torch.Tensor) -> None:
        self.b = b
        self.chunks: list[tuple[int, int]] = []

    @property
    def shape(self) -> torch.Size:
        return self.b.shape

    def __getitem__(self, index: tuple[slice, slice]) -> torch.Tensor:
        self.chunks.append((index[1].start, index[1].stop))
        return self.b[index]


@pytest.mark.parametrize(
    ("chunk_bytes", "columns"),
    [
        (8 * 30 * 3, 3),  # a float64 column of B (k = 30) is 240 B: three fit
        (8 * 30 * 3 + 239, 3),  # a part of a column does not count
        (8 * 30 - 1, 1),  # less than one column: still one at a time
    ],
)
def test_the_chunked_reference_is_the_frobenius_error_of_the_whole_slice(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, columns: int
) -> None:
    """CHECK_CHUNK_BYTES of float64 B at a time give the same relative error as the whole product at once."""
    ops = Operands.random(40, 50, 30, "fp64", CPU, sets=1)
    ops.step()
    ops.out[0][:, 7] += 1.0  # a wrong column, inside one chunk
    rows = compute.CHECK_ROWS
    want = ops.a[0][:rows] @ ops.b[0]
    expected = float(torch.linalg.norm(ops.out[0][:rows] - want) / torch.linalg.norm(want))
    monkeypatch.setattr(compute, "CHECK_CHUNK_BYTES", chunk_bytes)
    log = ColumnLog(ops.b[0])
    ops.b[0] = log  # type: ignore[call-overload]
    assert ops.relative_error() == pytest.approx(expected, rel=1e-12)
    assert expected > 0.01
    assert log.chunks == [(j, j + columns) for j in range(0, 50, columns)]


def test_mps_products_are_checked_on_the_cpu() -> None:
    """Metal has no float64: the reference runs on the CPU there, on the device everywhere else."""
    assert compute.check_device(torch.device("mps")) == CPU
    assert compute.check_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert compute.check_device(CPU) == CPU


def test_fp8_products_reuse_their_scales_and_write_into_their_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13 has _scaled_mm on the CPU too, so the FP8 step runs for real here."""
    ops = Operands.random(64, 48, 32, "fp8", CPU, sets=2)
    outputs = list(ops.out)
    calls: list[dict] = []
    real = torch._scaled_mm

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    for _ in range(4):
        ops.step()
    assert ops.out == outputs and all(o.dtype == torch.bfloat16 for o in ops.out)
    assert [c["out"] for c in calls] == [outputs[0], outputs[1]] * 2
    assert all(c["scale_a"] is ops.scale and c["scale_b"] is ops.scale for c in calls)
    assert ops.relative_error() < compute.CHECK_TOLERANCE["fp8"]


def test_fp8_operands_read_the_dtype_by_value() -> None:
    """A dtype name built at run time (measure_matmul's `dtypes` is the caller's list: split from text,
    read from a stored run) is not the interned literal, and must still get the unit scale _scaled_mm
    takes (torch 2.13 runs FP8 on the CPU, so the product is real)."""
    fp8 = "fp32,fp8".split(",")[1]
    ops = Operands.random(64, 48, 32, fp8, CPU, sets=2)
    assert ops.scale is not None and torch.equal(ops.scale, torch.ones(()))
    assert all(a.dtype == torch.float8_e4m3fn for a in ops.a)
    ops.step()
    assert ops.relative_error() < compute.CHECK_TOLERANCE["fp8"]


def test_fp8_is_gated_on_the_torch_version_and_a_trial_product() -> None:
    def square() -> torch.Tensor:
        return torch.zeros(16, 16)

    assert compute.fp8_problem("2.13.0", square) is None
    assert compute.fp8_problem("2.4.1+cu124", square) == (
        "FP8 matmul needs torch >= 2.5 (torch 2.4.1+cu124's _scaled_mm returns (out, amax))"
    )
    # A build whose _scaled_mm still returns (out, amax) whatever its version says:
    assert compute.fp8_problem("2.5.0", lambda: (torch.zeros(16, 16), torch.zeros(()))) == (
        "FP8 trial product returned tuple, not a 16x16 tensor"
    )

    def no_kernel() -> torch.Tensor:
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    assert compute.fp8_problem("2.13.0", no_kernel) == (
        "FP8 trial product failed: RuntimeError: CUDA error: no kernel image is available for execution on the device"
    )
    assert compute.fp8_problem(torch.__version__, lambda: compute._fp8_trial(CPU)) is None


@pytest.mark.parametrize(
    ("capability", "kept", "fp8_reason"),
    [
        ((7, 5), ["fp64", "fp32", "fp16"], "FP8 matmul needs compute capability 8.9+, this GPU is 7.5"),
        # Ampere (8.0, 8.6) has TF32 and bf16 tensor cores but no FP8
        ((8, 0), ["fp64", "fp32", "tf32", "fp16", "bf16"], "FP8 matmul needs compute capability 8.9+, this GPU is 8.0"),
        ((8, 6), ["fp64", "fp32", "tf32", "fp16", "bf16"], "FP8 matmul needs compute capability 8.9+, this GPU is 8.6"),
        # sm_89 and sm_90 cards: the trial product runs and fails here, where torch has no CUDA
        ((8, 9), ["fp64", "fp32", "tf32", "fp16", "bf16"], "FP8 trial product failed: "),
        ((9, 0), ["fp64", "fp32", "tf32", "fp16", "bf16"], "FP8 trial product failed: "),
    ],
)
def test_cuda_dtypes_by_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], kept: list[str], fp8_reason: str
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    dtypes, skipped = compute.supported_dtypes(torch.device("cuda", 0), "cuda")
    assert dtypes == kept
    [fp8] = [u for u in skipped if u.dtype == "fp8"]
    assert fp8.reason.startswith(fp8_reason) and fp8.device == "cuda:0"
    reasons = {u.dtype: u.reason for u in skipped if u.dtype != "fp8"}
    if capability < (8, 0):
        assert reasons == {
            "tf32": "TF32 needs compute capability 8.0+, this GPU is 7.5",
            "bf16": "bf16 tensor cores need compute capability 8.0+, this GPU is 7.5",
        }
    else:
        assert reasons == {}


@pytest.mark.parametrize("bf16", [True, False])
def test_rocm_dtypes_follow_torchs_bf16_report(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    """ROCm has no capability gates of its own here: bf16 goes with what torch reports (fed, no GPU)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    dtypes, skipped = compute.supported_dtypes(torch.device("cuda", 0), "rocm")
    if bf16:
        assert (dtypes, skipped) == (["fp64", "fp32", "fp16", "bf16"], [])
    else:
        assert dtypes == ["fp64", "fp32", "fp16"]
        assert [(u.dtype, u.device, u.reason) for u in skipped] == [
            ("bf16", "cuda:0", "torch reports no bf16 support on this GPU")
        ]


def test_operand_sets_span_four_times_the_cache() -> None:
    # One fp32 set of 256^3 is 3 * 256^2 * 4 = 786,432 B.
    assert compute._operand_sets(256, 256, 256, "fp32", llc_bytes=1 << 20) == 6  # 4 MiB / 786,432 = 5.33
    assert compute._operand_sets(256, 256, 256, "fp32", llc_bytes=None) == 2
    assert compute._operand_sets(256, 256, 256, "fp32", llc_bytes=64 << 20) == 8  # capped
    # An fp8 set holds 1-byte operands and a bf16 product: 2 * 65,536 + 2 * 65,536 = 262,144 B.
    assert compute._operand_sets(256, 256, 256, "fp8", llc_bytes=256 << 10) == 4


def test_operand_bytes_count_sets_fp8_staging_and_the_check() -> None:
    check = 8 * compute.CHECK_ROWS * 256 + 2 * compute.CHECK_CHUNK_BYTES
    assert compute.operand_bytes(256, 256, 256, "fp32", sets=2) == 2 * 786_432 + check
    assert compute.operand_bytes(256, 256, 256, "fp8", sets=3) == 3 * 262_144 + 4 * 256 * 256 + check
    assert compute.operand_bytes(512, 256, 128, "bf16", sets=1) == 2 * (512 * 128 + 128 * 256 + 512 * 256) + (
        8 * compute.CHECK_ROWS * 128 + 2 * compute.CHECK_CHUNK_BYTES
    )


def test_operand_bytes_read_the_dtype_by_value() -> None:
    """A dtype name built at run time (split from a list, read from a stored run) is not the interned
    literal, and must count the same FP8 set and staging bytes."""
    fp8 = "fp32,fp8".split(",")[1]
    check = 8 * compute.CHECK_ROWS * 256 + 2 * compute.CHECK_CHUNK_BYTES
    assert compute.operand_bytes(256, 256, 256, fp8, sets=3) == 3 * 262_144 + 4 * 256 * 256 + check


def test_gpu_operands_must_fit_half_the_usable_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fed numbers for torch.cuda's memory queries: 2 GB free, 5 GB reserved of which 1 GB allocated."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2_000_000_000, 24_000_000_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5_000_000_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1_000_000_000)
    gpu = torch.device("cuda", 0)
    assert compute._fits(2_999_999_999, gpu)  # usable 6 GB, half of it is 3 GB
    assert not compute._fits(3_000_000_000, gpu)


def test_plans_for_a_gpu() -> None:
    linux = MatmulPlan.for_device("cuda", quick=False, platform="linux")
    windows = MatmulPlan.for_device("cuda", quick=False, platform="win32")
    assert (linux.max_call_s, windows.max_call_s) == (None, compute.WINDOWS_MAX_CALL_S)
    assert (linux.window_s(headline=True), linux.window_s(headline=False)) == (60.0, 10.0)
    assert MatmulPlan.for_device("cuda", quick=True, platform="linux").window_s(headline=True) == 10.0
    assert MatmulPlan.for_device("cpu", quick=False).window_s(headline=True) == 10.0
    # warm-up (0.2 s, or two calls) plus 30 blocks of 0.05 s, or of one call when a call is longer
    assert linux.shape_s(0.01) == pytest.approx(0.2 + 30 * 0.05)
    assert linux.shape_s(0.3) == pytest.approx(0.6 + 30 * 0.3)


def test_a_call_past_the_windows_cap_ends_the_sweep() -> None:
    capped = MatmulPlan(sizes=[64, 128, 256], sweep_budget_s=30.0, blocks=3, block_s=0.01, sustained_s=0.3,
                        sustain_all_dtypes=False, max_call_s=1e-9)  # fmt: skip
    burst = next(m for m in measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=capped).measurements)
    assert {row["m"] for row in burst.params["sweep"]} == {64}
    assert burst.params["sweep_stopped"].startswith("sizes from 128 skipped: one call would take about ")
    assert "(TDR)" in burst.params["sweep_stopped"]


def test_the_sweep_budget_counts_warm_up_and_blocks() -> None:
    """fp32 on a CPU times two BLAS (torch's, numpy's), each for at least the 0.2 s warm-up + 4 blocks of
    0.01 s: the 64 shape spends 0.48 s or more, and the 128 shape is predicted at 0.48 s or more again,
    so together they would pass the 0.5 s budget and 128 is skipped, whatever the machine's speed."""
    tight = MatmulPlan(sizes=[64, 128], sweep_budget_s=0.5, blocks=4, block_s=0.01, sustained_s=0.3, sustain_all_dtypes=False)
    burst = next(m for m in measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=tight).measurements)
    assert {row["m"] for row in burst.params["sweep"]} == {64}
    assert burst.params["sweep_stopped"] == "sizes from 128 skipped: they would overrun the 0.5 s sweep budget"


def test_cpu_dtypes_and_headline() -> None:
    dtypes, skipped = compute.supported_dtypes(CPU, "cpu")
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
    assert annotated.peak == pytest.approx(989.4e12, rel=1e-12)  # H100 SXM bf16 dense
    assert annotated.peak_fraction == pytest.approx(7.0e14 / 989.4e12, rel=1e-12)
    assert annotated.peak_source.startswith("H100 SXM: ")
    cpu = bf16.model_copy(update={"device": "cpu"})
    assert with_datasheet_peak(cpu, [Device(id="cpu", kind="cpu", name="AMD EPYC")]).peak is None


def test_figures_carry_the_energy_of_their_own_work() -> None:
    """With a meter (here the labelled TDP x load estimate, the one this VM can run), burst and
    sustained figures carry energy from windows long enough for the sensor."""
    from probes.energy.rapl import EstimatedCpuMeter

    meter = EstimatedCpuMeter(tdp_w=100.0, why_not_measured="test: no RAPL here")
    plan = MatmulPlan(sizes=[128, 256], sweep_budget_s=1.0, blocks=3, block_s=0.01, sustained_s=1.2, sustain_all_dtypes=False)
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=plan, meter=meter)
    assert {m.variant for m in result.measurements} == {"burst", "sustained"}
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
    assert burst.value == winner["median_flops"]
    assert all(r["check_relative_error"] < compute.CHECK_TOLERANCE["fp64"] for r in rows)


@pytest.mark.parametrize(("blas", "named"), [("openblas", "openblas"), ("", "BLAS unknown")])
def test_torchs_library_names_its_blas_or_says_it_is_unknown(monkeypatch: pytest.MonkeyPatch, blas: str, named: str) -> None:
    """What torch_blas reads from the build config is fed; "" is its answer for a config without BLAS_INFO."""
    monkeypatch.setattr(compute, "torch_blas", lambda: blas)
    assert compute.backend_library("torch") == f"torch {torch.__version__} ({named})"


def test_torchs_library_is_the_blas_of_its_build_config() -> None:
    """This torch's own BLAS_INFO, read here with a pattern of the test's own (mkl on this x86 build)."""
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    assert blas is not None
    assert compute.backend_library("torch") == f"torch {torch.__version__} ({blas[1]})"


@pytest.mark.usefixtures("known_seconds")
def test_cpu_figures_record_torchs_threads_for_a_kind_read_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind built at run time (measure_matmul is called with the caller's text) is not the interned
    literal, and a CPU's figures must still carry torch's thread count (fed: 3, not this machine's)."""
    kind = "cuda,cpu".split(",")[1]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    result = measure_matmul("cpu", kind, quick=True, dtypes=["fp32"], plan=replace(SMALL, sizes=[64]))
    assert [(m.variant, m.params["threads"]) for m in result.measurements] == [("burst", 3), ("sustained", 3)]


def test_bf16_stays_on_torch() -> None:
    assert compute.backends(CPU, "bf16") == ["torch"]
    assert compute.backends(torch.device("cuda", 0), "fp32") == ["torch"]


def test_relative_error_of_a_zero_reference_is_infinite() -> None:
    ops = Operands.random(4, 4, 4, "fp32", CPU, sets=1)
    ops.a[0].zero_()
    ops.step()
    ops.out[0].fill_(1.0)
    assert math.isinf(ops.relative_error())


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to nearest on a 10-bit mantissa, as TF32 tensor-core math takes them: half
    the weight of the 13 dropped bits is added to the bit pattern, then they are cleared. (Truncating
    instead gives ~7.6e-4 here rather than ~3e-4: still between the fp32 and tf32 tolerances.)"""
    return ((x.view(torch.int32) + 0x1000) & -0x2000).view(torch.float32)


def two_halves(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same fp64 product summed in another order: the rounding a correct fp64 kernel adds."""
    half = a.shape[1] // 2
    return a[:, :half] @ b[:half] + a[:, half:] @ b[half:]


Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Emulations, on the CPU, of the product a correct kernel of each dtype returns (written into the
#: output, so rounded to its format: fp32, fp16, bf16, or bf16 for fp8).
CORRECT: dict[str, Product] = {
    "fp64": two_halves,
    "fp32": lambda a, b: a.double() @ b.double(),
    "tf32": lambda a, b: to_tf32(a).double() @ to_tf32(b).double(),
    "fp16": lambda a, b: a.double() @ b.double(),
    "bf16": lambda a, b: a.double() @ b.double(),
    "fp8": lambda a, b: a.double() @ b.double(),
}
#: The next precision down, silently used in place of the dtype asked for.
ONE_DOWN: dict[str, Product] = {
    "fp64": lambda a, b: a.float().double() @ b.float().double(),
    "fp32": CORRECT["tf32"],
}


def zero(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What a kernel that silently did nothing leaves."""
    return torch.zeros(a.shape[0], b.shape[1])


def sweep_64(monkeypatch: pytest.MonkeyPatch, dtype: str, product: Product) -> compute._SweepResult:
    """The real sweep and check at one 64 shape, each step writing `product(a, b)` into the output.
    (Run under `known_seconds`: the timing is fed; only the check is under test.) Seeded: the errors
    are those of fixed operands, not a draw that may land near a bound (docs/measurements.md has
    2000 draws' spread)."""
    torch.manual_seed(16)

    def step(self: Operands) -> None:
        i = self.turn % len(self.a)
        self.turn += 1
        self.out[i].copy_(product(self.a[i], self.b[i]))

    monkeypatch.setattr(Operands, "step", step)
    plan = MatmulPlan(sizes=[64], sweep_budget_s=10.0, blocks=3, block_s=0.01, sustained_s=0.3, sustain_all_dtypes=False)
    return compute._sweep(DeviceTimer(CPU), CPU, dtype, plan, llc_bytes=None)


@pytest.mark.usefixtures("known_seconds")
@pytest.mark.parametrize("dtype", list(compute.CHECK_TOLERANCE))
def test_every_dtypes_check_flags_an_all_zero_product(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """A kernel that silently did nothing is off by exactly all of the reference: relative error 1."""
    result = sweep_64(monkeypatch, dtype, zero)
    assert result.best is None
    tolerance = f"{compute.CHECK_TOLERANCE[dtype]:.0e}"
    assert result.failures == [f"result check failed at (64, 64, 64): relative error 1.00e+00 > {tolerance}"] * len(
        compute.backends(CPU, dtype)
    )
    assert [row["check_relative_error"] for row in result.rows] == [1.0] * len(result.rows)


@pytest.mark.usefixtures("known_seconds")
@pytest.mark.parametrize("dtype", list(compute.CHECK_TOLERANCE))
def test_a_correct_product_at_each_precision_passes_well_inside_its_tolerance(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """Emulated on the CPU (the GPU kernels are not here): 10x or more below the tolerance, and for
    the reduced precisions not 100x below (a tolerance that loose would pass a kernel gone bad)."""
    result = sweep_64(monkeypatch, dtype, CORRECT[dtype])
    tolerance = compute.CHECK_TOLERANCE[dtype]
    assert result.failures == [] and result.best is not None
    errors = [row["check_relative_error"] for row in result.rows]
    assert all(error < tolerance / 10 for error in errors)
    if dtype in ("tf32", "fp16", "bf16", "fp8"):
        assert all(error > tolerance / 100 for error in errors)


@pytest.mark.usefixtures("known_seconds")
@pytest.mark.parametrize("dtype", list(ONE_DOWN))
def test_a_product_computed_one_precision_down_fails_the_check(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """fp64 done on fp32 operands, fp32 done in TF32 tensor-core math (emulated): the figure would be
    the faster format's, so no figure is posted."""
    result = sweep_64(monkeypatch, dtype, ONE_DOWN[dtype])
    assert result.best is None and len(result.failures) == 2  # torch's BLAS and numpy's
    assert all(row["check_relative_error"] > compute.CHECK_TOLERANCE[dtype] for row in result.rows)


def test_the_reference_check_reserves_two_64_mib_chunks_not_a_float64_copy_of_b() -> None:
    """At the GPU ladder's largest shape (16384, bf16, one set) a float64 copy of B would be 2 GiB; the
    check takes 64 MiB of it at a time (512 columns of 16384) and reserves room for two such chunks."""
    # operands 3 x 2 B x 16384^2 = 1,610,612,736; A's check rows 8 x 16 x 16384 = 2,097,152;
    # two chunks 2 x 64 x 2^20 = 134,217,728
    assert compute.operand_bytes(16384, 16384, 16384, "bf16", sets=1) == 1_746_927_616


@pytest.mark.parametrize("major", [7, 8])
def test_cuda_gates_read_the_kind_by_value(monkeypatch: pytest.MonkeyPatch, major: int) -> None:
    """A kind built at run time (split from a string, read from a stored run) is not the interned
    literal, and must get the CUDA capability gates, not ROCm's bf16 question (capability fed)."""
    kind = "rocm,cuda".split(",")[1]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    dtypes, skipped = compute.supported_dtypes(torch.device("cuda", 0), kind)
    assert dtypes == (["fp64", "fp32", "fp16"] if major == 7 else ["fp64", "fp32", "tf32", "fp16", "bf16"])
    assert [u.dtype for u in skipped] == (["tf32", "bf16", "fp8"] if major == 7 else ["fp8"])


@pytest.mark.usefixtures("known_seconds")
def test_progress_moves_by_dtype_and_by_half_a_dtype_for_its_sustained_window() -> None:
    seen: list[tuple[str, float]] = []
    plan = replace(SMALL, sizes=[64], sustain_all_dtypes=True)
    measure_matmul("cpu", "cpu", quick=True, dtypes=["fp64", "fp32", "bf16"], plan=plan,
                   progress=lambda step, fraction: seen.append((step, fraction)))  # fmt: skip
    assert seen == [
        ("matmul fp64 on cpu: sweeping shapes", 0.0),
        ("matmul fp64 on cpu: sustained 0 s", 1 / 6),
        ("matmul fp32 on cpu: sweeping shapes", 1 / 3),
        ("matmul fp32 on cpu: sustained 0 s", 1 / 2),
        ("matmul bf16 on cpu: sweeping shapes", 2 / 3),
        ("matmul bf16 on cpu: sustained 0 s", 5 / 6),
        ("matmul on cpu: done", 1.0),
    ]


@pytest.mark.usefixtures("known_seconds")
def test_a_product_gone_wrong_in_the_sustained_window_posts_no_sustained_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The burst passed its check; the last product of the sustained window is zeros (injected)."""

    def zeroed_window(self: DeviceTimer, fn, *, window_s: float, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        ops = fn.__self__
        ops.out[(ops.turn - 1) % len(ops.a)].zero_()
        return Timing([WINDOW_SECONDS] * 5, calls_per_block=3, warmup_calls=1, elapsed_s=window_s)

    monkeypatch.setattr(DeviceTimer, "measure_window", zeroed_window)
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=SMALL)
    assert [(m.variant, m.params["m"], m.value) for m in result.measurements] == [("burst", 128, 4_194_304_000.0)]
    assert [(u.dtype, u.reason) for u in result.unavailable] == [
        ("fp32", "result check failed at (128, 128, 128): relative error 1.00e+00 > 1e-04")
    ]


@pytest.mark.usefixtures("known_seconds")
def test_a_shape_that_fails_its_check_is_never_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    """128 is the fastest shape of `known_seconds` but its products are zeros (injected): the figure is
    the next best, 64 (2 x 64^3 FLOP in 1 ms = 524,288,000 FLOP/s; 256 gives 335,544,320), and 128's
    failures are on record for both BLAS."""
    real_step = Operands.step

    def step(self: Operands) -> None:
        real_step(self)
        if self.a[0].shape[0] == 128:
            self.out[(self.turn - 1) % len(self.a)].zero_()

    monkeypatch.setattr(Operands, "step", step)
    result = measure_matmul("cpu", "cpu", quick=True, dtypes=["fp32"], plan=SMALL)
    burst = next(m for m in result.measurements if m.variant == "burst")
    assert (burst.params["m"], burst.value) == (64, 524_288_000.0)
    assert [u.reason for u in result.unavailable] == [
        "result check failed at (128, 128, 128): relative error 1.00e+00 > 1e-04"
    ] * 2


def test_the_numpy_backend_multiplies_with_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure labelled numpy's BLAS must be numpy's product: the step calls np.matmul into the
    output's memory, and torch's matmul not at all (both counted, the product checked)."""
    calls: list[str] = []
    real_np, real_torch = compute.np.matmul, torch.matmul
    monkeypatch.setattr(compute.np, "matmul", lambda *a, **k: calls.append("numpy") or real_np(*a, **k))
    monkeypatch.setattr(compute.torch, "matmul", lambda *a, **k: calls.append("torch") or real_torch(*a, **k))
    ops = replace(Operands.random(8, 8, 8, "fp64", CPU, sets=1), backend="numpy")
    ops.step()
    assert calls == ["numpy"]
    assert torch.allclose(ops.out[0], ops.a[0] @ ops.b[0], rtol=1e-12, atol=1e-12)  # two BLAS: not bit for bit


@pytest.mark.usefixtures("known_seconds")
def test_a_check_error_exactly_at_the_tolerance_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tolerance is the largest error allowed: an error equal to it keeps the shape (fed), one
    just above fails the check and posts nothing."""
    tolerance = compute.CHECK_TOLERANCE["fp32"]
    plan = replace(SMALL, sizes=[64])
    for error, kept in ((tolerance, True), (math.nextafter(tolerance, math.inf), False)):
        monkeypatch.setattr(Operands, "relative_error", lambda self, e=error: e)
        result = compute._sweep(DeviceTimer(CPU), CPU, "fp32", plan, llc_bytes=None)
        assert (result.best is not None) is kept and len(result.failures) == (0 if kept else 2)
