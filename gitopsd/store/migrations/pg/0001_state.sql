-- The state tables, as in SQLite (gitopsd/store/sqlite.py): times are the caller's clock in
-- seconds since the epoch; JSON documents are kept as the text gitopsd wrote.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    version TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    step TEXT NOT NULL DEFAULT '',
    context TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    aborting BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX rollouts_function ON rollouts (function, created_at);
CREATE INDEX rollouts_created ON rollouts (created_at);
CREATE TABLE journal (
    rollout_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    outcome TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    deadline DOUBLE PRECISION,
    PRIMARY KEY (rollout_id, seq)
);
CREATE TABLE controls (
    function TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    held BOOLEAN NOT NULL DEFAULT FALSE,
    held_reason TEXT NOT NULL DEFAULT '',
    promote BOOLEAN NOT NULL DEFAULT FALSE,
    abort BOOLEAN NOT NULL DEFAULT FALSE,
    approved_version TEXT,
    updated_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE modules (
    sha256 TEXT PRIMARY KEY,
    wasm BYTEA NOT NULL
);
CREATE TABLE retirements (
    function TEXT NOT NULL,
    node TEXT NOT NULL,
    version TEXT NOT NULL,
    due DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (function, node, version)
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
