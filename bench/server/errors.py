"""The server's user-facing error: an HTTP status, the field at fault and one line saying why."""

from __future__ import annotations

from bench.errors import FlopwattError


class ApiError(FlopwattError):
    """Becomes a 4xx JSON body (api_models.ErrorBody) in the app's one exception handler."""

    def __init__(self, status: int, field: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.headers = headers or {}
