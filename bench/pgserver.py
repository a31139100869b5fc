"""A real PostgreSQL server for the benchmark and the tests, from Debian's `postgresql`
package (the tests' `pg_server` fixture and `make bench`'s P10 and PostgreSQL rows use it).

`initdb` and `pg_ctl` refuse to run as root (CI runs as root), so under root the server runs
as the unprivileged `postgres` account the Debian package creates (`nobody` when it is
missing): the subprocesses switch user themselves (`subprocess.run(user=...)`), no sudo, no
runuser. The cluster lives in a fresh directory under /tmp owned by that user (pytest's own
tmp dirs are private to root), listens on 127.0.0.1 on a free port and on a unix socket in
that directory, and is stopped and removed after the session.

Authentication: the unix socket trusts (the tests' admin connection), TCP asks for the
superuser's password (scram-sha-256), so `[state] password_file` is tested for real.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "gitopsd"


def pg_bin_dir() -> Path:
    """Debian's /usr/lib/postgresql/<major>/bin holding initdb (the newest major)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: `make system-deps` installs Debian's postgresql "
            "package (initdb under /usr/lib/postgresql/*/bin)"
        )
    return Path(found[-1]).parent


def _server_user() -> str | None:
    """The account to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody account exists")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class PgServer:
    """A running cluster: where it listens and how to reach it."""

    root: Path
    port: int
    password: str

    @property
    def socket_dir(self) -> Path:
        return self.root

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """Superuser over the unix socket (trusted: no password)."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str, with_password: bool = False) -> str:
        """A postgresql:// URL over TCP on 127.0.0.1 (password only when asked)."""
        auth = f"{SUPERUSER}:{self.password}" if with_password else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, dbname: str, query: str) -> list[tuple[object, ...]]:
        """Run one statement as the superuser (for tests that reach behind the store)."""
        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(query.encode())
            return list(cur.fetchall()) if cur.description else []


@contextlib.contextmanager
def running_pg_server() -> Iterator[PgServer]:
    """initdb + pg_ctl start in a fresh directory; stopped and removed on exit."""
    bindir = pg_bin_dir()
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="gitopsd-pg-", dir="/tmp"))
    password = uuid.uuid4().hex
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def run(*args: str) -> None:
        done = subprocess.run(
            list(args), user=user, env=env, cwd=root, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    try:
        run(
            str(bindir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-local",
            "trust",
            "--auth-host",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        started = None
        for _attempt in range(5):  # a free port may be taken between probe and bind
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c max_connections=200 -c shared_buffers=16MB"
            )
            try:
                run(
                    str(bindir / "pg_ctl"),
                    "--pgdata",
                    str(data),
                    "--log",
                    str(root / "server.log"),
                    "--options",
                    options,
                    "--wait",
                    "--timeout",
                    "60",
                    "start",
                )
                started = port
                break
            except RuntimeError:
                continue
        if started is None:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {log[-2000:]}")
        try:
            yield PgServer(root=root, port=started, password=password)
        finally:
            subprocess.run(
                [str(bindir / "pg_ctl"), "--pgdata", str(data), "--mode", "immediate", "stop"],
                user=user,
                env=env,
                cwd=root,
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
