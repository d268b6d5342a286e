"""Humanising SI figures for display. Stored values stay in base units; only reports call this."""

from __future__ import annotations

import re

#: Decimal prefixes, smallest first (bytes too, as bandwidth specs count them).
_PREFIXES = ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"), (1e15, "P"))


def _in_units(value: float, ladder: tuple[tuple[float, str], ...], digits: int = 3) -> tuple[float, str]:
    """`value` in the largest unit of `ladder` (smallest first) that it reaches, and that unit's name;
    one unit up where `digits` significant figures would round it to 1000 (999.7 G is "1 T", not "1e+03 G")."""
    i = max((i for i, (scale, _) in enumerate(ladder) if abs(value) >= scale), default=0)
    step = round(ladder[i + 1][0] / ladder[i][0], 9) if i + 1 < len(ladder) else None  # 1e-3 / 1e-6 is 1000.0000000000001
    if step is not None and abs(float(f"{value / ladder[i][0]:.{digits}g}")) >= step:
        i += 1
    scale, name = ladder[i]
    return value / scale, name


def si(value: float, unit: str, digits: int = 3) -> str:
    """153.9e9, "FLOP/s" -> "154 GFLOP/s"; bytes use decimal prefixes, as bandwidth specs do."""
    if unit == "s":
        return seconds(value)
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    number, prefix = _in_units(value, _PREFIXES, digits)
    return f"{number:.{digits}g} {prefix}{unit}"


def seconds(value: float) -> str:
    if value >= 86400:
        return f"{value / 86400:.1f} d"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    number, unit = _in_units(value, ((1e-6, "µs"), (1e-3, "ms"), (1.0, "s")))
    return f"{value:.2f} s" if unit == "s" else f"{number:.3g} {unit}"


#: The units a duration is shown in, largest first: a Julian year (365.25 d) down to a microsecond.
TIME_UNITS: tuple[tuple[float, str], ...] = (
    (365.25 * 86400, "yr"), (86400, "d"), (3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms"), (1e-6, "µs"))


def duration_label(value: float) -> str:
    """A duration as an axis tick: the largest unit it reaches, no trailing zeros ("10 h", "1 d", "1 yr"),
    so a round duration reads round; `seconds` keeps one decimal for table cells."""
    for scale, unit in TIME_UNITS:
        if abs(value) >= scale * (1 - 1e-9):
            number = value / scale
            return f"{number:,.0f} {unit}" if abs(number) >= 1000 else f"{number:.3g} {unit}"
    return f"{value:.3g} s"


def bytes_(value: float) -> str:
    """Memory sizes in binary units (GiB), as memory is sold and reported by the OS."""
    for scale, prefix in ((1024**4, "Ti"), (1024**3, "Gi"), (1024**2, "Mi"), (1024, "Ki")):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.0f} {prefix}B" if scaled == round(scaled) else f"{scaled:.1f} {prefix}B"
    return f"{value:.0f} B"


def usd(value: float | None) -> str:
    """Money: "$1.23M", "$456", "$0.12"; "-" for none."""
    if value is None:
        return "-"
    number, suffix = _in_units(value, ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "B")))
    return f"${number:.3g}{suffix}"


def energy(joules: float) -> str:
    """Energy in kWh and its multiples, as bills and grids count it: "12.3 MWh", "0.5 kWh"."""
    number, unit = _in_units(joules / 3.6e6, ((1.0, "kWh"), (1e3, "MWh"), (1e6, "GWh")))
    return f"{number:.3g} {unit}"


def co2(kilograms: float) -> str:
    """Carbon dioxide: tonnes from 1,000 kg, else kg."""
    number, unit = _in_units(kilograms, ((1.0, "kg"), (1e3, "t")))
    return f"{number:.3g} {unit}"


def count(value: float) -> str:
    """A plain count with a short-scale suffix: 1.24B, 140B, 2.5T."""
    number, suffix = _in_units(value, ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "B"), (1e12, "T")))
    return f"{number:.3g}{suffix}"


# ------------------------------------------------------------------------------------------------
# Reading what people type. A rate must say bits or bytes: "100M" is refused, not guessed.
# ------------------------------------------------------------------------------------------------

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_RATE = re.compile(rf"^\s*{_NUMBER}\s*([kKmMgGtT]i?)?\s*((?i:bits?)|bps|b|Bps|B|(?i:bytes?))(?:\s*/\s*s|ps)?\s*$")
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(ns|us|µs|ms|s|min|h)\s*$", re.IGNORECASE)
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([kKmMgGtT]i?)?\s*(B|(?i:bytes?))\s*$")
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
          "ki": 2.0**10, "mi": 2.0**20, "gi": 2.0**30, "ti": 2.0**40}


def parse_bitrate(text: str, what: str = "rate") -> float:
    """A link rate in bit/s: "25mbit", "25 Mbit/s", "25Mbps", "1gbit" (bits); "100MB/s", "100MBps",
    "12.5 MB/s", "1 GiB/s" (bytes, x 8). Lower-case b is a bit, upper-case B a byte, as the SI
    convention (IEC 80000-13) has it; a rate without either ("100M", "100") is refused."""
    from bench.errors import FlopwattError

    match = _RATE.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} as a rate; say bits or bytes: e.g. 25mbit, "
                            "100Mbit/s, 12.5MB/s")
    number, prefix, unit = match.group(1), (match.group(2) or "").lower(), match.group(3)
    is_byte = unit.lower().startswith("byte") or unit in ("B", "Bps")
    return float(number) * _SCALE[prefix] * (8.0 if is_byte else 1.0)


def parse_duration(text: str, what: str = "duration") -> float:
    """A duration in seconds: "30ms", "0.03s", "250us", "2 min"; a bare number is refused."""
    from bench.errors import FlopwattError

    match = _DURATION.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} as a duration; give a unit: e.g. 30ms, 0.03s")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    return float(match.group(1)) * scale[match.group(2).lower()]


def parse_size(text: str, what: str = "size") -> float:
    """Bytes: "32GiB" (binary), "32GB" (decimal), "512 MB"; a size without B or bytes is refused."""
    from bench.errors import FlopwattError

    match = _SIZE.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} as a size; e.g. 32GiB, 64GB")
    return float(match.group(1)) * _SCALE[(match.group(2) or "").lower()]
