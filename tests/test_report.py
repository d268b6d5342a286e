"""Reports render onto a fixed-width console; verdicts come from Welch's test, never from a guess."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from bench.document import RunDocument, RunInfo
from bench.report import machine_load_notes, measurement_table, relative_spread, render_run, verdict, warn_unstable
from bench.units import bytes_, si
from probes.inventory import Device, Host
from probes.measurement import Energy, Measurement, Unavailable


def _flops(samples: list[float], **kw: object) -> Measurement:
    return Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", dtype="fp32", device="cpu", samples=samples, **kw)


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120, color_system=None), buffer


def test_a_clear_difference_is_a_plain_ratio() -> None:
    base = _flops([100.0, 101.0, 99.0, 100.5, 100.2])
    faster = _flops([200.0, 201.0, 199.0, 200.4, 199.6])
    assert verdict(base, faster) == "2.00x"


def test_an_overlapping_difference_is_not_significant() -> None:
    base = _flops([100.0, 130.0, 80.0, 120.0, 90.0])
    other = _flops([105.0, 125.0, 85.0, 115.0, 95.0])
    assert "n.s." in verdict(base, other)


def test_too_few_samples_are_said_so() -> None:
    assert "too few samples" in verdict(_flops([1.0]), _flops([2.0]))


def test_units_are_humanised_in_si() -> None:
    assert si(153.9e9, "FLOP/s") == "154 GFLOP/s"
    assert si(24.1e6, "bit/s") == "24.1 Mbit/s"
    assert si(0.0123, "s") == "12.3 ms"
    assert si(0.42, "ratio") == "42.0 %"
    assert bytes_(128 * 1024**2) == "128 MiB"
    assert bytes_(1.5 * 1024**3) == "1.5 GiB"


def test_table_shows_energy_and_efficiency_only_when_measured() -> None:
    console, buffer = _console()
    plain = _flops([1e11, 1.1e11, 0.9e11])
    console.print(measurement_table([plain]))
    assert "Energy" not in buffer.getvalue()
    metered = _flops([1e11] * 3, energy=Energy(method="rapl", joules=50.0, watts_avg=25.0, watts_peak=30.0, seconds=2.0))
    console, buffer = _console()
    console.print(measurement_table([plain, metered]))
    out = buffer.getvalue()
    assert "Power" in out and "25 W" in out and "4 GFLOP/J" in out


def test_noisy_figures_get_a_warning_that_says_what_to_do() -> None:
    noisy = _flops([100.0, 150.0, 60.0, 140.0, 70.0, 130.0])
    steady = _flops([100.0, 101.0, 99.0, 100.0, 100.5])
    assert relative_spread(noisy) > 0.10 > relative_spread(steady)
    console, buffer = _console()
    warn_unstable([noisy, steady], console)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "close other programs" in lines[0]
    # on a virtual machine the cause is usually the host's other guests, which the user cannot close
    console, buffer = _console()
    warn_unstable([noisy, steady], console, virtualized=True)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "other guests" in lines[0] and "close other programs" not in lines[0]


def test_compare_shows_efficiency_when_both_runs_have_energy() -> None:
    from datetime import datetime, timezone

    from bench.document import RunDocument, RunInfo
    from bench.report import render_compare
    from probes.inventory import Host

    def doc(run_id: str, flops: float, watts: float) -> RunDocument:
        energy = Energy(method="nvml-counter", joules=watts * 10, watts_avg=watts, seconds=10.0)
        now = datetime.now(timezone.utc)
        return RunDocument(
            run=RunInfo(id=run_id, started_at=now, finished_at=now, tool_version="0"),
            host=Host(os="Linux", python="3.11"),
            measurements=[_flops([flops] * 3, energy=energy)],
        )

    console, buffer = _console()
    render_compare([doc("a" * 32, 1e14, 100.0), doc("b" * 32, 2e14, 400.0)], console)
    out = buffer.getvalue()
    assert "per watt" in out and "1 TFLOP/J" in out and "500 GFLOP/J" in out and "0.50x" in out


def test_device_column_only_when_rows_are_on_several_devices() -> None:
    cpu = _flops([1e11] * 3, params={"m": 1024, "n": 1024, "k": 1024})
    console, buffer = _console()
    console.print(measurement_table([cpu, _flops([2e11] * 3, params={"m": 512, "n": 256, "k": 128})]))
    out = buffer.getvalue()
    assert "Device" not in out
    assert "1024³" in out and "512×256×128" in out
    gpu = cpu.model_copy(update={"device": "cuda:0"})
    console, buffer = _console()
    console.print(measurement_table([cpu, gpu]))
    out = buffer.getvalue()
    assert "Device" in out and "cuda:0" in out


# -- a realistic run at 80 columns ---------------------------------------------------------------

GIB = 2**30
MIB = 2**20


def _gpu_and_collective_run(master: str = "127.0.0.1:29500") -> RunDocument:
    """What `probe` stores on an RTX 4090 PC that also ran a two-rank all-reduce on this one machine:
    six GPU matmul dtypes and a sustained window with NVML energy, GPU and CPU memory, host copies,
    training, eight all-reduce sizes whose peer rank loads the CPU, idle power."""

    def nvml(watts: float, seconds: float) -> Energy:
        return Energy(method="nvml-counter", joules=watts * seconds, watts_avg=watts, watts_peak=watts * 1.1,
                      seconds=seconds)  # fmt: skip

    def figure(probe: str, metric: str, unit: str, samples: list[float], **kw: object) -> Measurement:
        return Measurement(probe=probe, metric=metric, unit=unit, samples=samples, **kw)  # type: ignore[arg-type]

    shape = {"m": 8192, "n": 8192, "k": 8192}
    ms = [
        figure("compute", "matmul_flops", "FLOP/s", [v * 0.97, v, v * 1.02], dtype=dtype, device="cuda:0",
               variant="burst", params=shape, energy=nvml(431.0, 3.0), peak=peak)
        for dtype, v, peak in [("fp64", 1.25e12, 1.29e12), ("fp32", 71.3e12, 82.6e12), ("tf32", 80.1e12, 82.6e12),
                               ("fp16", 158.7e12, 165.2e12), ("bf16", 160.2e12, 165.2e12), ("fp8", 301.5e12, 330.3e12)]
    ]  # fmt: skip
    ms += [
        figure("compute", "matmul_flops", "FLOP/s", [152e12] * 30, dtype="bf16", device="cuda:0", variant="sustained",
               params={**shape, "window_s": 10.2}, energy=nvml(441.0, 10.2), peak=165.2e12),
        figure("compute", "matmul_flops", "FLOP/s", [1.21e12] * 7, dtype="fp32", device="cpu", variant="burst",
               params={"m": 2048, "n": 2048, "k": 2048, "threads": 16, "backend": "numpy"}),
        figure("memory", "mem_copy_bandwidth", "B/s", [921e9] * 10, device="cuda:0", peak=1008e9,
               params={"bytes_per_array": 2 * GIB}, energy=nvml(380.0, 2.0)),
        figure("memory", "mem_triad_bandwidth", "B/s", [934e9] * 10, device="cuda:0", peak=1008e9,
               params={"bytes_per_array": 2 * GIB}, energy=nvml(380.0, 2.0)),
    ]  # fmt: skip
    for variant in ("pinned", "pageable"):
        for metric in ("h2d_bandwidth", "d2h_bandwidth"):
            ms.append(figure("memory", metric, "B/s", [25.1e9] * 20, device="cuda:0", variant=variant, peak=31.5e9,
                             params={"bytes": 256 * MIB, "pinned": variant == "pinned"}))  # fmt: skip
    model = {"n_layer": 12, "n_embd": 768, "seq_len": 1024, "batch_size": 16}
    ms += [
        figure("memory", "mem_copy_bandwidth", "B/s", [61.2e9] * 10, device="cpu",
               params={"bytes_per_array": 256 * MIB, "threads": 16}),
        figure("training", "train_tokens_per_s", "tokens/s", [48.2e3] * 3, dtype="bf16", device="cuda:0",
               params=model, energy=nvml(390.0, 10.0)),
        figure("training", "train_mfu", "ratio", [0.41] * 3, dtype="bf16", device="cuda:0", variant="datasheet",
               params=model),
        figure("training", "train_mfu", "ratio", [0.45] * 3, dtype="bf16", device="cuda:0",
               variant="measured-matmul", params=model),
        figure("training", "train_max_params", "params", [1.6e9], dtype="bf16", device="cuda:0",
               params={"n_layer": 24, "n_embd": 2048, "seq_len": 1024, "batch_size": 1}),
    ]  # fmt: skip
    # as probes/collective.py stores them, with the peer rank's CPU counted as background by probes/background.py
    common = {"world": 2, "backend": "gloo", "master": master, "op": "sum", "background_cpu": 0.45, "steal_cpu": 0.0}
    for size in [1024 * 4**k for k in range(8)]:
        ms.append(figure("collective", "allreduce_busbw", "B/s", [2e8 * (1 + k / 7) for k in range(8)],
                         dtype="float32", device="cpu", variant=f"{size}B",
                         params={**common, "bytes": size, "iterations": 8, "busbw_factor": 1.0}))  # fmt: skip
    ms.append(figure("collective", "allreduce_latency", "s", [4.1e-5, 3.0e-5, 5.5e-5, 4.4e-5, 7.9e-5],
                     dtype="float32", device="cpu", params={**common, "bytes": 1024, "iterations": 5}))  # fmt: skip
    ms.append(figure("power", "idle_power", "W", [21.3] * 5, device="cuda:0"))
    started = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    return RunDocument(
        run=RunInfo(id="a" * 32, started_at=started, finished_at=started + timedelta(seconds=412), tool_version="0.1.0"),
        host=Host(os="Windows", os_release="11", python="3.12.4", torch="2.13.0+cu130",
                  cpu_model="AMD Ryzen 9 7950X 16-Core Processor", physical_cores=16, logical_cores=32,
                  ram_bytes=64 * GIB, blas="mkl", threads=16, gpu_driver="580.97", virtualized=False),
        devices=[Device(id="cpu", kind="cpu", name="AMD Ryzen 9 7950X 16-Core Processor", memory_bytes=64 * GIB),
                 Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce RTX 4090", memory_bytes=24 * GIB,
                        compute_capability="8.9", pcie_generation=4, pcie_width=16, power_limit_w=450.0)],
        measurements=ms,
        unavailable=[Unavailable(probe="power", metric="idle_power", device="cpu", reason="RAPL is Linux-only")],
    )  # fmt: skip


def _render(doc: RunDocument, width: int) -> str:
    buffer = io.StringIO()
    render_run(doc, Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def test_the_probe_table_fits_80_columns_without_wrapping_a_figure_name() -> None:
    doc = _gpu_and_collective_run()
    out = _render(doc, 80)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    labels = ["matmul fp8 burst", "matmul bf16 sustained", "host→device pageable", "train MFU bf16 measured-matmul",
              "max trainable bf16", "all-reduce busbw fp32 256 KiB", "all-reduce latency fp32", "idle power"]
    for label in labels:
        assert any(line.startswith(label + " ") for line in lines), label  # whole, at the start of its row
    assert "…" not in out[: out.index("warning")]  # no figure or number in the tables cut short
    # every stored figure has its row, each number whole
    for number in ("302 TFLOP/s", "91%", "48.2 ktokens/s", "1.6 Gparams", "44 µs", "700 GFLOP/J"):
        assert number in out, number
    # the same document on a wide terminal shows the parameters too
    wide = _render(doc, 160)
    assert "8192³, 10 s" in wide and "2 ranks, gloo, 8 iter" in wide and "parameters left out" not in wide


def test_all_reduce_sizes_read_as_sizes_not_byte_counts() -> None:
    out = _render(_gpu_and_collective_run(), 160)
    assert "4194304B" not in out and "float32" not in out
    row = next(line for line in out.splitlines() if line.startswith("all-reduce busbw fp32 4 MiB "))
    assert "4 MiB" not in row[len("all-reduce busbw fp32 4 MiB"):]  # the size is said once, in the name


def _warnings(out: str) -> list[str]:
    """Each warning as one line, however the console wrapped it."""
    text = out.replace("\n", " ")
    return ["warning" + part.split("unavailable")[0].rstrip() for part in text.split("warning")[1:]]


def test_a_same_machine_all_reduce_warns_once_and_blames_no_other_program() -> None:
    doc = _gpu_and_collective_run(master="127.0.0.1:29500")
    warnings = [w for w in _warnings(_render(doc, 200)) if "collective" in w]
    assert len(warnings) == 1, warnings
    [line] = warnings
    assert line.startswith("warning collective on cpu: 9 figures")
    assert "peer rank runs on this machine" in line and "expected" in line
    assert "close other programs" not in line and "other processes" not in line
    assert machine_load_notes(doc.measurements) == []  # the peer rank is the probe's own work


def test_ranks_on_other_machines_keep_the_shared_machine_warning() -> None:
    """Rank 0 on a LAN address: the load may be anything, so it is reported as a shared machine."""
    doc = _gpu_and_collective_run(master="192.0.2.10:29500")
    warnings = [w for w in _warnings(_render(doc, 200)) if "collective" in w]
    assert warnings == [
        "warning collective on cpu: other processes used 45% of the CPU while it ran; its figures show a shared "
        "machine, not this one alone"
    ]


def test_noisy_figures_of_one_probe_and_cause_share_one_line() -> None:
    noisy = [_flops([100.0, 150.0, 60.0, 140.0, 70.0, 130.0], variant=v) for v in ("burst", "sustained")]
    # sorted 60 70 100 130 140 150: quartiles 67.5 and 142.5 (statistics' exclusive method), median 115
    assert relative_spread(noisy[0]) == pytest.approx((142.5 - 67.5) / 115)
    buffer = io.StringIO()
    warn_unstable([*noisy, _flops([100.0] * 5, variant="steady")], Console(file=buffer, width=300, color_system=None))
    assert buffer.getvalue().splitlines() == [
        "warning compute on cpu: 2 figures (matmul fp32 burst, matmul fp32 sustained) spread (IQR) 65%-65% of "
        "their median; close other programs, plug in the power, and re-run"
    ]
