"""The edge agent: hosts WASM functions with wasmtime behind the HTTP API of
docs/agent-api.md. Start one with `start_agent` (async) or `run_agent` (blocking)."""

from gitopsd.agent.main import RunningAgent, run_agent, start_agent
from gitopsd.agent.runtime import CallResult, Outcome, Runtime
from gitopsd.agent.settings import AgentSettings, parse_labels, parse_listen

__all__ = [
    "AgentSettings",
    "CallResult",
    "Outcome",
    "RunningAgent",
    "Runtime",
    "parse_labels",
    "parse_listen",
    "run_agent",
    "start_agent",
]
