"""Which dial-out agents hold a tunnel to the controller, for `diff` and `status`.

The daemon's tunnel listener answers `GET /agents` (bearer: `listing_token` of the fleet
secret) with the connected agents (since when, from which address) and the agents Git does
not name, kept waiting. A command run on the controller's host asks it through `[fleet]
listen`; a dial-out node Git names and the listing lacks is "not connected".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitopsd.fleet.tokens import FleetAuth, excerpt
from gitopsd.fleet.tunnel import listing_token
from gitopsd.http_body import read_capped
from gitopsd.manifest.models import is_dial_out

ASK_TIMEOUT_S = 5.0


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _Seen(_Wire):
    since: float
    peer: str = Field(alias="from", max_length=300)


class _Unknown(_Seen):
    name: str = Field(max_length=300)


class _Listing(_Wire):
    connected: dict[str, _Seen] = Field(default_factory=dict, max_length=100_000)
    unknown: list[_Unknown] = Field(default_factory=list, max_length=100_000)


@dataclass(frozen=True)
class Presence:
    """Dial-out agents as the controller's listener sees them; `error` when it could not
    be asked (then nothing is known about any of them)."""

    nodes: tuple[str, ...] = ()  # dial-out nodes Git names
    connected: dict[str, tuple[float, str]] = field(default_factory=dict)  # since, from
    unknown: tuple[tuple[str, float, str], ...] = ()  # name, since, from
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The `dialOut` member of `status --output json` and `diff --output json`."""
        return {
            "nodes": {n: self._node_json(n) for n in self.nodes},
            "unknownAgents": [
                {"name": n, "since": _iso(s), "from": peer} for n, s, peer in self.unknown
            ],
            "error": self.error,
        }

    def _node_json(self, node: str) -> dict[str, Any]:
        seen = self.connected.get(node)
        if seen is None:
            return {"connected": False}
        return {"connected": True, "since": _iso(seen[0]), "from": seen[1]}

    def lines(self) -> list[tuple[str, bool]]:
        """(text, fine) per dial-out node and unknown agent, for the text output."""
        if self.error is not None:
            return [(f"dial-out nodes {', '.join(self.nodes)}: {self.error}", False)]
        out: list[tuple[str, bool]] = []
        for node in self.nodes:
            seen = self.connected.get(node)
            if seen is None:
                out.append((f"{node}: dial-out, not connected to the controller", False))
            else:
                out.append(
                    (f"{node}: dial-out, connected since {_clock(seen[0])} from {seen[1]}", True)
                )
        for name, since, peer in self.unknown:
            out.append(
                (
                    f"{name}: unknown agent (connected since {_clock(since)} from {peer}; "
                    "Git names no dial-out EdgeNode of this name: kept waiting, sent nothing)",
                    False,
                )
            )
        return out


async def fetch_presence(auth: FleetAuth, nodes: Iterable[str]) -> Presence:
    """Ask the controller's listener (`auth.relay`) which agents are connected."""
    names = tuple(sorted(nodes))
    if auth.relay is None:
        return Presence(names, error="not reachable: [fleet] listen is not set in this config")
    if auth.secret is None:
        return Presence(names, error="unknown: no fleet secret to ask the controller with")
    headers = {"Authorization": f"Bearer {listing_token(auth.secret)}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)) as session,
            session.get(f"{auth.relay}/agents", headers=headers, allow_redirects=False) as resp,
        ):
            raw = await read_capped(resp.content, 8 << 20)
            if resp.status != 200:
                return Presence(names, error=f"the controller's listener answered {resp.status}")
        listing = _Listing.model_validate_json(raw)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        where = excerpt(auth.relay, 120)
        return Presence(
            names,
            error=f"unknown: no controller listening at {where} ({exc.__class__.__name__}): "
            "is the daemon running?",
        )
    except ValidationError:
        return Presence(names, error="unknown: the controller's listing is not understood")
    return Presence(
        names,
        {n: (s.since, excerpt(s.peer, 80)) for n, s in listing.connected.items() if n in names},
        tuple((excerpt(u.name, 63), u.since, excerpt(u.peer, 80)) for u in listing.unknown[:100]),
    )


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def presence_of(auth: FleetAuth, nodes: Mapping[str, str]) -> Presence | None:
    """The presence of the dial-out nodes among `nodes` (name -> address), asked when there
    are any or when this config sets `[fleet] listen`; None otherwise (nothing to show)."""
    names = [n for n, address in nodes.items() if is_dial_out(address)]
    if not names and auth.relay is None:
        return None
    return asyncio.run(fetch_presence(auth, names))
