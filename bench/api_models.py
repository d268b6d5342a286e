"""What the results server and the submission client say to each other, defined once for both.

The request body of a submission is the run document itself (bench.document.RunDocument); these
models are everything around it. Figures are in SI base units, as everywhere in flopwatt.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from bench.document import RunDocument

API_PREFIX = "/api/v1"
#: The largest request body the server accepts, before and after gzip decompression.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: The most runs one batch request carries (within MAX_DOCUMENT_BYTES in all).
MAX_BATCH_RUNS = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Model):
    status: int
    #: Where the problem is: a dotted path into the document ("measurements.0.unit"), a query or
    #: path parameter ("metric", "run_id"), or a header ("Authorization", "Content-Encoding").
    field: str
    message: str


class ErrorBody(_Model):
    """Every 4xx answer has this body."""

    error: ErrorDetail


class TokenIssued(_Model):
    token: str


class Submitted(_Model):
    id: str
    #: False when the run was already stored (a resubmission): nothing new was written.
    created: bool
    #: Why a figure looks implausible against the datasheet; such a run is kept out of aggregates.
    flagged_reason: str | None = None


class RunBatch(_Model):
    """Several run documents in one request (a queue being sent): stored all together, or none."""

    runs: list[RunDocument] = Field(min_length=1, max_length=MAX_BATCH_RUNS)


class BatchSubmitted(_Model):
    #: In the order of the request's runs.
    results: list[Submitted]


class HiddenUpdate(_Model):
    hidden: bool


class RunState(_Model):
    id: str
    hidden: bool
    flagged_reason: str | None = None


class RunListItem(_Model):
    id: str
    received_at: datetime
    started_at: datetime
    tool_version: str
    device_models: list[str]
    metrics: list[str]
    flagged_reason: str | None = None


class RunPage(_Model):
    runs: list[RunListItem]
    #: Pass as `offset` for the next page; None on the last page.
    next_offset: int | None = None


class SubmittedRun(_Model):
    id: str
    received_at: datetime
    hidden: bool
    flagged_reason: str | None = None
    document: RunDocument


class LeaderboardRow(_Model):
    device_model: str
    variant: str
    count: int
    median: float
    p10: float
    p90: float
    #: Median of value per watt over the runs that measured energy (FLOP/J, B/J, ...), and how many did.
    per_watt: float | None = None
    per_watt_count: int = 0
    #: median / launch price, for reference cards of bench.hardware (figure per USD).
    per_dollar: float | None = None
    launch_price_usd: float | None = None
    #: True when device_model is a reference card from the datasheet table.
    reference: bool = False


class Leaderboard(_Model):
    metric: str
    unit: str
    dtype: str
    variant: str | None = None
    rows: list[LeaderboardRow] = Field(default_factory=list)


class Standing(_Model):
    """Where one figure falls among the counted figures of the same device model."""

    metric: str
    dtype: str
    variant: str
    device_model: str
    value: float
    count: int
    #: Share of those figures below `value` (ties count half), 0..100; None when there are none.
    percentile: float | None = None
