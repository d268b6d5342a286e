"""Twenty submitters at once, and the server killed and started again while they send; several
server processes at once: nothing is lost and nothing is stored twice (PostgreSQL, the engine a
shared server runs on)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from bench.client import SubmitClient
from bench.store import PROJECT_ROOT
from server_support import count, free_port, make_doc, start_server_process, wait_until_answering

SUBMITTERS = 20
RUNS_EACH = 8


def test_twenty_submitters_and_a_restart_lose_and_duplicate_nothing(postgres_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    docs = [[make_doc(bf16=100e12 + 1e12 * (i * RUNS_EACH + j)) for j in range(RUNS_EACH)] for i in range(SUBMITTERS)]
    outcomes: list[list[str]] = [[] for _ in range(SUBMITTERS)]
    server = start_server_process(postgres_url, port)
    halfway = threading.Event()

    def submitter(index: int) -> None:
        with SubmitClient(base, config=tmp_path / f"user{index}", timeout=5) as client:
            for doc in docs[index]:
                outcomes[index].append(client.submit(doc).status)
                if len(outcomes[index]) == RUNS_EACH // 2:
                    halfway.wait(timeout=60)  # everyone is mid-way when the server goes down

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(SUBMITTERS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while count(postgres_url, "runs") < SUBMITTERS * RUNS_EACH // 4:
            assert time.monotonic() < deadline, f"only {count(postgres_url, 'runs')} runs stored after 60 s"
            time.sleep(0.02)
        server.kill()  # no goodbye: requests in flight are cut, transactions in flight roll back
        server.wait()
        halfway.set()
        time.sleep(0.5)  # submissions meanwhile find nobody and are queued
        server = start_server_process(postgres_url, port)
        for t in threads:
            t.join(timeout=120)
        queued = sum(o.count("queued") for o in outcomes)
        assert queued > 0, "the restart should have found submissions in flight"
        resent = []
        for index in range(SUBMITTERS):
            with SubmitClient(base, config=tmp_path / f"user{index}") as client:
                resent += list(client.send_pending())
                assert client.pending() == []
                # A user who resubmits everything, to be sure, gets the stored ids back.
                assert {client.submit(doc).status for doc in docs[index]} == {"existing"}
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert {o.status for o in resent} <= {"created", "existing"} and len(resent) == queued
    expected = {doc.run.id for each in docs for doc in each}
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM runs")).scalars().all()
        owners = conn.execute(text("SELECT count(DISTINCT token_hash) FROM submissions")).scalar_one()
    engine.dispose()
    assert sorted(stored) == sorted(expected)  # every run, once
    assert count(postgres_url, "submissions") == len(expected) and owners == SUBMITTERS
    assert count(postgres_url, "figures") == count(postgres_url, "measurements") == len(expected) * len(docs[0][0].measurements)


def test_serve_with_two_workers_shares_one_database_and_one_leaderboard(postgres_url: str, tmp_path: Path) -> None:
    """`flopwatt serve --workers 2`: runs sent concurrently through both processes are stored once, and
    resent ones are recognised, whichever process answers; the leaderboard counts every run."""
    port = free_port()
    command = [sys.executable, "-c", "from bench.cli import main; main()", "serve", "--db", postgres_url,
               "--port", str(port), "--workers", "2"]  # fmt: skip
    server = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, server)
        assert len(psutil.Process(server.pid).children(recursive=True)) >= 2
        docs = [[make_doc(bf16=100e12 + i * 1e12) for i in range(8)] for _ in range(4)]
        statuses: list[list[int]] = [[] for _ in docs]

        def submitter(index: int) -> None:
            with SubmitClient(base, config=tmp_path / f"user{index}") as client:
                for doc in docs[index] * 2:  # each run twice: the second answer is "existing"
                    statuses[index].append(client.submit(doc).status)

        threads = [threading.Thread(target=submitter, args=(i,)) for i in range(len(docs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s == ["created"] * 8 + ["existing"] * 8 for s in statuses), statuses
        board = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
        assert [r["count"] for r in board["rows"]] == [32]
        assert count(postgres_url, "runs") == count(postgres_url, "submissions") == 32
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_leaderboard_reads_during_writes_end_exact(postgres_url: str, tmp_path: Path) -> None:
    """Readers recompute groups while writers keep bumping them; once the writers stop, one more read
    must give exactly the statistics of every run sent (no write may be lost between a group's
    version and its stats)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values = {gpu: [100e12 + 1e12 * i + (7e12 if gpu.endswith("4090") else 0) for i in range(24)]
              for gpu in ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090")}  # fmt: skip
    work = [(gpu, v) for gpu, vs in values.items() for v in vs]
    server = start_server_process(postgres_url, port)
    writing = threading.Event()
    writing.set()
    reads: list[int] = []

    def writer(index: int) -> None:
        with SubmitClient(base, config=tmp_path / f"w{index}") as client:
            for gpu, value in work[index::4]:
                assert client.submit(make_doc(gpu=gpu, bf16=value)).status == "created"

    def reader() -> None:
        with httpx.Client(base_url=base) as http:
            while writing.is_set():
                answer = http.get("/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"})
                assert answer.status_code == 200, answer.text
                reads.append(1)

    try:
        writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in writers + readers:
            t.start()
        for t in writers:
            t.join()
        writing.clear()
        for t in readers:
            t.join()
        board = httpx.get(f"{base}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(reads) > 5  # the readers did overlap the writes
    got = {row["device_model"]: (row["count"], row["median"], row["p90"]) for row in board["rows"]}
    for gpu, sent in values.items():
        model = gpu.removeprefix("NVIDIA ")
        deciles = statistics.quantiles(sent, n=10, method="inclusive")
        assert got[model][0] == len(sent)
        assert got[model][1] == pytest.approx(statistics.median(sent))
        assert got[model][2] == pytest.approx(deciles[-1])
