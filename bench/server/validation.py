"""What the server checks in a run document beyond its pydantic types, and how it keys devices.

Two kinds of check: `check_document` refuses what cannot be stored or compared (a 422 naming the
field); `implausible` finds figures well beyond the datasheet of the card they ran on, which are
stored but flagged and kept out of aggregates, with the reason.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from bench.document import SCHEMA_VERSION, RunDocument
from bench.hardware import Card, find_card, normalize_dtype, peak_flops
from bench.server.errors import ApiError
from probes.measurement import Measurement

#: A figure above this multiple of its card's datasheet limit is flagged. Twice the peak leaves room
#: for factory overclocks (+15%) and GeForce FP16-accumulate matmuls (2x the FP32-accumulate row the
#: table gives); broken timing (a missing synchronise) typically reads 10x or more.
PLAUSIBLE_FACTOR = 2.0
#: A GPU drawing less than this share of its board power while measured did not do the work it claims.
MIN_POWER_SHARE = 0.05
#: A probe that shared the machine with other processes (or, in a VM, lost time to other guests)
#: for this share of its CPU capacity measured the sharing, not the machine (probes.background).
#: The client warns from 5 %; the leaderboard leaves a run out from here.
SHARED_MACHINE_SHARE = 0.25
#: Identifiers that end up in database indexes stay short (PostgreSQL caps an index entry near 2.7 kB).
MAX_KEY_CHARS = 128
#: BIGINT columns (memory_bytes) hold at most this.
MAX_INTEGER = 2**63 - 1


def check_document(doc: RunDocument) -> None:
    """Refuse, naming the field, what pydantic lets through but the database or the leaderboard cannot take."""
    if doc.schema_version != SCHEMA_VERSION:
        raise ApiError(
            422, "schema_version", f"schema_version {doc.schema_version} is not supported (this server reads {SCHEMA_VERSION})"
        )
    _check(doc.model_dump(mode="python", exclude_computed_fields=True), ())
    seen: set[str] = set()
    for i, device in enumerate(doc.devices):
        if device.id in seen:
            raise ApiError(422, f"devices.{i}.id", f"device id {device.id!r} appears twice")
        seen.add(device.id)
        _short(f"devices.{i}.id", device.id)
        _short(f"devices.{i}.name", device.name)
    for i, m in enumerate(doc.measurements):
        for name in ("dtype", "variant", "device"):
            _short(f"measurements.{i}.{name}", getattr(m, name))


def _check(value: Any, path: tuple[Any, ...]) -> None:
    """Every number finite, non-negative and storable; every string (keys too) storable as text."""
    kind = type(value)
    if kind is float:
        if not 0.0 <= value < math.inf:  # NaN fails every comparison
            _refuse(path, value)
    elif kind is int:
        if not 0 <= value <= MAX_INTEGER:
            _refuse(path, value)
    elif kind is str:
        _check_text(value, path)
    elif kind is dict:
        for key, item in value.items():
            _check_text(str(key), (*path, key))
            _check(item, (*path, key))
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check(item, (*path, index))


def _refuse(path: tuple[Any, ...], value: float) -> None:
    field = ".".join(str(p) for p in path)
    if not math.isfinite(value):
        raise ApiError(422, field, f"must be a finite number, got {value!r}")
    if value < 0:
        raise ApiError(422, field, f"must be non-negative, got {value!r}")
    raise ApiError(422, field, f"must be at most {MAX_INTEGER}")


def _check_text(value: str, path: tuple[Any, ...]) -> None:
    if "\x00" in value:
        raise ApiError(422, ".".join(str(p) for p in path), "must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, ".".join(str(p) for p in path), "must be valid Unicode (no lone surrogates)") from None


def _short(path: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_KEY_CHARS:
        raise ApiError(422, path, f"must be at most {MAX_KEY_CHARS} characters")


@functools.lru_cache(maxsize=4096)
def card_of(name: str) -> Card | None:
    """find_card, remembered: the same few hundred device names arrive again and again."""
    return find_card(name)


def device_model(name: str) -> str:
    """The leaderboard key of a device: its reference card's name where one matches, else its own name."""
    card = card_of(name)
    return card.name if card else " ".join(name.split())


def leaderboard_dtype(dtype: str | None) -> str:
    """'' for figures without a dtype, otherwise the table's spelling ("bfloat16" -> "bf16")."""
    return normalize_dtype(dtype) if dtype else ""


def implausible(doc: RunDocument) -> list[str]:
    """Why figures of this run exceed what their card can do; empty when nothing does."""
    cards = {d.id: card_of(d.name) for d in doc.devices if d.kind != "cpu"}
    reasons = []
    for i, m in enumerate(doc.measurements):
        card = cards.get(m.device or "")
        if m.metric == "train_mfu" and m.value > 1:
            reasons.append(f"measurements.{i}: train_mfu {m.value:.3g} is above 1, which no hardware reaches")
        if card is None:
            continue
        limit = _datasheet_limit(card, m)
        if limit and m.value > PLAUSIBLE_FACTOR * limit:
            reasons.append(
                f"measurements.{i}: {m.metric} {m.dtype or ''} {m.value:.4g} {m.unit} is "
                f"{m.value / limit:.1f}x the {card.name} datasheet figure ({limit:.4g} {m.unit})".replace("  ", " ")
            )
        watts = m.energy.watts_avg if m.energy else None
        if watts is None or card.board_power_w is None:
            continue
        if watts > PLAUSIBLE_FACTOR * card.board_power_w:
            reasons.append(
                f"measurements.{i}: {watts:.0f} W average is over {PLAUSIBLE_FACTOR:g}x the {card.name} "
                f"board power ({card.board_power_w:.0f} W)"
            )
        elif watts < MIN_POWER_SHARE * card.board_power_w:
            reasons.append(
                f"measurements.{i}: {watts:.1f} W average under load is below {MIN_POWER_SHARE:.0%} of the "
                f"{card.name} board power ({card.board_power_w:.0f} W)"
            )
    return reasons


def shared_machine(doc: RunDocument) -> list[str]:
    """Why this run's probes measured a machine busy with something else; empty when none did.

    Such figures are real but low, and would pull the leaderboard's percentiles down. One reason
    per probe and device: every figure of a probe carries the same window's shares.
    """
    reasons = {}
    for i, m in enumerate(doc.measurements):
        for share, what in (("background_cpu", "other processes used"), ("steal_cpu", "the hypervisor took")):
            value = m.params.get(share)
            if isinstance(value, (int, float)) and value >= SHARED_MACHINE_SHARE:
                reasons.setdefault(
                    (m.probe, m.device, share),
                    f"measurements.{i}: {m.probe} on {m.device} ran while {what} {value:.0%} of the CPU",
                )
    return list(reasons.values())


def _datasheet_limit(card: Card, m: Measurement) -> float | None:
    if m.metric == "matmul_flops" and m.dtype:
        return peak_flops(card, m.dtype)
    if m.metric in ("mem_copy_bandwidth", "mem_triad_bandwidth"):
        return card.memory_bandwidth
    if m.metric in ("h2d_bandwidth", "d2h_bandwidth"):
        return card.pcie.bandwidth if card.pcie else None
    return None
