"""The body of `gitopsd agent`, apart from the controller's commands (cli/commands.py).

An agent process imports the agent and nothing of the controller: reconcile, rollouts,
Git and the notifiers cost about 0.2 s of imports, paid at every agent start (bench P12)."""

from __future__ import annotations

from pathlib import Path

from gitopsd.agent.main import run_agent, run_agents
from gitopsd.agent.settings import AgentSettings, endpoints, parse_labels, parse_listen


def run_agent_cmd(
    listen: str,
    name: str,
    region: str,
    labels: tuple[str, ...],
    data_dir: str,
    token_file: str | None,
    memory_mib: int,
    count: int | None = None,
    base_port: int | None = None,
    controller: str | None = None,
) -> None:
    """Run one agent, or `count` endpoints from `base_port` on, until stopped."""
    host, port = parse_listen(listen)
    settings = AgentSettings(
        name=name,
        region=region,
        labels=parse_labels(labels),
        host=host,
        port=port,
        data_dir=Path(data_dir),
        token_file=Path(token_file) if token_file else None,
        memory_mib=memory_mib,
        controller=controller,
    )
    if count is None:
        run_agent(settings)
    else:
        run_agents(endpoints(settings, count, base_port if base_port is not None else port))
