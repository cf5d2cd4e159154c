"""The queue worker base (gateway/background.py): a full queue drops, stop() drains for a
while and then counts and logs every item left, the one being worked on included."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from gateway.background import QueueWorker
from gateway.state import State


class Worker(QueueWorker[str]):
    QUEUE_MAX = 3

    def __init__(self) -> None:
        super().__init__(cast(State, SimpleNamespace(log=SimpleNamespace(exception=print))))
        self.left: list[tuple[str, str]] = []
        self.done: list[str] = []
        self.release = asyncio.Event()

    async def work(self, item: str) -> None:
        if item.startswith("slow"):
            await self.release.wait()
        self.done.append(item)

    def fields(self, item: str) -> dict[str, Any]:
        return {"item": item}

    def _count(self, effect: str) -> None:
        pass

    def _log_left(self, effect: str, item: str) -> None:
        self.left.append((effect, item))


async def test_stop_logs_the_item_in_flight_and_the_queued_ones_as_abandoned() -> None:
    worker = Worker()
    worker.start()
    assert worker.enqueue("slow-a") and worker.enqueue("b")
    await asyncio.sleep(0.01)
    assert worker.pending == 2
    await worker.stop(0.05)
    assert worker.left == [("abandoned", "slow-a"), ("abandoned", "b")]
    assert worker.done == []


async def test_a_full_queue_drops_and_a_drained_queue_leaves_nothing() -> None:
    worker = Worker()
    assert [worker.enqueue(x) for x in "abcd"] == [True, True, True, False]
    assert worker.left == [("dropped", "d")]
    worker.start()
    await worker.stop(1.0)
    assert worker.done == ["a", "b", "c"] and worker.left == [("dropped", "d")]
