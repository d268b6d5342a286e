"""The run document: what `flopwatt show RUN --json` prints, `import` reads and `submit` sends.

It is versioned (`schema_version`) so that a later flopwatt can still read what an earlier one
wrote; a document from a newer version than this code knows is refused with a clear error.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.errors import DocumentError
from probes.inventory import Device, Host
from probes.measurement import Measurement, Unavailable

SCHEMA_VERSION = 1

RunStatus = Literal["complete", "aborted"]


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")
    started_at: AwareDatetime
    finished_at: AwareDatetime
    tool_version: str
    #: The command line that produced the run, without the program name.
    command: str = ""
    status: RunStatus = "complete"

    @field_validator("started_at", "finished_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # Stored as ISO text: one offset everywhere keeps text order equal to time order.
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:  # 0001-01-01T00:01+04:05 is before year 1 in UTC
            raise ValueError("a time that UTC cannot hold (before year 1 or after 9999)") from None


class RunDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run: RunInfo
    host: Host
    devices: list[Device] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    unavailable: list[Unavailable] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def new_run_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_document(text: str, *, source: str = "document") -> RunDocument:
    """Validate a run document from JSON text; every failure is one DocumentError line."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(raw, dict):
        raise DocumentError(f"{source}: a run document is a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DocumentError(
            f"{source}: schema_version {version!r} is not supported (this flopwatt reads {SCHEMA_VERSION})"
        )
    try:
        return RunDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise DocumentError(f"{source}: {where}: {first['msg']}") from exc
