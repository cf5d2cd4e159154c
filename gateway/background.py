"""The gateway's own background calls to 8x8: one queue worker per process, its lifecycle
tied to the application's, drained on shutdown.

`QueueWorker` owns what the opt-out pusher (gateway/optoutpush.py) and the scheduled-send
canceller (gateway/scheduled.py) share: a bounded queue (a full one drops the item, counted
and logged, never blocks a request), one task working the items in turn (a failing item
is logged, never stops the worker), and `stop(drain_s)`: no more backoff waits, the queue
worked for up to `drain_s`, then whatever is left counted and logged as abandoned so ops
can redo it by hand. `install` gives an application its worker and runs it with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from gateway.state import STATE, State

Item = TypeVar("Item")
QUEUE_MAX = 100_000


class QueueWorker(Generic[Item]):
    """One background worker per process working a bounded queue of `Item`s."""

    NAME = "background"  # the task's name
    CRASHED = "background.crashed"  # the event logged when working an item raised
    QUEUE_MAX = QUEUE_MAX

    def __init__(self, state: State) -> None:
        self.state = state
        self._queue: asyncio.Queue[Item] = asyncio.Queue(self.QUEUE_MAX)
        self._closing = asyncio.Event()
        self._current: Item | None = None
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, item: Item) -> bool:
        """Queue an item; False (counted, logged) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count("dropped")
            self._log_left("dropped", item)
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (self._current is not None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.NAME)

    async def stop(self, drain_s: float) -> None:
        """Work on for up to `drain_s` without backoff waits, then log what is left."""
        self._closing.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_s)
        in_flight = self._current  # read before the cancel: _run's finally clears it
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = [in_flight] if in_flight is not None else []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for item in left:
            self._count("abandoned")
            self._log_left("abandoned", item)

    async def backoff(self, delay_s: float) -> None:
        """Wait `delay_s` before a retry, or less when the worker is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay_s)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            self._current = item
            try:
                await self.work(item)
            except Exception:  # a store failure or a bug must not stop the worker
                self.state.log.exception(self.CRASHED, **self.fields(item))
            finally:
                self._current = None
                self._queue.task_done()

    async def work(self, item: Item) -> None:
        raise NotImplementedError

    def fields(self, item: Item) -> dict[str, Any]:
        """An item's fields in log lines (numbers are masked by the logger)."""
        raise NotImplementedError

    def _count(self, effect: str) -> None:
        raise NotImplementedError

    def _log_left(self, effect: str, item: Item) -> None:
        """Log an item `dropped` (queue full) or `abandoned` (left at shutdown)."""
        raise NotImplementedError


class _Stoppable(Protocol):
    def start(self) -> None: ...
    async def stop(self, drain_s: float) -> None: ...


W = TypeVar("W", bound=_Stoppable)


def install(
    app: web.Application, key: web.AppKey[W], make: Callable[[State], W], drain_s: float
) -> None:
    """Give `app` its worker under `key` (needs `app[STATE]`; once) and run it with the
    app: started at start-up, stopped at clean-up with `min(drain_s, server.drain_s)`."""
    if key in app:
        return
    app[key] = make(app[STATE])

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        worker = app[key]
        worker.start()
        yield
        await worker.stop(min(drain_s, app[STATE].config.server.drain_s))

    app.cleanup_ctx.append(lifecycle)
