"""Who did what from the status page, and when: kept in the state store per function (the
newest AUDIT_LIMIT actions) and logged, so the function page can show them."""

from __future__ import annotations

import json
from typing import Any

from gitopsd.store.protocol import Store

AUDIT_LIMIT = 50


def _key(function: str) -> str:
    return f"ui-audit:{function}"


def entries(store: Store, function: str) -> list[dict[str, Any]]:
    """Newest first."""
    raw = store.get(_key(function))
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def record(
    store: Store,
    function: str,
    action: str,
    who: str,
    remote: str,
    at: float,
    ok: bool,
    result: str,
) -> None:
    from gitopsd.ui.views import iso

    entry = {
        "at": iso(at),
        "who": who,
        "from": remote,
        "action": action,
        "ok": ok,
        "result": result,
    }
    kept = [entry, *entries(store, function)][:AUDIT_LIMIT]
    store.put(_key(function), json.dumps(kept))
