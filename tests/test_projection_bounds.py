"""Every input bound of the projection, probed at its edges through the function a user's input takes.

Each row is one `check(value, what, low, high, low_inclusive=...)` call in bench/projection/, written
out here as literals (the source is not read). Five probes per row: just below the low bound (refused),
the low bound (accepted only when inclusive), just above it, the high bound (accepted) and just above
it (refused). A real-valued field steps by one float (`math.nextafter`), an integer field by one. A
refusal must be the exact one-line message; an acceptance must raise nothing.

A bound that moves by one (0 -> 1, 1e7 -> 9999999) or flips inclusive fails at least one probe: this
is what mutation testing of the projection asks of its bounds (issue 16).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bench.errors import FlopwattError
from bench.hardware import get_card
from bench.projection import (
    Figure,
    Prices,
    Settings,
    Swarm,
    colocated,
    model_spec,
    node_from_card,
    node_from_run,
    parse_nodes_csv,
    scenario,
    sweep,
    with_link,
    with_power,
)
from bench.projection.swarm import with_hours

# ------------------------------------------------------------------------------------------------
# The smallest real inputs around each probe
# ------------------------------------------------------------------------------------------------

SMALL = model_spec("125M")  # 12 layers, width 768, 12 heads


def card_node() -> Any:
    return node_from_card(get_card("rtx4090"))


def home_node() -> Any:
    return with_link(card_node(), uplink_bps=25e6, downlink_bps=100e6, rtt_s=0.03)


def run_doc() -> dict[str, Any]:
    """A stored run as `flopwatt show RUN --json` gives it: one GPU, its matmul rate and power."""
    return {
        "run": {"id": "3f2a9c0d11223344"},
        "host": {"ram_bytes": 64 * 2**30},
        "devices": [{"id": "cuda:0", "kind": "cuda", "name": "NVIDIA GeForce RTX 4090", "memory_bytes": 25_393_692_672}],
        "measurements": [
            {"metric": "matmul_flops", "value": 150e12, "dtype": "bf16", "device": "cuda:0", "variant": "sustained",
             "params": {}, "energy": {"watts_avg": 410.0, "method": "nvml-counter"}},
            {"metric": "net_upload", "value": 40e6, "device": "net:a", "params": {}, "energy": None},
            {"metric": "net_download", "value": 300e6, "device": "net:a", "params": {}, "energy": None},
            {"metric": "net_rtt", "value": 0.018, "device": "net:a", "params": {}, "energy": None},
        ],
    }


def small_scenario(node: Any = None, **kw: Any) -> Any:
    """The cheapest scenario: 125M on four nodes; validating it projects nothing."""
    return scenario(SMALL, Swarm.uniform(node or home_node(), 4), **kw)


def node_with(**figures: float) -> Any:
    """A measured node with some figures replaced, as `project --run ID --node-mfu` replaces its share."""
    node = node_from_run(run_doc())
    return dataclasses.replace(node, **{k: Figure(v, "probe") for k, v in figures.items()})


def csv_swarm(text: str) -> Swarm:
    return parse_nodes_csv(text, lambda kind, name: home_node())


def shape_with_params(params: int) -> Any:
    """A model given by its shape whose params = 12·L·h² + V·h come to exactly `params`.

    10^6 ± k: one layer one wide, V = 10^6 − 12 ± k. 10^14 = 12·8333·1000² + 4·10^6·1000;
    10^14 + 1 = 29·101·281·121499449 = 12·12·823049² + 2980393·823049 (width 823049, its only fit)."""
    if params < 1e9:
        return model_spec(layers=1, width=1, vocab=params - 12)
    if params == 10**14:
        return model_spec(layers=8333, width=1000, vocab=4_000_000)
    assert params == 10**14 + 1
    return model_spec(layers=12, width=823049, vocab=2_980_393)


# ------------------------------------------------------------------------------------------------
# The bounds, one row per check() call
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    where: str
    what: str
    low: float
    high: float
    inclusive: bool
    #: Reaches the check with `value` the way a user's input does.
    probe: Callable[[Any], object]
    integer: bool = False


BOUNDS = [
    # energy.py: Prices, validated by scenario()
    Bound("energy.py:48", "datacenter electricity price", 0, 10, True,
          lambda v: small_scenario(prices=Prices(datacenter_usd_per_kwh=v))),
    Bound("energy.py:49", "home electricity price", 0, 10, True,
          lambda v: small_scenario(prices=Prices(home_usd_per_kwh=v))),
    Bound("energy.py:50", "PUE", 1, 5, True, lambda v: small_scenario(prices=Prices(pue=v))),
    Bound("energy.py:51", "home PUE", 1, 5, True, lambda v: small_scenario(prices=Prices(home_pue=v))),
    Bound("energy.py:52", "amortisation years", 1e-3, 50, True,
          lambda v: small_scenario(prices=Prices(amortisation_years=v))),
    Bound("energy.py:53", "server capex factor", 1, 10, True,
          lambda v: small_scenario(prices=Prices(server_capex_factor=v))),
    Bound("energy.py:54", "grid carbon intensity", 0, 5000, True,
          lambda v: small_scenario(prices=Prices(grid_gco2_per_kwh=v))),
    Bound("energy.py:56", "datacenter GPU-hour price", 0, 1000, False,
          lambda v: small_scenario(prices=Prices(dc_gpu_hour_usd=v))),
    # model.py: model_spec(), from --params or the shape options
    Bound("model.py:134", "layers", 1, 10_000, True, lambda v: model_spec(layers=v, width=1024), integer=True),
    Bound("model.py:135", "width", 1, 1e6, True, lambda v: model_spec(layers=1, width=v, vocab=10_000_000),
          integer=True),
    Bound("model.py:142", "params", 1e6, 1e14, False, lambda v: model_spec(repr(v))),  # --params as typed
    Bound("model.py:150", "layers", 1, 10_000, True, lambda v: model_spec("125M", layers=v), integer=True),
    Bound("model.py:151", "width", 1, 1e6, True, lambda v: model_spec("125M", width=v, heads=1), integer=True),
    Bound("model.py:152", "heads", 1, 768, True, lambda v: model_spec("125M", heads=v), integer=True),  # 125M's width
    Bound("model.py:153", "sequence length", 1, 1e7, True, lambda v: model_spec("125M", seq=v), integer=True),
    Bound("model.py:154", "vocabulary", 1, 1e7, True, lambda v: model_spec("125M", vocab=v), integer=True),
    Bound("model.py:155", "batch tokens", 0, 1e10, False, lambda v: model_spec("125M", batch_tokens=v)),
    Bound("model.py:156", "params", 1e6, 1e14, False, shape_with_params, integer=True),
    # nodes.py: a card node (--card, --gpus-per-node, --node-mfu), its link and power options, a run node
    Bound("nodes.py:129", "gpus per node", 1, 1024, True, lambda v: node_from_card(get_card("rtx4090"), gpus=v),
          integer=True),
    Bound("nodes.py:138", "node MFU", 1e-6, 1, True, lambda v: node_from_card(get_card("rtx4090"), utilisation=v)),
    Bound("nodes.py:182", "uplink", 0, 1e13, False, lambda v: with_link(card_node(), uplink_bps=v)),
    Bound("nodes.py:184", "downlink", 0, 1e13, False, lambda v: with_link(card_node(), downlink_bps=v)),
    Bound("nodes.py:186", "rtt", 0, 60, True, lambda v: with_link(card_node(), rtt_s=v)),
    Bound("nodes.py:195", "host watts", 0, 1e5, True, lambda v: with_power(card_node(), host_watts=v)),
    Bound("nodes.py:197", "host idle watts", 0, 1e5, True, lambda v: with_power(card_node(), host_idle_watts=v)),
    Bound("nodes.py:200", "node watts", 0, 1e6, False, lambda v: with_power(card_node(), node_watts=v)),
    Bound("nodes.py:204", "node idle watts", 0, 1e6, True, lambda v: with_power(card_node(), node_idle_watts=v)),
    Bound("nodes.py:315", "node watts", 0, 1e6, False, lambda v: node_from_run(run_doc(), watts=v)),
    # strategies.py: Settings, validated by scenario(); the datacenter strategy's own inputs
    Bound("strategies.py:56", "DiLoCo H (local steps)", 1, 1e7, True,
          lambda v: small_scenario(settings=Settings(diloco_h=v)), integer=True),
    Bound("strategies.py:57", "DiLoCo precision bits", 1, 32, True,
          lambda v: small_scenario(settings=Settings(diloco_bits=v)), integer=True),
    Bound("strategies.py:59", "DiLoCo token factor", 0, 1000, False,
          lambda v: small_scenario(settings=Settings(diloco_token_factor=v))),
    Bound("strategies.py:60", "gradient bits", 1, 32, True,
          lambda v: small_scenario(settings=Settings(grad_bits=v)), integer=True),
    Bound("strategies.py:61", "activation bits", 1, 32, True,
          lambda v: small_scenario(settings=Settings(activation_bits=v)), integer=True),
    Bound("strategies.py:62", "usable memory share", 0, 1, False,
          lambda v: small_scenario(settings=Settings(usable_memory=v))),
    Bound("strategies.py:64", "micro-batch tokens", 0, 1e9, False,
          lambda v: small_scenario(settings=Settings(micro_batch_tokens=v))),
    Bound("strategies.py:66", "critical batch tokens", 0, 1e12, False,
          lambda v: small_scenario(settings=Settings(critical_batch_tokens=v))),
    Bound("strategies.py:67", "DDP overlap share", 0, 1, True,
          lambda v: small_scenario(settings=Settings(ddp_overlap=v))),
    Bound("strategies.py:120", "gpus", 1, 1e7, True, lambda v: colocated(SMALL, get_card("h100"), v, 1e9),
          integer=True),
    Bound("strategies.py:121", "utilisation", 1e-6, 1, True, lambda v: colocated(SMALL, get_card("h100"), 8, 1e9, mfu=v)),
    # swarm.py: --card/--run's node count, a nodes CSV, --hours-per-day
    Bound("swarm.py:37", "gpus (nodes)", 1, 1e7, True, lambda v: Swarm.uniform(home_node(), v), integer=True),
    Bound("swarm.py:102", "nodes CSV line 2: count", 1, 1e7, True,
          lambda v: csv_swarm(f"card,count\nrtx4090,{v}\n"), integer=True),
    Bound("swarm.py:117", "nodes CSV line 2: hours_per_day", 0, 24, False,
          lambda v: csv_swarm(f"card,count,hours_per_day\nrtx4090,3,{v!r}\n")),
    Bound("swarm.py:128", "hours per day", 0, 24, False, lambda v: with_hours(Swarm.uniform(home_node(), 4), v)),
    # sweep.py: scenario()'s own inputs and each node's figures; sweep()'s node counts
    Bound("sweep.py:57", "tokens", 1, 1e16, True, lambda v: small_scenario(tokens=v)),
    Bound("sweep.py:61", "utilisation (MFU)", 1e-6, 1, True, lambda v: small_scenario(mfu=v, dc_gpus=8)),
    Bound("sweep.py:66", "node FLOP/s", 0, 1e18, False, lambda v: small_scenario(node_with(flops=v))),
    Bound("sweep.py:66", "node memory", 0, 1e18, False, lambda v: small_scenario(node_with(memory_bytes=v))),
    Bound("sweep.py:66", "node watts", 0, 1e18, False, lambda v: small_scenario(node_with(watts=v))),
    Bound("sweep.py:67", "node utilisation", 1e-6, 1, True, lambda v: small_scenario(node_with(utilisation=v))),
    Bound("sweep.py:74", "datacenter gpus", 1, 1e7, True, lambda v: small_scenario(dc_gpus=v), integer=True),
    Bound("sweep.py:109", "node count", 1, 1e7, True,
          lambda v: sweep(small_scenario(strategy="colocated", dc_gpus=8), [v]), integer=True),
]


def refusal(bound: Bound, value: float) -> str:
    """The message check() gives, written out from its rule."""
    op = ">=" if bound.inclusive else ">"
    return f"{bound.what} must be {op} {bound.low:g} and <= {bound.high:g}, got {repr(float(value)).removesuffix('.0')}"


def probes(bound: Bound) -> list[tuple[str, float, bool]]:
    """(name, value, accepted) at the edges of the bound."""
    if bound.integer:
        low, high = int(bound.low), int(bound.high)
        below, above_low, above_high = low - 1, low + 1, high + 1
    else:
        low, high = bound.low, bound.high
        below, above_low, above_high = (math.nextafter(low, -math.inf), math.nextafter(low, math.inf),
                                        math.nextafter(high, math.inf))
    return [("below low", below, False), ("low", low, bound.inclusive), ("above low", above_low, True),
            ("high", high, True), ("above high", above_high, False)]


CASES = [pytest.param(b, name, value, ok, id=f"{b.where} {b.what}: {name}")
         for b in BOUNDS for name, value, ok in probes(b)]


@pytest.mark.parametrize(("bound", "name", "value", "accepted"), CASES)
def test_a_bound_accepts_its_edge_and_refuses_one_step_beyond(bound: Bound, name: str, value: float,
                                                              accepted: bool) -> None:
    if accepted:
        bound.probe(value)
    else:
        with pytest.raises(FlopwattError) as refused:
            bound.probe(value)
        assert str(refused.value) == refusal(bound, value)


def test_every_check_call_has_a_row() -> None:
    """49 check() calls, sweep.py:66 checking three figures: 51 rows, none twice."""
    rows = [(b.where, b.what) for b in BOUNDS]
    assert len(rows) == 51 and len(set(rows)) == 51


# ------------------------------------------------------------------------------------------------
# Edges that crashed the real command
# ------------------------------------------------------------------------------------------------


def flopwatt_project(*args: str) -> Any:
    from typer.testing import CliRunner

    from bench.cli import app
    return CliRunner().invoke(app, ["project", *args], prog_name="flopwatt", env={"COLUMNS": "200"})


def feasible_row(output: str) -> list[str]:
    """The table's feasible cells: colocated, ddp, diloco, pipeline."""
    line = next(row for row in output.splitlines() if "│ feasible" in row)
    return [cell.strip() for cell in line.split("│")[2:-1]]


def test_a_diloco_token_factor_at_its_bound_prints_the_table_outside_the_published_range() -> None:
    """Four 125M nodes are outside DiLoCo's published range: the table points at the pessimistic-end
    note; with --diloco-token-factor (here its bound, 1000) there is no such note and DiLoCo is a plain
    yes (it was a StopIteration traceback)."""
    case = ("--params", "125M", "--card", "rtx4090", "--gpus", "4")
    assert feasible_row(flopwatt_project(*case).stdout)[2].startswith("yes, see [")
    given = flopwatt_project(*case, "--diloco-token-factor", "1000")
    assert given.exit_code == 0, given.output
    assert feasible_row(given.stdout)[2] == "yes"
    assert "diloco: token factor 1000 (option)" in given.stdout


def test_zero_gpus_per_node_is_refused_in_one_line() -> None:
    """It was a ZeroDivisionError in `--gpus % --gpus-per-node`, before the node's own check."""
    result = flopwatt_project("--params", "125M", "--card", "rtx4090", "--gpus", "4", "--gpus-per-node", "0")
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: gpus per node must be >= 1 and <= 1024, got 0\n"
