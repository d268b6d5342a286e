"""The swarm projection against real torch DDP, DiLoCo and a pipeline on tbf-shaped links.

A 1.1M-parameter GPT trains with gloo across 2 and 3 network-namespace hosts (tests/swarm_worker.py
says how each strategy is set up and why). At each uplink rate, `bench.projection.ddp` (one
micro-batch per step, and four with gradient accumulation) and `diloco`, given the model, the
measured compute of the same processes and the link's tbf rate, must predict the measured step
time within ±20%; so must `ring_allreduce_s` for the all-reduce alone and the pipeline schedule for
a two-stage GPipe (fill and drain, activations and their gradients on the links); and each host
must put 2(n−1)/n of the buffer on the wire (plus framing).

Rates: 25 and 100 Mbit/s on 2 hosts, 25 Mbit/s on 3 (where a ring, 4/3 of the buffer per rank,
and a naive exchange, 2x, differ). `make bench` (benchmarks/swarm_bench.py) adds 10 and 400 Mbit/s
and reports every ratio, including those outside the tolerance. 155-180 s on this 2-core VM under a load
average of 8-10 from other test runs (2026-12-01).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netns import Lab, uses_netns
from swarm_worker import MODEL, Plan, swarm, validate

pytestmark = uses_netns

RUNS: tuple[tuple[int, tuple[float, ...]], ...] = ((2, (25e6, 100e6)), (3, (25e6,)))
STRATEGIES = ("ddp", "diloco", "allreduce")
TOLERANCE = 0.20
#: Ethernet + IP + TCP headers (1514-byte frames carry 1448 bytes: +4.6%), the ACKs of the other
#: direction (~2%) and gloo's own messages; measured 1.047-1.079.
FRAMING = (1.0, 1.12)


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Lab]:
    """The whole experiment, run once; the lab is torn down before any test looks at the figures."""
    logs = tmp_path_factory.mktemp("swarm")
    with Lab(hosts=max(n for n, _ in RUNS)) as lab:
        result = validate(lab, logs, RUNS, Plan(two_host_rates=TWO_HOST_RATES))
    return result, lab


def _row(result: dict[str, Any], strategy: str, hosts: int, rate: float) -> dict[str, Any]:
    (row,) = [r for r in result["rows"] if (r["strategy"], r["hosts"], r["uplink_bps"]) == (strategy, hosts, rate)]
    return row


#: On two hosts at 25 Mbit/s only (to keep the test short): DDP with gradient accumulation, where
#: the all-reduce is 4x a micro-batch and the old overlap model is 1.45x off, and the two-stage
#: pipeline. `make bench` runs them at every rate and reports the ratios (docs/measurements.md).
TWO_HOST_STRATEGIES = ("ddp_accum", "pipeline")
TWO_HOST_RATES = (25e6,)
CASES = [(s, n, rate) for n, rates in RUNS for rate in rates
         for s in STRATEGIES + (TWO_HOST_STRATEGIES if n == 2 and rate in TWO_HOST_RATES else ())]
IDS = [f"{s}-{n}hosts-{r / 1e6:g}mbit" for s, n, r in CASES]


@pytest.mark.parametrize(("strategy", "hosts", "rate"), CASES, ids=IDS)
def test_projection_predicts_the_measured_step_time(
    validation: tuple[dict[str, Any], Lab], strategy: str, hosts: int, rate: float
) -> None:
    row = _row(validation[0], strategy, hosts, rate)
    assert abs(row["ratio"] - 1) <= TOLERANCE, (
        f"{strategy} on {hosts} hosts at {rate / 1e6:g} Mbit/s: measured {row['measured_s']:.3f} s, "
        f"projected {row['projected_s']:.3f} s (compute {row['compute_s']:.3f} s, "
        f"communication {row['projected_comm_s']:.3f} s), ratio {row['ratio']:.3f}"
    )


WIRE_CASES = [c for c in CASES if c[0] != "pipeline"]


@pytest.mark.parametrize(("strategy", "hosts", "rate"), WIRE_CASES, ids=[f"{s}-{n}hosts-{r / 1e6:g}mbit" for s, n, r in WIRE_CASES])
def test_each_rank_sends_two_n_minus_one_over_n_of_the_buffer(
    validation: tuple[dict[str, Any], Lab], strategy: str, hosts: int, rate: float
) -> None:
    ring = 2 * (hosts - 1) / hosts * 2 * MODEL.n_params  # fp16 values
    sent = _row(validation[0], strategy, hosts, rate)["wire_bytes_per_rank"]
    assert len(sent) == hosts
    assert all(FRAMING[0] <= b / ring <= FRAMING[1] for b in sent), [b / ring for b in sent]


def test_replicas_agree_after_ddp_and_diloco(validation: tuple[dict[str, Any], Lab]) -> None:
    """The all-reduces really synchronised the ranks: identical weights (DDP) and outer weights (DiLoCo)."""
    for row in validation[0]["rows"]:
        if row["strategy"] in ("ddp", "diloco", "ddp_accum"):
            assert len(set(row["checksums"])) == 1, row


def test_ddp_ran_with_the_small_buckets(validation: tuple[dict[str, Any], Lab]) -> None:
    sizes = [int(b) for b in validation[0]["model"]["ddp_bucket_bytes"].split(",")]
    assert sum(sizes) == 4 * MODEL.n_params
    assert len(sizes) >= 10 and max(sizes) <= 0.3 * 2**20


def test_the_lab_is_gone_afterwards(validation: tuple[dict[str, Any], Lab]) -> None:
    lab = validation[1]
    assert lab.processes and all(p.poll() is not None for p in lab.processes)
    assert not [p for p in Path("/run/netns").glob(f"{lab.tag}-*")]


def test_a_rank_that_dies_fails_the_run_and_the_lab_is_still_cleaned_up(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="rank 1"), Lab(hosts=2) as lab:
        with swarm(lab.hosts, MODEL, tmp_path, port=29600) as s:
            s.procs[1].kill()
            s.procs[1].wait()
            s.ask("allreduce", steps=1)
    assert all(p.poll() is not None for p in lab.processes)
    assert not [p for p in Path("/run/netns").glob(f"{lab.tag}-*")]
