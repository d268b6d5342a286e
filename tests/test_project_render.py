"""`flopwatt project`'s output at 80 to 140 columns: no cell cut with "…", nothing left out (at 60, a
word wider than its column is folded, still never cut).

Every reason a strategy is out, every plan, note and what each cost counts, and every source of
the claims must be readable in full under the table, whatever the width: they are the advice a
user most needs. The --json document (the same projections) says what the text must hold.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.cli import app
from bench.commands.project import Footnotes, print_lines

runner = CliRunner()
#: A real stored run: `flopwatt probe --quick --only compute,training` on the 2-vCPU dev VM (no RAPL, no GPU).
CPU_RUN = Path(__file__).parent / "data" / "runs" / "cpu_quick_compute_training.json"
LINK = ("--uplink", "25mbit", "--downlink", "100mbit", "--rtt", "30ms")

SCENARIOS = [
    ("--params", "125M", "--card", "rtx4090", "--gpus", "8"),
    ("--params", "125M", "--card", "rtx4090", "--gpus", "1000"),
    ("--params", "1B", "--card", "rtx3090", "--gpus", "64", "--hours-per-day", "8"),
    ("--params", "7B", "--card", "RTX 4090", "--gpus", "1000", *LINK),
    ("--params", "7B", "--card", "rtx4090", "--gpus", "1000", "--gpus-per-node", "8"),
    ("--params", "70B", "--card", "rtx4090", "--gpus", "1000"),
    ("--params", "70B", "--card", "h100", "--gpus", "64", "--gpus-per-node", "8"),
    ("--params", "70B", "--card", "gtx1080", "--gpus", "10", "--dc-gpu-hour-price", "2.5"),
    ("--params", "1B", "--card", "rtx3090", "--gpus", "64", "--strategy", "diloco"),
    ("--params", "125M", "--run", "2185f657", "--gpus", "10", "--node-watts", "95", *LINK),
    ("--params", "1B", "--nodes-csv", "{csv}"),
]  # fmt: skip


def project(args: tuple[str, ...], columns: int) -> Any:
    return runner.invoke(app, ["project", *args], prog_name="flopwatt", env={"COLUMNS": str(columns)})


def squeezed(text: str) -> str:
    """Text without whitespace, so a sentence reads the same however it was wrapped or folded."""
    return "".join(text.split())


@pytest.fixture
def scenario_args(tmp_path: Path) -> Any:
    """Stores the recorded CPU run in the test's database and writes an uneven swarm's CSV."""
    from bench.document import RunDocument
    from bench.store import Store

    Store().save(RunDocument.model_validate_json(CPU_RUN.read_text()))
    csv = tmp_path / "nodes.csv"
    csv.write_text("card,count,uplink,hours_per_day\nrtx4090,40,50mbit,24\ngtx1080,24,10mbit,12\n")
    return lambda args: tuple(a.replace("{csv}", str(csv)) for a in args)


@pytest.mark.parametrize("raw", SCENARIOS, ids=lambda raw: " ".join(raw))
def test_no_cell_is_cut_and_every_reason_plan_and_note_is_there_in_full(scenario_args: Any,
                                                                         raw: tuple[str, ...]) -> None:
    args = scenario_args(raw)
    doc = json.loads(project((*args, "--json"), 80).stdout)
    expected = list(doc["claims"]["notes"])
    for s in doc["strategies"]:
        expected += [s["reason"], s["plan"], s["cost_includes"], *s["notes"]]
    for columns in (60, 80, 100, 120, 140):
        result = project(args, columns)
        assert result.exit_code == 0, (args, result.output)
        out = result.output
        assert "…" not in out, (columns, out)
        assert max(len(line) for line in out.splitlines()) <= columns, columns
        flat = squeezed(out)
        for text in (t for t in expected if t):
            assert squeezed(text) in flat, (columns, text)


def test_the_issue_s_example_at_80_columns_points_each_cell_to_its_line() -> None:
    """The table says "no, see [1]" where ddp and diloco do not fit; line [1] names both and gives the
    whole reason, advice included; the plans keep their compact form in the cells."""
    out = project(("--params", "7B", "--card", "RTX 4090", "--gpus", "1000", *LINK), 80).output
    lines = out.splitlines()
    feasible = next(line for line in lines if line.startswith("│ feasible"))
    assert [c.strip() for c in feasible.split("│")[2:-1]] == ["yes", "no, see [1]", "no, see [1]", "yes"]
    start = next(i for i, line in enumerate(lines) if line.startswith(" [1] "))
    note = " ".join(line.strip() for line in lines[start:start + 3])
    assert note == ("[1] ddp, diloco: does not fit: needs 102.0 GiB per GPU with full recomputation; GeForce RTX "
                    "4090 has 21.6 GiB usable of 24.0 (try --optimizer-8bit, --offload-optimizer, "
                    "--gpus-per-node or pipeline)")
    assert lines[start + 3].startswith(" [2] colocated plan: tp=1 pp=1 dp=168, bf16")
    plan = next(i for i, line in enumerate(lines) if line.startswith("│ plan"))
    two_rows = [line.split("│")[2:-1] for line in lines[plan:plan + 2]]
    cells = [" ".join(part.strip() for part in parts) for parts in zip(*two_rows)]
    assert [c.strip() for c in cells] == ["tp=1 pp=1 dp=168 [2]", "-", "-", "16 stages x 62 pipelines [3]"]
    labels = [line.split("│")[1].strip() for line in lines if line.startswith("│ ")]
    assert all(len(label) <= 14 for label in labels)
    days, cost = out.split("Days to train")[1].split("Cost in USD")
    ticks = [[line.split("┤")[0].strip() for line in plot.splitlines() if "┤" in line] for plot in (days, cost)]
    assert ticks[0] and all(re.fullmatch(r"(1|10|100) (s|min|h|d)|(1|10|100|1,000) yr", t) for t in ticks[0])
    assert ticks[1] and all(re.fullmatch(r"\$(1|10|100)[kMB]?", t) for t in ticks[1])


def test_footnotes_number_each_text_once_and_name_every_column_that_points_to_it() -> None:
    notes = Footnotes()
    assert notes.ref("ddp", "", "does not fit") == "[1]"
    assert notes.ref("colocated", "plan", "tp=1") == "[2]"
    assert notes.ref("diloco", "", "does not fit") == "[1]"
    assert notes.ref("diloco", "plan", "does not fit") == "[3]"  # the same words as a plan are another line
    assert notes.lines() == [("[1]", "ddp, diloco: does not fit"), ("[2]", "colocated plan: tp=1"),
                             ("[3]", "diloco plan: does not fit")]


def test_a_tagged_line_wraps_under_its_text_and_a_long_word_is_folded_not_cut() -> None:
    console = Console(width=40, file=None, record=True, highlight=False)
    url = "https://example.org/" + "x" * 40
    with console.capture() as captured:
        print_lines(console, [("[1]", "one two three four five six seven eight nine"), ("src:", url)])
    lines = [line.rstrip() for line in captured.get().splitlines()]
    assert lines[0] == " [1]  one two three four five six seven"
    assert lines[1] == "      eight nine"
    assert "…" not in "".join(lines) and squeezed("".join(lines[2:])) == squeezed("src:" + url)
    assert all(re.match(r"^ {6}\S", line) for line in lines[3:])


def test_a_feasible_strategy_with_a_caveat_points_to_it() -> None:
    """A strategy that runs but says why it is slow ("communication-bound") gets "yes, see [n]"."""
    from dataclasses import replace

    from bench import projection as pj
    from bench.commands.project import render_projection
    from bench.hardware import get_card

    node = pj.node_from_card(get_card("rtx4090"), utilisation=None, gpus=1)
    sc = pj.scenario(pj.model_spec("125M"), pj.Swarm.uniform(node, 8), strategy="colocated")
    (colocated,) = pj.project(sc)
    caveat = "communication-bound: more GPUs than this batch can keep busy"
    console = Console(width=80, file=None, highlight=False)
    with console.capture() as captured:
        render_projection(sc, [replace(colocated, reason=caveat)], console)
    lines = captured.get().splitlines()
    assert next(line for line in lines if line.startswith("│ feasible")).split("│")[2].strip() == "yes, see [1]"
    assert any(line.strip() == f"[1] colocated: {caveat}" for line in lines)


def test_the_readme_example_is_what_the_command_prints() -> None:
    """The README shows the issue's example whole; the projection is arithmetic, so it must match."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    args = ("--params", "7B", "--card", "RTX 4090", "--gpus", "1000", *LINK)
    command = "$ flopwatt project " + " ".join(f'"{a}"' if " " in a else a for a in args)
    shown = readme.split(command + "\n", 1)[1].split("\n```", 1)[0]
    printed = project(args, 80).output
    assert shown.splitlines() == [line.rstrip() for line in printed.rstrip("\n").splitlines()]
