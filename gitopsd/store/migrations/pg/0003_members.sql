-- The controllers sharing the database, each with a heartbeat on the database's clock, so
-- shard leases can be spread evenly: a process leads at most ceil(shards / live members).
CREATE TABLE members (
    holder TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
