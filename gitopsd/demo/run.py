"""`gitopsd demo`: a real local rollout, end to end, in a throwaway directory.

It starts six real agents on free loopback ports, each with its own token (what
`gitopsd agent-token NAME --address URL` prints for it), builds a Git repository from
`manifests-example/`, syncs it (one function per strategy), invokes every function, then
pushes two bad versions of `image-processor`: one whose health check fails (nothing
changes) and one that passes its health check but fails under traffic (the canary's
analysis rolls it back by itself). It ends by printing the git notes of the commits. The
status page follows it all live (its address is printed first); on a terminal it stays up
after the demo until Enter is pressed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import click
import yaml

from gitopsd.cli.output import render_changes, render_event
from gitopsd.clock import SystemClock
from gitopsd.demo.local_fleet import TOKEN, LocalFleet, TrafficGenerator, running_fleet
from gitopsd.errors import ConfigError
from gitopsd.reconcile import Reconciler
from gitopsd.report.notes import CommitOutcome
from gitopsd.report.publisher import publish_now
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import SqliteStore
from gitopsd.ui.demo_page import close_demo_page, open_demo_page

CANARY = "image-processor"
# The node the demo runs as a dial-out agent (EdgeNode spec.connect: dial-out), as a box
# behind NAT: it connects to the controller's tunnel listener, which reaches it over that.
DIAL_OUT_NODE = "edge-eu-central-2"


def find_example(explicit: Path | None) -> Path:
    """manifests-example/ next to the working directory or to the source checkout."""
    candidates = (
        [explicit]
        if explicit
        else [
            Path.cwd() / "manifests-example",
            Path(__file__).resolve().parents[2] / "manifests-example",
        ]
    )
    for path in candidates:
        if path is not None and (path / "nodes").is_dir():
            return path
    raise ConfigError("manifests-example/ not found: run from the repository or pass --example")


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@localhost",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@localhost",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(cwd),
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def title(text: str) -> None:
    click.echo()
    click.secho(f"== {text}", fg="cyan", bold=True)


class Demo:
    """The demo's state: directories, repository, fleet, reconciler."""

    def __init__(self, root: Path, example: Path, fleet: LocalFleet) -> None:
        self.root = root
        self.fleet = fleet
        self.bare = root / "manifests.git"
        self.work = root / "work"
        self.state = root / "state"
        shutil.copytree(example, self.work, ignore=shutil.ignore_patterns(".git"))
        self.source = SourceSpec(str(self.bare), "main", "/")
        self.reconciler = Reconciler(
            SqliteStore(self.state),
            self.state,
            SystemClock(),
            fleet.auth(),  # the fleet secret, and the tunnel listener of dial-out nodes
            on_event=render_event,
        )

    def start_fleet(self) -> bool:
        """Start an agent per EdgeNode; True when every dial-out agent connected."""
        nodes_file = self.work / "nodes" / "fleet.yaml"
        for doc in yaml.safe_load_all(nodes_file.read_text()):
            meta, spec = doc["metadata"], doc["spec"]
            # One node plays a box behind NAT: its agent dials out to the controller.
            if spec.get("connect") == "dial-out" or meta["name"] == DIAL_OUT_NODE:
                self.fleet.add_dial_out(meta["name"], spec["region"], **meta.get("labels", {}))
            else:
                self.fleet.add(meta["name"], spec["region"], **meta.get("labels", {}))
        nodes_file.write_text(
            "# Rewritten by `gitopsd demo`: the agents listen on free loopback ports, and\n"
            f"# {DIAL_OUT_NODE} is a dial-out node (spec.connect: dial-out, as behind NAT).\n"
            + self.fleet.manifests()
        )
        dial_out = [n for n, node in self.fleet.nodes.items() if node.dial_out]
        missing = self.fleet.wait_connected(*dial_out)
        for name, node in self.fleet.nodes.items():
            if node.dial_out:
                state = "connected" if name not in missing else "NOT connected"
                click.echo(
                    f"agent {name:<18} region {node.region:<11} dials out to "
                    f"{self.fleet.relay} ({state}; invocations on {node.url})"
                )
            else:
                click.echo(f"agent {name:<18} region {node.region:<11} {node.url}")
        click.echo(
            f"each holds its own token: gitopsd agent-token NAME --address URL (--dial-out "
            f"for a dial-out node) --agent-token-file {self.fleet.token_file}"
        )
        return not missing

    def show_tokens(self) -> bool:
        """One agent refuses another node's token and the fleet secret: True when so."""
        first, second = list(self.fleet.nodes)[:2]
        own = self.fleet.inventory_status(first, self.fleet.token(first))
        other = self.fleet.inventory_status(first, self.fleet.token(second))
        secret = self.fleet.inventory_status(first, TOKEN)
        click.echo(f"  {first} with its own token: {own}")
        click.echo(f"  {first} with the token of {second}: {other}")
        click.echo(f"  {first} with the fleet secret itself: {secret}")
        return (own, other, secret) == (200, 401, 401)

    def init_repo(self) -> str:
        _git(self.root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        _git(self.work, "init", "-q", "-b", "main")
        _git(self.work, "remote", "add", "origin", str(self.bare))
        return self.commit_push("fleet and six functions, one per strategy")

    def commit_push(self, message: str) -> str:
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-q", "-m", message)
        _git(self.work, "push", "-q", "origin", "main")
        return _git(self.work, "rev-parse", "HEAD")

    def sync(self) -> bool:
        async def publish(outcome: CommitOutcome) -> None:
            await publish_now(self.source, self.state, outcome, push=False)

        async def once() -> bool:  # the pass of `gitopsd sync` (gitopsd/reconcile/pipeline.py)
            report = await self.reconciler.sync(self.source, publish, show_changes=render_changes)
            for r in report.results:
                colour = "green" if r.ok else "red"
                click.secho(f"  {r.function} {r.version}: {r.state} - {r.message}", fg=colour)
            return report.ok

        return asyncio.run(once())

    def show_serving(self) -> None:
        for function in sorted(p.stem for p in (self.work / "functions").glob("*.yaml")):
            serving = self.fleet.serving(function)
            versions = ", ".join(f"{n}={v}" for n, v in serving.items())
            click.echo(f"  {function:<16} {versions}")

    def show_limits(self, function: str) -> bool:
        """Per node, the memoryMiB `function`'s serving version runs under (spec.overrides
        give some nodes their own); True when each is what Git asks for on that node."""
        desired = asyncio.run(self.reconciler.read(self.source)).desired
        ok, shown = True, []
        for node in desired.targets_of(function):
            fn = self.fleet.inventory(node)["functions"].get(function, {})
            version = desired.functions[function].spec.version
            have = fn.get("versions", {}).get(version, {}).get("limits", {}).get("memoryMiB")
            want = desired.limits_on(function, node).memory_mib
            ok &= have == want
            shown.append(f"{node}={have}")
        click.echo(f"  {function} memoryMiB: {', '.join(shown)}")
        return ok

    def edit_canary(self, version: str, old: str, new: str) -> None:
        manifest = self.work / "functions" / f"{CANARY}.yaml"
        text = manifest.read_text()
        current = yaml.safe_load(text)["spec"]["version"]
        manifest.write_text(text.replace(f'version: "{current}"', f'version: "{version}"'))
        module = self.work / "modules" / f"{CANARY}.wat"
        module.write_text(module.read_text().replace(old, new))


def run_demo(example: Path | None = None, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every step behaved as it should)."""
    source = find_example(example)
    root = Path(tempfile.mkdtemp(prefix="gitopsd-demo-"))
    ok = True
    try:
        with running_fleet(root / "fleet") as fleet:
            demo = Demo(root, source, fleet)
            title("1. six edge agents in three regions, one dialing out from behind NAT")
            ok &= demo.start_fleet()
            page = open_demo_page(demo.reconciler, SqliteStore(demo.state), demo.source, demo.state)
            ok &= demo.show_tokens()
            first = demo.init_repo()
            title(f"2. git push {first[:10]}: sync rolls out every function")
            ok &= demo.sync()
            title("3. every function answers on every node (X-Gitopsd-Version)")
            demo.show_serving()
            ok &= demo.show_limits(CANARY)  # spec.overrides: 128 MiB in ap-south

            title(f"4. push {CANARY} 1.3.0 whose health check fails: nothing changes")
            demo.edit_canary("1.3.0", '"OK")', '"NO")')
            bad_health = demo.commit_push(f"{CANARY} 1.3.0 (health check broken)")
            ok &= not demo.sync()
            ok &= set(fleet.serving(CANARY).values()) == {"1.2.0"}
            demo.show_serving()

            title(f"5. push {CANARY} 1.3.1: healthy, but every request traps under traffic")
            demo.edit_canary("1.3.1", '"NO")', '"OK")')
            module = demo.work / "modules" / f"{CANARY}.wat"
            module.write_text(
                module.read_text().replace(
                    '(func (export "_start")\n', '(func (export "_start")\n    unreachable\n'
                )
            )
            bad_runtime = demo.commit_push(f"{CANARY} 1.3.1 (traps on every request)")
            with TrafficGenerator(fleet, CANARY) as traffic:
                ok &= not demo.sync()
            click.echo(f"  ({traffic.sent} requests sent during the rollout)")
            ok &= set(fleet.serving(CANARY).values()) == {"1.2.0"}
            demo.show_serving()

            title("6. what each commit says: git notes --ref=gitopsd show <sha>")
            for sha in (first, bad_health, bad_runtime):
                click.secho(f"$ git notes --ref=gitopsd show {sha[:10]}", bold=True)
                click.echo(_git(demo.bare, "notes", "--ref=gitopsd", "show", sha))
            close_demo_page(page)
    finally:
        if keep:
            click.echo(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    click.secho(
        "\ndemo " + ("finished as expected" if ok else "did NOT behave as expected"),
        fg="green" if ok else "red",
        bold=True,
    )
    return 0 if ok else 1
