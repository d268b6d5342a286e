"""Command-line options and the output console shared by the commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

DbOption = Annotated[
    Optional[str],
    typer.Option("--db", help="SQLAlchemy URL of the results database [default: $FLOPWATT_DB or results/flopwatt.db]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
EstimateCpuPowerOption = Annotated[
    bool,
    typer.Option(
        "--estimate-cpu-power",
        help="Where RAPL is unreadable, estimate CPU power from TDP x load (always labelled estimated).",
    ),
]


def stdout() -> Console:
    """Where a command prints its result: no automatic highlighting, so figures keep one colour."""
    return Console(highlight=False)
