"""What the server does, apart from HTTP and SQL: ownership, idempotency, flags, aggregates.

Every user mistake is an ApiError naming the field; the routes never decide anything.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from bench.api_models import (
    HiddenUpdate,
    Leaderboard,
    LeaderboardRow,
    RunBatch,
    RunListItem,
    RunPage,
    RunState,
    Standing,
    Submitted,
    SubmittedRun,
    TokenIssued,
)
from bench.document import RunDocument, utc_now
from bench.hardware import find_card
from bench.orm import SubmissionRow
from bench.server.errors import ApiError
from bench.server.repository import Repository, RunFilter, StagedRun
from bench.server.validation import check_document, device_model, implausible, leaderboard_dtype, shared_machine
from probes.measurement import METRICS

#: Units of figures where more is better and "per watt" and "per dollar" mean something.
THROUGHPUT_UNITS = frozenset({"FLOP/s", "B/s", "bit/s", "tokens/s"})


def hash_token(token: str) -> str:
    """Tokens are long random strings, so an unsalted SHA-256 is enough to keep them unusable if leaked."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return utc_now().isoformat(timespec="microseconds")


class KnownTokens:
    """Token hashes already found in the database, so that a submission skips that query.

    Tokens are never revoked, so a remembered one stays valid; the oldest are forgotten past `size`.
    """

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._hashes: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, token_hash: str) -> bool:
        with self._lock:
            if token_hash in self._hashes:
                self._hashes.move_to_end(token_hash)
                return True
            return False

    def add(self, token_hash: str) -> None:
        with self._lock:
            self._hashes[token_hash] = None
            if len(self._hashes) > self._size:
                self._hashes.popitem(last=False)


class Service:
    def __init__(self, repo: Repository, known_tokens: KnownTokens | None = None) -> None:
        self.repo = repo
        self.session = repo.session
        self.known_tokens = known_tokens if known_tokens is not None else KnownTokens()

    # -- submitters ------------------------------------------------------------------------

    def issue_token(self, client_hash: str) -> TokenIssued:
        token = secrets.token_urlsafe(32)
        self.repo.add_token(hash_token(token), _now(), client_hash)
        self.session.commit()
        return TokenIssued(token=token)

    def authenticate(self, token: str) -> str:
        """The stored hash of a known token; an unknown one is refused."""
        token_hash = hash_token(token)
        if token_hash in self.known_tokens:
            return token_hash
        if not self.repo.token_exists(token_hash):
            raise ApiError(401, "Authorization", "unknown token: get one from POST /api/v1/tokens")
        self.known_tokens.add(token_hash)
        return token_hash

    # -- writing ---------------------------------------------------------------------------

    @staticmethod
    def stage_run(doc: RunDocument, owner: str, client_hash: str) -> list[StagedRun]:
        """A submitted run checked and turned into rows; nothing is written yet."""
        return [Service._stage(doc, owner, client_hash, "")]

    @staticmethod
    def stage_batch(batch: RunBatch, owner: str, client_hash: str) -> list[StagedRun]:
        """Several runs checked and turned into rows, each error naming its place in the batch."""
        seen: dict[str, int] = {}
        for i, doc in enumerate(batch.runs):
            if doc.run.id in seen:
                raise ApiError(422, f"runs.{i}.run.id", f"run {doc.run.id} appears twice (also runs.{seen[doc.run.id]})")
            seen[doc.run.id] = i
        return [Service._stage(doc, owner, client_hash, f"runs.{i}.") for i, doc in enumerate(batch.runs)]

    def store(self, staged: list[StagedRun]) -> list[Submitted]:
        """One request's runs in one transaction: new ones inserted, stored ones answered with their id.

        The insert goes first: a clash on a run id (a resubmission, or the same run sent by two
        requests at once) rolls it back, and the second pass leaves out what the database now has.
        A stored run with other content is a 409, and then nothing of the request is written.
        """
        ids = [item.doc.run.id for item in staged]
        known: dict[str, SubmissionRow] = {}
        while True:
            new = [item for item in staged if item.doc.run.id not in known]
            try:
                self.repo.add_runs(new)
                self.session.commit()
            except IntegrityError:
                self.session.rollback()
                before = len(known)
                known = self.repo.submissions(ids)
                if len(known) > before:
                    continue
                self._refuse_unsubmitted(staged)
                raise
            break
        return [
            item.created() if item.doc.run.id not in known else self._resubmitted(known[item.doc.run.id], item)
            for item in staged
        ]

    @staticmethod
    def _stage(doc: RunDocument, owner: str, client_hash: str, path: str) -> StagedRun:
        """`path` locates the document in the request body, for the errors' field names."""
        try:
            check_document(doc)
        except ApiError as exc:
            raise ApiError(exc.status, path + exc.field, exc.message) from None
        reasons = implausible(doc) + shared_machine(doc)
        flagged = "; ".join(reasons) if reasons else None
        submission = {
            "run_id": doc.run.id,
            "token_hash": owner,
            "received_at": _now(),
            "client_hash": client_hash,
            "content_hash": hashlib.sha256(doc.model_dump_json().encode()).hexdigest(),
            "hidden": 0,
            "flagged_reason": flagged,
        }
        return StagedRun(doc, path, submission, figures_of(doc, counted=flagged is None))

    def _refuse_unsubmitted(self, staged: list[StagedRun]) -> None:
        """A run id taken by a run that was imported here rather than submitted."""
        stored = set(self.repo.stored_runs([item.doc.run.id for item in staged]))
        for item in staged:
            if item.doc.run.id in stored:
                raise ApiError(409, f"{item.path}run.id", f"run {item.doc.run.id} is stored here but was never submitted")

    @staticmethod
    def _resubmitted(existing: SubmissionRow, item: StagedRun) -> Submitted:
        if existing.content_hash != item.submission["content_hash"]:
            raise ApiError(
                409, f"{item.path}run.id", f"a different run document with id {existing.run_id} is already stored"
            )
        return Submitted(id=existing.run_id, created=False, flagged_reason=existing.flagged_reason)

    def _owned(self, run_id: str, owner: str) -> SubmissionRow:
        submission = self.repo.submission(run_id)
        if submission is None:
            raise ApiError(404, "run_id", f"no run {run_id}")
        if submission.token_hash != owner:
            raise ApiError(403, "Authorization", "only the token that submitted a run may change it")
        return submission

    def delete(self, run_id: str, owner: str) -> None:
        self._owned(run_id, owner)
        self.repo.delete_run(run_id)
        self.session.commit()

    def set_hidden(self, run_id: str, owner: str, update: HiddenUpdate) -> RunState:
        submission = self._owned(run_id, owner)
        self.repo.set_hidden(submission, update.hidden)
        self.session.commit()
        return RunState(id=run_id, hidden=update.hidden, flagged_reason=submission.flagged_reason)

    # -- reading ---------------------------------------------------------------------------

    def get_run(self, run_id: str, token: str | None) -> SubmittedRun:
        """A hidden run is visible to its owner only; to anyone else it does not exist."""
        submission = self.repo.submission(run_id)
        if submission is None or (submission.hidden and (token is None or submission.token_hash != hash_token(token))):
            raise ApiError(404, "run_id", f"no run {run_id}")
        return SubmittedRun(
            id=run_id,
            received_at=datetime.fromisoformat(submission.received_at),
            hidden=bool(submission.hidden),
            flagged_reason=submission.flagged_reason,
            document=self.repo.document(run_id),
        )

    def list_runs(self, where: RunFilter, offset: int, limit: int) -> RunPage:
        if where.metric is not None:
            _known_metric(where.metric)
        where = RunFilter(
            device_model=device_model(where.device_model) if where.device_model else None,
            metric=where.metric,
            dtype=leaderboard_dtype(where.dtype) if where.dtype is not None else None,
            tool_version=where.tool_version,
        )
        listed = self.repo.list_runs(where, offset, limit + 1)
        page = listed[:limit]
        details = self.repo.devices_and_metrics([r.id for r in page])
        return RunPage(
            runs=[
                RunListItem(
                    id=r.id,
                    received_at=datetime.fromisoformat(r.received_at),
                    started_at=datetime.fromisoformat(r.started_at),
                    tool_version=r.tool_version,
                    device_models=details[r.id][0],
                    metrics=details[r.id][1],
                    flagged_reason=r.flagged_reason,
                )
                for r in page
            ],
            next_offset=offset + limit if len(listed) > limit else None,
        )

    def leaderboard(self, metric: str, dtype: str | None, variant: str | None) -> Leaderboard:
        unit = _known_metric(metric)
        key_dtype = leaderboard_dtype(dtype)
        rows = []
        for stats in self.repo.leaderboard(metric, key_dtype, variant):
            card = find_card(stats.device_model)
            price = card.launch_price_usd if card else None
            rows.append(
                LeaderboardRow(
                    device_model=stats.device_model,
                    variant=stats.variant,
                    count=stats.count,
                    median=stats.median,
                    p10=stats.p10,
                    p90=stats.p90,
                    per_watt=stats.per_watt,
                    per_watt_count=stats.per_watt_count,
                    per_dollar=stats.median / price if price and unit in THROUGHPUT_UNITS else None,
                    launch_price_usd=price,
                    reference=card is not None,
                )
            )
        rows.sort(key=lambda r: (-r.median, r.device_model, r.variant))
        return Leaderboard(metric=metric, unit=unit, dtype=key_dtype, variant=variant, rows=rows)

    def standing(self, metric: str, dtype: str | None, variant: str | None, device: str, value: float) -> Standing:
        _known_metric(metric)
        if not math.isfinite(value) or value < 0:
            raise ApiError(422, "value", "must be a finite, non-negative number")
        model, key_dtype, key_variant = device_model(device), leaderboard_dtype(dtype), variant or ""
        count, below = self.repo.standing(metric, key_dtype, key_variant, model, value)
        return Standing(
            metric=metric,
            dtype=key_dtype,
            variant=key_variant,
            device_model=model,
            value=value,
            count=count,
            percentile=100 * below / count if count else None,
        )


def _known_metric(metric: str) -> str:
    unit = METRICS.get(metric)
    if unit is None:
        raise ApiError(422, "metric", f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return unit


def figures_of(doc: RunDocument, *, counted: bool) -> list[dict[str, Any]]:
    """The leaderboard rows (table `figures`) of a run: one per measurement, keyed by device model, dtype, variant."""
    models = {d.id: device_model(d.name) for d in doc.devices}
    figures = []
    for seq, m in enumerate(doc.measurements):
        efficiency = m.efficiency if m.unit in THROUGHPUT_UNITS else None
        figures.append(
            {
                "run_id": doc.run.id,
                "seq": seq,
                "metric": m.metric,
                "dtype": leaderboard_dtype(m.dtype),
                "variant": m.variant or "",
                "device_model": models.get(m.device or "", m.device or ""),
                "value": m.value,
                "efficiency": efficiency if efficiency is not None and math.isfinite(efficiency) else None,
                "counted": int(counted),
            }
        )
    return figures
