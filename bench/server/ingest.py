"""Group commit: runs that concurrent requests submit are written together, one transaction per group.

A transaction of its own per submission costs more than its rows (BEGIN, six INSERTs, COMMIT and its
WAL flush, and a worker thread each), and on a small server that overhead is the ingest limit. One
writer thread takes every request waiting when it is free, inserts all their runs in one
transaction and answers each. If the group clashes (a run already stored, or the same run sent by
two requests at once), it is rolled back and each request is stored alone, exactly as without
grouping, so a resubmission or a 409 reaches only the request it concerns.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.api_models import Submitted
from bench.server.repository import Repository, StagedRun
from bench.server.service import Service

#: Runs written in one transaction at most; a larger backlog is written in several.
MAX_GROUP_RUNS = 200


@dataclass
class PendingRequest:
    """One request's staged runs, and the future its handler awaits."""

    staged: list[StagedRun]
    future: asyncio.Future[list[Submitted]]
    loop: asyncio.AbstractEventLoop

    def answer(self, outcome: list[Submitted] | BaseException) -> None:
        """Settle the request's future on its own event loop (this runs in the writer thread)."""
        self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future[list[Submitted]], outcome: list[Submitted] | BaseException) -> None:
    if future.done():  # the request was cancelled: its client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class GroupWriter:
    """The one thread that writes submitted runs. `await store(staged)` returns what `Service.store` would."""

    def __init__(self, engine: Engine, session: Callable[[Engine], Session] = Session) -> None:
        """`session`: how the writer opens a session; tests give one that fails on purpose."""
        self.engine = engine
        self.session = session
        self._queue: queue.SimpleQueue[PendingRequest | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def store(self, staged: list[StagedRun]) -> list[Submitted]:
        loop = asyncio.get_running_loop()
        request = PendingRequest(staged, loop.create_future(), loop)
        self._start()
        self._queue.put(request)
        return await request.future

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flopwatt-writer", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread (the server calls this once requests have drained)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, runs = [first], len(first.staged)
            while runs < MAX_GROUP_RUNS:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:  # stop: finish this group first
                    self._queue.put(None)
                    break
                group.append(waiting)
                runs += len(waiting.staged)
            try:
                self.write_group(group)
            except Exception as exc:  # noqa: BLE001  (even a failing rollback must not leave a request waiting)
                for request in group:
                    request.answer(exc)  # ignored by requests already answered

    def write_group(self, group: list[PendingRequest]) -> None:
        with self.session(self.engine) as session:
            service = Service(Repository(session))
            if len(group) > 1 and self._write_together(service, group):
                return
            for request in group:
                try:
                    request.answer(service.store(request.staged))
                except Exception as exc:  # noqa: BLE001  (the request's own error, answered by the app's handler)
                    session.rollback()
                    request.answer(exc)

    @staticmethod
    def _write_together(service: Service, group: list[PendingRequest]) -> bool:
        """All the group's runs in one transaction; False (and nothing written) if any run id clashes."""
        try:
            service.repo.add_runs([item for request in group for item in request.staged])
            service.session.commit()
        except IntegrityError:
            service.session.rollback()
            return False
        except Exception as exc:  # noqa: BLE001  (the database is down: every request is told)
            service.session.rollback()
            for request in group:
                request.answer(exc)
            return True
        for request in group:
            request.answer([item.created() for item in request.staged])
        return True
