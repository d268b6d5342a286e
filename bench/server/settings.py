"""What `flopwatt serve` hands to the worker processes uvicorn starts: environment variable names.

Apart from the app, so that the CLI can name them without importing FastAPI.
"""

#: The database URL of every worker.
DB_ENV = "FLOPWATT_SERVE_DB"
#: The key for hashing client addresses; one for all workers, so each hashes a client alike.
SECRET_ENV = "FLOPWATT_SERVER_SECRET"
