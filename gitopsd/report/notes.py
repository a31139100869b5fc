"""Commit statuses as git notes under `refs/notes/gitopsd` (JSON), so that any clone can run
`git notes --ref=gitopsd show <sha>` and see what gitopsd did with that commit.

Notes are written into the repository gitopsd reads from: the operator's repository itself
for a local source, the bare mirror for a URL, from where they are pushed to `origin`.

Several writers may annotate the same commit (two daemons, a daemon and a CLI `sync`). When
the remote notes ref moved, `push_notes` fetches it and merges three-way, note by note; a
note both sides changed is merged as JSON (`merge_note_json`: per function, the newer
`updatedAt` wins, the other goes into its `history`). Notes are never dropped, including
those on commits a force-push removed.
Writers sharing one repository (shard leaders whose source is one local repository) take
turns through a lock file (`notes_lock`), so each merges into the note as the last one left it.

A function's entry keeps the earlier outcomes of that commit under `history` (latest first,
bounded): a later pass that finds the function HELD does not erase that it COMPLETED.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pygit2

from gitopsd.function_state import NoteStatus
from gitopsd.log import get_logger
from gitopsd.source.ancestry import NonFastForward
from gitopsd.source.hostkeys import git_cli
from gitopsd.source.redact import redact
from gitopsd.source.verify import SignatureRefused

NOTES_REF = "refs/notes/gitopsd"
REMOTE_NOTES_REF = "refs/notes/gitopsd-remote"  # where the remote's notes are fetched to
_SIGNATURE = ("gitopsd", "gitopsd@localhost")


@dataclass(frozen=True)
class FunctionOutcome:
    """What happened to one function of a commit."""

    status: NoteStatus
    version: str
    strategy: str = ""
    state: str = ""
    nodes_ok: tuple[str, ...] = ()
    nodes_failed: tuple[str, ...] = ()
    failed_step: str | None = None
    message: str = ""


@dataclass(frozen=True)
class CommitOutcome:
    """The note body: overall status plus one entry per function touched."""

    commit: str
    status: NoteStatus
    message: str
    functions: Mapping[str, FunctionOutcome] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def outcome_to_json(outcome: CommitOutcome) -> dict[str, Any]:
    """The JSON stored in the note (camelCase keys, like the manifests). Free text is
    redacted: a note is pushed to the remote, where everyone who can clone reads it."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return {
        "gitopsd": "v1",
        "commit": outcome.commit,
        "status": outcome.status,
        "message": redact(outcome.message),
        "updatedAt": now,
        "problems": [redact(p) for p in outcome.problems],
        "functions": {
            name: _function_json(fn, now) for name, fn in sorted(outcome.functions.items())
        },
    }


def _function_json(fn: FunctionOutcome, updated_at: str) -> dict[str, Any]:
    raw = asdict(fn)
    return {
        "status": raw["status"],
        "version": raw["version"],
        "strategy": raw["strategy"],
        "state": raw["state"],
        "nodesOk": list(raw["nodes_ok"]),
        "nodesFailed": list(raw["nodes_failed"]),
        "failedStep": redact(raw["failed_step"]) if raw["failed_step"] else raw["failed_step"],
        "message": redact(raw["message"]),
        "updatedAt": updated_at,  # per function: concurrent writers merge entry by entry
    }


def read_note(repo: pygit2.Repository, commit: str) -> dict[str, Any] | None:
    """The parsed note on `commit`, or None."""
    try:
        note = repo.lookup_note(commit, NOTES_REF)
    except KeyError:
        return None
    try:
        data = json.loads(note.message)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


NOTE_HISTORY = 10
"""How many earlier outcomes of one function a note keeps under `history` (latest first)."""

# The fields that make two outcomes of one function the same outcome (a daemon that finds a
# function HELD on every pass writes one HELD entry, not one per pass).
_SAME_OUTCOME = ("status", "version", "state", "message", "nodesOk", "nodesFailed", "failedStep")


def _history_entries(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`entry` followed by its own history, each without a nested history."""
    out = [{k: v for k, v in entry.items() if k != "history"}]
    earlier = entry.get("history")
    if isinstance(earlier, list):
        out.extend(
            {k: v for k, v in e.items() if k != "history"} for e in earlier if isinstance(e, dict)
        )
    return out


def with_history(latest: Mapping[str, Any], *earlier: Mapping[str, Any]) -> dict[str, Any]:
    """`latest` with the earlier outcomes (from `earlier` entries and every history) under
    `history`, latest first, at most NOTE_HISTORY: a later pass that finds the function HELD
    must not erase that this commit once COMPLETED. A run of equal outcomes (a daemon finding
    the function HELD on every pass) is kept once, as its latest entry."""
    head, *own = _history_entries(latest)
    pool = own + [e for entry in earlier for e in _history_entries(entry)]
    unique = {json.dumps(e, sort_keys=True, default=str): e for e in pool}  # two writers' copies
    ordered = sorted(unique.values(), key=lambda e: _time(e.get("updatedAt")), reverse=True)
    history: list[dict[str, Any]] = []
    previous = _outcome_key(head)
    for entry in ordered:
        key = _outcome_key(entry)
        if key != previous:
            history.append(entry)
        previous = key
    if history:
        head["history"] = history[:NOTE_HISTORY]
    return head


def _outcome_key(entry: Mapping[str, Any]) -> str:
    return json.dumps({k: entry.get(k) for k in _SAME_OUTCOME}, sort_keys=True, default=str)


def merge_notes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Newer function entries win, each keeping the older ones under `history`; functions
    only the old note knows are kept."""
    merged = dict(new)
    if old:
        functions = dict(old.get("functions", {}))
        for name, entry in dict(new.get("functions", {})).items():
            before = functions.get(name)
            functions[name] = with_history(entry, before) if isinstance(before, Mapping) else entry
        merged["functions"] = dict(sorted(functions.items()))
        status = overall_status(merged["functions"], note_status(new.get("status")))
        if status is not None:
            merged["status"] = status
        if new.get("problems") and new.get("status") == "failure":
            # The commit itself was refused this time (not a fast-forward, a bad signature,
            # invalid manifests): earlier functions' successes do not make that a success.
            merged["status"] = "failure"
    return merged


NOTE_STATUSES: tuple[NoteStatus, ...] = get_args(NoteStatus)


def note_status(value: object) -> NoteStatus | None:
    """`value` (read from a note, possibly another writer's) as a NoteStatus; None when it
    names none."""
    for status in NOTE_STATUSES:
        if value == status:
            return status
    return None


def parse_note_status(value: object) -> NoteStatus:
    """`value` as a NoteStatus; ValueError naming it when it is none of the three."""
    status = note_status(value)
    if status is None:
        raise ValueError(f"not a note status: {value!r} (one of {', '.join(NOTE_STATUSES)})")
    return status


def overall_status(functions: Mapping[str, Any], fallback: NoteStatus | None) -> NoteStatus | None:
    """failure if any function failed, pending if any is pending, else success; `fallback`
    when no function entry has a status. Entries are read from notes, outside input: a
    status that is not one of the three counts as none (the entry itself is kept as is)."""
    states = {note_status(f.get("status")) for f in functions.values() if isinstance(f, Mapping)}
    states.discard(None)
    if "failure" in states:
        return "failure"
    if "pending" in states:
        return "pending"
    return "success" if states else fallback


NOTES_LOCK = "gitopsd-notes.lock"
"""A file in the repository's git directory: writers of notes there take turns on it."""


@contextlib.contextmanager
def notes_lock(repo: pygit2.Repository) -> Iterator[None]:
    """Hold the repository's notes lock (flock) while a note is read, merged and written.
    Shard leaders on one machine whose source is one local repository write notes of one
    commit into it at the same time: without turns, a writer that read the note before
    another's write would write it back without the other's function entries."""
    with (Path(repo.path) / NOTES_LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def write_note(repo: pygit2.Repository, outcome: CommitOutcome) -> dict[str, Any]:
    """Write (merge into) the note of `outcome.commit`; returns the JSON written."""
    with notes_lock(repo):
        body = merge_notes(read_note(repo, outcome.commit), outcome_to_json(outcome))
        sig = pygit2.Signature(*_SIGNATURE)
        repo.create_note(json.dumps(body, indent=2), sig, sig, outcome.commit, NOTES_REF, True)
    return body


def merge_note_json(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """Two writers' notes on one commit as one: every function of both; for a function both
    wrote, the entry with the newer `updatedAt` (ours on a tie); the overall status is
    recomputed. Message and problems come from the newer note."""
    ours_time, theirs_time = _time(ours.get("updatedAt")), _time(theirs.get("updatedAt"))
    newer = theirs if theirs_time > ours_time else ours
    functions: dict[str, Any] = {}
    for side, fallback in ((theirs, theirs_time), (ours, ours_time)):
        for name, entry in dict(side.get("functions") or {}).items():
            if not isinstance(entry, Mapping):
                continue
            when = _time(entry.get("updatedAt"), fallback)
            kept = functions.get(name)
            if kept is None:
                functions[name] = (when, entry)
            elif when >= kept[0]:  # ours goes second: wins a tie; the other entry is history
                functions[name] = (when, with_history(entry, kept[1]))
            else:
                functions[name] = (kept[0], with_history(kept[1], entry))
    merged = dict(newer)
    merged["functions"] = {name: dict(functions[name][1]) for name in sorted(functions)}
    merged["updatedAt"] = max(
        (str(n.get("updatedAt")) for n in (ours, theirs) if n.get("updatedAt")),
        key=_time,
        default=newer.get("updatedAt"),
    )
    fallback_status = note_status(newer.get("status"))
    status = overall_status(merged["functions"], fallback_status) if merged["functions"] else None
    if status is not None:
        merged["status"] = status
    if merged.get("problems") and fallback_status == "failure":
        merged["status"] = "failure"  # the newer note found the commit itself bad
    return merged


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _time(value: object, default: datetime = _EPOCH) -> datetime:
    if not isinstance(value, str):
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return default
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# A push refused because the remote ref moved (or was being updated at that very moment):
# fetch, merge, retry. Any other refusal (auth, read-only remote, hook) is final.
_RACE = re.compile(
    r"\[rejected\]|non-fast-forward|fetch first|failed to lock|cannot lock ref|"
    r"failed to update ref|incorrect old value",
    re.I,
)


def push_notes(
    repo_path: Path,
    remote: str = "origin",
    attempts: int = 5,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Push the notes ref; when the remote's moved, fetch theirs, merge and retry.

    `env` goes to the git CLI (for SSH remotes: `hostkeys.git_ssh_env`, so the host key is
    checked). Returns False (and logs why) when the remote refuses: notes are a report,
    never a reason to stop a rollout.
    """
    log = get_logger(repo=str(repo_path))
    repo = pygit2.Repository(str(repo_path))
    if NOTES_REF not in repo.references:
        return True  # nothing written yet, nothing to push
    for attempt in range(attempts):
        pushed = git_cli("push", remote, f"{NOTES_REF}:{NOTES_REF}", cwd=repo_path, env=env)
        if pushed.returncode == 0:
            return True
        if not _RACE.search(pushed.stderr):
            log.warning("notes push refused", stderr=_tail(pushed.stderr))
            return False
        fetched = git_cli(
            "fetch",
            "--no-tags",
            remote,
            f"+{NOTES_REF}:{REMOTE_NOTES_REF}",
            cwd=repo_path,
            env=env,
        )
        if fetched.returncode != 0:
            log.warning("notes fetch for merge failed", stderr=_tail(fetched.stderr))
            return False
        try:
            merge_remote_notes(repo)
        except _MovedLocally:
            continue  # a local write landed meanwhile: push that, and merge again if need be
        except (pygit2.GitError, KeyError, ValueError) as exc:
            log.warning("notes merge failed", error=redact(str(exc)))
            return False
        log.info("notes ref moved on the remote: merged, pushing again", attempt=attempt + 1)
        sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
    log.warning("notes push gave up after retries", attempts=attempts)
    return False


def _tail(stderr: str) -> str:
    return redact(stderr.strip()[-300:])


def merge_remote_notes(repo: pygit2.Repository, theirs_ref: str = REMOTE_NOTES_REF) -> None:
    """Merge the notes commit at `theirs_ref` into NOTES_REF: a commit with both tips as
    parents whose tree holds every note of both sides (three-way against the merge base,
    JSON-merged where both changed the same note). The ref moves only if nobody else moved
    it meanwhile (compare-and-swap through `git update-ref`)."""
    ours_id = repo.references[NOTES_REF].peel(pygit2.Commit).id
    theirs_id = repo.references[theirs_ref].peel(pygit2.Commit).id
    if ours_id == theirs_id or repo.descendant_of(ours_id, theirs_id):
        return  # theirs is already in ours
    if repo.descendant_of(theirs_id, ours_id):
        _move_notes_ref(repo, theirs_id, ours_id)  # fast-forward
        return
    base_id = repo.merge_base(ours_id, theirs_id)
    base = _note_blobs(repo, base_id) if base_id else {}
    ours, theirs = _note_blobs(repo, ours_id), _note_blobs(repo, theirs_id)
    builder = repo.TreeBuilder()
    for annotated in sorted(ours.keys() | theirs.keys()):
        blob = _merge_one(repo, base.get(annotated), ours.get(annotated), theirs.get(annotated))
        if blob is not None:
            builder.insert(annotated, blob, pygit2.enums.FileMode.BLOB)
    sig = pygit2.Signature(*_SIGNATURE)
    merged = repo.create_commit(
        None, sig, sig, "Notes merged by gitopsd", builder.write(), [ours_id, theirs_id]
    )
    _move_notes_ref(repo, merged, ours_id)


def _merge_one(
    repo: pygit2.Repository,
    base: pygit2.Oid | None,
    ours: pygit2.Oid | None,
    theirs: pygit2.Oid | None,
) -> pygit2.Oid | None:
    """The blob of one note after the merge; None when it is deleted."""
    if ours == theirs or theirs == base:
        return ours
    if ours == base:
        return theirs
    if ours is None or theirs is None:  # changed on one side, deleted on the other: keep it
        return ours or theirs
    ours_json, theirs_json = _blob_json(repo, ours), _blob_json(repo, theirs)
    if ours_json is None or theirs_json is None:
        return ours if ours_json is not None or theirs_json is None else theirs
    body = json.dumps(merge_note_json(ours_json, theirs_json), indent=2)
    return repo.create_blob(body.encode())


def _blob_json(repo: pygit2.Repository, oid: pygit2.Oid) -> dict[str, Any] | None:
    try:
        data = json.loads(repo[oid].peel(pygit2.Blob).data)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _note_blobs(repo: pygit2.Repository, commit_id: pygit2.Oid) -> dict[str, pygit2.Oid]:
    """Annotated object id -> note blob of a notes commit (flat or fanned-out tree)."""
    out: dict[str, pygit2.Oid] = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for entry in tree:
            name = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                walk(repo[entry.id].peel(pygit2.Tree), name)
            elif entry.type_str == "blob" and _HEX.fullmatch(name):
                out[name] = entry.id

    walk(repo[commit_id].peel(pygit2.Commit).tree, "")
    return out


class _MovedLocally(Exception):
    """NOTES_REF changed in this repository while a merge was being computed."""


def _move_notes_ref(repo: pygit2.Repository, new: pygit2.Oid, old: pygit2.Oid) -> None:
    done = git_cli("update-ref", NOTES_REF, str(new), str(old), cwd=Path(repo.path))
    if done.returncode != 0:
        raise _MovedLocally(done.stderr.strip())


def refused_outcome(exc: SignatureRefused) -> CommitOutcome:
    """The failure note of a commit whose signature was refused."""
    return CommitOutcome(
        exc.commit,
        "failure",
        f"signature refused: {exc.reason}; nothing applied",
        problems=(str(exc),),
    )


def non_fast_forward_outcome(exc: NonFastForward) -> CommitOutcome:
    """The failure note of a head refused because it does not descend from the last applied
    commit (gitopsd/source/ancestry.py)."""
    return CommitOutcome(
        exc.commit,
        "failure",
        f"not a fast-forward: {exc.reason}; nothing applied",
        problems=(str(exc),),
    )
