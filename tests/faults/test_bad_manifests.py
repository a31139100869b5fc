"""Bad manifests: a corpus of hostile commits and fuzzing of the loader, counted.

Every corpus case must come back as InvalidManifests naming the case's file with a line
(a typed rejection); a DesiredState is a missed rejection, any other exception a crash.
Through the real pipeline (Git, Reconciler, agents) a bad commit must change nothing on the
fleet, even though it also carries a valid new version of another function.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gitopsd.errors import InvalidManifests
from gitopsd.manifest.desired import DesiredState
from gitopsd.manifest.loader import load_snapshot
from gitopsd.source.bounded import MAX_DEPTH, MAX_ENTRIES
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import take_snapshot
from gitopsd.source.snapshot import GIT_MODE_SYMLINK, Snapshot, SnapshotFile
from tests.clirunner import Gitopsd
from tests.faults.conftest import Figures, scale
from tests.faults.corpus import BASE, GOOD, NODES, Case, all_cases, fn_doc
from tests.fleetfixture import Fleet, running_fleet
from tests.gitrepo import GitRemote, git
from tests.manifest.support import WAT
from tests.rollout.livesupport import HookClock, Syncer
from tests.wasm_modules import handler_wat

CASES = all_cases()


def snapshot_of(case: Case, base: dict[str, bytes] = BASE) -> Snapshot:
    files = {path: SnapshotFile(path, data) for path, data in base.items()}
    files.update({path: SnapshotFile(path, data) for path, data in case.files.items()})
    for path, target in case.symlinks.items():
        files[path] = SnapshotFile(path, target.encode(), GIT_MODE_SYMLINK)
    return Snapshot("0" * 40, "", files)


def _line_count(snapshot: Snapshot, path: str) -> int:
    """The lines an editor shows: bytes.splitlines() splits on \\n, \\r\\n and \\r only, not
    on U+0085, U+2028 or U+2029 (which PyYAML counts), and makes no line of the end of a file
    that ends with a newline."""
    return max(1, len(snapshot.files[path].data.splitlines()))


def judge(case: Case) -> tuple[str, float, str]:
    """("typed" | "accepted" | "misplaced" | "unexpected" | "crash", seconds, detail)."""
    snap = snapshot_of(case)
    started = time.perf_counter()
    try:
        load_snapshot(snap, **case.limits)
    except InvalidManifests as exc:
        took = time.perf_counter() - started
        problems = exc.problems
        located = all(
            p.path in snap.files and 1 <= p.line <= _line_count(snap, p.path) for p in problems
        )
        if not problems or not located or not any(p.path == case.blame for p in problems):
            return "misplaced", took, "; ".join(str(p) for p in problems)[:300]
        if case.expect and not any(case.expect in p.message.lower() for p in problems):
            return "unexpected", took, "; ".join(str(p) for p in problems)[:300]
        return "typed", took, ""
    except Exception as exc:  # the figure this test exists for: must stay 0
        return "crash", time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    return "accepted", time.perf_counter() - started, "loaded a DesiredState"


def test_corpus_is_refused_whole_with_file_and_line(figures: Figures) -> None:
    verdicts: Counter[str] = Counter()
    per_category: Counter[str] = Counter()
    bad: list[str] = []
    slowest = 0.0
    for case in CASES:
        verdict, took, detail = judge(case)
        verdicts[verdict] += 1
        per_category[case.category] += 1
        slowest = max(slowest, took)
        if verdict != "typed":
            bad.append(f"{verdict} {case.id}: {detail}")
    figures.update(
        cases=len(CASES),
        typed_rejections=verdicts["typed"],
        crashes=verdicts["crash"],
        missed_rejections=verdicts["accepted"],
        misplaced=verdicts["misplaced"] + verdicts["unexpected"],
        slowest_case_s=round(slowest, 3),
        categories=dict(per_category),
    )
    assert len(CASES) >= 300
    assert len(per_category) == 11
    assert bad == []


# -- the real pipeline: Git → Reconciler → agents ---------------------------------------------

MODULE = handler_wat("good", "OK").encode()


def _fleet_nodes(fleet: Fleet) -> tuple[str, dict[str, str]]:
    urls = {
        "http://127.0.0.1:9101": fleet.nodes["edge-a"].url,
        "http://127.0.0.1:9102": fleet.nodes["edge-b"].url,
    }
    text = NODES
    for old, new in urls.items():
        text = text.replace(old, new)
    return text, urls


def _commit_tree(remote: GitRemote, files: dict[str, bytes], links: dict[str, str]) -> None:
    for entry in remote.work.iterdir():
        if entry.name != ".git":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for path, data in files.items():
        remote.write(path, data)
    for path, target in links.items():
        link = remote.work / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
    remote.commit_push("case")


def _fleet_state(fleet: Fleet) -> dict[str, tuple[int, str | None]]:
    return {
        name: (fleet.inventory(name)["generation"], fleet.serving("good")[name])
        for name in fleet.nodes
    }


@pytest.mark.timeout(scale(120, 1800))
def test_bad_commits_change_nothing_on_the_fleet(tmp_path: Path, figures: Figures) -> None:
    rng = random.Random(1)
    by_category: dict[str, list[Case]] = {}
    for case in CASES:
        if not case.limits:  # the pipeline runs with the default limits
            by_category.setdefault(case.category, []).append(case)
    pipeline_cases = [case for cases in by_category.values() for case in cases]
    chosen = (
        pipeline_cases if scale(0, 1) else [rng.choice(cases) for cases in by_category.values()]
    )
    remote = GitRemote(tmp_path / "git")
    with running_fleet(tmp_path / "fleet") as fleet:
        fleet.add("edge-a", "us-east", tier="prod")
        fleet.add("edge-b", "eu-central", tier="prod")
        nodes, urls = _fleet_nodes(fleet)
        v1 = GOOD.replace('"2.0.0"', '"1.0.0"')
        base = {"nodes.yaml": nodes.encode(), "modules/good.wat": MODULE}
        _commit_tree(remote, {**base, "functions/good.yaml": v1.encode()}, {})
        syncer = Syncer(tmp_path / "state", remote, HookClock())
        assert syncer().ok
        before = _fleet_state(fleet)
        assert {serving for _, serving in before.values()} == {"1.0.0"}
        rollouts = len(syncer.store.rollouts())
        rejected = partial = 0
        for case in chosen:
            files = {**base, "functions/good.yaml": GOOD.encode()}
            for path, data in case.files.items():
                for old, new in urls.items():
                    data = data.replace(old.encode(), new.encode())
                files[path] = MODULE if path == "modules/good.wat" else data
            _commit_tree(remote, files, case.symlinks)
            try:
                syncer()
            except InvalidManifests:
                rejected += 1
            if _fleet_state(fleet) != before or len(syncer.store.rollouts()) != rollouts:
                partial += 1
                before = _fleet_state(fleet)
                rollouts = len(syncer.store.rollouts())
        syncer.store.close()
    figures.update(
        pipeline_cases=len(chosen), pipeline_rejections=rejected, partial_applies=partial
    )
    assert rejected == len(chosen)
    assert partial == 0


# -- fuzzing ----------------------------------------------------------------------------------

_NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "../x.wat",
            "/etc/passwd",
            "%2e%2e/x.wat",
            "modules/../../x",
            "C:/x",
            "PT5M",
            "PT",
            "-PT1S",
            "1.10",
            "gitopsd/v1",
            "EdgeFunction",
            "EdgeNode",
            "canary",
            "0" * 64,
            "x" * 300,
            "\x00",
            "\u202e",
            "a\u0085b",  # PyYAML's line breaks that editors do not show (finding 13)
            "\u2028",
            "x\u2029",
            "http://127.0.0.1:9101",
            "X-User-Id",
        ]
    ),
    st.lists(st.integers(-5, 200), max_size=4),
    st.dictionaries(
        st.sampled_from(["type", "a", "name", "metric"]), st.text(max_size=5), max_size=3
    ),
)

_PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "labels"),
    ("spec",),
    ("spec", "version"),
    ("spec", "module"),
    ("spec", "sha256"),
    ("spec", "targets"),
    ("spec", "targets", "regions"),
    ("spec", "healthCheck", "timeout"),
    ("spec", "healthCheck", "function"),
    ("spec", "limits", "memoryMiB"),
    ("spec", "limits", "timeoutMs"),
    ("spec", "strategy", "type"),
    ("spec", "strategy", "stages"),
    ("spec", "strategy", "evaluationPeriod"),
    ("spec", "strategy", "batchSize"),
    ("spec", "autoRollback", "triggers"),
    ("spec", "dependsOn"),
    ("spec", "approval"),
    ("spec", "stickyHeader"),
    ("spec", "unknownField"),
]


def _valid_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gitopsd/v1",
        "kind": "EdgeFunction",
        "metadata": {"name": name, "labels": {"team": "edge"}},
        "spec": {
            "version": "1.0.0",
            "module": "modules/good.wat",
            "healthCheck": {"timeout": "PT5S"},
            "limits": {"memoryMiB": 64, "timeoutMs": 100},
            "strategy": {"type": "canary", "stages": [10, 100], "evaluationPeriod": "PT1M"},
        },
    }


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any, delete: bool) -> None:
    here: Any = doc
    for part in path[:-1]:
        if not isinstance(here, dict):
            return
        here = here.setdefault(part, {})
    if isinstance(here, dict):
        if delete:
            here.pop(path[-1], None)
        else:
            here[path[-1]] = value


@st.composite
def _mutated_commit(draw: st.DrawFn) -> dict[str, bytes]:
    docs = [
        _valid_doc(draw(st.sampled_from(["a", "b", "good"])))
        for _ in range(draw(st.integers(1, 3)))
    ]
    for _ in range(draw(st.integers(0, 4))):
        doc = draw(st.sampled_from(docs))
        _set(doc, draw(st.sampled_from(_PATHS)), draw(_NASTY), draw(st.booleans()))
    text = yaml.safe_dump_all(docs, allow_unicode=True).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):  # byte-level damage on top
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        junk = draw(st.sampled_from([b"", b"\xff", b"&a ", b"*a", b"\t", b"]", b"\n- ", b": :"]))
        text = text[:at] + junk + text[at + cut :]
    path = draw(st.sampled_from(["fuzz.yaml", "functions/fuzz.yml", "a/b/c.yaml"]))
    return {path: text}


def _nel_example() -> dict[str, bytes]:
    """The shape `make faults` found (issue 14, finding 13): PyYAML writes U+0085 raw inside a
    quoted value, reads it back as a line break, and put the last problem past the file's end."""
    docs = [_valid_doc(name) for name in ("a", "b", "good")]
    docs[0]["metadata"]["labels"]["team"] = "x\u0085y"
    docs[2]["spec"]["version"] = "not a version"  # the last line of the file
    text = yaml.safe_dump_all(docs, allow_unicode=True).encode("utf-8", "surrogatepass")
    return {"fuzz.yaml": text}


@pytest.mark.timeout(scale(120, 1800))
def test_loader_fuzz_never_crashes(figures: Figures) -> None:
    counts: Counter[str] = Counter()
    crashes: list[str] = []

    @settings(
        max_examples=scale(150, 3000),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_mutated_commit())
    @example(_nel_example())
    def one(files: dict[str, bytes]) -> None:
        case = Case("fuzz", "x", files, blame=next(iter(files)))
        snap = snapshot_of(case)
        counts["examples"] += 1
        try:
            state = load_snapshot(snap)
        except InvalidManifests as exc:
            counts["typed_rejections"] += 1
            assert exc.problems
            for p in exc.problems:
                assert p.path in snap.files and 1 <= p.line <= _line_count(snap, p.path), p
            return
        except Exception as exc:
            counts["crashes"] += 1
            crashes.append(f"{type(exc).__name__}: {exc}")
            raise
        counts["accepted"] += 1
        assert isinstance(state, DesiredState)
        for name, fn in state.functions.items():
            entry = snap.files[fn.module.path]  # inside the snapshot: no escape
            assert not entry.is_symlink
            assert fn.spec.version and math.isfinite(fn.spec.health_check.timeout)
            state.fingerprint(name)
            assert len(state.targets_of(name)) <= len(state.nodes)

    try:
        one()
    finally:
        figures.update(
            fuzz_examples=counts["examples"],
            fuzz_typed_rejections=counts["typed_rejections"],
            fuzz_accepted_valid=counts["accepted"],
            fuzz_crashes=counts["crashes"],
        )
    assert crashes == []
    assert counts["typed_rejections"] > counts["examples"] // 4


@pytest.mark.parametrize("reference", ["../modules/good.wat", "./../modules/./good.wat"])
def test_inside_references_still_load(reference: str) -> None:
    """The corpus is not refusing everything: the same base with a sane path loads."""
    files = {**BASE, "functions/other.yaml": fn_doc("other", module=reference).encode()}
    state = load_snapshot(Snapshot("0" * 40, "", {p: SnapshotFile(p, d) for p, d in files.items()}))
    assert sorted(state.functions) == ["good", "other"]


# -- the synced path's size: depth, entries, bytes (issue 14, finding 11) -----------------------


def commit_tree(remote: GitRemote, name: str, subtree: pygit2.Oid, message: str) -> str:
    """Commit HEAD's tree plus `name` -> `subtree` in the work repository and push it with the
    git CLI (what an author with push access can do: no work tree has to hold it)."""
    repo = pygit2.Repository(str(remote.work))
    head = repo.head.peel(pygit2.Commit)
    builder = repo.TreeBuilder(head.tree)
    builder.insert(name, subtree, pygit2.GIT_FILEMODE_TREE)
    sig = pygit2.Signature("Mallory", "mallory@example.test")
    sha = repo.create_commit("HEAD", sig, sig, message, builder.write(), [head.id])
    git("push", "-q", "origin", "main", cwd=remote.work)
    # The index and the work tree keep the parent's files (a checkout 1,200 directories deep
    # would defeat shutil.rmtree): a later `remote.commit_push` commits `name` away again.
    return str(sha)


def deep_tree(repo: pygit2.Repository, depth: int, leaf: bytes = b"a: 1\n") -> pygit2.Oid:
    """`d/d/.../d/x.yaml`, `depth` directories deep, built bottom-up without recursion."""
    builder = repo.TreeBuilder()
    builder.insert("x.yaml", repo.create_blob(leaf), pygit2.GIT_FILEMODE_BLOB)
    tree = builder.write()
    for _ in range(depth - 1):
        builder = repo.TreeBuilder()
        builder.insert("d", tree, pygit2.GIT_FILEMODE_TREE)
        tree = builder.write()
    return tree


def wide_tree(repo: pygit2.Repository, files: int, data: bytes) -> pygit2.Oid:
    """One directory of `files` files that all hold `data` (one blob, many names)."""
    blob = repo.create_blob(data)
    builder = repo.TreeBuilder()
    for n in range(files):
        builder.insert(f"f{n:06d}.txt", blob, pygit2.GIT_FILEMODE_BLOB)
    return builder.write()


def _valid_repo(remote: GitRemote) -> None:
    remote.write("nodes.yaml", NODES)
    remote.write("functions/good.yaml", GOOD)
    remote.write("modules/good.wat", WAT)
    remote.commit_push("valid")


def test_a_tree_1200_directories_deep_is_refused_not_a_recursion_error(
    tmp_path: Path, figures: Figures
) -> None:
    """Regression (issue 14, finding 11): source/git.py `_walk()` recursed per directory, so
    a commit 1,200 directories deep raised RecursionError out of `gitopsd validate`, and the
    daemon retried it forever without a failure note."""
    remote = GitRemote(tmp_path / "git")
    _valid_repo(remote)
    repo = pygit2.Repository(str(remote.work))
    sha = commit_tree(remote, "deep", deep_tree(repo, 1200), "1,200 directories")
    for source in (str(remote.bare), f"file://{remote.bare}"):
        with pytest.raises(InvalidManifests) as caught:
            take_snapshot(SourceSpec(source, "main"), tmp_path / "state")
        (problem,) = caught.value.problems
        assert caught.value.commit == sha
        assert problem.path == "deep/" + "/".join(["d"] * 32) and problem.line == 1
        assert "nested 33 levels below the synced path, over the limit of 32" in problem.message
    result = Gitopsd(tmp_path / "cli-state")("validate", str(remote.bare))
    figures.update(validate_exit=result.code, problem=result.err.splitlines()[0][-80:])
    assert result.code == 1, result.err
    assert f"deep/{'d/' * 31}d:1: directory nested 33 levels" in result.err


def test_the_limits_are_exact_for_depth_entries_and_bytes(tmp_path: Path) -> None:
    """At the limit a commit is read; one past it is refused, naming the path that passed."""
    remote = GitRemote(tmp_path / "git")
    _valid_repo(remote)
    repo = pygit2.Repository(str(remote.work))
    spec = SourceSpec(str(remote.bare), "main")
    state = tmp_path / "state"

    def problems() -> list[str]:
        with pytest.raises(InvalidManifests) as caught:
            take_snapshot(spec, state)
        return [str(p) for p in caught.value.problems]

    commit_tree(remote, "deep", deep_tree(repo, MAX_DEPTH), "at the depth limit")
    assert f"deep/{'d/' * (MAX_DEPTH - 1)}x.yaml" in take_snapshot(spec, state).files
    commit_tree(remote, "deep", deep_tree(repo, MAX_DEPTH + 1), "one level deeper")
    assert problems() == [
        f"deep/{'d/' * (MAX_DEPTH - 1)}d:1: directory nested {MAX_DEPTH + 1} levels below "
        f"the synced path, over the limit of {MAX_DEPTH}"
    ]
    commit_tree(remote, "deep", deep_tree(repo, 2), "shallow again")
    files = len(take_snapshot(spec, state).files)
    directories = 5  # functions/, modules/, deep/, deep/d/ and wide/
    room = MAX_ENTRIES - files - directories
    commit_tree(remote, "wide", wide_tree(repo, room, b"x"), "at the entries limit")
    assert len(take_snapshot(spec, state).files) == files + room
    commit_tree(remote, "wide", wide_tree(repo, room + 1, b"x"), "one entry more")
    (message,) = problems()
    assert message.startswith(f"wide/f{room:06d}.txt:1: more than 10,000 files and directories")
    nine_mib = b"\x00" * (9 << 20)
    commit_tree(remote, "wide", wide_tree(repo, 8, nine_mib), "72 MiB in 8 files")
    (message,) = problems()
    assert message.startswith("wide/f000007.txt:1: file of 9,437,184 bytes takes the synced path")
    assert "over 67,108,864 bytes read in all" in message


def test_a_plain_directory_is_read_within_the_same_limits(tmp_path: Path) -> None:
    """`gitopsd validate DIR` walked with os.walk (recursive in Python 3.11): the same
    depth limit, without a RecursionError, and a fifo is a problem instead of a read that
    never returns."""
    top = tmp_path / "manifests"
    top.mkdir()
    (top / "nodes.yaml").write_text(NODES)
    here = top
    for _ in range(1200):  # os.makedirs itself recurses per level
        here = here / "d"
        here.mkdir()
    os.mkfifo(top / "pipe.yaml")
    try:
        result = Gitopsd(tmp_path / "state")("validate", str(top))
    finally:
        while here != top:  # shutil.rmtree recurses too: remove bottom-up
            here.rmdir()
            here = here.parent
    assert result.code == 1, result.err
    assert f"\n{'d/' * 32}d:1: directory nested 33 levels" in "\n" + result.err
    assert "pipe.yaml:1: not a regular file, directory or symlink" in result.err
