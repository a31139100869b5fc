"""Per-node agent credentials, the address allow-list, and safe excerpts of foreign answers.

The controller's token file holds the *fleet secret*; it never leaves the controller. What a
node's agent holds (`gitopsd agent --token-file`), and what the controller sends to that node
only, is the node's own token:

    token(name, address) = hex(HMAC-SHA256(key = fleet secret,
                                           message = name + "\\n" + canonical(address)))
    token(name)          = hex(HMAC-SHA256(key = fleet secret, message = name))   # dial-out

The fleet secret is the first line of the token file with surrounding whitespace removed,
as UTF-8 bytes. `canonical(address)` writes the manifest's `spec.address` one way:
`scheme://host:port[/path]`, scheme and host in lower case, the port always written (80 for
http, 443 for https), an IPv6 host in brackets, no trailing `/`. Node names are DNS labels
(no newline) and a canonical address always holds "://", so no two (name, address) pairs and
no dial-out name share a message. With openssl:

    printf '%s\\n%s' edge-a http://127.0.0.1:9101 \\
      | openssl dgst -sha256 -hmac "$(head -n1 fleet-secret)" -r | cut -d' ' -f1

A stolen edge box so yields one node's token, valid on that node only; a manifest that
points a node at another host hands that host a token no agent accepts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from gitopsd.errors import AgentError, ConfigError

TokenMode = Literal["per-node", "shared"]

# Words diff and status look for: a refused token or address is not "unreachable".
REFUSED_TOKEN = "refused our token"
NOT_ALLOWED = "outside [fleet] allowed_addresses"
EXCERPT_CHARS = 200

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_PATTERN = re.compile(r"^[a-z0-9*?\[\]!._-]+$")


class AddressNotAllowed(AgentError):
    """A node's address is outside `[fleet] allowed_addresses`: nothing was sent to it."""


def canonical_address(address: str) -> str:
    """`address` as it enters the token's message (see the module docstring)."""
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid agent address {excerpt(address)}: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise ConfigError(
            f"invalid agent address {excerpt(address)}: use an http:// or https:// URL with a host"
        )
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(
            f"invalid agent address {excerpt(address)}: no credentials, query or fragment"
        )
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}{parts.path.rstrip('/')}"


def _check_name(name: str) -> None:
    if not name or any(not ch.isprintable() or ch.isspace() for ch in name):
        raise ConfigError(f"invalid node name {excerpt(name)}: no spaces or control characters")


def node_token(secret: str, name: str, address: str) -> str:
    """The token of node `name` at `address` (hex HMAC-SHA256 of the fleet secret)."""
    _check_name(name)
    message = f"{name}\n{canonical_address(address)}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def dial_out_token(secret: str, name: str) -> str:
    """The token of a dial-out node: over its name alone (it has no address of its own)."""
    _check_name(name)
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of `value` for a message, control and format characters
    escaped (`\\n`, `\\x1b`, `\\u202e`): a foreign answer must not flood or repaint a terminal
    or a log line."""
    text = value if isinstance(value, str) else repr(value)
    out: list[str] = []
    size = 0
    for index, ch in enumerate(text):
        piece = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        if size + len(piece) > limit:
            return "".join(out) + f"... ({len(text) - index} more characters)"
        out.append(piece)
        size += len(piece)
    return "".join(out)


@dataclass(frozen=True)
class AddressAllowList:
    """Agent addresses the controller may talk to: networks (CIDR, or one IP) for IP
    literal hosts, and host-name globs (`edge-*.example.net`) for named hosts.

    A named host is matched by its name only, never resolved: what a name resolves to can
    change under the controller's feet, so `10.0.0.0/8` never admits `edge-1.example.net`.
    """

    entries: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    hosts: tuple[str, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressAllowList:
        """ValueError naming the entry that is neither a network nor a host-name glob."""
        kept: list[str] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        hosts: list[str] = []
        for index, raw in enumerate(entries):
            entry = raw.strip().lower()
            kept.append(entry)
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not _HOST_PATTERN.match(entry) or entry.strip("*?.") == "":
                raise ValueError(
                    f"entry {index} ({excerpt(raw, 80)}) is neither a network (10.1.0.0/16, "
                    "fd00::/8, 127.0.0.1) nor a host name or glob (edge-*.example.net)"
                )
            hosts.append(entry)
        return cls(tuple(kept), tuple(networks), tuple(hosts))

    def allows(self, address: str) -> bool:
        """True when the host of `address` is inside one network or matches one glob."""
        host = (urlsplit(address).hostname or "").lower()
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts)
        return any(ip in network for network in self.networks)


@dataclass(frozen=True)
class FleetAuth:
    """How the controller authenticates to agents: the fleet secret (never sent in
    per-node mode), the mode, and the optional address allow-list."""

    secret: str | None = field(default=None, repr=False)
    mode: TokenMode = "per-node"
    allowed: AddressAllowList | None = None
    # Where dial-out nodes are reached: the controller's `[fleet] listen` as a URL
    # (fleet/tunnel.py relays each request over the node's own connection). None: nowhere.
    relay: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("per-node", "shared"):
            raise ConfigError(f"[fleet] token_mode must be per-node or shared, not {self.mode!r}")
        printable = self.secret is None or all("!" <= ch <= "~" for ch in self.secret)
        if self.mode == "shared" and not printable:
            raise ConfigError(
                "the agent token file holds characters a bearer token cannot carry "
                "(token_mode = shared sends it as it is: use printable ASCII, no spaces)"
            )

    def check(self, node: str, address: str) -> None:
        """AddressNotAllowed when `address` is outside the allow-list (nothing is sent)."""
        if self.allowed is not None and not self.allowed.allows(address):
            raise AddressNotAllowed(
                node,
                f"address {excerpt(address, 120)} is {NOT_ALLOWED} "
                f"({', '.join(self.allowed.entries) or 'empty'}): nothing sent to it",
            )

    def token_for(self, node: str, address: str) -> str | None:
        """The bearer token `node` at `address` gets (after `check`); None without a secret."""
        self.check(node, address)
        if self.secret is None:
            return None
        if self.mode == "shared":
            return self.secret
        return node_token(self.secret, node, address)

    def dial_out_token_for(self, node: str) -> str | None:
        """The bearer token dial-out node `node` holds; None without a secret."""
        if self.secret is None:
            return None
        return self.secret if self.mode == "shared" else dial_out_token(self.secret, node)

    def refusal(self, node: str, address: str) -> str:
        """What to say when `node` answered 401 to its token."""
        if self.secret is None:
            return (
                f"{REFUSED_TOKEN} (none sent): give the controller the fleet secret "
                "([fleet] token_file, --agent-token-file or GITOPSD_AGENT_TOKEN_FILE)"
            )
        if self.mode == "shared":
            return (
                f"{REFUSED_TOKEN}: token_mode = shared sends the token file's content as it "
                "is; the agent's --token-file must hold the same"
            )
        return (
            f"{REFUSED_TOKEN}: the node's token is derived from its name and address; "
            f"install `gitopsd agent-token {node} --address {address}` on it"
        )


def node_problem(error: str) -> str:
    """How `diff` and `status` name a node's error: a refused token or a refused address
    says so; anything else is "unreachable"."""
    if REFUSED_TOKEN in error or NOT_ALLOWED in error:
        return error
    return f"unreachable: {error}"
