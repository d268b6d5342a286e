"""Humanising SI figures for display. Stored values stay in base units; only reports call this."""

from __future__ import annotations

_PREFIXES = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def si(value: float, unit: str, digits: int = 3) -> str:
    """153.9e9, "FLOP/s" -> "154 GFLOP/s"; bytes use decimal prefixes, as bandwidth specs do."""
    if unit == "s":
        return seconds(value)
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    suffix = {"B/s": "B/s", "bit/s": "bit/s", "FLOP/s": "FLOP/s", "params": " params"}.get(unit, f" {unit}")
    magnitude = abs(value)
    for scale, prefix in _PREFIXES:
        if magnitude >= scale:
            number = value / scale
            sep = "" if suffix.startswith(" ") else " "
            if suffix.startswith(" "):
                return f"{number:.{digits}g} {prefix}{suffix.strip()}"
            return f"{number:.{digits}g}{sep}{prefix}{suffix}"
    return f"{value:.{digits}g} {suffix.strip()}"


def seconds(value: float) -> str:
    if value >= 86400:
        return f"{value / 86400:.1f} d"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def bytes_(value: float) -> str:
    """Memory sizes in binary units (GiB), as memory is sold and reported by the OS."""
    for scale, prefix in ((1024**4, "Ti"), (1024**3, "Gi"), (1024**2, "Mi"), (1024, "Ki")):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.0f} {prefix}B" if scaled == round(scaled) else f"{scaled:.1f} {prefix}B"
    return f"{value:.0f} B"
