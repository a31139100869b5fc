"""Two real `gitopsd run` processes on one real PostgreSQL (lease PT1S), a real fleet of
agents and a real Git remote: one leads, the other stands by; a SIGKILLed leader's canary is
resumed by the standby from the journal with the wait's remaining time; a leader frozen past
its lease (SIGSTOP) and thawed (SIGCONT) touches nothing; a webhook received by the standby
wakes the leader through LISTEN/NOTIFY."""

from __future__ import annotations

import json
import signal
import time

import jsonschema

from gitopsd.cli.json_documents import output_json_schemas
from tests.clirunner import Gitopsd
from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.ha.cluster import Cluster, leads, serves
from tests.rollout.livesupport import push

CANARY = "{type: canary, stages: [34, 100], evaluationPeriod: PT6S}"


def two_daemons(cluster: Cluster, watch: bool = True) -> tuple[DaemonProcess, DaemonProcess]:
    a = cluster.daemon("a", watch=watch)
    a.start()
    wait_for(lambda: leads(a), 30, "a to lead")
    wait_for(lambda: serves(cluster.fleet, "1.0.0"), 60, "first sync by a")
    b = cluster.daemon("b", watch=watch)
    b.start()
    wait_for(lambda: 'gitopsd_shard_leader{shard="0"} 0' in b.metrics(), 30, "b's first round")
    assert not leads(b)
    return a, b


def test_a_sigkilled_leaders_canary_is_resumed_by_the_standby(cluster: Cluster) -> None:
    a, b = two_daemons(cluster)
    sha = push(cluster.remote, "hello", "2.0.0", CANARY)
    wait_for(lambda: cluster.waiting("2.0.0") is not None, 60, "the canary's wait")
    wait = cluster.waiting("2.0.0")
    assert wait is not None and wait.deadline is not None
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    took = wait_for(lambda: leads(b), 30, "b to take over")
    print(f"failover: standby leads {took:.2f} s after SIGKILL (lease PT1S)")
    wait_for(
        lambda: (r := cluster.rollout("2.0.0")) is not None and r.state == "COMPLETED",
        60,
        "b to finish the canary",
    )
    assert serves(cluster.fleet, "2.0.0")
    journal = cluster.journal("2.0.0")
    waits = [j for j in journal if j.step.get("kind") == "wait"]
    resumed = next(j for j in waits if j.seq == wait.seq)
    # The same wait row, finished by b no earlier than its deadline: the remaining time,
    # not a new full period (no second wait row for that stage).
    assert resumed.deadline == wait.deadline
    assert resumed.finished_at is not None and resumed.finished_at >= wait.deadline
    assert len(waits) == len({json.dumps(w.step, sort_keys=True) for w in waits})
    assert time.monotonic() - killed < 60
    note = json.loads(cluster.remote.note(sha))
    assert note["status"] == "success"

    # Who leads, from any machine with the config: text, and JSON valid against the schema.
    status = Gitopsd(a.state, config=a.config)("status", "--output", "json")
    assert status.code == 0, status.err
    document = status.json()
    jsonschema.validate(document, output_json_schemas()["status"])
    leader = document["leader"]
    assert leader["term"] >= 2 and leader["shard"] == 0 and "shards" not in document
    assert leader["holder"].split(":")[1] == str(b.proc.pid if b.proc else "")
    text = Gitopsd(a.state, config=a.config)("status")
    assert f"leader: {leader['holder']} on {leader['host']} since {leader['since']}" in text.out


def test_a_frozen_leader_thawed_after_its_lease_touches_nothing(cluster: Cluster) -> None:
    a, b = two_daemons(cluster)
    push(cluster.remote, "hello", "2.0.0", CANARY)
    wait_for(lambda: cluster.waiting("2.0.0") is not None, 60, "the canary's wait")
    a.signal(signal.SIGSTOP)
    wait_for(lambda: leads(b), 30, "b to take over from the frozen a")
    wait_for(
        lambda: (r := cluster.rollout("2.0.0")) is not None and r.state == "COMPLETED",
        60,
        "b to finish the canary",
    )
    journal = cluster.journal("2.0.0")
    a.signal(signal.SIGCONT)
    wait_for(lambda: a.healthy() and not leads(a), 30, "a to answer again, as a standby")
    time.sleep(3)  # a's own canary timer has long passed: let it try to act
    assert not leads(a) and leads(b)
    assert cluster.journal("2.0.0") == journal
    row = cluster.rollout("2.0.0")
    assert row is not None and row.state == "COMPLETED"
    assert serves(cluster.fleet, "2.0.0")
    assert "fenced" in a.logs() or "not leading" in a.logs() or "lease lost" in a.logs()


def test_a_webhook_received_by_the_standby_wakes_the_leader(cluster: Cluster) -> None:
    a, b = two_daemons(cluster, watch=False)
    push(cluster.remote, "hello", "2.0.0", "{type: blue-green}")
    time.sleep(1)
    assert serves(cluster.fleet, "1.0.0")  # no watch, no poll for an hour: nobody knows yet
    payload = {"ref": "refs/heads/main", "after": "0" * 40}
    assert b.hook("github", payload, "delivery-1") in (200, 202, 204)
    wait_for(lambda: serves(cluster.fleet, "2.0.0"), 30, "a to apply the push b was told of")
    assert leads(a) and not leads(b)

    # A clean stop hands over at once: the lease is released, not left to expire.
    a.signal(signal.SIGTERM)
    assert a.wait(timeout=60) == 0
    store = cluster.store()
    try:
        with store.bulk() as conn:
            lease = conn.execute(
                "SELECT holder, expires <= now() AS released FROM leases WHERE shard = 0"
            ).fetchone()
            members = conn.execute("SELECT holder FROM members").fetchall()
    finally:
        store.close()
    assert lease is not None
    assert lease["released"] or lease["holder"].split(":")[1] == str(b.proc.pid if b.proc else "")
    assert all(m["holder"].split(":")[1] != str(a.proc.pid if a.proc else "") for m in members)
    wait_for(lambda: leads(b), 30, "b to lead")
