"""Errors a user can cause, shown as one line (exit code 2 at the CLI, a 4xx JSON body at the server).

    FlopwattError            anything the user can fix: bad option, missing file, unknown run
    ├── StoreError           the database cannot be opened, is corrupt, or refuses a write
    └── DocumentError        a run document that does not validate (import, submit)

Probes raise probes.measurement.ProbeError for the same purpose (probes never import bench).
Anything else that escapes is a bug and may show a traceback.
"""


class FlopwattError(Exception):
    """A mistake or situation the user can act on; the message is one line."""


class StoreError(FlopwattError):
    """The database cannot be used as asked."""


class DocumentError(FlopwattError):
    """A run document is malformed or inconsistent."""
