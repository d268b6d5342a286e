"""The runner: each probe on its own device, one probe's figures feeding the next, and a failure
costing only the probe (or dtype) it happened in, through the real `flopwatt probe` command.

Where a test needs figures it does not measure, DeviceTimer is replaced by one that runs the real
work once and reports a known time per call, so the expected values are exact. The devices of the
first test are stand-ins for two GPUs (there is none here): what is checked is which device the
runner makes current for which probe, and what it hands each probe, not anything a GPU does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from typer.testing import CliRunner

from bench import runner
from bench.cli import app
from bench.runner import ProbeRequest, run_probes
from bench.store import Store
from probes import compute, memory, training
from probes.compute import MatmulPlan, Operands
from probes.inventory import Device, Host
from probes.measurement import ProbeResult
from probes.timing import DeviceTimer, Timing
from probes.training import GPTConfig, model_flops_per_token

MiB = 1024**2
PLAN = MatmulPlan(sizes=[64, 128], sweep_budget_s=10.0, blocks=3, block_s=0.01, sustained_s=0.2, sustain_all_dtypes=False)
TINY = GPTConfig(n_layer=2, n_embd=64, n_head=4, seq_len=32, vocab_size=256, batch_size=2)
MATMUL_SECONDS = {64: 1e-4, 128: 2e-4}  # 128 wins: 2 * 128^3 / 2e-4 = 20.97 GFLOP/s
STEP_SECONDS = 0.25


@pytest.fixture
def known_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timed block runs the real work once and reports a known time per call."""

    def measure(self: DeviceTimer, fn, *, blocks: int, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        operands = getattr(fn, "__self__", None)
        if isinstance(operands, Operands):
            seconds = MATMUL_SECONDS[operands.a[0].shape[0]]
        else:
            seconds = STEP_SECONDS if fn.__name__ == "step" else 1e-3  # a training step, or a copy
        return Timing([seconds] * blocks, calls_per_block=1, warmup_calls=2, elapsed_s=0.01)

    def measure_window(self: DeviceTimer, fn, *, window_s: float, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        return Timing([1e-3] * 3, calls_per_block=1, warmup_calls=1, elapsed_s=window_s)

    monkeypatch.setattr(DeviceTimer, "measure", measure)
    monkeypatch.setattr(DeviceTimer, "measure_window", measure_window)
    monkeypatch.setattr(MatmulPlan, "for_device", staticmethod(lambda kind, quick, platform=None: PLAN))
    monkeypatch.setattr(training, "default_config", lambda kind: TINY)


# -- which device each probe runs on -------------------------------------------------------------

HOST = Host(os="Linux", python="3.11.7", llc_bytes=32 * MiB)
GPUS = [
    Device(id="cpu", kind="cpu", name="AMD Ryzen 9 7950X"),
    Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce RTX 4090", compute_capability="8.9", extra={"l2_cache_bytes": 72 * MiB}),
    Device(id="cuda:1", kind="cuda", name="NVIDIA GeForce RTX 3090", compute_capability="8.6", extra={"l2_cache_bytes": 6 * MiB}),
]


def test_each_probe_runs_with_its_own_device_current(monkeypatch: pytest.MonkeyPatch) -> None:
    current = ["none"]
    calls: list[tuple[str, str, str, int | None]] = []

    @contextmanager
    def device_context(device: str) -> Iterator[None]:
        current.append(device)
        try:
            yield
        finally:
            current.pop()

    def probe(name: str):  # type: ignore[no-untyped-def]
        def run(device: str, *args: object, **kwargs: object) -> ProbeResult:
            calls.append((name, device, current[-1], kwargs.get("llc_bytes")))
            return ProbeResult()

        return run

    monkeypatch.setattr(runner, "inventory", lambda spec: (HOST, GPUS, []))
    monkeypatch.setattr(runner, "device_context", device_context)
    monkeypatch.setattr(compute, "measure_matmul", probe("compute"))
    monkeypatch.setattr(memory, "measure_memory", probe("memory"))
    monkeypatch.setattr(training, "measure_training", probe("training"))
    monkeypatch.setattr(training, "training_dtype", lambda device: "bf16")
    run_probes(ProbeRequest(only=("compute", "memory", "training")))
    assert [(name, device) for name, device, _, _ in calls] == [
        (probe, d.id) for probe in ("compute", "memory", "training") for d in GPUS
    ]
    assert all(device == entered for _, device, entered, _ in calls)  # the probed device is the current one
    assert current == ["none"]  # and it is left again afterwards
    # The matmul operands and the memory arrays outrun the cache of the device they are on.
    caches = {(name, device): cache for name, device, _, cache in calls if name in ("compute", "memory")}
    assert caches == {
        ("compute", "cpu"): 32 * MiB, ("compute", "cuda:0"): 72 * MiB, ("compute", "cuda:1"): 6 * MiB,
        ("memory", "cpu"): 32 * MiB, ("memory", "cuda:0"): 72 * MiB, ("memory", "cuda:1"): 6 * MiB,
    }  # fmt: skip


# -- one probe's figure feeding the next ---------------------------------------------------------


@pytest.mark.usefixtures("known_seconds")
def test_training_mfu_reads_the_burst_figure_of_the_same_run() -> None:
    only = ProbeRequest.parse_only("training,compute")
    assert only == ("compute", "training")  # run order: compute first, whatever order was asked
    doc = run_probes(ProbeRequest(device="cpu", only=only, quick=True)).document
    [burst] = [m for m in doc.measurements if m.metric == "matmul_flops" and m.variant == "burst" and m.dtype == "fp32"]
    assert burst.value == 2 * 128**3 / 2e-4
    [tps] = [m for m in doc.measurements if m.metric == "train_tokens_per_s"]
    assert tps.value == 2 * 32 / STEP_SECONDS
    [mfu] = [m for m in doc.measurements if m.metric == "train_mfu"]
    assert mfu.variant == "measured-matmul" and mfu.params["matmul_flops"] == burst.value
    assert mfu.value == pytest.approx(256 * model_flops_per_token(TINY) / (2 * 128**3 / 2e-4), rel=1e-12)


# -- failures, through the real command ------------------------------------------------------------

cli = CliRunner()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.mark.usefixtures("known_seconds")
def test_a_dtype_that_fails_mid_run_costs_that_dtype_only(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    real = Operands.random

    def random(m: int, n: int, k: int, dtype: str, device: torch.device, sets: int) -> Operands:
        if dtype == "bf16":
            raise RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k, ...)`")
        return real(m, n, k, dtype, device, sets)

    monkeypatch.setattr(Operands, "random", staticmethod(random))
    result = cli.invoke(app, ["probe", "--device", "cpu", "--only", "compute,memory", "--quick"])
    assert result.exit_code == 0, result.output
    [summary] = store.list_runs()
    doc = store.get(summary.id)
    assert {(m.metric, m.dtype) for m in doc.measurements if m.variant == "burst"} == {("matmul_flops", "fp64"), ("matmul_flops", "fp32")}
    assert {m.metric for m in doc.measurements if m.probe == "memory"} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}
    [bf16] = [u for u in doc.unavailable if u.dtype == "bf16"]
    assert bf16.reason.startswith("RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(")
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in result.stdout  # the table lists it as unavailable


@pytest.mark.usefixtures("known_seconds")
def test_a_probe_that_fails_mid_run_keeps_the_others_and_says_so(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    def lost_gpu(*_: object, **__: object) -> ProbeResult:
        raise RuntimeError(
            "CUDA error: an illegal memory access was encountered\n"
            "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
        )

    monkeypatch.setattr(training, "measure_training", lost_gpu)
    result = cli.invoke(app, ["probe", "--device", "cpu", "--only", "compute,training", "--quick"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: training on cpu failed: RuntimeError: CUDA error: an illegal memory access was encountered; "
        "the other figures were kept"
    )
    [summary] = store.list_runs()
    doc = store.get(summary.id)
    assert {m.probe for m in doc.measurements} == {"compute"}
    [lost] = [u for u in doc.unavailable if u.probe == "training"]
    assert (lost.device, lost.reason) == ("cpu", "RuntimeError: CUDA error: an illegal memory access was encountered")


@pytest.mark.usefixtures("known_seconds")
def test_ctrl_c_in_a_probe_still_stores_nothing(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    def interrupted(*_: object, **__: object) -> ProbeResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(memory, "measure_memory", interrupted)
    result = cli.invoke(app, ["probe", "--device", "cpu", "--only", "compute,memory", "--quick"])
    assert result.exit_code == 130
    assert "interrupted: nothing was stored" in result.stderr
    assert store.list_runs() == []
