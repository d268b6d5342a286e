"""`make bench` for the NVML energy windows: what a window's watts_avg is worth, and how long it must be.

No GPU is needed: the NVML meter (probes/energy/nvml.py, unchanged) reads the stand-in NVML of the
tests (tests/energy_fakes.py) replaying a real H100 PCIe recording (tests/data/energy/
h100_pcie_fp8_burst.json: nvidia-smi every ~7 ms, an FP8 matmul starting 5.46 s in, power held in
~100 ms steps). The peer is the recording itself: the mean of its instant power over the same
window. Windows of each length are opened at every 10 ms of the first 20 s, so many straddle the
step from ~92 W to ~350 W; those opening in the 0.1 s before the matmul starts are reported apart,
as they are a probe's windows: opened on a just-synchronised GPU, closed at full power.

Reported per window length and NVML method: the mean and the worst of (meter's watts_avg /
recorded mean power - 1), over all placements and over the probe-like ones. The energy counter is a model (it steps every
`counter_period_s`, 100 ms, the slow end of what PETSc and Zeus report; it was not recorded);
nvmlDeviceGetPowerUsage is the recorded 1 s average, polled every 50 ms as the meter does.
"""

from __future__ import annotations

import statistics
from typing import Any

from probes.energy.nvml import NvmlMeter
from tests.energy_fakes import ReplayClock, ReplayGpu, ReplayNvml, load_trace

TRACE = "h100_pcie_fp8_burst"
STEP_S = 0.01
POLL_S = 0.05
#: When the recorded matmul starts: the instant field's first step up (the row of t = 5.459 s).
LOAD_STARTS_S = 5.46


def _recorded_mean_w(gpu: ReplayGpu, start_s: float, end_s: float) -> float:
    return (gpu.integral_mj(end_s) - gpu.integral_mj(start_s)) / 1000 / (end_s - start_s)


def _errors(length_s: float, starts_s: list[float], *, counter_period_s: float, polled: bool) -> list[float]:
    trace = load_trace(TRACE)
    errors = []
    for start_s in starts_s:
        clock = ReplayClock(start_s)
        hidden = ("nvmlDeviceGetTotalEnergyConsumption", "NVML_FI_DEV_POWER_INSTANT") if polled else ()
        gpu = ReplayGpu(trace, clock, counter_period_s=counter_period_s, not_supported=hidden)
        meter = NvmlMeter.open(0, nvml=ReplayNvml([gpu]), clock=clock, poll_interval_s=3600, min_window_s=length_s)
        assert isinstance(meter, NvmlMeter)
        meter.begin_window()
        for _ in range(round(length_s / POLL_S)):
            clock.advance(POLL_S)
            meter.poll()
        result = meter.end_window()
        assert result.measured, result.energy.unavailable_reason
        errors.append(result.energy.watts_avg / _recorded_mean_w(gpu, start_s, clock()) - 1)
    return errors


def run(lengths_s: tuple[float, ...] = (1.2, 6.0)) -> dict[str, Any]:
    span_s = load_trace(TRACE)["readings"][-1]["t_s"]
    probe_like = [round(LOAD_STARTS_S - k * STEP_S, 2) for k in range(11)]
    rows = []
    for method, polled in (("nvml-counter (0.1 s steps)", False), ("polled nvmlDeviceGetPowerUsage (1 s average)", True)):
        for length_s in lengths_s:
            everywhere = [k * STEP_S for k in range(round((span_s - length_s) / STEP_S))]
            for placements, starts_s in (("every 10 ms of 0-20 s", everywhere), ("0-0.1 s before the load", probe_like)):
                errors = _errors(length_s, starts_s, counter_period_s=0.1, polled=polled)
                rows.append(
                    {
                        "method": method,
                        "window_s": length_s,
                        "placements": placements,
                        "windows": len(errors),
                        "mean_error": statistics.mean(errors),
                        "worst_low": min(errors),
                        "worst_high": max(errors),
                    }
                )
    return {
        "trace": f"tests/data/energy/{TRACE}.json (H100 PCIe, recorded; the counter modelled)",
        "peer": "mean of the recorded instant power over the same window",
        "windows": rows,
    }
