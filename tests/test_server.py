"""The results API through a real uvicorn on loopback, on SQLite and on PostgreSQL.

Every refusal must be a 4xx JSON error naming the field, and leave nothing stored.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import asyncio
import statistics
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bench.api_models import MAX_BATCH_RUNS, MAX_DOCUMENT_BYTES, BatchSubmitted, Leaderboard, RunPage, SubmittedRun
from bench.document import RunDocument
from bench.errors import StoreError
from bench.hardware import find_card
from bench.server.app import create_app
from bench.server.errors import ApiError
from bench.server.ingest import PendingRequest
from bench.server.ratelimit import Rate, RateLimits
from bench.server.repository import Repository
from bench.server.service import Service
from bench.store import Store
from server_support import LIFTED, bearer, count, db_url, live_server, make_doc, new_token  # noqa: F401

JSON = {"Content-Type": "application/json"}


def _post_run(base: str, token: str, doc: RunDocument | dict | str | bytes, headers: dict | None = None) -> httpx.Response:
    if isinstance(doc, RunDocument):
        body: str | bytes = doc.to_json()
    elif isinstance(doc, dict):
        body = json.dumps(doc)  # NaN and Infinity pass through as JSON literals, as a careless client sends them
    else:
        body = doc
    return httpx.post(f"{base}/api/v1/runs", content=body, headers={**bearer(token), **JSON, **(headers or {})})


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    return error


@pytest.fixture
def served(db_url: str):  # noqa: F811
    with live_server(create_app(db_url, limits=LIFTED)) as base:
        yield base, db_url


def test_a_run_is_stored_once_and_a_resubmission_answers_with_its_id(served) -> None:
    base, url = served
    token, doc = new_token(base), make_doc()
    first = _post_run(base, token, doc)
    assert first.status_code == 201 and first.json() == {"id": doc.run.id, "created": True, "flagged_reason": None}
    again = _post_run(base, token, gzip.compress(doc.to_json().encode()), {"Content-Encoding": "gzip"})
    assert again.status_code == 200 and again.json()["id"] == doc.run.id and again.json()["created"] is False
    assert (count(url, "runs"), count(url, "submissions"), count(url, "figures")) == (1, 1, len(doc.measurements))
    stored = SubmittedRun.model_validate(httpx.get(f"{base}/api/v1/runs/{doc.run.id}").json())
    assert stored.document == doc  # through Store's mapping and back, without loss


def test_a_different_document_under_a_stored_id_is_a_conflict(served) -> None:
    base, url = served
    token, doc = new_token(base), make_doc()
    assert _post_run(base, token, doc).status_code == 201
    changed = doc.model_copy(update={"run": doc.run.model_copy(update={"tool_version": "9.9"})})
    assert _error(_post_run(base, token, changed), 409)["field"] == "run.id"
    assert count(url, "runs") == 1


def _bad(mutate) -> dict:  # type: ignore[no-untyped-def]
    raw = json.loads(make_doc().to_json())
    mutate(raw)
    return raw


REFUSALS = [
    ("unknown metric", _bad(lambda d: d["measurements"][0].update(metric="gflops")), "measurements.0.metric"),
    ("wrong unit", _bad(lambda d: d["measurements"][1].update(unit="B/s")), "measurements.1.unit"),
    ("NaN sample", _bad(lambda d: d["measurements"][0].update(samples=[1e12, float("nan")])), "measurements.0.samples"),
    ("negative sample", _bad(lambda d: d["measurements"][2].update(samples=[-1.0])), "measurements.2.samples"),
    ("infinite energy", _bad(lambda d: d["measurements"][0]["energy"].update(joules=float("inf"))),
     "measurements.0.energy.joules"),
    ("negative memory", _bad(lambda d: d["devices"][1].update(memory_bytes=-5)), "devices.1.memory_bytes"),
    ("negative param", _bad(lambda d: d["measurements"][0]["params"].update(m=-1)), "measurements.0.params.m"),
    ("huge integer", _bad(lambda d: d["devices"][1].update(memory_bytes=2**70)), "devices.1.memory_bytes"),
    ("NUL in a name", _bad(lambda d: d["devices"][1].update(name="RTX\u00004090")), "devices.1.name"),
    ("device twice", _bad(lambda d: d["devices"].append(dict(d["devices"][1]))), "devices.2.id"),
    ("newer schema", _bad(lambda d: d.update(schema_version=2)), "schema_version"),
    ("unknown field", _bad(lambda d: d["run"].update(owner="me")), "run.owner"),
    ("missing run", _bad(lambda d: d.pop("run")), "run"),
    # before year 1 in UTC: schemathesis found this one as a 500 (astimezone's OverflowError)
    ("time before year 1", _bad(lambda d: d["run"].update(finished_at="0001-01-01T00:01:00+04:05")), "run.finished_at"),
]  # fmt: skip


@pytest.mark.parametrize("raw, field", [pytest.param(raw, field, id=name) for name, raw, field in REFUSALS])
def test_a_bad_document_is_refused_naming_the_field_and_nothing_is_stored(served, raw: dict, field: str) -> None:
    base, url = served
    assert _error(_post_run(base, new_token(base), raw), 422)["field"] == field
    assert count(url, "runs") == 0 and count(url, "submissions") == 0 and count(url, "figures") == 0


def test_bodies_are_limited_before_and_after_gzip(served) -> None:
    base, url = served
    token = new_token(base)
    padded = json.loads(make_doc().to_json())
    padded["run"]["command"] = "x" * MAX_DOCUMENT_BYTES  # valid JSON, just too big
    text = json.dumps(padded).encode()
    assert _error(_post_run(base, token, text), 413)["field"] == "body"
    bomb = gzip.compress(text)
    assert len(bomb) < MAX_DOCUMENT_BYTES / 100  # small on the wire, too big once inflated
    assert _error(_post_run(base, token, bomb, {"Content-Encoding": "gzip"}), 413)["field"] == "body"
    assert _error(_post_run(base, token, b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}), 400)["field"] == "body"
    assert _error(_post_run(base, token, b"{}", {"Content-Encoding": "br"}), 415)["field"] == "Content-Encoding"
    assert _error(_post_run(base, token, b"{not json"), 422)["field"] == "body"
    assert count(url, "runs") == 0


def test_writes_need_a_token_the_server_issued(served) -> None:
    base, url = served
    doc = make_doc()
    refused = httpx.post(f"{base}/api/v1/runs", content=doc.to_json(), headers=JSON)
    assert _error(refused, 401)["field"] == "Authorization"
    assert _error(_post_run(base, "made-up", doc), 401)["field"] == "Authorization"
    assert count(url, "runs") == 0
    assert count(url, "tokens") == 0
    token = new_token(base)
    assert len(token) >= 40 and count(url, "tokens") == 1
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM tokens").scalars().all()
    engine.dispose()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]  # only the hash is kept


def test_an_implausible_figure_is_stored_flagged_and_left_out_of_aggregates(served) -> None:
    base, url = served
    token = new_token(base)
    for value in (140e12, 150e12, 160e12):
        assert _post_run(base, token, make_doc(bf16=value)).status_code == 201
    bogus = make_doc(bf16=900e12)  # 5.4x the RTX 4090's 165 TFLOP/s
    answer = _post_run(base, token, bogus)
    assert answer.status_code == 201
    reason = answer.json()["flagged_reason"]
    assert "measurements.0" in reason and "GeForce RTX 4090" in reason and "5.4x" in reason
    assert httpx.get(f"{base}/api/v1/runs/{bogus.run.id}").json()["flagged_reason"] == reason
    board = Leaderboard.model_validate(
        httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    )
    [row] = board.rows
    assert row.count == 3 and row.median == 150e12 and row.p90 < 900e12
    assert count(url, "runs") == 4


def test_a_run_measured_beside_other_work_is_stored_flagged_and_left_out(served) -> None:
    base, _ = served
    token = new_token(base)
    assert _post_run(base, token, make_doc(bf16=150e12)).status_code == 201
    shared = make_doc(bf16=40e12)
    shared.measurements[0] = shared.measurements[0].model_copy(
        update={"params": {**shared.measurements[0].params, "background_cpu": 0.6, "steal_cpu": 0.0}}
    )
    quiet_enough = make_doc(bf16=160e12)
    quiet_enough.measurements[0] = quiet_enough.measurements[0].model_copy(
        update={"params": {**quiet_enough.measurements[0].params, "background_cpu": 0.1}}
    )
    answer = _post_run(base, token, shared)
    assert answer.status_code == 201
    assert answer.json()["flagged_reason"] == "measurements.0: compute on cuda:0 ran while other processes used 60% of the CPU"
    assert _post_run(base, token, quiet_enough).json()["flagged_reason"] is None
    board = Leaderboard.model_validate(
        httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    )
    [row] = board.rows
    assert row.count == 2 and row.median == 155e12


def test_the_leaderboard_gives_percentiles_per_watt_and_per_dollar(served) -> None:
    """The same figures on both engines: PostgreSQL's percentile_cont and the SQLite path agree."""
    base, _ = served
    token = new_token(base)
    rtx = [120e12, 135e12, 150e12, 152e12, 160e12]
    watts = [350.0, 380.0, 400.0, 420.0, 440.0]
    for value, w in zip(rtx, watts):
        _post_run(base, token, make_doc(bf16=value, watts=w))
    for value in (250e12, 280e12):
        _post_run(base, token, make_doc(gpu="NVIDIA RTX 5000 Ada Generation", bf16=value, watts=None))
    board = Leaderboard.model_validate(
        httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bfloat16"}).json()
    )
    assert (board.unit, board.dtype) == ("FLOP/s", "bf16")
    assert [r.device_model for r in board.rows] == ["NVIDIA RTX 5000 Ada Generation", "GeForce RTX 4090"]
    ada, rtx_row = board.rows
    deciles = statistics.quantiles(rtx, n=10, method="inclusive")
    assert rtx_row.count == 5 and rtx_row.variant == "sustained"
    assert rtx_row.median == pytest.approx(statistics.median(rtx))
    assert (rtx_row.p10, rtx_row.p90) == (pytest.approx(deciles[0]), pytest.approx(deciles[-1]))
    per_watt = statistics.median(v / w for v, w in zip(rtx, watts))
    assert rtx_row.per_watt == pytest.approx(per_watt) and rtx_row.per_watt_count == 5
    card = find_card("RTX 4090")
    assert card is not None and rtx_row.reference is True and rtx_row.launch_price_usd == card.launch_price_usd == 1599
    assert rtx_row.per_dollar == pytest.approx(rtx_row.median / card.launch_price_usd)
    assert ada.reference is False and ada.per_dollar is None and ada.per_watt is None and ada.count == 2
    only_burst = httpx.get(
        f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "fp32", "variant": "burst"}
    ).json()
    assert {r["variant"] for r in only_burst["rows"]} == {"burst"}
    assert {r["device_model"]: r["median"] for r in only_burst["rows"]}["GeForce RTX 4090"] == 75e12
    standing = httpx.get(
        f"{base}/api/v1/standing",
        params={"metric": "matmul_flops", "dtype": "bf16", "variant": "sustained", "device": "NVIDIA GeForce RTX 4090",
                "value": 150e12},  # fmt: skip
    ).json()
    assert standing["count"] == 5 and standing["percentile"] == pytest.approx(50.0)
    unknown = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "tflops"})
    assert _error(unknown, 422)["field"] == "metric"


def test_a_board_read_recomputes_only_the_groups_written_since_the_last_one(served) -> None:
    base, url = served
    token = new_token(base)
    engine = create_engine(url)

    def board() -> dict[str, tuple[int, float]]:
        rows = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()["rows"]
        return {r["device_model"]: (r["count"], r["median"]) for r in rows}

    def stale() -> list[str]:
        query = text(
            "SELECT device_model FROM board_groups WHERE metric = 'matmul_flops' AND dtype = 'bf16' "
            "AND version > computed_version"
        )
        with engine.connect() as conn:
            return sorted(conn.scalars(query))

    _post_run(base, token, make_doc(bf16=150e12))
    _post_run(base, token, make_doc(gpu="NVIDIA RTX 5000 Ada Generation", bf16=250e12))
    assert stale() == ["GeForce RTX 4090", "NVIDIA RTX 5000 Ada Generation"]
    assert board() == {"GeForce RTX 4090": (1, 150e12), "NVIDIA RTX 5000 Ada Generation": (1, 250e12)}
    assert stale() == []
    _post_run(base, token, make_doc(bf16=160e12))
    assert stale() == ["GeForce RTX 4090"]
    assert board() == {"GeForce RTX 4090": (2, 155e12), "NVIDIA RTX 5000 Ada Generation": (1, 250e12)}
    engine.dispose()


def test_only_the_owner_hides_or_deletes_and_hidden_runs_leave_every_listing(served) -> None:
    base, url = served
    owner, other = new_token(base), new_token(base)
    doc, kept = make_doc(), make_doc(bf16=100e12)
    _post_run(base, owner, doc)
    _post_run(base, owner, kept)
    run = f"{base}/api/v1/runs/{doc.run.id}"
    assert _error(httpx.patch(run, json={"hidden": True}, headers=bearer(other)), 403)["field"] == "Authorization"
    assert _error(httpx.delete(run, headers=bearer(other)), 403)["field"] == "Authorization"
    assert _error(httpx.delete(run), 401)["field"] == "Authorization"
    assert httpx.patch(run, json={"hidden": True}, headers=bearer(owner)).json()["hidden"] is True

    def visible() -> tuple[set[str], int, int]:
        listed = {r["id"] for r in httpx.get(f"{base}/api/v1/runs").json()["runs"]}
        board = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
        exported = len(httpx.get(f"{base}/api/v1/export").text.splitlines())
        return listed, board["rows"][0]["count"], exported

    assert visible() == ({kept.run.id}, 1, 1)
    assert _error(httpx.get(run, headers=bearer(other)), 404)["field"] == "run_id"
    assert httpx.get(run, headers=bearer(owner)).json()["hidden"] is True
    httpx.patch(run, json={"hidden": False}, headers=bearer(owner))
    assert visible() == ({kept.run.id, doc.run.id}, 2, 2)
    assert httpx.delete(run, headers=bearer(owner)).status_code == 204
    assert _error(httpx.get(run, headers=bearer(owner)), 404)["field"] == "run_id"
    assert count(url, "runs") == 1
    assert count(url, "measurements") == count(url, "figures") == len(kept.measurements)


def test_listing_filters_and_pages(served) -> None:
    base, _ = served
    token = new_token(base)
    docs = [make_doc(tool_version="0.1.0") for _ in range(3)]
    docs += [make_doc(gpu="NVIDIA H100 80GB HBM3", bf16=700e12, watts=650.0, tool_version="0.2.0")]
    for doc in docs:
        _post_run(base, token, doc)
    runs = f"{base}/api/v1/runs"

    def ids(**params: object) -> list[str]:
        return [r["id"] for r in httpx.get(runs, params=params).json()["runs"]]

    assert ids(device="H100 SXM") == ids(device="NVIDIA H100 80GB HBM3") == [docs[3].run.id]
    assert set(ids(tool_version="0.1.0")) == {d.run.id for d in docs[:3]}
    assert len(ids(metric="mem_triad_bandwidth")) == 4 and ids(metric="matmul_flops", dtype="fp16") == []
    first = RunPage.model_validate(httpx.get(runs, params={"limit": 3}).json())
    rest = RunPage.model_validate(httpx.get(runs, params={"limit": 3, "offset": first.next_offset}).json())
    assert first.next_offset == 3 and rest.next_offset is None
    assert [r.id for r in first.runs + rest.runs] == [d.run.id for d in reversed(docs)]  # newest first
    assert first.runs[0].device_models == ["AMD Ryzen 9 7950X 16-Core Processor", "H100 SXM"]
    assert _error(httpx.get(runs, params={"limit": 0}), 422)["field"] == "limit"
    assert _error(httpx.get(f"{base}/api/v1/runs/not-hex"), 422)["field"] == "run_id"


def test_the_export_holds_every_visible_run_as_csv_and_json_lines(served) -> None:
    base, _ = served
    token = new_token(base)
    docs = [make_doc(bf16=v) for v in (120e12, 900e12)]
    for doc in docs:
        _post_run(base, token, doc)
    lines = httpx.get(f"{base}/api/v1/export", params={"format": "jsonl"}).text.splitlines()
    exported = {line["id"]: line for line in map(json.loads, lines)}
    assert set(exported) == {d.run.id for d in docs}
    for doc in docs:
        assert RunDocument.model_validate(exported[doc.run.id]["document"]) == doc
    assert exported[docs[0].run.id]["flagged_reason"] is None
    assert exported[docs[1].run.id]["flagged_reason"] == (
        "measurements.0: matmul_flops bf16 9e+14 FLOP/s is 5.4x the GeForce RTX 4090 datasheet figure (1.652e+14 FLOP/s); "
        "measurements.1: matmul_flops fp32 4.5e+14 FLOP/s is 5.4x the GeForce RTX 4090 datasheet figure (8.26e+13 FLOP/s)"
    )
    response = httpx.get(f"{base}/api/v1/export", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == sum(len(d.measurements) for d in docs)
    bf16 = {r["run_id"]: float(r["value"]) for r in rows if r["dtype"] == "bf16"}
    assert bf16 == {docs[0].run.id: 120e12, docs[1].run.id: 900e12}
    assert {r["device_model"] for r in rows if r["device"] == "cuda:0"} == {"GeForce RTX 4090"}


def test_a_batch_is_stored_whole_or_not_at_all(served) -> None:
    base, url = served
    token = new_token(base)
    stored, new = make_doc(), [make_doc(), make_doc()]
    _post_run(base, token, stored)
    batch = f"{base}/api/v1/runs/batch"
    bad = json.loads(make_doc().to_json())
    bad["measurements"][0]["unit"] = "B/s"
    body = {"runs": [json.loads(d.to_json()) for d in (*new, stored)] + [bad]}
    assert _error(httpx.post(batch, json=body, headers=bearer(token)), 422)["field"] == "runs.3.measurements.0.unit"
    twice = {"runs": [json.loads(new[0].to_json())] * 2}
    assert _error(httpx.post(batch, json=twice, headers=bearer(token)), 422)["field"] == "runs.1.run.id"
    assert count(url, "runs") == 1
    body["runs"].pop()
    answer = httpx.post(batch, json=body, headers=bearer(token))
    assert answer.status_code == 201
    results = BatchSubmitted.model_validate(answer.json()).results
    assert [(r.id, r.created) for r in results] == [(new[0].run.id, True), (new[1].run.id, True), (stored.run.id, False)]
    assert httpx.post(batch, json=body, headers=bearer(token)).status_code == 200
    assert count(url, "runs") == count(url, "submissions") == 3


def test_rate_limits_answer_429_naming_what_was_limited(tmp_path: Path) -> None:
    limits = RateLimits(requests=Rate(1, 20), submissions=Rate(1, 2), tokens=Rate(1, 1))
    url = f"sqlite:///{tmp_path / 'limited.db'}"
    with live_server(create_app(url, limits=limits)) as base:
        token = new_token(base)
        assert _error(httpx.post(f"{base}/api/v1/tokens"), 429)["field"] == "client"
        assert [_post_run(base, token, make_doc()).status_code for _ in range(2)] == [201, 201]
        limited = _post_run(base, token, make_doc())
        assert _error(limited, 429)["field"] == "Authorization"
        assert int(limited.headers["Retry-After"]) >= 1
        assert count(url, "runs") == 2
        answers = [httpx.get(f"{base}/api/v1/runs", params={"limit": 1}) for _ in range(20)]
        assert [a.status_code for a in answers].count(200) == 15  # a burst of 20, five spent above
        assert _error(answers[-1], 429)["field"] == "client"


def test_concurrent_resubmissions_of_one_run_store_it_once(postgres_url: str) -> None:
    with live_server(create_app(postgres_url, limits=LIFTED)) as base:
        token, doc = new_token(base), make_doc()
        body = gzip.compress(doc.to_json().encode())
        barrier = threading.Barrier(12)
        statuses: list[int] = []

        def send() -> None:
            with httpx.Client() as http:
                barrier.wait()
                response = http.post(f"{base}/api/v1/runs", content=body,
                                     headers={**bearer(token), **JSON, "Content-Encoding": "gzip"})  # fmt: skip
                statuses.append(response.status_code)

        threads = [threading.Thread(target=send) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [200] * 11 + [201]
    assert count(postgres_url, "runs") == count(postgres_url, "submissions") == 1


def test_a_write_that_fails_midway_leaves_nothing_and_answers_503(tmp_path: Path) -> None:
    """The writer's session here is one whose commit finds the database gone after the inserts."""
    url = f"sqlite:///{tmp_path / 'server.db'}"
    app = create_app(url, limits=LIFTED)
    writer = app.state.flopwatt.writer

    class LostConnection(Session):
        def commit(self) -> None:
            self.flush()
            raise OperationalError("COMMIT", {}, ConnectionResetError("server closed the connection"))

    with live_server(app) as base:
        token = new_token(base)
        writer.session = LostConnection
        answer = _post_run(base, token, make_doc())
        assert _error(answer, 503)["field"] == "database" and answer.headers["Retry-After"]
        writer.session = Session
        assert count(url, "runs") == count(url, "measurements") == count(url, "figures") == 0
        assert _post_run(base, token, make_doc()).status_code == 201


def test_the_api_is_described_at_docs(tmp_path: Path) -> None:
    with live_server(create_app(f"sqlite:///{tmp_path / 'd.db'}")) as base:
        assert "swagger" in httpx.get(f"{base}/docs").text.lower()
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        assert {"/api/v1/tokens", "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/batch",
                "/api/v1/leaderboard", "/api/v1/standing", "/api/v1/export"} <= set(paths)  # fmt: skip
        assert _error(httpx.get(f"{base}/api/v2/nothing"), 404)["field"] == "path"


def test_a_database_without_the_server_tables_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = Store(url).engine
    with engine.begin() as conn:
        for table in ("figures", "submissions", "tokens"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
    with pytest.raises(StoreError, match="lacks the server tables"):
        create_app(url)


def test_a_group_that_clashes_answers_each_request_as_if_it_came_alone(db_url: str) -> None:  # noqa: F811
    """Four requests written as one group: one resubmits a stored run, one sends other content under
    a stored id. The group rolls back, and each request gets the answer it would have had alone."""
    app = create_app(db_url, limits=LIFTED)
    state = app.state.flopwatt
    with Session(state.engine) as session:
        Repository(session).add_token("owner", "2026-05-01T00:00:00+00:00", "client")
        session.commit()
    stored, fresh, other = make_doc(), make_doc(), make_doc()
    changed = stored.model_copy(update={"host": stored.host.model_copy(update={"cpu_model": "another CPU"})})

    async def scenario() -> list:
        assert (await state.writer.store(Service.stage_run(stored, "owner", "client")))[0].created
        loop = asyncio.get_running_loop()
        group = [PendingRequest(Service.stage_run(doc, "owner", "client"), loop.create_future(), loop)
                 for doc in (fresh, stored, changed, other)]  # fmt: skip
        await asyncio.to_thread(state.writer.write_group, group)
        return await asyncio.gather(*(request.future for request in group), return_exceptions=True)

    try:
        answers = asyncio.run(scenario())
    finally:
        state.writer.stop()
    assert answers[0][0].created and answers[3][0].created
    assert answers[1][0].id == stored.run.id and not answers[1][0].created
    assert isinstance(answers[2], ApiError) and answers[2].status == 409 and answers[2].field == "run.id"
    assert count(db_url, "runs") == count(db_url, "submissions") == 3


def test_changing_or_deleting_a_run_that_does_not_exist_is_a_404(served) -> None:
    base, _ = served
    token, missing = new_token(base), make_doc().run.id
    run = f"{base}/api/v1/runs/{missing}"
    assert _error(httpx.patch(run, json={"hidden": True}, headers=bearer(token)), 404) == {
        "status": 404, "field": "run_id", "message": f"no run {missing}"
    }  # fmt: skip
    assert _error(httpx.delete(run, headers=bearer(token)), 404)["field"] == "run_id"


def test_a_batch_holds_at_most_max_batch_runs(served) -> None:
    base, url = served
    token = new_token(base)
    body = {"runs": [json.loads(make_doc().to_json()) for _ in range(MAX_BATCH_RUNS + 1)]}
    assert MAX_BATCH_RUNS == 50
    assert _error(httpx.post(f"{base}/api/v1/runs/batch", json=body, headers=bearer(token)), 422)["field"] == "runs"
    assert count(url, "runs") == 0
    body["runs"].pop()
    assert httpx.post(f"{base}/api/v1/runs/batch", json=body, headers=bearer(token)).status_code == 201
    assert count(url, "runs") == MAX_BATCH_RUNS


def test_a_batch_costs_one_submission_per_run(tmp_path: Path) -> None:
    limits = RateLimits(requests=Rate(6e6, 1e6), submissions=Rate(1, 3), tokens=Rate(6e6, 1e6))
    url = f"sqlite:///{tmp_path / 'limited.db'}"
    with live_server(create_app(url, limits=limits)) as base:
        token = new_token(base)
        batch = f"{base}/api/v1/runs/batch"

        def two() -> dict:
            return {"runs": [json.loads(make_doc().to_json()) for _ in range(2)]}

        assert httpx.post(batch, json=two(), headers=bearer(token)).status_code == 201
        limited = httpx.post(batch, json=two(), headers=bearer(token))  # 2 runs, 1 left in the burst of 3
        assert _error(limited, 429)["field"] == "Authorization" and int(limited.headers["Retry-After"]) >= 1
        assert _post_run(base, token, make_doc()).status_code == 201  # the one left
        assert count(url, "runs") == 3
