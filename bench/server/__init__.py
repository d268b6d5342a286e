"""The shared results server: FastAPI routes -> service -> repository, over the one schema.sql.

`create_app(db_url)` builds everything (no engine exists at import time); `flopwatt serve` runs it
on uvicorn.
"""

from bench.server.app import create_app

__all__ = ["create_app"]
