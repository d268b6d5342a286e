"""The shared results server: FastAPI routes -> service -> repository, over the one schema.sql.

`bench.server.app.create_app(db_url)` builds everything (no engine exists at import time);
`flopwatt serve` runs it on uvicorn. Nothing is imported here, so that `bench.server.settings`
loads without FastAPI.
"""
