"""The store's interface: what the engine, the reconciler, the daemon and the CLI may ask of
durable state. `SqliteStore` implements it today; a PostgreSQL store must implement it too and
pass the same contract suite (tests/store/contract.py).

Contract shared by every method:

- Each call is one transaction: when it returns, its change is durable and visible to every
  other process using the same state (a CLI command beside the daemon); when it raises,
  nothing of it was applied.
- Reads return values (`rows.py`), never live cursors or driver objects.
- Failures are typed: a store that cannot be reached or written raises `StoreError`; one whose
  data is damaged raises `StateError` naming where the state lives and how to rebuild it.
  Driver exceptions never escape. A field name a method does not know is a bug in the
  caller and raises `ValueError` before anything is written.
- Times are the caller's clock (seconds since the epoch, floats): the store never reads a
  clock of its own, so a fake clock in tests and replay after a restart see the same values.

The interface is synchronous because every caller uses it synchronously, between awaits
(each call is short and local); a networked store keeps that shape with a blocking driver or
runs its asyncio driver behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gitopsd.store.rows import Controls, IntegrityReport, JournalRow, RolloutRow


class Store(Protocol):
    """Durable state: rollouts and their step journal, operator controls, module bytes,
    scheduled retirements and a small key/value table."""

    @property
    def location(self) -> str:
        """Where the state lives, for messages (a file path; a URL without its password)."""
        ...

    def close(self) -> None:
        """Release the connection. The store must not be used afterwards."""
        ...

    def check(self, thorough: bool = False) -> IntegrityReport:
        """Check the stored data for damage without changing it. `thorough` asks for the
        full check (slower: it may read every byte); the quick one is for start-up."""
        ...

    # rollouts -------------------------------------------------------------------------------

    def create_rollout(self, row: RolloutRow) -> None:
        """Record a new rollout exactly as given; an id already stored raises StoreError and
        leaves the stored row unchanged."""
        ...

    def update_rollout(self, rollout_id: str, now: float, **fields: Any) -> None:
        """Set some of `rows.ROLLOUT_FIELDS` (`aborting` as bool or 0/1) and `updated_at = now`.
        An unknown id changes nothing and is not an error (the rollout may have been
        superseded by another process)."""
        ...

    def rollout(self, rollout_id: str) -> RolloutRow | None:
        """The rollout with this id, or None."""
        ...

    def rollouts(self, function: str | None = None, limit: int = 1000) -> list[RolloutRow]:
        """Up to `limit` rollouts (of `function` when given), newest `created_at` first."""
        ...

    def active_rollouts(self) -> list[RolloutRow]:
        """Rollouts whose state is not in `rows.FINAL_STATES`, oldest `created_at` first."""
        ...

    # journal --------------------------------------------------------------------------------

    def journal(self, rollout_id: str) -> list[JournalRow]:
        """Every journaled step of a rollout in `seq` order, whatever order they were
        written in; empty for an unknown rollout."""
        ...

    def begin_step(
        self,
        rollout_id: str,
        seq: int,
        step: Mapping[str, Any],
        now: float,
        deadline: float | None = None,
        label: str = "",
    ) -> None:
        """Journal step `seq` as started (outcome None, its absolute `deadline` if a wait)
        and, in the same transaction, make a rollout that is not final IN_PROGRESS with
        `step = label`; a final rollout keeps its state. A `seq` already journaled for this
        rollout raises StoreError and changes nothing: a step is begun once."""
        ...

    def finish_step(
        self, rollout_id: str, seq: int, outcome: Mapping[str, Any], now: float
    ) -> None:
        """Record the outcome of a begun step (`finished_at = now`); once this returns, a
        restarted daemon replays the step instead of running it again. A step that was never
        begun is not created by this: nothing changes."""
        ...

    # controls -------------------------------------------------------------------------------

    def controls_stamp(self) -> float:
        """The latest `now` given to `set_control` for any function, 0.0 if never: a cheap
        "did an operator change anything" probe."""
        ...

    def controls(self, function: str) -> Controls:
        """The function's operator controls; all defaults when none were ever set."""
        ...

    def set_control(self, function: str, now: float, **fields: Any) -> None:
        """Set some of `rows.CONTROL_FIELDS` (flags as bool or 0/1), keeping the others."""
        ...

    # modules --------------------------------------------------------------------------------

    def put_module(self, sha256: str, wasm: bytes) -> None:
        """Keep module bytes under their digest; storing a digest twice keeps the first."""
        ...

    def module(self, sha256: str) -> bytes | None:
        """The bytes stored under `sha256`, or None."""
        ...

    # retirements ----------------------------------------------------------------------------

    def schedule_retirement(self, function: str, node: str, version: str, due: float) -> None:
        """Plan to unload `version` of `function` from `node` at `due`; scheduling the same
        triple again replaces its due time."""
        ...

    def due_retirements(self, now: float) -> list[tuple[str, str, str]]:
        """(function, node, version) of every retirement due at or before `now`, earliest
        due first; they stay scheduled until cancelled."""
        ...

    def cancel_retirement(self, function: str, node: str, version: str) -> None:
        """Forget a scheduled retirement (done, or no longer wanted); unknown ones are fine."""
        ...

    # key/value ------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The value stored under `key` (last applied commit, holds, waiting reasons,
        the daemon's last error ...), or None."""
        ...

    def put(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing any previous value."""
        ...
