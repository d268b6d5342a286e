"""Command-line options shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

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
