"""Signed commits: refuse to apply a commit that is not signed by a key the operator trusts.

`[source.verify] mode = "head"` checks the commit the synced ref points at (never a tag:
a signed tag over an unsigned commit is refused). Two kinds of signature are understood:

- SSH (`git -c gpg.format=ssh commit -S`), checked with `ssh-keygen -Y find-principals` and
  `ssh-keygen -Y verify -n git` against an `allowed_signers` file (ssh-keygen(1) format);
- OpenPGP (`git commit -S` with gpg), checked with `gpg --verify` in a throwaway GNUPGHOME
  that holds only the keys of `gpg_keyring`: the operator's own keyring is never consulted.

Every refusal is a `SignatureRefused` whose message says why, for the failure note.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pygit2

from gitopsd.errors import ConfigError, SourceError
from gitopsd.log import get_logger

_SSH_ARMOR = b"-----BEGIN SSH SIGNATURE-----"
_PGP_ARMOR = b"-----BEGIN PGP SIGNATURE-----"
_TIMEOUT = 30.0


class SignatureRefused(SourceError):
    """The commit is unsigned or not signed by an allowed key: nothing of it is applied.

    A negative result about the commit (exit 1, like invalid manifests), not a failure to run.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, commit: str, reason: str) -> None:
        super().__init__(f"commit {commit[:12]} {reason}")
        self.commit = commit
        self.reason = reason


@dataclass(frozen=True)
class VerifyPolicy:
    """What a commit must carry to be applied. `none` checks nothing."""

    mode: Literal["none", "head"] = "none"
    allowed_signers: Path | None = None
    gpg_keyring: Path | None = None

    def __post_init__(self) -> None:
        if self.mode == "head" and self.allowed_signers is None and self.gpg_keyring is None:
            raise ConfigError(
                'source.verify: mode = "head" needs allowed_signers (SSH) or gpg_keyring (OpenPGP)'
            )


def verify_commit(repo: pygit2.Repository, commit_sha: str, policy: VerifyPolicy) -> None:
    """Raise SignatureRefused unless `commit_sha` carries a good signature by an allowed key.

    A tag's sha is peeled to its commit first: the commit itself must be signed.
    SourceError (not SignatureRefused) when the check itself cannot run: a missing key file
    or ssh-keygen / gpg not installed.
    """
    if policy.mode == "none":
        return
    commit = _commit(repo, commit_sha)
    sha = str(commit.id)
    signature, data = commit.gpg_signature
    if not signature or data is None:
        raise SignatureRefused(sha, "is not signed")
    if signature.lstrip().startswith(_SSH_ARMOR):
        if policy.allowed_signers is None:
            raise SignatureRefused(
                sha, "has an SSH signature but source.verify.allowed_signers is not set"
            )
        signer = _verify_ssh(sha, signature, data, policy.allowed_signers)
    elif signature.lstrip().startswith(_PGP_ARMOR):
        if policy.gpg_keyring is None:
            raise SignatureRefused(
                sha, "has an OpenPGP signature but source.verify.gpg_keyring is not set"
            )
        signer = _verify_pgp(sha, signature, data, policy.gpg_keyring)
    else:
        raise SignatureRefused(sha, "has a signature of an unsupported kind (not SSH or OpenPGP)")
    get_logger(commit=sha[:12]).debug("commit signature verified", signer=signer)


def _commit(repo: pygit2.Repository, sha: str) -> pygit2.Commit:
    try:
        obj = repo[sha]
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise SourceError(f"commit {sha[:12]} not found in {repo.path}") from exc
    assert isinstance(commit, pygit2.Commit)
    return commit


def _readable(path: Path, what: str) -> None:
    if not path.is_file():
        raise SourceError(f"source.verify.{what} {path}: no such file")


def _run(
    argv: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[bool, str, str]:
    """Run a verification tool: (exit code was 0, stdout, stderr). SourceError if it can't."""
    try:
        done = subprocess.run(
            argv,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=env,
            timeout=_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SourceError(f"cannot verify signatures: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"cannot verify signatures: {argv[0]} timed out") from exc
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return done.returncode == 0, out, err


def _verify_ssh(sha: str, signature: bytes, data: bytes, allowed_signers: Path) -> str:
    _readable(allowed_signers, "allowed_signers")
    with tempfile.TemporaryDirectory(prefix="gitopsd-verify-") as tmp:
        sigfile = Path(tmp) / "commit.sig"
        sigfile.write_bytes(signature)
        ok, found, _ = _run(
            ["ssh-keygen", "-Y", "find-principals", "-f", str(allowed_signers), "-s", str(sigfile)]
        )
        principals = [p for p in found.splitlines() if p.strip()] if ok else []
        if not principals:
            raise SignatureRefused(sha, "is signed by a key not in allowed_signers")
        why = ""
        for principal in principals:
            ok, _, err = _run(
                [
                    "ssh-keygen",
                    "-Y",
                    "verify",
                    "-f",
                    str(allowed_signers),
                    "-I",
                    principal,
                    "-n",
                    "git",
                    "-s",
                    str(sigfile),
                ],
                stdin=data,
            )
            if ok:
                return principal
            why = why or (err.strip().splitlines() or [""])[-1][:200]
    raise SignatureRefused(sha, f"has a bad signature (SSH: {why or 'ssh-keygen refused it'})")


# gpg --status-fd keywords: https://github.com/gpg/gnupg/blob/master/doc/DETAILS
_PGP_REFUSALS = {
    "BADSIG": "has a bad signature (OpenPGP): the commit does not match it",
    "EXPKEYSIG": "is signed by an expired OpenPGP key",
    "REVKEYSIG": "is signed by a revoked OpenPGP key",
    "EXPSIG": "has an expired OpenPGP signature",
    "NO_PUBKEY": "is signed by a key not in gpg_keyring",
    "ERRSIG": "has an OpenPGP signature that could not be checked",
}


def _verify_pgp(sha: str, signature: bytes, data: bytes, keyring: Path) -> str:
    _readable(keyring, "gpg_keyring")
    with tempfile.TemporaryDirectory(prefix="gitopsd-gpg-") as home:
        os.chmod(home, 0o700)
        env = {**os.environ, "GNUPGHOME": home, "LC_ALL": "C"}
        base = ["gpg", "--batch", "--no-tty", "--no-autostart", "--homedir", home]
        imported, _, _ = _run([*base, "--import", str(keyring)], env=env)
        if not imported:
            raise SourceError(f"source.verify.gpg_keyring {keyring}: gpg could not import it")
        sigfile, datafile = Path(home) / "commit.sig", Path(home) / "commit.data"
        sigfile.write_bytes(signature)
        datafile.write_bytes(data)
        check = ["--trust-model", "always", "--status-fd", "1", "--verify"]
        ok, out, _ = _run([*base, *check, str(sigfile), str(datafile)], env=env)
    status = [line.split()[1:] for line in out.splitlines() if line.startswith("[GNUPG:] ")]
    keywords = {words[0] for words in status if words}
    for keyword, reason in _PGP_REFUSALS.items():
        if keyword in keywords:
            raise SignatureRefused(sha, reason)
    valid = [words for words in status if words and words[0] == "VALIDSIG"]
    if not ok or "GOODSIG" not in keywords or not valid:
        raise SignatureRefused(sha, "has an OpenPGP signature that gpg did not accept")
    return valid[0][1] if len(valid[0]) > 1 else "?"
