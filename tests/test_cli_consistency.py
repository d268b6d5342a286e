"""Every command behaves alike: --json wherever it prints a result, and help that reads as sentences at
any terminal width (tested at 80 and 160 columns, through typer's own runner)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from bench.cli import app
from bench.commands.monitor import watch_json
from bench.store import Store
from probes.energy import NullMeter
from test_compare_cards import gpu_run

runner = CliRunner()
GROUP = get_command(app)
COMMANDS = dict(GROUP.commands)  # type: ignore[attr-defined]
#: They run a server until Ctrl-C and print no result.
NO_RESULT = {"serve", "serve-network"}
WIDTHS = (80, 160)


def _help(args: list[str], width: int) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width)}, terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def _plain(text: str) -> str:
    """Words only: no box drawing, no markdown code marks, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text.replace("`", ""))).strip()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_reads_as_sentences(name: str, width: int) -> None:
    out = _help([name], width)
    assert max(len(line) for line in out.splitlines()) <= width
    assert "…" not in out  # no word cut short because it did not fit
    plain = _plain(out)
    command = COMMANDS[name]
    assert _plain(command.help) in plain  # the whole docstring, its line breaks joined
    for param in command.params:
        text = getattr(param, "help", None)
        if text:  # e.g. "[default: $FLOPWATT_DB ...]" survives as text, not as a markup tag
            assert _plain(text) in plain, (param.name, text)


def _command_cells(out: str) -> tuple[dict[str, list[str]], int]:
    """The Commands panel of `flopwatt --help`: each command's summary, line by line, and the cell width."""
    lines = out[out.index("Commands"):].splitlines()[1:]
    rows = [line for line in lines if line.startswith("│")]
    first = next(line for line in rows if line[2:].split(" ", 1)[0] in COMMANDS)
    name = first[2:].split(" ", 1)[0]
    start = first.index(" ", 2 + len(name)) + len(first[2 + len(name):]) - len(first[2 + len(name):].lstrip())
    width = len(first) - 2 - start
    cells: dict[str, list[str]] = {}
    current = None
    for line in rows:
        head = line[2:start].strip()
        if head:
            current = head
            cells[current] = []
        cells[current].append(line[start:-2].rstrip())  # type: ignore[index]
    return cells, width


@pytest.mark.parametrize("width", WIDTHS)
def test_the_command_list_wraps_each_summary_as_one_paragraph(width: int) -> None:
    cells, cell_width = _command_cells(_help([], width))
    assert set(cells) == set(COMMANDS)
    for name, lines in cells.items():
        summary = COMMANDS[name].help.split("\n\n")[0]
        assert " ".join(lines) == _plain(summary), name
        # wrapped only where the next word would not have fitted, never at the docstring's own line breaks
        for line, following in zip(lines, lines[1:]):
            assert len(line) + 1 + len(following.split()[0]) > cell_width, (name, line, following)


def test_every_command_that_prints_a_result_takes_json() -> None:
    for name, command in COMMANDS.items():
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert ("--json" in options) is (name not in NO_RESULT), name


@pytest.fixture
def store(isolated_environment: Path) -> Store:
    return Store(os.environ["FLOPWATT_DB"])


def test_monitor_json_prints_the_stored_run_and_nothing_else(store: Store) -> None:
    result = runner.invoke(app, ["monitor", "--json", "--", sys.executable, "-c", "print('from the command')"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # the measured command's own output went to stderr
    assert printed["run"]["command"].startswith("monitor -- ")
    figures = printed["measurements"] + [u for u in printed["unavailable"] if u["metric"] == "command_energy"]
    assert {f["device"] for f in figures} >= {"cpu"}  # a figure or the reason there is none
    assert store.get(printed["run"]["id"]).model_dump(mode="json") == printed


def test_monitor_json_watches_as_one_line_per_interval() -> None:
    out = io.StringIO()
    sleeps = iter([None, KeyboardInterrupt])

    def sleep(_seconds: float) -> None:
        if next(sleeps) is KeyboardInterrupt:
            raise KeyboardInterrupt

    watch_json([NullMeter("cpu", "no RAPL here")], interval_s=0.5, sleep=sleep, file=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        reading = json.loads(line)
        assert reading["readings"] == [
            {"device": "cpu", "power_w": None, "clock_hz": None, "mem_clock_hz": None, "temperature_c": None,
             "power_limit_w": None, "throttle_reasons": [], "unavailable_reason": "no RAPL here"}
        ]  # fmt: skip


def test_submit_json_reports_each_outcome(store: Store) -> None:
    doc = gpu_run()
    store.save(doc)
    # nothing listens on port 9: the run is queued, and stdout says so as JSON
    result = runner.invoke(app, ["submit", doc.run.id, "--server", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert (outcome["run"], outcome["status"], outcome["server"]) == (doc.run.id, "queued", "http://127.0.0.1:9")
    dry = runner.invoke(app, ["submit", doc.run.id, "--server", "http://127.0.0.1:9", "--dry-run", "--json"])
    [body] = json.loads(dry.stdout)
    assert body["run"] == doc.run.id and body["body"]["run"]["id"] == doc.run.id
    assert body["url"] == "http://127.0.0.1:9/api/v1/runs" and body["bytes"] > 0


def test_the_install_prints_no_packaging_warning_and_ships_every_subpackage(tmp_path: Path) -> None:
    """`make run` installs flopwatt editable (PEP 660, setuptools' build_editable): it must say nothing
    but its file list. A plain wheel must carry bench.commands, bench.server and probes.energy."""
    root = Path(__file__).resolve().parent.parent
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    for package in ("bench", "probes"):
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"

    def build(hook: str) -> tuple[str, str]:
        """Run one PEP 517/660 hook as pip would, in its own process: (what it said, the file it built)."""
        script = f"import sys, setuptools.build_meta as backend; print(backend.{hook}(sys.argv[1]))"
        done = subprocess.run([sys.executable, "-W", "default", "-c", script, str(out)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr, done.stdout.strip().splitlines()[-1]

    said, _ = build("build_editable")
    assert "!!" not in said and "Warning" not in said, said  # setuptools frames its warnings in !! boxes
    _, wheel = build("build_wheel")
    names = set(zipfile.ZipFile(out / wheel).namelist())
    assert {"bench/commands/compare.py", "bench/server/app.py", "probes/energy/meter.py"} <= names
    assert not any(name.startswith(("benchmarks/", "tests/")) for name in names)
