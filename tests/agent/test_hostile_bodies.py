"""Control bodies nested deeper than any of ours are a client error, and state.json, which
holds the sticky-bucket keys, is readable by the agent alone."""

from __future__ import annotations

import stat

from tests.agent.conftest import Client
from tests.wasm_modules import handler_wasm


async def test_a_body_nested_too_deeply_is_400_not_a_traceback(client: Client) -> None:
    await client.deploy("f", "1", handler_wasm("one"))
    body = b"[" * 200_000 + b"]" * 200_000
    async with client.session.put(
        "/functions/f/traffic",
        data=body,
        headers={**client.auth, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert "nested too deeply" in (await r.json())["error"]
    status, _ = await client.traffic("f", weights=[{"version": "1", "percent": 100}])
    assert status == 200  # the agent is fine


async def test_state_json_is_readable_by_the_agent_alone(client: Client) -> None:
    await client.deploy("f", "1", handler_wasm("one"))
    state = client.agent.settings.data_dir / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
