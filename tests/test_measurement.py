"""The measurement contract: known metrics in their SI unit, finite samples, derived summaries."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from probes.measurement import Energy, Measurement


def _m(**kw: object) -> Measurement:
    fields = {"probe": "compute", "metric": "matmul_flops", "unit": "FLOP/s", "samples": [3.0, 1.0, 2.0]}
    return Measurement(**{**fields, **kw})


def test_summaries_are_derived_from_the_samples() -> None:
    m = _m(peak=4.0)
    assert (m.value, m.min, m.max, m.n) == (2.0, 1.0, 3.0, 3)
    assert m.peak_fraction == 0.5


def test_derived_fields_in_input_are_recomputed_not_trusted() -> None:
    dumped = _m().model_dump()
    dumped["value"] = 999.0
    assert Measurement.model_validate(dumped).value == 2.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "warp_speed"}, "unknown metric"),
        ({"unit": "GFLOP/s"}, "is in FLOP/s"),
        ({"samples": []}, "at least 1"),
        ({"samples": [1.0, math.nan]}, "finite"),
        ({"samples": [1.0, -2.0]}, "non-negative"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_measurements_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _m(**change)


def test_energy_is_a_figure_or_a_reason_never_both() -> None:
    with pytest.raises(ValidationError, match="needs unavailable_reason"):
        Energy(method="unavailable")
    with pytest.raises(ValidationError, match="cannot carry joules"):
        Energy(method="unavailable", unavailable_reason="no sensor", joules=1.0)
    with pytest.raises(ValidationError, match="needs joules and seconds"):
        Energy(method="rapl", joules=5.0)


def test_energy_above_idle_and_efficiency() -> None:
    energy = Energy(method="nvml-counter", joules=300.0, watts_avg=300.0, seconds=1.0, idle_watts=50.0)
    assert energy.joules_above_idle == 250.0
    assert _m(samples=[6e14], energy=energy).efficiency == pytest.approx(2e12)
