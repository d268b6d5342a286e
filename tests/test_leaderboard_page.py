"""The leaderboard page at `/`: server-rendered HTML, sortable by column, with an SVG chart.

Checked twice: as HTML (order, sorting links, escaping), and as headless Chromium draws it
(a screenshot in the test's directory whose bars are measured in pixels).
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from html import unescape
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.client import SubmitClient
from bench.server.app import create_app
from bench.server.page import PERF_COLOUR, WATT_COLOUR
from server_support import LIFTED, find_chromium, live_server, make_doc

#: (GPU name, bf16 FLOP/s of each run, watts): a spread of cards, one of them with a hostile name.
FLEET = [
    ("NVIDIA H100 80GB HBM3", [650e12, 700e12], 650.0),
    ("NVIDIA GeForce RTX 4090", [140e12, 150e12, 160e12], 400.0),
    ("NVIDIA GeForce RTX 3090", [60e12], 300.0),
    ('<script>alert("x")</script> GPU', [20e12], 120.0),
]


@pytest.fixture
def page_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    with live_server(create_app(f"sqlite:///{tmp_path / 'board.db'}", limits=LIFTED)) as base:
        with SubmitClient(base, config=tmp_path / "config") as client:
            for gpu, values, watts in FLEET:
                for value in values:
                    assert client.submit(make_doc(gpu=gpu, bf16=value, fp32=value / 10, watts=watts)).status == "created"
        yield base


def _rows(html: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<tr data-device="([^"]*)">', html)]


def test_the_page_ranks_device_models_and_sorts_by_any_column(page_server: str) -> None:
    page = httpx.get(page_server, params={"dtype": "bf16"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert _rows(html) == ["H100 SXM", "GeForce RTX 4090", "GeForce RTX 3090", '<script>alert("x")</script> GPU']
    assert "<script>" not in html and "&lt;script&gt;" in html  # a submitted name is text, never markup
    assert "7 runs over 4 device models" in html and "<svg" in html
    assert html.count('class="perf"') == 4 and html.count('class="per-watt"') == 4
    by_watt = httpx.get(page_server, params={"dtype": "bf16", "sort": "per_watt", "order": "asc"}).text
    board = httpx.get(f"{page_server}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    assert _rows(by_watt) == [r["device_model"] for r in sorted(board["rows"], key=lambda r: r["per_watt"])]
    assert 'href="/?metric=matmul_flops&amp;dtype=bf16&amp;variant=&amp;sort=per_watt&amp;order=desc"' in by_watt
    by_name = httpx.get(page_server, params={"dtype": "bf16", "sort": "device_model", "order": "asc"}).text
    assert _rows(by_name) == sorted(_rows(html))
    empty = httpx.get(page_server, params={"metric": "net_upload", "dtype": ""}).text
    assert "No runs for this metric and dtype yet." in empty


def test_the_page_defaults_to_fp32_and_ignores_unknown_sort_and_order(page_server: str) -> None:
    default = httpx.get(page_server).text
    assert "matmul_flops fp32: 7 runs over 4 device models" in default
    # fp32 was submitted as a tenth of bf16: the same order by median, at a tenth of the figures
    assert _rows(default) == ["H100 SXM", "GeForce RTX 4090", "GeForce RTX 3090", '<script>alert("x")</script> GPU']
    assert ">67.5 TFLOP/s<" in default and ">15 TFLOP/s<" in default
    bogus = httpx.get(page_server, params={"sort": "drop table", "order": "up"})
    assert bogus.status_code == 200 and _rows(bogus.text) == _rows(default)
    too_long = httpx.get(page_server, params={"order": "sideways"})
    assert too_long.status_code == 422 and too_long.json()["error"]["field"] == "order"
    ascending = httpx.get(page_server, params={"sort": "nonsense", "order": "asc"}).text
    assert _rows(ascending) == list(reversed(_rows(default)))  # median, ascending


@pytest.mark.chromium
def test_chromium_draws_the_chart_in_proportion(page_server: str, tmp_path: Path) -> None:
    url = f"{page_server}/?dtype=bf16"
    shot = tmp_path / "leaderboard.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,700", url)
    width, height, pixels = read_png(shot)
    assert (width, height) == (1100, 700)
    perf = _bars(pixels, PERF_COLOUR)
    watt = _bars(pixels, WATT_COLOUR)
    assert len(perf) == len(watt) == 4, (perf, watt)
    board = httpx.get(f"{page_server}/api/v1/leaderboard", params={"metric": "matmul_flops", "dtype": "bf16"}).json()
    medians = [r["median"] for r in board["rows"]]
    per_watt = [r["per_watt"] for r in board["rows"]]
    # Top to bottom as in the table; lengths in proportion to the figures (whole pixels, so 2 px slack).
    for bars, figures in ((perf, medians), (watt, per_watt)):
        scale = bars[0] / figures[0]
        assert [pytest.approx(b, abs=2) for b in bars] == [f * scale for f in figures]
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert _rows(dom) == [r["device_model"] for r in board["rows"]]


def _chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    command = [
        str(find_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--force-color-profile=srgb", "--force-device-scale-factor=1", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _bars(pixels: np.ndarray, colour: str) -> list[int]:
    """Widths of the horizontal bars of `colour`, top to bottom (rows of pixels grouped into bands)."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    mask = (np.abs(pixels[:, :, :3].astype(int) - rgb) <= 3).all(axis=2)
    widths = mask.sum(axis=1)
    bars, current = [], 0
    for w in widths:
        if w:
            current = max(current, int(w))
        elif current:
            bars.append(current)
            current = 0
    return bars + ([current] if current else [])


def read_png(path: Path) -> tuple[int, int, np.ndarray]:
    """Width, height and RGB(A) pixels of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    idat = b""
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks[kind] = body
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour_type in (2, 6) and interlace == 0
    channels = 3 if colour_type == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.uint8)
    previous = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: a running sum along each channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + previous) % 256
        else:  # Average and Paeth depend on the byte just decoded: one byte at a time
            row = _unfilter_sequential(kind, line, previous, channels)
        out[y] = row
        previous = row.astype(np.int32)
    return width, height, out.reshape(height, width, channels)


def _unfilter_sequential(kind: int, line: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    cur, above = line.tolist(), up.tolist()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = above[i]
        if kind == 3:
            cur[i] = (cur[i] + (a + b) // 2) % 256
            continue
        c = above[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + predictor) % 256
    return np.array(cur, dtype=np.int32)
