"""`flopwatt export` and `flopwatt import`: runs out of and into the local database, as files."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bench.document import RunDocument, parse_document, utc_now
from bench.errors import DocumentError, FlopwattError
from bench.options import DbOption, JsonOption, stdout
from bench.store import PROJECT_ROOT, Store


class ExportFormat(str, Enum):
    json = "json"
    csv = "csv"


def export(
    format: Annotated[ExportFormat, typer.Option("--format", help="json: run documents; csv: one row per figure.")] = ExportFormat.json,
    output: Annotated[
        Optional[Path], typer.Option(help="File to write, '-' for stdout [default: results/export-TIME.FORMAT].")
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Export every stored run, for analysis elsewhere or to import on another machine."""
    docs = Store(db).documents()
    text = _export_json(docs) if format is ExportFormat.json else _export_csv(docs)
    if output is not None and str(output) == "-":
        sys.stdout.write(text)
        return
    path = output or PROJECT_ROOT / "results" / f"export-{utc_now():%Y%m%d-%H%M%S}.{format.value}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise FlopwattError(f"cannot write {path}: {exc.strerror}") from exc
    figures = sum(len(d.measurements) for d in docs)
    if as_json:
        print(json.dumps({"path": str(path), "runs": len(docs), "measurements": figures}))
    else:
        stdout().print(f"Wrote {len(docs)} runs ({figures} figures) to {path}")


def _export_json(docs: list[RunDocument]) -> str:
    return "[\n" + ",\n".join(d.model_dump_json(indent=2) for d in docs) + "\n]\n"


CSV_COLUMNS = [
    "run_id", "started_at", "tool_version", "cpu_model", "device", "device_name", "probe", "metric", "dtype",
    "variant", "unit", "value", "min", "max", "n", "peak", "peak_fraction", "energy_joules", "energy_watts_avg",
    "energy_method", "params",
]  # fmt: skip


def _export_csv(docs: list[RunDocument]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for doc in docs:
        names = {d.id: d.name for d in doc.devices}
        for m in doc.measurements:
            writer.writerow(
                {
                    "run_id": doc.run.id,
                    "started_at": doc.run.started_at.isoformat(),
                    "tool_version": doc.run.tool_version,
                    "cpu_model": doc.host.cpu_model,
                    "device": m.device,
                    "device_name": names.get(m.device or "", ""),
                    "probe": m.probe,
                    "metric": m.metric,
                    "dtype": m.dtype,
                    "variant": m.variant,
                    "unit": m.unit,
                    "value": m.value,
                    "min": m.min,
                    "max": m.max,
                    "n": m.n,
                    "peak": m.peak,
                    "peak_fraction": m.peak_fraction,
                    "energy_joules": m.energy.joules if m.energy else None,
                    "energy_watts_avg": m.energy.watts_avg if m.energy else None,
                    "energy_method": m.energy.method if m.energy else None,
                    "params": json.dumps(m.params),
                }
            )
    return buffer.getvalue()


def import_(
    file: Annotated[Path, typer.Argument(help="A run document (`show --json`) or an export (`export --format json`).")],
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Store runs from a file written by `show --json` or `export --format json`."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise FlopwattError(f"cannot read {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{file}: not a text file") from exc
    docs = _parse_import(text, str(file))
    Store(db).save_all(docs)
    if as_json:
        print(json.dumps({"imported": [d.run.id for d in docs]}))
    else:
        stdout().print(f"Imported {len(docs)} run(s): {', '.join(d.run.id[:12] for d in docs)}")


def _parse_import(text: str, source: str) -> list[RunDocument]:
    stripped = text.lstrip()
    if not stripped.startswith("["):
        return [parse_document(text, source=source)]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not items:
        raise DocumentError(f"{source}: the export holds no runs")
    return [parse_document(json.dumps(item), source=f"{source}[{i}]") for i, item in enumerate(items)]
