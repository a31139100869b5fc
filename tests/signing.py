"""Real signing keys for tests: SSH (ed25519) and OpenPGP, and git commands that use them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.gitrepo import GIT_ENV, GitRemote


@dataclass(frozen=True)
class Keys:
    ssh_key: Path  # private key, its public half in allowed_signers
    ssh_stranger: Path  # a key nobody allowed
    allowed_signers: Path
    gnupghome: Path  # holds both secret keys
    gpg_fpr: str  # exported to keyring
    gpg_stranger: str  # not exported
    keyring: Path


def _run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout.strip()


def _gpg_key(home: str, uid: str) -> str:
    env = {**os.environ, "GNUPGHOME": home}
    gen = ("--quick-gen-key", uid, "ed25519", "sign", "never")
    _run("gpg", "--batch", "--passphrase", "", *gen, env=env)
    listing = _run("gpg", "--batch", "--with-colons", "--list-secret-keys", uid, env=env)
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


@contextmanager
def make_keys(root: Path) -> Iterator[Keys]:
    """Two SSH keys and two GPG keys; only the first of each is trusted."""
    for name in ("signer", "stranger"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(root / name))
    allowed = root / "allowed_signers"
    pub = (root / "signer.pub").read_text().split()
    allowed.write_text(f'operator@example.test namespaces="git" {pub[0]} {pub[1]}\n')
    # A short GNUPGHOME: gpg-agent's socket path must fit in 108 bytes.
    home = tempfile.mkdtemp(prefix="gpg", dir="/tmp")
    try:
        fpr = _gpg_key(home, "Operator <operator@example.test>")
        stranger = _gpg_key(home, "Stranger <stranger@example.test>")
        keyring = root / "keyring.asc"
        env = {**os.environ, "GNUPGHOME": home}
        keyring.write_text(_run("gpg", "--batch", "--armor", "--export", fpr, env=env))
        yield Keys(root / "signer", root / "stranger", allowed, Path(home), fpr, stranger, keyring)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _git(remote: GitRemote, keys: Keys, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(remote.work), "GNUPGHOME": str(keys.gnupghome)}
    return _run("git", *args, env=env, cwd=remote.work)


def _ssh(key: Path) -> tuple[str, ...]:
    return ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}")


def _gpg(fpr: str) -> tuple[str, ...]:
    return ("-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", f"user.signingkey={fpr}")
