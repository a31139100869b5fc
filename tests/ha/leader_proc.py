"""A stand-in controller for the HA process tests: real leases, real fenced writes.

python -m tests.ha.leader_proc URL HOLDER SHARDS FUNCTIONS...

It runs `Leadership` (lease PT1S) and, every 20 ms, journals one step for each function of
the shards it leads, the step naming its holder and the term it acted under, through a
fenced PostgresStore. Events go to stdout as JSON lines: {"event": "lead", "shards": [...]}
when the led shards change, {"event": "fenced", ...} when the database refused a write,
{"event": "wrote", "n": ...} every 25 writes.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from gitopsd.errors import StoreError
from gitopsd.ha.leadership import Leadership
from gitopsd.ha.lease import PgLeases
from gitopsd.log import configure
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import Fenced, PostgresStore
from gitopsd.store.shards import shard_of

LEASE = 1.0


def say(**event: object) -> None:
    print("EV " + json.dumps(event), flush=True)


async def main(url: str, holder: str, shards: int, functions: list[str]) -> None:
    target = pg_target(url)
    store = PostgresStore(target)
    leases = PgLeases(target, holder, f"host-{holder}", LEASE)
    leases.agree_shards(shards)  # as the daemon does at start: the database fences the count
    leadership = Leadership(leases, shards, time.monotonic)
    stop = asyncio.Event()
    rounds = asyncio.create_task(leadership.run(stop))
    last: list[int] = []
    written = 0
    while True:
        led = sorted(leadership.led_shards())
        if led != last:
            last = led
            say(event="lead", shards=led, at=time.time())
        fence = leadership.fence()
        store.set_fence(fence)
        if fence.terms:
            for fn in functions:
                shard = shard_of(fn, shards)
                if shard not in fence.terms:
                    continue
                step = {"holder": holder, "term": fence.terms[shard], "shard": shard}
                try:
                    await asyncio.to_thread(
                        store.begin_step, f"run-{fn}", random.randrange(2**31), step, time.time()
                    )
                    written += 1
                    if written % 25 == 0:
                        say(event="wrote", n=written)
                except Fenced as exc:
                    say(event="fenced", shard=shard, term=fence.terms[shard], error=str(exc))
                except StoreError as exc:  # e.g. the server ended a session frozen mid-write
                    say(event="store_error", shard=shard, error=str(exc))
        await asyncio.sleep(0.02)
        if rounds.done():
            rounds.result()


if __name__ == "__main__":
    configure(json=True)  # logs to stderr, events alone on stdout
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
