"""The submission client: sends run documents to a flopwatt server, and reads the shared figures.

- The server issues an anonymous token on first use; it is kept per server in the user's config
  directory ($XDG_CONFIG_HOME/flopwatt or ~/.config/flopwatt), readable by the user only.
- Nothing identifying leaves the machine unless asked (`strip_identifying`): no host or user name,
  no address, serial, UUID, MAC or bus id.
- A run the server cannot take now (unreachable, overloaded, rate limited) is queued as the exact
  body that would have been sent; sending the queue again never duplicates, because the server
  answers a known run id with the stored one.
"""

from __future__ import annotations

import getpass
import hashlib
import gzip
import ipaddress
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from bench.api_models import API_PREFIX, ErrorBody, Leaderboard, Standing, Submitted, TokenIssued
from bench.document import RunDocument
from bench.errors import FlopwattError

DEFAULT_SERVER = "http://127.0.0.1:8765"

#: Keys dropped from free-form dictionaries (device extras, probe parameters, telemetry).
_IDENTIFYING_KEYS = re.compile(
    r"(^|_)(host|hostname|user|username|login|ip|addr|address|mac|serial|uuid|bus_?id|server|master|peer)(_|$)",
    re.IGNORECASE,
)
_FREE_FORM = ("extra", "params", "telemetry")
_UUID = re.compile(r"\b(GPU-|MIG-)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_MAC = re.compile(r"\b[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}\b")
_ADDRESS_CANDIDATE = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d+)?|[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]+")
REDACTED = "[redacted]"
#: What a network peer's name becomes in a device id ("net:HOST").
PEER = "peer"


def server_url(server: str | None = None) -> str:
    return (server or os.environ.get("FLOPWATT_SERVER") or DEFAULT_SERVER).rstrip("/")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flopwatt"


# -- what leaves the machine -----------------------------------------------------------------


def strip_identifying(doc: RunDocument) -> RunDocument:
    """The document without anything that names this machine, its user or its network peers."""
    peers = {item.device[4:] for item in (*doc.measurements, *doc.unavailable) if (item.device or "").startswith("net:")}
    peers |= {str(m.params[k]) for m in doc.measurements for k in ("server", "master") if m.params.get(k)}
    peers.discard(PEER)
    names = [n for n in (doc.host.hostname, _user(), str(Path.home()), *peers) if n and len(n) >= 3]
    raw = doc.model_dump(mode="json", exclude_computed_fields=True)
    raw["host"]["hostname"] = None
    for item in (*raw["measurements"], *raw["unavailable"]):
        if (item.get("device") or "").startswith("net:"):
            item["device"] = f"net:{PEER}"
    return RunDocument.model_validate(_scrub(raw, names, free_form=False))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        return None


def _scrub(value: Any, names: list[str], *, free_form: bool) -> Any:
    if isinstance(value, dict):
        return {
            key: _scrub(item, names, free_form=free_form or key in _FREE_FORM)
            for key, item in value.items()
            if not (free_form and _IDENTIFYING_KEYS.search(str(key)))
        }
    if isinstance(value, list):
        return [_scrub(item, names, free_form=free_form) for item in value]
    if isinstance(value, str):
        return redact(value, names)
    return value


def redact(text: str, names: list[str]) -> str:
    """Addresses, MACs, UUIDs and the given names (host, user, home directory) replaced."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", REDACTED, text)
    text = _UUID.sub(REDACTED, text)
    text = _MAC.sub(REDACTED, text)
    return _ADDRESS_CANDIDATE.sub(lambda m: REDACTED if _is_address(m.group(0)) else m.group(0), text)


def _is_address(candidate: str) -> bool:
    """An IPv4 or IPv6 address, with or without a port."""
    bare = candidate.strip("[]")
    for form in (bare, bare.rsplit(":", 1)[0].strip("[]")):
        try:
            ipaddress.ip_address(form)
        except ValueError:
            continue
        return True
    return False


def request_body(doc: RunDocument, *, include_identifying: bool = False) -> bytes:
    """The exact bytes `submit` sends for this run (before gzip), and `--dry-run` prints."""
    sent = doc if include_identifying else strip_identifying(doc)
    return sent.to_json().encode()


# -- talking to the server -------------------------------------------------------------------


class Unreachable(FlopwattError):
    """The server could not take the run now; it is worth sending again later."""


class Refused(FlopwattError):
    """The server answered no (4xx) and says why; sending the same again would change nothing."""


@dataclass(frozen=True)
class Outcome:
    run_id: str
    status: Literal["created", "existing", "queued", "refused"]
    #: Why the server flagged, queued or refused the run.
    note: str | None = None


class SubmitClient:
    """One server, one token, one queue. Use as a context manager."""

    def __init__(
        self,
        server: str | None = None,
        *,
        config: Path | None = None,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        self.config = config or config_dir()
        self.http = httpx.Client(base_url=self.server + API_PREFIX, timeout=timeout, transport=transport)

    def __enter__(self) -> SubmitClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    # -- token ---------------------------------------------------------------------------

    @property
    def _token_file(self) -> Path:
        return self.config / "tokens.json"

    def _tokens(self) -> dict[str, str]:
        try:
            return json.loads(self._token_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise FlopwattError(f"cannot read {self._token_file}: {exc}; delete it to get a new token") from exc

    def token(self, *, renew: bool = False) -> str:
        """This server's token for us, asking the server for one the first time."""
        tokens = self._tokens()
        if self.server in tokens and not renew:
            return tokens[self.server]
        issued = TokenIssued.model_validate(self._call("POST", "/tokens").json())
        tokens[self.server] = issued.token
        _write_private(self._token_file, json.dumps(tokens, indent=2).encode())
        return issued.token

    # -- submitting ----------------------------------------------------------------------

    def send(self, body: bytes) -> Submitted:
        """POST one prepared body; a token the server forgot is renewed once."""
        compressed = gzip.compress(body)
        for renew in (False, True):
            headers = {
                "Authorization": f"Bearer {self.token(renew=renew)}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            response = self._call("POST", "/runs", content=compressed, headers=headers, refuse=(401,))
            if response.status_code != 401:
                return Submitted.model_validate(response.json())
        raise FlopwattError(f"{self.server} refused a token it had just issued")

    def submit(self, doc: RunDocument, *, include_identifying: bool = False) -> Outcome:
        body = request_body(doc, include_identifying=include_identifying)
        try:
            sent = self.send(body)
        except Unreachable as exc:
            self.queue(doc.run.id, body)
            return Outcome(doc.run.id, "queued", str(exc))
        self._dequeue(doc.run.id)
        return Outcome(sent.id, "created" if sent.created else "existing", sent.flagged_reason)

    def send_pending(self) -> Iterator[Outcome]:
        """Send the queue, oldest first; stop at the first run the server can't take now.

        A run the server refuses (it would refuse it every time) moves to `refused/` beside the queue.
        """
        for path in self.pending():
            try:
                sent = self.send(path.read_bytes())
            except Unreachable as exc:
                yield Outcome(path.stem, "queued", str(exc))
                return
            except Refused as exc:
                path.parent.joinpath("refused").mkdir(exist_ok=True)
                path.replace(path.parent / "refused" / path.name)
                yield Outcome(path.stem, "refused", str(exc))
                continue
            path.unlink(missing_ok=True)
            yield Outcome(sent.id, "created" if sent.created else "existing", sent.flagged_reason)

    # -- the queue -----------------------------------------------------------------------

    @property
    def queue_dir(self) -> Path:
        """Per server: a queued run goes to the server it was meant for, never to another one."""
        return self.config / "pending" / hashlib.sha256(self.server.encode()).hexdigest()[:16]

    def queue(self, run_id: str, body: bytes) -> Path:
        path = self.queue_dir / f"{run_id}.json"
        _write_private(path, body)
        return path

    def pending(self) -> list[Path]:
        if not self.queue_dir.is_dir():
            return []
        return sorted(self.queue_dir.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))

    def _dequeue(self, run_id: str) -> None:
        (self.queue_dir / f"{run_id}.json").unlink(missing_ok=True)

    # -- reading the shared figures ------------------------------------------------------

    def leaderboard(self, metric: str, dtype: str | None = None, variant: str | None = None) -> Leaderboard:
        params = {k: v for k, v in {"metric": metric, "dtype": dtype, "variant": variant}.items() if v}
        return Leaderboard.model_validate(self._call("GET", "/leaderboard", params=params).json())

    def standing(self, metric: str, device: str, value: float, dtype: str | None, variant: str | None) -> Standing:
        params = {"metric": metric, "device": device, "value": value, "dtype": dtype, "variant": variant}
        return Standing.model_validate(
            self._call("GET", "/standing", params={k: v for k, v in params.items() if v is not None}).json()
        )

    # -- one request ---------------------------------------------------------------------

    def _call(self, method: str, path: str, *, refuse: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """The response, or Unreachable (try later) or Refused (the server said no, and why)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.server}: {exc or type(exc).__name__}") from exc
        if response.status_code in refuse or response.status_code < 400:
            return response
        reason = _reason(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise Unreachable(f"{self.server} cannot take it now ({response.status_code}: {reason})")
        raise Refused(f"{self.server} refused it ({response.status_code}): {reason}")


def _reason(response: httpx.Response) -> str:
    try:
        error = ErrorBody.model_validate(response.json()).error
    except ValueError:
        return response.text[:200] or response.reason_phrase
    return f"{error.field}: {error.message}"


def _write_private(path: Path, data: bytes) -> None:
    """Write readable by the user only, atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
