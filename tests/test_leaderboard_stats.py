"""The leaderboard's statistics, on SQLite (Python's interpolation) and PostgreSQL (percentile_cont).

The service is driven directly over a session, without HTTP (tests/test_server.py covers the
routes). The expected figures are worked out here by hand, and checked against numpy's default
percentile, which is the same linear interpolation between closest ranks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy.orm import Session

from bench.api_models import HiddenUpdate
from bench.server.app import open_server_database
from bench.server.errors import ApiError
from bench.server.repository import Repository, quantile
from bench.server.service import Service
from server_support import db_url, make_doc  # noqa: F401

#: The five RTX 4090 runs the server tests also use (bf16, sustained), and their average power.
VALUES = [120e12, 135e12, 150e12, 152e12, 160e12]
WATTS = [350.0, 380.0, 400.0, 420.0, 440.0]
OWNER = "owner-hash"


@pytest.fixture
def service(db_url: str) -> Iterator[Service]:  # noqa: F811
    store = open_server_database(db_url)
    with Session(store.engine) as session:
        repo = Repository(session)
        repo.add_token(OWNER, "2026-05-01T00:00:00+00:00", "client")
        session.commit()
        yield Service(repo)
    store.engine.dispose()


def submit(service: Service, **kw: object) -> str:
    doc = make_doc(**kw)  # type: ignore[arg-type]
    [answer] = service.store(Service.stage_run(doc, OWNER, "client"))
    assert answer.created
    return doc.run.id


def percentile(service: Service, value: float, *, device: str = "NVIDIA GeForce RTX 4090") -> float | None:
    return service.standing("matmul_flops", "bf16", "sustained", device, value).percentile


# -- quantile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ordered, q, expected",
    [
        ([7.0], 0.1, 7.0),
        ([1.0, 2.0], 0.5, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0.1, 1.3),  # position 0.3: 1 + 0.3 x (2 - 1)
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0.9, 3.7),  # position 2.7: 3 + 0.7 x (4 - 3)
        ([10.0, 20.0, 40.0, 80.0, 160.0], 0.9, 128.0),  # position 3.6: 80 + 0.6 x 80
        ([10.0, 20.0, 40.0, 80.0, 160.0], 0.0, 10.0),
        ([10.0, 20.0, 40.0, 80.0, 160.0], 1.0, 160.0),
    ],
)
def test_quantile_interpolates_between_closest_ranks(ordered: list[float], q: float, expected: float) -> None:
    assert quantile(ordered, q) == pytest.approx(expected, rel=1e-12)


def test_quantile_is_numpys_default_percentile() -> None:
    rng = random.Random(16)
    for n in (1, 2, 3, 7, 10, 31):
        ordered = sorted(rng.uniform(1e9, 1e15) for _ in range(n))
        for q in (0.1, 0.25, 0.5, 0.9):
            assert quantile(ordered, q) == pytest.approx(float(np.percentile(ordered, 100 * q)), rel=1e-12)


# -- one group's statistics -----------------------------------------------------------------


def test_a_group_gives_count_deciles_median_and_median_per_watt(service: Service) -> None:
    for value, watts in zip(VALUES, WATTS):
        submit(service, bf16=value, watts=watts)
    submit(service, bf16=140e12, watts=None)  # counted, but measured no energy
    [row] = service.leaderboard("matmul_flops", "bf16", "sustained").rows
    ordered = sorted([*VALUES, 140e12])  # 120 135 140 150 152 160
    assert row.count == 6
    assert row.p10 == pytest.approx(127.5e12)  # position 0.5: 120 + 0.5 x 15
    assert row.median == pytest.approx(145e12)  # between 140 and 150
    assert row.p90 == pytest.approx(156e12)  # position 4.5: 152 + 0.5 x 8
    assert (row.p10, row.median, row.p90) == pytest.approx([np.percentile(ordered, p) for p in (10, 50, 90)])
    per_watt = sorted(v / w for v, w in zip(VALUES, WATTS))
    assert row.per_watt == pytest.approx(per_watt[2]) and row.per_watt_count == 5


def test_flagged_and_hidden_runs_leave_the_statistics(service: Service) -> None:
    for value in VALUES:
        submit(service, bf16=value)
    submit(service, bf16=900e12)  # 5.4x the datasheet: flagged
    hidden = submit(service, bf16=10e12)
    service.set_hidden(hidden, OWNER, HiddenUpdate(hidden=True))
    [row] = service.leaderboard("matmul_flops", "bf16", "sustained").rows
    assert (row.count, row.median, row.p10, row.p90) == (5, 150e12, pytest.approx(126e12), pytest.approx(156.8e12))
    service.set_hidden(hidden, OWNER, HiddenUpdate(hidden=False))
    [row] = service.leaderboard("matmul_flops", "bf16", "sustained").rows
    assert (row.count, row.median) == (6, pytest.approx(142.5e12))


# -- standing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (121e12, 20.0),  # above one of five
        (135e12, 30.0),  # above one, tied with one: the tie counts half
        (152e12, 70.0),
        (100e12, 0.0),
        (0.0, 0.0),  # zero is a figure too (an idle reading), not a refusal
        (200e12, 100.0),
        (150e12, 50.0),
    ],
)
def test_the_percentile_is_the_share_below_with_ties_counting_half(service: Service, value: float, expected: float) -> None:
    for v in VALUES:
        submit(service, bf16=v)
    standing = service.standing("matmul_flops", "bfloat16", "sustained", "NVIDIA GeForce RTX 4090", value)
    assert (standing.device_model, standing.dtype, standing.variant, standing.count) == (
        "GeForce RTX 4090", "bf16", "sustained", 5
    )  # fmt: skip
    assert standing.percentile == pytest.approx(expected)


def test_the_percentile_is_not_rounded(service: Service) -> None:
    for v in [*VALUES, 140e12]:
        submit(service, bf16=v)
    assert percentile(service, 121e12) == pytest.approx(100 / 6)  # one of six below
    assert percentile(service, 140e12) == pytest.approx(100 * 2.5 / 6)  # two below, one tied


def test_the_percentile_counts_only_the_same_card_dtype_variant_and_visible_unflagged_runs(service: Service) -> None:
    for v in VALUES:
        submit(service, bf16=v)
    submit(service, bf16=900e12)  # flagged: not counted
    hidden = submit(service, bf16=10e12)
    service.set_hidden(hidden, OWNER, HiddenUpdate(hidden=True))
    submit(service, gpu="NVIDIA RTX 6000 Ada Generation", bf16=100e12)  # another card
    assert percentile(service, 121e12) == pytest.approx(20.0)  # still one of five below
    fp32 = service.standing("matmul_flops", "fp32", "burst", "NVIDIA GeForce RTX 4090", 70e12)
    assert (fp32.count, fp32.percentile) == (5, pytest.approx(40.0))  # fp32 burst is bf16 / 2: 60 and 67.5 below
    assert service.standing("matmul_flops", "bf16", None, "RTX 4090", 1.0).count == 0  # no variant is its own key


def test_figures_differing_in_any_one_key_are_not_counted(service: Service) -> None:
    """Neighbours of the 4090's bf16 sustained figures, each differing in one key, on both sides of it
    in text order (so that a comparison other than equality would let them in), all below 121 TFLOP/s."""
    for v in VALUES:
        submit(service, bf16=v)
    mine = make_doc()
    base = mine.measurements[0]
    neighbours = [
        base.model_copy(update={"dtype": None}),  # "" < "bf16"
        base.model_copy(update={"dtype": "fp16"}),
        base.model_copy(update={"variant": "burst"}),  # < "sustained"
        base.model_copy(update={"variant": "wide"}),
        base.model_copy(update={"metric": "allreduce_busbw", "unit": "B/s"}),  # < "matmul_flops"
        base.model_copy(update={"metric": "train_tokens_per_s", "unit": "tokens/s"}),
    ]
    neighbours = [m.model_copy(update={"samples": [1e9]}) for m in neighbours]
    service.store(Service.stage_run(mine.model_copy(update={"measurements": neighbours}), OWNER, "client"))
    for gpu in ("NVIDIA GeForce RTX 3090", "NVIDIA RTX 6000 Ada Generation"):  # models either side of the 4090
        submit(service, gpu=gpu, bf16=1e12)
    standing = service.standing("matmul_flops", "bf16", "sustained", "NVIDIA GeForce RTX 4090", 121e12)
    assert (standing.count, standing.percentile) == (5, pytest.approx(20.0))


def test_no_figures_give_no_percentile(service: Service) -> None:
    standing = service.standing("matmul_flops", "bf16", "sustained", "NVIDIA GeForce RTX 4090", 150e12)
    assert (standing.count, standing.percentile) == (0, None)
    assert service.repo.standing("matmul_flops", "bf16", "sustained", "GeForce RTX 4090", 150e12) == (0, 0.0)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_value_that_is_not_a_finite_non_negative_number_is_refused(service: Service, value: float) -> None:
    with pytest.raises(ApiError) as caught:
        percentile(service, value)
    assert (caught.value.status, caught.value.field) == (422, "value")
