"""Undoing decisions nobody heard the answer of.

Every decision script call (lua/decide.lua, and on a Cluster lua/confirm.lua) appends what
it books to a journal, a list under `gw:{tag}:dec:<id>` on the slot of the keys it booked,
kept JOURNAL_MS. When the caller stops waiting (the Decider's timeout, a dropped
connection, an error), `Canceller` runs lua/cancel.lua on each journal of the decision in
the background, tried again while Redis does not answer: every key that still holds what
the decision wrote gets its old value back, and the journal becomes a tombstone, so a call
of that decision reaching Redis only afterwards books nothing. So a decision that failed
or answered late leaves nothing booked (or, when Redis stays away longer than JOURNAL_MS,
bookings that only make a bucket stricter).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store import keys
from gateway.store.scripts import ScriptClient, script

JOURNAL_MS = 10_000  # how long a decision can still be cancelled
CANCEL_DELAYS_S = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)  # within JOURNAL_MS
CLOSE_WAIT_S = 1.0


class DecisionCancelled(TimeoutError):
    """A decision call reached Redis after its decision had been cancelled (it booked
    nothing)."""


def new_id() -> str:
    return os.urandom(9).hex()


def tag_of(key: str) -> str | None:
    """A key's Redis Cluster hash tag (None: it has none)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else None


@dataclass(slots=True)
class Journal:
    """One decision's journal on one slot: its key and every key its calls named."""

    key: str
    names: list[str] = field(default_factory=list)

    def call_keys(self, names: Sequence[str]) -> tuple[list[str], int]:
        """KEYS of a script call naming `names` with this journal last, and the journal's
        1-based index in them."""
        self.names.extend(names)
        return [*names, self.key], len(names) + 1


class Journals:
    """The journals of one decision (one per slot it booked on)."""

    def __init__(self) -> None:
        self.id = new_id()
        self.by_key: dict[str, Journal] = {}

    def on_slot_of(self, key: str) -> Journal:
        """The journal on the slot of `key` (standalone: one journal, any key)."""
        tag = tag_of(key)
        name = keys.decision(self.id if tag is None else f"{{{tag}}}:{self.id}")
        found = self.by_key.get(name)
        if found is None:
            found = self.by_key[name] = Journal(name)
        return found


def reply_cancelled(reply: Any) -> bool:
    return bool(reply) and reply[0] == -1


class Canceller:
    """Cancels journals, now or in the background."""

    def __init__(self, client: ScriptClient) -> None:
        self.client = client
        self._cancel = script("cancel")
        self._tasks: set[asyncio.Task[None]] = set()

    async def cancel(self, journal: Journal) -> None:
        names = [journal.key, *dict.fromkeys(k for k in journal.names if k != journal.key)]
        await self._cancel(self.client, names, (JOURNAL_MS,))

    def later(self, journals: Sequence[Journal]) -> None:
        if journals:
            task = asyncio.get_running_loop().create_task(self._cancel_all(list(journals)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _cancel_all(self, journals: list[Journal]) -> None:
        for journal in journals:
            for delay in CANCEL_DELAYS_S:
                await asyncio.sleep(delay)
                with contextlib.suppress(Exception):  # Redis' trouble: try again
                    await self.cancel(journal)
                    break

    async def close(self) -> None:
        """A moment for the cancels under way, then they are dropped."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
