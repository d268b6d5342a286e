"""bench.units: what people type read exactly, bits and bytes never confused; figures formatted."""

from __future__ import annotations

import pytest

from bench.errors import FlopwattError
from bench.units import bytes_, co2, count, duration_label, energy, parse_bitrate, parse_duration, parse_size, seconds, si, usd


@pytest.mark.parametrize(
    ("text", "bits_per_s"),
    [
        ("25mbit", 25e6), ("25 Mbit/s", 25e6), ("25Mbps", 25e6), ("25mb/s", 25e6), ("1gbit", 1e9),
        ("100 kbit", 100e3), ("2.5Gbit/s", 2.5e9),
        ("100MB/s", 800e6), ("100MBps", 800e6), ("12.5 MB/s", 100e6), ("1 GiB/s", 8 * 2**30), ("3 MBytes/s", 24e6),
        ("1e3 Mbit", 1e9),
    ],
)  # fmt: skip
def test_parse_bitrate(text: str, bits_per_s: float) -> None:
    assert parse_bitrate(text, "--uplink") == bits_per_s


@pytest.mark.parametrize("text", ["100M", "100", "fast", "25 megabits", "-5mbit", "mbit"])
def test_an_ambiguous_or_unreadable_rate_is_refused(text: str) -> None:
    with pytest.raises(FlopwattError, match="--uplink: cannot read"):
        parse_bitrate(text, "--uplink")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30ms", 0.03), ("0.03s", 0.03), ("250us", 2.5e-4), ("250µs", 2.5e-4), ("2 min", 120.0), ("1h", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--rtt") == pytest.approx(seconds, rel=1e-15)


def test_a_duration_without_unit_is_refused() -> None:
    with pytest.raises(FlopwattError, match="--rtt: cannot read '30'"):
        parse_duration("30", "--rtt")


def test_parse_size() -> None:
    assert parse_size("32GiB") == 32 * 2**30 and parse_size("64GB") == 64e9 and parse_size("512 MB") == 512e6
    assert [parse_size(f"1 {p}B") for p in ("Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T", "")] == \
        [2**10, 2**20, 2**30, 2**40, 1e3, 1e6, 1e9, 1e12, 1.0]
    with pytest.raises(FlopwattError, match="cannot read"):
        parse_size("32G")


def test_money_energy_co2_and_counts() -> None:
    assert usd(1_234_000) == "$1.23M" and usd(456) == "$456" and usd(0.1234) == "$0.123" and usd(None) == "-"
    assert usd(2.5e9) == "$2.5B" and usd(12_300) == "$12.3k"
    assert energy(3.6e6) == "1 kWh" and energy(3.6e9 * 12.3) == "12.3 MWh" and energy(3.6e12 * 2) == "2 GWh"
    assert co2(999) == "999 kg" and co2(1500) == "1.5 t"
    assert count(1.24e9) == "1.24B" and count(140e9) == "140B" and count(2.5e12) == "2.5T"
    assert [count(v) for v in (1e12, 1e9, 1e6, 1e3, 999)] == ["1T", "1B", "1M", "1k", "999"]
    assert [usd(v) for v in (1e9, 1e6, 1e3, 999)] == ["$1B", "$1M", "$1k", "$999"]
    assert energy(3.6e6 * 1e6) == "1 GWh" and energy(3.6e6 * 1e3) == "1 MWh" and co2(1e3) == "1 t"


def test_a_figure_that_rounds_to_1000_takes_the_next_unit() -> None:
    """Three significant figures of 999.7 G are 1000 G: printed as 1 T, never "1e+03 G"."""
    assert si(999.7e9, "FLOP/s") == "1 TFLOP/s" and si(999.4e9, "FLOP/s") == "999 GFLOP/s"
    assert si(999.7, "W") == "1 kW" and si(999.97e12, "B/s") == "1 PB/s" and si(2e18, "FLOP/s") == "2e+03 PFLOP/s"
    assert count(999.7e9) == "1T" and count(999.6) == "1k" and usd(999_600) == "$1M" and usd(999.4) == "$999"
    assert energy(3.6e6 * 999.7) == "1 MWh" and energy(3.6e6 * 0.5) == "0.5 kWh" and co2(999.8) == "1 t"
    assert co2(0.25) == "0.25 kg" and si(0.5, "W") == "0.5 W" and si(-999.7e6, "W") == "-1 GW"


@pytest.mark.parametrize(
    ("show", "scale", "text"),
    [(count, 1e3, "1k"), (count, 1e6, "1M"), (count, 1e9, "1B"), (count, 1e12, "1T"),
     (usd, 1e3, "$1k"), (usd, 1e6, "$1M"), (usd, 1e9, "$1B"), (co2, 1e3, "1 t"),
     (energy, 3.6e9, "1 MWh"), (energy, 3.6e12, "1 GWh"),
     *((lambda v: si(v, "W"), scale, f"1 {p}W") for scale, p in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"), (1e15, "P")))],
)  # fmt: skip
def test_each_unit_is_exactly_its_power_of_ten(show: object, scale: float, text: str) -> None:
    """Just below the third figure's rounding edge: a unit off by one part in a million rounds up."""
    assert show(scale * 1.0049995) == text  # type: ignore[operator]


def test_energy_divides_by_exactly_3_6_megajoules() -> None:
    """Just below the third significant figure's rounding edge, so a kWh of 3.599999 MJ rounds up."""
    assert energy(3.6e6 * 1.0049999) == "1 kWh" and energy(3.6e6 * 1.0050001) == "1.01 kWh"


@pytest.mark.parametrize(
    ("value", "text"),
    [(86400, "1.0 d"), (86399.9, "24.0 h"), (3600, "1.0 h"), (3599, "60.0 min"), (60, "1.0 min"), (59.99, "59.99 s"),
     (1, "1.00 s"), (0.999, "999 ms"), (1e-3, "1 ms"), (9.99e-4, "999 µs"), (0.99951, "1.00 s"),
     (9.9951e-4, "1 ms"), (1e-3 * 1.0050001, "1.01 ms"), (1e-6 * 1.0050001, "1.01 µs"), (1e-6 * 1.0049995, "1 µs"),
     (86400 * 999.96, "1000.0 d"), (3600 * 23.9502, "24.0 h"), (60 * 59.951, "60.0 min")],
)
def test_seconds_at_each_boundary(value: float, text: str) -> None:
    assert seconds(value) == text


def test_si_and_bytes() -> None:
    assert si(153.9e9, "FLOP/s") == "154 GFLOP/s" and si(1.2e15, "FLOP/s") == "1.2 PFLOP/s"
    assert si(999, "W") == "999 W" and si(1000, "W") == "1 kW" and si(-2e6, "W") == "-2 MW"
    assert si(2.5e9, "B/s") == "2.5 GB/s" and si(25e6, "bit/s") == "25 Mbit/s" and si(1e3, "params") == "1 kparams"
    assert si(0.5, "ratio") == "50.0 %" and si(2, "s") == "2.00 s"
    assert [si(v, "FLOP/s") for v in (1e15, 1e12, 1e9, 1e6, 1e3)] == \
        ["1 PFLOP/s", "1 TFLOP/s", "1 GFLOP/s", "1 MFLOP/s", "1 kFLOP/s"]
    assert [bytes_(v) for v in (1024**3, 1.5 * 1024**3, 1023, 1024, 2**40, 3 * 2**20)] == \
        ["1 GiB", "1.5 GiB", "1023 B", "1 KiB", "1 TiB", "3 MiB"]


def test_a_tick_of_a_thousand_units_or_more_prints_whole_with_separators() -> None:
    """The largest unit has no unit above it: 1,500 years is "1,500 yr", not "1.5e+03 yr"."""
    assert duration_label(1500 * 365.25 * 86400) == "1,500 yr" and duration_label(1000 * 365.25 * 86400) == "1,000 yr"
    assert duration_label(999 * 365.25 * 86400) == "999 yr"
