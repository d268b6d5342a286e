"""What the server, client and page tests share: run documents, a real uvicorn on loopback, both engines.

No tests here; the test_server*, test_client and test_leaderboard_page modules import from it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from bench.document import RunDocument, RunInfo, new_run_id
from bench.server.ratelimit import Rate, RateLimits
from probes.inventory import Device, Host
from probes.measurement import Energy, Measurement

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Limits no test reaches unless it means to.
LIFTED = RateLimits(requests=Rate(6e6, 1e6), submissions=Rate(6e6, 1e6), tokens=Rate(6e6, 1e6))


def make_doc(
    *,
    gpu: str = "NVIDIA GeForce RTX 4090",
    bf16: float = 150e12,
    fp32: float | None = None,
    watts: float | None = 400.0,
    cpu: str = "AMD Ryzen 9 7950X 16-Core Processor",
    tool_version: str = "0.1.0",
    hostname: str = "gaming-pc",
) -> RunDocument:
    """A run as `flopwatt probe` records it on a one-GPU machine: matmul per dtype, memory, PCIe."""
    started = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    energy = (
        Energy(method="nvml-counter", joules=watts * 10, watts_avg=watts, watts_peak=watts * 1.1, seconds=10.0)
        if watts is not None
        else Energy(method="unavailable", unavailable_reason="NVML reports no power on this card")
    )

    def spread(centre: float) -> list[float]:
        return [centre * 0.98, centre, centre * 1.01]

    return RunDocument(
        run=RunInfo(
            id=new_run_id(), started_at=started, finished_at=started + timedelta(minutes=3),
            tool_version=tool_version, command="probe --quick",
        ),  # fmt: skip
        host=Host(hostname=hostname, os="Linux", os_release="6.8.0", arch="x86_64", python="3.11.7",
                  torch="2.13.0", cpu_model=cpu, physical_cores=16, logical_cores=32, ram_bytes=64 * 2**30),  # fmt: skip
        devices=[
            Device(id="cpu", kind="cpu", name=cpu, memory_bytes=64 * 2**30),
            Device(id="cuda:0", kind="cuda", name=gpu, memory_bytes=24 * 2**30, sm_count=128,
                   compute_capability="8.9", power_limit_w=450.0, extra={"pci_bus_id": "00000000:01:00.0"}),  # fmt: skip
        ],
        measurements=[
            Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", dtype="bf16", device="cuda:0",
                        variant="sustained", samples=spread(bf16), params={"m": 8192, "n": 8192, "k": 8192},
                        energy=energy),  # fmt: skip
            Measurement(probe="compute", metric="matmul_flops", unit="FLOP/s", dtype="fp32", device="cuda:0",
                        variant="burst", samples=spread(fp32 if fp32 is not None else bf16 / 2)),  # fmt: skip
            Measurement(probe="memory", metric="mem_copy_bandwidth", unit="B/s", device="cuda:0",
                        samples=spread(800e9), params={"bytes": 2**30}),  # fmt: skip
            Measurement(probe="memory", metric="mem_triad_bandwidth", unit="B/s", device="cpu",
                        samples=spread(60e9), params={"bytes": 2**30, "threads": 16}),  # fmt: skip
        ],
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres_url")


def find_chromium() -> str | None:
    """The headless browser the page tests draw with (Debian names it chromium, Ubuntu chromium-browser)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    """A port free now, for a process that binds it later: another may take it meanwhile (rarely)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """The app on a real uvicorn in a thread on a loopback port; stopped on exit.

    Without `port`, uvicorn binds port 0 and the kernel picks a free one, so no other process can
    take it between choosing and binding.
    """
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port or 0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    [bound] = server.servers[0].sockets
    try:
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


#: `flopwatt serve` with rate limits lifted: the process a restart test kills and starts again.
SERVER_CODE = """
import sys, uvicorn
from bench.server.app import create_app
from bench.server.ratelimit import Rate, RateLimits
lift = Rate(6e6, 1e6)
app = create_app(sys.argv[1], limits=RateLimits(requests=lift, submissions=lift, tokens=lift), secret=b"test")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def start_server_process(db_url: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, db_url, str(port)], cwd=PROJECT_ROOT)
    wait_until_answering(f"http://127.0.0.1:{port}", process)
    return process


def wait_until_answering(base: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Until the server process at `base` answers HTTP; it is killed if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the server did not answer within {timeout_s} s")


def new_token(base: str) -> str:
    response = httpx.post(f"{base}/api/v1/tokens")
    assert response.status_code == 201, response.text
    return response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(found)
