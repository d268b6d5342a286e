"""Results server at scale, against PostgreSQL: ingest rate over HTTP, leaderboard latency at 100k runs.

Targets (issue 6): at least 300 runs/s ingested on a 2-core machine; the leaderboard query over
100,000 stored runs under 50 ms at p95.

- Ingest: a real uvicorn subprocess (the production app, as `flopwatt serve --workers N` runs it)
  and concurrent HTTP clients posting gzip-compressed run documents, each under its own token;
  every response must be 201. One run per request (POST /api/v1/runs) on one and on two worker
  processes (one per core, as a deployment runs it), then batches (POST /api/v1/runs/batch, what
  `submit --pending` and bulk uploaders use) on one.
- Leaderboard: the database is filled to the target count of runs with COPY (copies of the rows
  the server itself writes for TEMPLATE_RUNS synthetic runs), analysed as autovacuum would. Then
  reads are timed as the repository serves them (board_groups, recomputing stale groups first):
  the first after the load, reads of an idle board, and reads each right after a few new runs;
  and the endpoint over HTTP.

Needs FLOPWATT_BENCH_PG_URL or FLOPWATT_TEST_PG_URL: a role that may create databases. A fresh
database is created and dropped afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import httpx
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from bench.api_models import MAX_BATCH_RUNS
from bench.document import RunDocument, RunInfo
from bench.hardware import CARDS, peak_flops
from bench.orm import Base
from bench.server.app import create_app
from bench.server.settings import DB_ENV
from bench.server.ratelimit import Rate, RateLimits
from bench.server.repository import Repository
from bench.server.service import Service, figures_of, hash_token
from bench.store import PROJECT_ROOT, Store, document_rows
from probes.inventory import Device, Host
from probes.measurement import Energy, Measurement

_TESTS = PROJECT_ROOT / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from pg import fresh_database  # noqa: E402  (shared with the tests' postgres_url fixture)
from server_support import free_port, wait_until_answering  # noqa: E402  (the tests' server helpers)

INGEST_RUNS = 3000
INGEST_CLIENTS = 32
BATCH_CLIENTS = 4
BOARD_RUNS = 100_000
BOARD_QUERIES = 100
#: Runs written before each timed read in the read-after-writes case.
WRITES_BETWEEN_READS = 5
TEMPLATE_RUNS = 2000
INGEST_TARGET = 300.0
BOARD_P95_TARGET_MS = 50.0
#: GPUs outside the datasheet table, so the leaderboard also groups names it cannot match.
OTHER_GPUS = ("NVIDIA GeForce RTX 2060", "NVIDIA GeForce RTX 3050", "Tesla T4", "NVIDIA GeForce GTX 1660 SUPER")
CPUS = ("AMD Ryzen 9 7950X 16-Core Processor", "Intel(R) Core(TM) i7-12700K", "AMD EPYC 7763 64-Core Processor")


def run(pg_url: str | None = None, *, ingest_runs: int = INGEST_RUNS, board_runs: int = BOARD_RUNS) -> dict:
    admin = pg_url or os.environ.get("FLOPWATT_BENCH_PG_URL") or os.environ.get("FLOPWATT_TEST_PG_URL")
    if not admin:
        return {"skipped": "no PostgreSQL: set FLOPWATT_BENCH_PG_URL or FLOPWATT_TEST_PG_URL"}
    rng = random.Random(6)
    with fresh_database(admin, "flopwatt_bench") as url:
        Store(url).engine.dispose()  # creates schema.sql
        ingest = _ingest(url, ingest_runs, rng)
        board = _leaderboard(url, board_runs, rng)
    return {
        "ingest": ingest,
        "leaderboard": board,
        "pass": {
            "ingest_one_run_per_request": ingest["runs_per_request_2_workers"]["runs_per_s"] >= INGEST_TARGET,
            "ingest_batches": ingest["batches"]["runs_per_s"] >= INGEST_TARGET,
            "leaderboard_idle": board["idle_p95_ms"] < BOARD_P95_TARGET_MS,
            "leaderboard_after_writes": board["after_writes_p95_ms"] < BOARD_P95_TARGET_MS,
        },
    }


# -- synthetic runs --------------------------------------------------------------------------


def synthetic_run(rng: random.Random, when: datetime) -> RunDocument:
    """A plausible GPU machine's run: matmul per dtype (burst, and sustained bf16 with energy), memory, PCIe."""
    card = rng.choice(CARDS) if rng.random() < 0.8 else None
    gpu = card.name if card else rng.choice(OTHER_GPUS)
    cpu = rng.choice(CPUS)
    measurements = []
    for dtype in ("fp32", "tf32", "fp16", "bf16"):
        peak = (peak_flops(card, dtype) if card else None) or rng.uniform(5e12, 60e12)
        measurements.append(_figure(rng, "compute", "matmul_flops", "FLOP/s", peak * rng.uniform(0.4, 0.9), "cuda:0",
                                    dtype=dtype, variant="burst"))  # fmt: skip
    peak = (peak_flops(card, "bf16") if card else None) or rng.uniform(10e12, 60e12)
    watts = (card.board_power_w if card else 250.0) * rng.uniform(0.6, 1.0)
    energy = Energy(method="nvml-counter", joules=watts * 10, watts_avg=watts, watts_peak=watts * 1.1, seconds=10.0)
    measurements.append(_figure(rng, "compute", "matmul_flops", "FLOP/s", peak * rng.uniform(0.35, 0.8), "cuda:0",
                                dtype="bf16", variant="sustained", energy=energy))  # fmt: skip
    bandwidth = card.memory_bandwidth if card else 400e9
    measurements.append(_figure(rng, "memory", "mem_copy_bandwidth", "B/s", bandwidth * rng.uniform(0.6, 0.9), "cuda:0"))
    measurements.append(_figure(rng, "memory", "h2d_bandwidth", "B/s", rng.uniform(10e9, 25e9), "cuda:0", variant="pinned"))
    measurements.append(_figure(rng, "memory", "mem_copy_bandwidth", "B/s", rng.uniform(20e9, 80e9), "cpu"))
    measurements.append(_figure(rng, "memory", "mem_triad_bandwidth", "B/s", rng.uniform(20e9, 90e9), "cpu"))
    return RunDocument(
        run=RunInfo(id=uuid.UUID(int=rng.getrandbits(128)).hex, started_at=when, finished_at=when + timedelta(minutes=3),
                    tool_version="0.1.0", command="probe"),  # fmt: skip
        host=Host(os="Linux", os_release="6.8.0", arch="x86_64", python="3.11.7", torch="2.13.0", cpu_model=cpu,
                  physical_cores=16, logical_cores=32, ram_bytes=64 * 2**30),  # fmt: skip
        devices=[
            Device(id="cpu", kind="cpu", name=cpu, memory_bytes=64 * 2**30),
            Device(id="cuda:0", kind="cuda", name=f"NVIDIA {gpu}" if card else gpu,
                   memory_bytes=card.memory_bytes if card else 12 * 2**30, sm_count=80, compute_capability="8.9"),  # fmt: skip
        ],
        measurements=measurements,
    )


def _figure(
    rng: random.Random, probe: str, metric: str, unit: str, centre: float, device: str, **kw: object
) -> Measurement:
    samples = [centre * rng.uniform(0.97, 1.03) for _ in range(5)]
    return Measurement(probe=probe, metric=metric, unit=unit, samples=samples, device=device,
                       params={"bytes": 2**30}, **kw)  # type: ignore[arg-type]  # fmt: skip


# -- ingest over HTTP ------------------------------------------------------------------------


def _ingest(url: str, count: int, rng: random.Random) -> dict:
    """Runs per second through the real server: one run per request on one and on two worker
    processes, then batches of MAX_BATCH_RUNS on one.

    The load comes from the standard library's http.client (keep-alive, no retries): it costs a
    third of httpx's CPU per request, and on two cores the load generator competes with the server.
    """
    now = datetime.now(timezone.utc)
    docs = [synthetic_run(rng, now - timedelta(seconds=i)).to_json() for i in range(3 * count)]
    single = [gzip.compress(d.encode()) for d in docs[:count]]
    single_again = [gzip.compress(d.encode()) for d in docs[count : 2 * count]]
    batches = [
        gzip.compress(('{"runs": [' + ",".join(docs[i : i + MAX_BATCH_RUNS]) + "]}").encode())
        for i in range(2 * count, 3 * count, MAX_BATCH_RUNS)
    ]
    results = {}
    for name, bodies, path, workers, clients in (
        ("runs_per_request", single, "/api/v1/runs", 1, INGEST_CLIENTS),
        ("runs_per_request_2_workers", single_again, "/api/v1/runs", 2, INGEST_CLIENTS),
        ("batches", batches, "/api/v1/runs/batch", 1, BATCH_CLIENTS),
    ):
        with serving(url, workers=workers) as base:
            load = _load(int(base.rsplit(":", 1)[1]), path, bodies, clients=clients)
        results[name] = {**load, "workers": workers, "runs_per_s": round(count / load["seconds"], 1)}
    results["batches"]["runs_per_batch"] = MAX_BATCH_RUNS
    return {**results, "target_runs_per_s": INGEST_TARGET}


def _load(port: int, path: str, bodies: list[bytes], clients: int) -> dict:
    """POST every body from `clients` threads, each over one keep-alive connection with its own token."""
    tokens = [_post(http.client.HTTPConnection("127.0.0.1", port), "/api/v1/tokens", b"", {})[1] for _ in range(clients)]
    statuses: list[int] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {json.loads(tokens[index])['token']}", "Content-Type": "application/json",
                   "Content-Encoding": "gzip"}  # fmt: skip
        got = [_post(connection, path, body, headers)[0] for body in bodies[index::clients]]
        connection.close()
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"requests": len(bodies), "clients": clients, "seconds": round(elapsed, 2),
            "non_201": sum(1 for s in statuses if s != 201)}  # fmt: skip


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def app_without_rate_limits() -> FastAPI:
    """The app `flopwatt serve` runs, with rate limits lifted for load generation (a uvicorn factory)."""
    lift = Rate(per_minute=6e6, burst=1e6)
    return create_app(os.environ[DB_ENV], limits=RateLimits(requests=lift, submissions=lift, tokens=lift), secret=b"bench")


#: The server as `flopwatt serve --workers N` runs it, on app_without_rate_limits.
SERVER_CODE = """
import os, sys, uvicorn
from bench.server.settings import DB_ENV
os.environ[DB_ENV] = sys.argv[1]
uvicorn.run("benchmarks.server_bench:app_without_rate_limits", factory=True, workers=int(sys.argv[3]),
            host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@contextmanager
def serving(db_url: str, port: int | None = None, workers: int = 1) -> Iterator[str]:
    """A uvicorn subprocess (with `workers` processes) serving `db_url`; yields its base URL once it answers."""
    port = port or free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, db_url, str(port), str(workers)], cwd=PROJECT_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


# -- the leaderboard at scale ----------------------------------------------------------------


def _leaderboard(url: str, target_runs: int, rng: random.Random) -> dict:
    """Leaderboard reads over `target_runs` stored runs, from the maintained groups (bench.server.repository).

    Timed: the first read after the load (every group stale: the full recompute), reads of an idle
    board, reads each following a write of WRITES_BETWEEN_READS runs (the groups those runs touched
    are recomputed), and the endpoint over HTTP.
    """
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    started = time.perf_counter()
    _bulk_load(engine, target_runs - stored, rng)
    load_s = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does after a load: index-only scans need it
        stored = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
        figures = conn.execute(text("SELECT count(*) FROM figures")).scalar_one()
    idle: list[float] = []
    after_writes: list[float] = []
    now = datetime.now(timezone.utc)
    with Session(engine) as session:
        repo = Repository(session)
        t0 = time.perf_counter()
        groups = repo.leaderboard("matmul_flops", "bf16", None)
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(BOARD_QUERIES):
            t0 = time.perf_counter()
            repo.leaderboard("matmul_flops", "bf16", None)
            idle.append((time.perf_counter() - t0) * 1e3)
        token = hash_token("bench")
        for i in range(BOARD_QUERIES):
            docs = [synthetic_run(rng, now + timedelta(seconds=i)) for _ in range(WRITES_BETWEEN_READS)]
            repo.add_runs([Service.stage_run(doc, token, "bench")[0] for doc in docs])
            session.commit()
            t0 = time.perf_counter()
            repo.leaderboard("matmul_flops", "bf16", None)
            after_writes.append((time.perf_counter() - t0) * 1e3)
    engine.dispose()
    with serving(url) as base, httpx.Client(base_url=base) as http:
        endpoint = []
        for _ in range(BOARD_QUERIES):
            t0 = time.perf_counter()
            http.get("/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).raise_for_status()
            endpoint.append((time.perf_counter() - t0) * 1e3)
    return {
        "runs": stored,
        "figures": figures,
        "load_seconds": round(load_s, 1),
        "groups": len(groups),
        "figures_aggregated": sum(g.count for g in groups),
        "first_read_ms": round(first_ms, 1),
        "idle_p50_ms": round(statistics.median(idle), 2),
        "idle_p95_ms": round(_p95(idle), 2),
        "writes_between_reads": WRITES_BETWEEN_READS,
        "after_writes_p50_ms": round(statistics.median(after_writes), 1),
        "after_writes_p95_ms": round(_p95(after_writes), 1),
        "endpoint_p95_ms": round(_p95(endpoint), 1),
        "target_p95_ms": BOARD_P95_TARGET_MS,
    }


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _bulk_load(engine, count: int, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    """COPY `count` runs: copies, under new ids, of the rows the server writes for TEMPLATE_RUNS runs.

    Building the rows of 100,000 distinct documents would take minutes on two cores; the query
    only cares how many rows there are per device model and how their values spread.
    """
    if count <= 0:
        return
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    token = hash_token("bench")
    now = datetime.now(timezone.utc)
    templates = [_template_rows(synthetic_run(rng, now), tables) for _ in range(TEMPLATE_RUNS)]
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection  # psycopg's own connection, for COPY
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO tokens VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (token, now.isoformat(), "bench"))
            ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(count)]
            for name in ("runs", "devices", "measurements", "submissions", "figures"):
                columns = ", ".join(c.name for c in tables[name].columns)
                with cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
                    for i, run_id in enumerate(ids):
                        for row in templates[i % TEMPLATE_RUNS][name]:
                            copy.write_row(_with_run(name, row, run_id, token, now - timedelta(seconds=i)))
            # What the server's writes would have left: every group the figures fall in, stale.
            cursor.execute(
                "INSERT INTO board_groups (metric, dtype, variant, device_model, version, computed_version, "
                "figure_count, per_watt_count) SELECT DISTINCT metric, dtype, variant, device_model, 1, 0, 0, 0 "
                "FROM figures ON CONFLICT DO NOTHING"
            )
        conn.commit()
    finally:
        raw.close()


def _template_rows(doc: RunDocument, tables: dict) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    rows = document_rows(doc)
    rows["submissions"] = [
        {"run_id": doc.run.id, "token_hash": "", "received_at": "", "client_hash": "bench",
         "content_hash": hashlib.sha256(doc.model_dump_json().encode()).hexdigest(), "hidden": 0,
         "flagged_reason": None}  # fmt: skip
    ]
    rows["figures"] = figures_of(doc, counted=True)
    names = ("runs", "devices", "measurements", "submissions", "figures")
    return {name: [tuple(row[c.name] for c in tables[name].columns) for row in rows[name]] for name in names}


def _with_run(table: str, row: tuple, run_id: str, token: str, received: datetime) -> tuple:
    """The template row under another run id (every table's first column); a submission gets its owner and time."""
    if table == "submissions":
        return (run_id, token, received.isoformat(timespec="microseconds"), *row[3:])
    return (run_id, *row[1:])


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
