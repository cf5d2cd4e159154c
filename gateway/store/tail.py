"""Following every account's change stream into this worker's compliance copy.

Every compliance write (opt-outs, consent, templates: gateway/store/redis.py) appends an
entry to its account's stream in the same script call, and so does every decision that
books OTP buckets (lua/decide.lua). Each worker reads the entries after the last one it
applied, every POLL_S (20 ms), into its `Compliance` overlay (gateway/store/snapshot.py). So a
change made through any worker is in every worker's copy within POLL_S while Redis is up,
and a worker that falls back to deciding locally starts from what Redis knew when it last
answered, not from the last full load (`redis.snapshot_s`), which remains the catch-up
for anything a tail missed: after a failed read the next successful one asks for a full
reload, since the stream is trimmed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from gateway.store import keys
from gateway.store.refresh import stop_if_cancelled
from gateway.store.snapshot import Compliance

POLL_S = 0.02  # a change is in every copy this soon; one pipelined read per poll
COUNT = 1_000  # entries per read
Client = Redis | RedisCluster


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def apply(compliance: Compliance, account: str, fields: Mapping[Any, Any]) -> None:
    """One stream entry into the copy (see lua/change.lua, template_put.lua, decide.lua)."""
    got = {_text(k): _text(v) for k, v in fields.items()}
    kind, member, value = got.get("k"), got.get("m", ""), got.get("v", "")
    if kind == "o":
        compliance.note_optout(account, member, value == "1")
    elif kind == "c":
        compliance.note_consent(account, member, orjson.loads(value) if value else None)
    elif kind == "t":
        status, category = orjson.loads(value)
        compliance.note_template(account, member, (status, category))
    elif kind == "p":
        flat = orjson.loads(value)
        for i in range(0, len(flat) - 1, 2):
            compliance.note_otp(keys.otp_bucket(account, flat[i]), int(flat[i + 1]))


class Tail:
    """The read position in each account's stream."""

    def __init__(self, compliance: Compliance, client: Client) -> None:
        self.compliance = compliance
        self.client = client
        self.last: dict[str, str] = {}

    async def start(self) -> None:
        """Take each account's current end as the position (before the first full load
        begins, so nothing falls between the two)."""
        for account in sorted(self.compliance.accounts - self.last.keys()):
            found: Any = await self.client.xrevrange(keys.changes(account), "+", "-", count=1)
            self.last[account] = _text(found[0][0]) if found else "0-0"

    async def step(self) -> int:
        """Read and apply what is new in every account's stream (one pipelined round trip
        when nothing much changed); how many entries."""
        await self.start()  # accounts a config reload added
        done = 0
        todo = sorted(self.compliance.accounts)
        while todo:
            pipe = self.client.pipeline(transaction=False)
            for account in todo:
                pipe.xrange(keys.changes(account), f"({self.last[account]}", "+", count=COUNT)
            replies: list[Any] = await pipe.execute()
            more = []
            for account, found in zip(todo, replies, strict=True):
                for entry_id, fields in found:
                    apply(self.compliance, account, fields)
                    self.last[account] = _text(entry_id)
                done += len(found)
                if len(found) == COUNT:
                    more.append(account)
            todo = more
        self.compliance.synced_at = time.monotonic()
        return done


async def run(compliance: Compliance, client: Client, log: Any, poll_s: float = POLL_S) -> None:
    """Follow the streams until cancelled; after failed reads, the first good one asks the
    refresher for a full load (entries may have been trimmed meanwhile)."""
    tail = Tail(compliance, client)
    failing = False
    while True:
        try:
            if not compliance.tailing.is_set():
                await tail.start()
                compliance.tailing.set()
            await tail.step()
            if failing:
                failing = False
                compliance.accounts_changed.set()  # a full load catches up what was trimmed
                log.info("tail.recovered")
        except (RedisError, OSError, TimeoutError) as exc:
            if not failing:
                log.warning("tail.failed", error=type(exc).__name__)
            failing = True
        except Exception:  # a bug: logged, and the tail goes on
            log.exception("tail.crashed")
        stop_if_cancelled()
        await asyncio.sleep(poll_s)
