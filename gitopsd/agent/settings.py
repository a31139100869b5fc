"""Settings of one edge agent, and parsers for the CLI's `--listen` and `--label` values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from gitopsd.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """What `gitopsd agent` is started with.

    `token` is the bearer token itself; when None it is read from `token_file`, else
    generated once into `<data_dir>/token` (see `resolve_token`). `port=0` picks a free port.
    """

    name: str
    region: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    host: str = "127.0.0.1"
    port: int = 9101
    data_dir: Path
    token: str | None = None
    token_file: Path | None = None
    memory_mib: int = 1024
    max_module_bytes: int = 8 * MIB
    # What one client can hold (data_plane.py): deadlines for a request head, for a body to
    # arrive and for an idle kept-alive connection; the connection cap (None: the open-files
    # limit minus the agent's own headroom), the share of it kept for control requests and
    # /healthz, and the bytes of request bodies held at once.
    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    max_connections: int | None = None
    control_connections: int = 32
    body_buffer_bytes: int = 128 * MIB
    # `--controller URL`: dial out to the controller (agent/dialout.py) and take its control
    # requests over that connection; None: the controller connects to this listener.
    controller: str | None = None

    def __post_init__(self) -> None:
        # Freeze the labels too: a frozen dataclass holding a mutable dict is not frozen.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not self.name:
            raise ConfigError("agent: --name must not be empty")
        if self.memory_mib <= 0:
            raise ConfigError(f"agent: --memory-mib must be positive, got {self.memory_mib}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"agent: port must be 0..65535, got {self.port}")
        for what, seconds in (
            ("head_timeout_s", self.head_timeout_s),
            ("body_timeout_s", self.body_timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
        ):
            if not seconds > 0:
                raise ConfigError(f"agent: {what} must be positive, got {seconds}")
        if self.control_connections < 0:
            raise ConfigError(
                f"agent: control_connections must not be negative, got {self.control_connections}"
            )
        if self.max_connections is not None and self.max_connections <= self.control_connections:
            raise ConfigError(
                f"agent: max_connections ({self.max_connections}) must be more than "
                f"control_connections ({self.control_connections})"
            )
        if self.controller is not None:
            from gitopsd.agent.dialout import connect_url

            connect_url(self.controller)  # ConfigError for a URL it cannot dial
            if self.token is None and self.token_file is None:
                raise ConfigError(
                    "agent: --controller needs --token-file holding this node's dial-out token "
                    f"(`gitopsd agent-token {self.name} --dial-out` on the controller)"
                )
        if self.body_buffer_bytes < self.max_module_bytes:
            raise ConfigError(
                f"agent: body_buffer_bytes ({self.body_buffer_bytes}) must hold at least one "
                f"body of max_module_bytes ({self.max_module_bytes})"
            )


def endpoints(base: AgentSettings, count: int, base_port: int) -> list[AgentSettings]:
    """`count` endpoints built from `base`: `NAME-i` on port `base_port + i`, data dir
    `DATA_DIR/NAME-i`, for i in 0..count-1 (`gitopsd agent --count N --base-port P`)."""
    if count < 1:
        raise ConfigError(f"agent: --count must be at least 1, got {count}")
    if base_port < 1 or base_port + count - 1 > 65535:
        raise ConfigError(
            f"agent: ports {base_port}..{base_port + count - 1} are not all within 1..65535"
        )
    return [
        replace(
            base,
            name=f"{base.name}-{i}",
            port=base_port + i,
            data_dir=base.data_dir / f"{base.name}-{i}",
        )
        for i in range(count)
    ]


def parse_listen(value: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:9101`) into host and port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9101")
    host = host.strip("[]") or "0.0.0.0"
    number = int(port)
    if number > 65535:
        raise ConfigError(f"--listen {value!r}: port must be 0..65535")
    return host, number


def parse_labels(values: Iterable[str]) -> dict[str, str]:
    """Turn repeated `--label k=v` values into a mapping."""
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE, e.g. tier=prod")
        labels[key] = value
    return labels
