"""The crash sweep's reads of a shared PostgreSQL state, and its writer audit.

The rows come back as the SQLite sweep reads them (tests/faults/sweep.py: the same column
names, step and outcome as the JSON text gitopsd wrote), so its journal and fleet checks
apply unchanged.

"Never two writers in one term" is checked from the database's side: an AFTER trigger on
every table gitopsd writes records each row written, with the fence its transaction
claimed (holder and terms, `SET LOCAL gitopsd.fence`) and a number from a sequence. The
fence trigger holds the lease row FOR SHARE from its check to the commit, and the audit
row is numbered inside that window, so in numbering order the committed writes of a term
all come before those of the next term. A term written by two holders, a write of an
older term after a newer one (a deposed leader that got through), or a write claiming no
term at all from a daemon is a violation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gitopsd.store.shards import shard_of

Row = dict[str, Any]

AUDITED = ("rollouts", "journal", "controls", "retirements", "kv", "modules")

AUDIT_SQL = """
CREATE TABLE sweep_audit (
    n BIGSERIAL PRIMARY KEY,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    fn TEXT,
    fence TEXT,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION sweep_audit() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    fn TEXT;
BEGIN
    IF TG_TABLE_NAME = 'journal' THEN
        SELECT r.function INTO fn FROM rollouts r
            WHERE r.id = CASE WHEN TG_OP = 'DELETE' THEN OLD.rollout_id ELSE NEW.rollout_id END;
    ELSIF TG_TABLE_NAME IN ('rollouts', 'controls', 'retirements') THEN
        fn := CASE WHEN TG_OP = 'DELETE' THEN OLD.function ELSE NEW.function END;
    END IF;
    INSERT INTO sweep_audit (tbl, op, fn, fence)
        VALUES (TG_TABLE_NAME, TG_OP, fn, nullif(current_setting('gitopsd.fence', true), ''));
    RETURN NULL;
END $$;
"""


class SharedState:
    """Read-only queries (plus the audit's set-up) on the daemons' database."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)

    def close(self) -> None:
        self.conn.close()

    def install_audit(self) -> None:
        """Once the schema exists, before any daemon starts."""
        self.conn.execute(AUDIT_SQL)
        for table in AUDITED:
            self.conn.execute(
                f"CREATE TRIGGER {table}_sweep_audit AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION sweep_audit()"
            )

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        return [dict(r) for r in self.conn.execute(sql.encode(), args).fetchall()]

    def rollouts_of(self, function: str, version: str) -> list[Row]:
        return self._rows(
            "SELECT * FROM rollouts WHERE function = %s AND version = %s ORDER BY created_at",
            (function, version),
        )

    def journal_of(self, rollout_id: str) -> list[Row]:
        return self._rows("SELECT * FROM journal WHERE rollout_id = %s ORDER BY seq", (rollout_id,))

    def progress(self, function: str, version: str) -> tuple[int, Row | None]:
        """(journal events so far, newest journal row) of the version's rollouts."""
        count = self._rows(
            "SELECT COUNT(*) + COUNT(j.outcome) AS n FROM journal j JOIN rollouts r"
            " ON j.rollout_id = r.id WHERE r.function = %s AND r.version = %s",
            (function, version),
        )
        last = self._rows(
            "SELECT j.* FROM journal j JOIN rollouts r ON j.rollout_id = r.id"
            " WHERE r.function = %s AND r.version = %s ORDER BY r.created_at DESC, j.seq DESC"
            " LIMIT 1",
            (function, version),
        )
        return int(count[0]["n"]), last[0] if last else None

    def unfinished(self) -> tuple[int, int]:
        """(dangling journal rows, rollouts neither finished nor rolled back)."""
        dangling = self._rows("SELECT COUNT(*) AS n FROM journal WHERE outcome IS NULL")
        active = self._rows(
            "SELECT COUNT(*) AS n FROM rollouts"
            " WHERE state NOT IN ('COMPLETED', 'ROLLED_BACK', 'FAILED')"
        )
        return int(dangling[0]["n"]), int(active[0]["n"])

    def audit(self) -> list[Row]:
        return self._rows("SELECT * FROM sweep_audit ORDER BY n")


def writer_violations(audit: list[Row], shards: int, pids: set[int]) -> tuple[list[str], int]:
    """(violations of "one writer per term, terms never go back", terms seen) of `audit`."""
    bad: list[str] = []
    holders: dict[tuple[int, int], set[str]] = defaultdict(set)
    newest: dict[int, int] = {}
    for row in audit:
        where = f"audit #{row['n']} ({row['op']} {row['tbl']} {row['fn'] or ''})"
        if row["fence"] is None:
            bad.append(f"{where}: written without a fence (no term claimed)")
            continue
        fence = json.loads(row["fence"])
        holder = str(fence["holder"])
        if int(holder.split(":")[1]) not in pids:
            bad.append(f"{where}: holder {holder} is none of the daemons started")
        terms = {int(s): int(t) for s, t in fence["terms"].items()}
        led = [shard_of(row["fn"], shards)] if row["fn"] is not None else sorted(terms)
        for shard in led:
            term = terms.get(shard)
            if term is None:
                bad.append(f"{where}: committed without a term for shard {shard}")
                continue
            holders[(shard, term)].add(holder)
            if term < newest.get(shard, term):
                bad.append(
                    f"{where}: term {term} of shard {shard} wrote after term {newest[shard]}"
                )
            newest[shard] = max(term, newest.get(shard, term))
    for (shard, term), who in sorted(holders.items()):
        if len(who) > 1:
            bad.append(f"shard {shard} term {term} written by {len(who)} holders: {sorted(who)}")
    return bad, len(holders)
