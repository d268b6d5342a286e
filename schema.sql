-- flopwatt's one schema, valid on SQLite and PostgreSQL alike.
-- bench/orm.py mirrors it; tests/test_schema.py proves the two agree on both engines.
-- Figures are in SI base units (FLOP/s, B/s, bit/s, s, W, J). Times are ISO 8601 text in UTC.
-- JSON columns hold text so both engines store them the same way.

CREATE TABLE schema_info (
    version INTEGER PRIMARY KEY
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    tool_version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'aborted')),
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    host_json TEXT NOT NULL,
    cpu_model TEXT NOT NULL,
    os TEXT NOT NULL,
    torch_version TEXT
);

CREATE INDEX runs_started_at ON runs (started_at);

CREATE TABLE devices (
    run_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    memory_bytes BIGINT,
    info_json TEXT NOT NULL,
    PRIMARY KEY (run_id, device_id),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
);

CREATE TABLE measurements (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    probe TEXT NOT NULL,
    metric TEXT NOT NULL,
    variant TEXT,
    dtype TEXT,
    device TEXT,
    unit TEXT NOT NULL,
    -- value is the median of samples_json; min, max and n are derived from it too.
    value DOUBLE PRECISION NOT NULL,
    min_value DOUBLE PRECISION NOT NULL,
    max_value DOUBLE PRECISION NOT NULL,
    n INTEGER NOT NULL,
    samples_json TEXT NOT NULL,
    params_json TEXT NOT NULL,
    peak DOUBLE PRECISION,
    peak_source TEXT,
    energy_method TEXT,
    energy_joules DOUBLE PRECISION,
    energy_watts_avg DOUBLE PRECISION,
    energy_watts_peak DOUBLE PRECISION,
    energy_seconds DOUBLE PRECISION,
    energy_idle_watts DOUBLE PRECISION,
    energy_unavailable_reason TEXT,
    energy_telemetry_json TEXT,
    PRIMARY KEY (run_id, seq),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
);

CREATE INDEX measurements_metric ON measurements (metric, dtype);

CREATE TABLE unavailable (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    probe TEXT NOT NULL,
    device TEXT,
    metric TEXT,
    dtype TEXT,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, seq),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
);

-- The results server (`flopwatt serve`): who submitted what, and what the leaderboard counts.
-- A submitter is an anonymous token; only its SHA-256 is stored. Client addresses are stored only
-- as a keyed hash, enough to link abuse from one place without keeping the address.

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    client_hash TEXT NOT NULL
);

CREATE TABLE submissions (
    run_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    received_at TEXT NOT NULL,
    client_hash TEXT NOT NULL,
    -- SHA-256 of the document as stored: a resubmission must match it to count as the same run.
    content_hash TEXT NOT NULL,
    -- 1 when the owner hid the run: kept, but out of listings and aggregates.
    hidden INTEGER NOT NULL,
    -- Why a figure is implausible against the datasheet table; such a run stays out of aggregates.
    flagged_reason TEXT,
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE,
    FOREIGN KEY (token_hash) REFERENCES tokens (token_hash) ON DELETE CASCADE
);

CREATE INDEX submissions_received_at ON submissions (received_at);

CREATE INDEX submissions_token ON submissions (token_hash);

-- One row per submitted measurement, keyed for the leaderboard: the device's model (the reference
-- card's name where one matches), '' for a missing dtype or variant, and whether it is counted.
CREATE TABLE figures (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    metric TEXT NOT NULL,
    dtype TEXT NOT NULL,
    variant TEXT NOT NULL,
    device_model TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    -- value per watt of the measurement window, where its energy was measured
    efficiency DOUBLE PRECISION,
    -- 1 when the run is neither hidden nor flagged
    counted INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
);

-- Covers the leaderboard: its groups are read in order from this index alone, never from the table.
CREATE INDEX figures_board ON figures (metric, dtype, variant, device_model, counted, value, efficiency);

-- The leaderboard, one row per group of figures (metric, dtype, variant, device model), kept as runs
-- arrive: a write bumps `version` of every group it touches, in its own transaction; a read first
-- recomputes the groups whose stats are older than their version. A read so costs the groups that
-- changed since the last one, never a scan of every figure stored.
CREATE TABLE board_groups (
    metric TEXT NOT NULL,
    dtype TEXT NOT NULL,
    variant TEXT NOT NULL,
    device_model TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- the version the stats below include; they are recomputed before a read while it is lower
    computed_version BIGINT NOT NULL,
    -- counted figures in the group (0: none, and the group is not shown)
    figure_count INTEGER NOT NULL,
    p10 DOUBLE PRECISION,
    median DOUBLE PRECISION,
    p90 DOUBLE PRECISION,
    -- median value per watt, over the figures that have one
    per_watt DOUBLE PRECISION,
    per_watt_count INTEGER NOT NULL,
    PRIMARY KEY (metric, dtype, variant, device_model)
);
