"""The status page (`[ui] listen`) of daemons sharing one real PostgreSQL: the standby's page
shows the rollouts the leader made (it reads the shared database, not a file of its own), an
operator's action on the standby's page is applied and recorded, and a rollback asked of the
standby is refused with where to go instead."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from typing import Any

from tests.daemon.daemonsupport import wait_for
from tests.ha.cluster import Cluster, leads, serves

TOKEN = "ui-token-for-the-ha-tests-0123456789"


class Browser:
    """urllib with a cookie jar: the page's login and its forms, as a browser posts them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as r:
            assert r.status == 200, (path, r.status)
            return str(r.read().decode())

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def post(self, path: str, form: dict[str, str]) -> str:
        data = urllib.parse.urlencode(form).encode()
        with self.opener.open(self.base + path, data=data, timeout=60) as r:  # follows 303
            return str(r.read().decode())

    def login(self, who: str) -> None:
        nonce = csrf(self.get("/login"))
        self.post("/login", {"csrf": nonce, "token": TOKEN, "who": who})

    def act(self, function: str, action: str) -> str:
        token = csrf(self.get(f"/functions/{function}"))
        return self.post(f"/functions/{function}/{action}", {"csrf": token})


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[-2000:]
    return found.group(1)


def test_the_standbys_page_reads_the_shared_database_and_acts_as_an_operator(
    cluster: Cluster,
) -> None:
    token_file = cluster.root / "ui-token"
    token_file.write_text(TOKEN + "\n")
    a, a_url = cluster.daemon_with_page("a", token_file)
    a.start()
    wait_for(lambda: leads(a), 30, "a to lead")
    wait_for(lambda: serves(cluster.fleet, "1.0.0"), 60, "first sync by a")
    wait_for(lambda: (r := cluster.rollout("1.0.0")) is not None and r.state == "COMPLETED", 60)
    row = cluster.rollout("1.0.0")
    assert row is not None
    b, b_url = cluster.daemon_with_page("b", token_file)
    b.start()
    wait_for(lambda: 'gitopsd_shard_leader{shard="0"} 0' in b.metrics(), 30, "b's first round")
    assert not leads(b)
    page = Browser(b_url)

    # The overview of the standby: the rollout a ran, read from PostgreSQL.
    overview = page.json("/api/overview")
    shown = {f["name"]: f for f in overview["functions"]}
    assert shown["hello"]["rollout"]["id"] == row.id
    assert shown["hello"]["rollout"]["version"] == "1.0.0"
    assert shown["hello"]["rollout"]["state"] == "COMPLETED"
    html = page.get("/")
    assert '<a href="/functions/hello">hello</a>' in html
    detail = page.json(f"/api/rollouts/{row.id}")
    assert json.dumps(detail).count(row.id) >= 1
    function = page.json("/api/functions/hello")
    assert [h["id"] for h in function["history"]] == [row.id]

    # An operator pauses hello on the standby's page: applied to the shared state (the
    # leader sees it) and recorded in the page's audit, which a standby's fenced store
    # could not write.
    page.login("alice")
    page.act("hello", "pause")
    store = cluster.store()
    try:
        assert store.controls("hello").paused
    finally:
        store.close()
    audit = page.json("/api/functions/hello")["audit"]
    assert [(e["action"], e["who"], e["ok"]) for e in audit] == [("pause", "alice", True)]
    assert Browser(a_url).json("/api/functions/hello")["paused"]

    # A rollback runs in the daemon, so only on the leader: the standby says where to go.
    answer = page.act("hello", "rollback")
    assert "refused" in answer and "standby" in answer
    audit = page.json("/api/functions/hello")["audit"]
    assert [(e["action"], e["ok"]) for e in audit] == [("rollback", False), ("pause", True)]
    assert serves(cluster.fleet, "1.0.0")
    assert leads(a) and not leads(b)
