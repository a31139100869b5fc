"""Issue 22 item 4: `gitopsd diff --plan` prints, step for step, the text `gitopsd sync` prints
when every step goes well, for all six strategies (real agents, real rollouts)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

STRATEGIES = {
    "roll": "{type: rolling, batchDelay: PT1S}",
    "bg": "{type: blue-green}",
    "can": "{type: canary, stages: [34, 100], evaluationPeriod: PT1S}",
    "reg": "{type: regional, interRegionDelay: PT1S}",
    "ab": "{type: ab-test, variantBPercentage: 34, experimentDuration: PT1S}",
    "ff": "{type: feature-flag, flagName: beta, initialRollout: 40}",
}
HEAD = re.compile(r"^[+~?-] \w+ (\S+) ")
PLANNED = re.compile(r"^ {6}[ \d]\d\. (.*)$")
RAN = re.compile(r"^\[(\S+) \S+\]\s+\d+\. (.*): ok(?: - .*)?$")


def planned(text: str) -> dict[str, list[str]]:
    plans: dict[str, list[str]] = {}
    function = ""
    for line in text.splitlines():
        if head := HEAD.match(line):
            function = head[1]
        elif step := PLANNED.match(line):
            plans.setdefault(function, []).append(step[1])
    return plans


def ran(text: str) -> dict[str, list[str]]:
    steps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if step := RAN.match(line):
            steps.setdefault(step[1], []).append(step[2])
    return steps


def test_the_plan_is_what_the_run_says_for_every_strategy(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    source = str(remote.bare)
    remote.write("nodes.yaml", fleet.manifests())
    # First deployments of all six (the A/B test has no variant A yet: B is analysed alone),
    # then new versions of all but the A/B test, whose comparison needs real traffic to win.
    for round_, names in (
        ("1.0.0", list(STRATEGIES)),
        ("2.0.0", [n for n in STRATEGIES if n != "ab"]),
    ):
        for name in names:
            push(remote, name, round_, STRATEGIES[name])
        plan = gitopsd("diff", source, "--plan")
        assert plan.code == 1
        run = gitopsd("sync", source, "--once")
        assert run.code == 0, run.out + run.err
        expected, got = planned(plan.out), ran(run.out)
        assert set(expected) == set(names), plan.out
        for name in names:
            assert got[name] == expected[name], (name, run.out)
        last = {name: steps[-1] for name, steps in expected.items()}
        assert all(step.startswith("finish COMPLETED: ") for step in last.values()), last
        if round_ == "1.0.0":  # the share asked for, then what it came to
            assert "wait 1s (experiment: 34% asked, 1.0.0 on 2 of 3 nodes)" in expected["ab"]
