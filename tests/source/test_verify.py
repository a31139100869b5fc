"""Signed commits with real keys: SSH (ssh-keygen) and OpenPGP (gpg), pushed to a bare remote
and checked through gitopsd's mirror, as the daemon would."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from gitopsd.errors import ConfigError, SourceError
from gitopsd.source.git import open_repository, resolve_commit
from gitopsd.source.verify import SignatureRefused, VerifyPolicy, verify_commit
from tests.gitrepo import GitRemote
from tests.signing import Keys, _git, _gpg, _ssh


def _commit(remote: GitRemote, keys: Keys, message: str, *sign: str) -> str:
    remote.write("deploy/fn.yaml", f"# {message}\n")
    _git(remote, keys, "add", "-A")
    _git(remote, keys, *sign, "commit", "-q", *(["-S"] if sign else []), "-m", message)
    remote.push()
    return _git(remote, keys, "rev-parse", "HEAD")


@pytest.fixture
def policy(keys: Keys) -> VerifyPolicy:
    return VerifyPolicy("head", keys.allowed_signers, keys.keyring)


def _mirror(remote: GitRemote, tmp_path: Path) -> pygit2.Repository:
    """gitopsd's own mirror of the remote, fetched like every pass does."""
    return open_repository(f"file://{remote.bare}", tmp_path / "state")


def _head(repo: pygit2.Repository, ref: str = "main") -> str:
    return str(resolve_commit(repo, ref).id)


def test_ssh_signed_by_allowed_key_is_accepted(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "signed", *_ssh(keys.ssh_key))
    repo = _mirror(remote, tmp_path)
    assert _head(repo) == sha
    verify_commit(repo, sha, policy)  # no exception
    verify_commit(repo, sha, VerifyPolicy("head", allowed_signers=keys.allowed_signers))


def test_unsigned_commit_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "unsigned")
    with pytest.raises(SignatureRefused) as err:
        verify_commit(_mirror(remote, tmp_path), sha, policy)
    assert str(err.value) == f"commit {sha[:12]} is not signed"
    assert err.value.commit == sha
    assert err.value.exit_code == 1


def test_ssh_key_not_in_allowed_signers_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "stranger", *_ssh(keys.ssh_stranger))
    with pytest.raises(SignatureRefused, match="signed by a key not in allowed_signers"):
        verify_commit(_mirror(remote, tmp_path), sha, policy)


def test_tampered_ssh_signed_commit_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    """A good signature copied onto different content (here: another message)."""
    good = _commit(remote, keys, "deploy 1.0.0", *_ssh(keys.ssh_key))
    bare = pygit2.Repository(str(remote.bare))
    signature, data = bare[good].peel(pygit2.Commit).gpg_signature
    assert signature is not None and data is not None
    forged = bare.create_commit_with_signature(
        data.decode().replace("deploy 1.0.0", "deploy 6.6.6"), signature.decode()
    )
    bare.references["refs/heads/main"].set_target(forged)
    repo = _mirror(remote, tmp_path)
    assert _head(repo) == str(forged)
    with pytest.raises(SignatureRefused, match="bad signature"):
        verify_commit(repo, str(forged), policy)


def test_signed_tag_over_unsigned_commit_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "unsigned under a signed tag")
    _git(remote, keys, *_ssh(keys.ssh_key), "tag", "-s", "-m", "release", "v1")
    _git(remote, keys, "push", "-q", "origin", "v1")
    repo = _mirror(remote, tmp_path)
    tag = repo.references["refs/tags/v1"].target
    assert isinstance(repo[tag], pygit2.Tag)  # really an annotated, signed tag
    assert "SSH SIGNATURE" in repo[tag].peel(pygit2.Tag).message
    assert _head(repo, "refs/tags/v1") == sha
    for name in (sha, str(tag)):  # the peeled commit, or the tag object itself
        with pytest.raises(SignatureRefused, match="is not signed"):
            verify_commit(repo, name, policy)


def test_gpg_signed_by_keyring_key_is_accepted(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "gpg signed", *_gpg(keys.gpg_fpr))
    repo = _mirror(remote, tmp_path)
    verify_commit(repo, sha, policy)
    verify_commit(repo, sha, VerifyPolicy("head", gpg_keyring=keys.keyring))


def test_gpg_key_not_in_keyring_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "gpg stranger", *_gpg(keys.gpg_stranger))
    with pytest.raises(SignatureRefused, match="signed by a key not in gpg_keyring"):
        verify_commit(_mirror(remote, tmp_path), sha, policy)


def test_tampered_gpg_signed_commit_is_refused(
    remote: GitRemote, keys: Keys, policy: VerifyPolicy, tmp_path: Path
) -> None:
    good = _commit(remote, keys, "deploy 1.0.0", *_gpg(keys.gpg_fpr))
    bare = pygit2.Repository(str(remote.bare))
    signature, data = bare[good].peel(pygit2.Commit).gpg_signature
    assert signature is not None and data is not None
    forged = bare.create_commit_with_signature(
        data.decode().replace("deploy 1.0.0", "deploy 6.6.6"), signature.decode()
    )
    with pytest.raises(SignatureRefused, match="bad signature"):
        verify_commit(bare, str(forged), policy)


def test_signature_kind_without_its_key_file_is_refused(
    remote: GitRemote, keys: Keys, tmp_path: Path
) -> None:
    ssh = _commit(remote, keys, "ssh", *_ssh(keys.ssh_key))
    with pytest.raises(SignatureRefused, match="allowed_signers is not set"):
        verify_commit(_mirror(remote, tmp_path), ssh, VerifyPolicy("head", None, keys.keyring))
    gpg = _commit(remote, keys, "gpg", *_gpg(keys.gpg_fpr))
    with pytest.raises(SignatureRefused, match="gpg_keyring is not set"):
        verify_commit(_mirror(remote, tmp_path), gpg, VerifyPolicy("head", keys.allowed_signers))


def test_missing_key_file_cannot_run_rather_than_refuse(
    remote: GitRemote, keys: Keys, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "signed", *_ssh(keys.ssh_key))
    policy = VerifyPolicy("head", allowed_signers=tmp_path / "missing")
    with pytest.raises(SourceError, match="no such file") as err:
        verify_commit(_mirror(remote, tmp_path), sha, policy)
    assert not isinstance(err.value, SignatureRefused)


def test_mode_none_accepts_anything_and_head_needs_a_key_file(
    remote: GitRemote, keys: Keys, tmp_path: Path
) -> None:
    sha = _commit(remote, keys, "unsigned")
    verify_commit(_mirror(remote, tmp_path), sha, VerifyPolicy())
    with pytest.raises(ConfigError, match="allowed_signers"):
        VerifyPolicy("head")
