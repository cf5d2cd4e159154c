"""Turning concurrent `SendCheck`s into as few store round trips as possible, and what
happens when the shared store fails.

Micro-batching: the checks that arrive while the event loop is busy are decided together
in one `decide_many` call, flushed on the loop's next turn, so a lone request waits for
nobody. At most MAX_IN_FLIGHT batches are out at a time: checks that arrive while they
are wait for the first answer and go together in the next call (the calls are pipelined
on one connection anyway, and a round trip costs two system calls and a script call
whatever the batch holds, so under load the batches grow instead of the calls
multiplying). Two rather than one: a check that arrives while a single batch is out goes
at once instead of waiting a round trip. Failure (`redis.on_failure`): `local` decides on an in-process store with every
rate divided by the expected number of processes, `open` lets sends through unlimited,
`closed` refuses with 503. After a failure the shared store is retried at most every
`RETRY_S` seconds by one request, so an outage costs one timeout per second, not one per
request.

A decision gets `timeout_s` plus PER_MESSAGE_S for each message it holds, so a large batch
is never failed (nor pushed onto the fallback) for its own size; a call that fails or
answers late is undone in Redis (gateway/store/journal.py, lua/cancel.lua).

OTP sends (a Verify session, an AUTHENTICATION template) are refused StoreUnavailable while
deciding locally unless `otp_on_failure = "local"`. What a local decision books is handed
back to the shared store in the background: capacity sends by spend while the store
answers (the outage hand-back covers the rest), OTP bookings by an idempotent hold and
end-user-IP ones by spend, retried every RETRY_S until the store takes them.

In `local` mode the opt-outs, consent and templates come from this worker's compliance
snapshot (gateway/store/snapshot.py), kept within a poll of Redis by the change stream's
tail (gateway/store/tail.py), with Redis's recent OTP bookings. A send (any check with
messages: opt-outs apply to every message) for an account the snapshot does not cover (never
loaded, or no snapshot configured) is answered StoreUnavailable rather than decided without
them; checks without messages (reads) are decided on limits alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from gateway.store import keys, lanes
from gateway.store.base import BucketSpec, Decision, OtpSpec, SendCheck, Store
from gateway.store.gcra import AUTHENTICATION
from gateway.store.lanes import LANED
from gateway.store.memory import MemoryStore
from gateway.store.snapshot import Compliance, SnapshotStore

RETRY_S = 1.0
PATIENCE_S = 1.0  # the longest a decision waits for Redis while this worker is saturated
LAG_WINDOW_S = 0.5
MAX_IN_FLIGHT = 2  # decision batches out at once per process; more wait and go together
CLOSE_WAIT_S = 1.0  # at shutdown, how long a hand-back under way may still take
HANDBACK_TRIES = 300  # RETRY_S apart: what a longer outage leaves is not handed back
PER_MESSAGE_S = 50e-6  # a decision's time for each message it holds, beyond timeout_s


class StoreUnavailable(Exception):
    """The shared store failed and `on_failure = closed`."""


class Decider:
    def __init__(
        self,
        store: Store,
        *,
        on_failure: str = "local",
        divisor: int = 1,
        timeout_s: float = 0.05,
        on_fallback: Callable[[str, int], None] | None = None,
        snapshot: Compliance | None = None,
        log: Any = None,
        otp_on_failure: str = "closed",
    ) -> None:
        self.store = store
        self.on_failure = on_failure
        self.otp_on_failure = otp_on_failure
        self.divisor = max(1, divisor)
        self.timeout_s = timeout_s
        self.snapshot = snapshot
        self.local = self._new_local()
        self._on_fallback = on_fallback
        self._pending: list[tuple[SendCheck, asyncio.Future[Decision]]] = []
        self._scheduled = False
        self._down_until = 0.0
        self._last_ok = 0.0
        self._in_flight = 0
        self._failing = False
        # (bucket key, interval, exact) -> sends decided locally, not yet handed back; exact:
        # an OTP or end-user-IP bucket, whose sends are owed until they are handed back
        self._behind: dict[tuple[str, int, bool], int] = {}
        self._holds: dict[str, int] = {}  # OTP bucket -> booked until (µs), decided locally
        self._spending = False
        self._spend_after = 0.0
        self._log = log if log is not None else structlog.get_logger("gateway")
        self._queued_at = 0.0
        self._lag_s = self._lag_cur = self._lag_prev = self._lag_since = 0.0
        # capacity buckets decided locally in the current outage (their shared specs)
        self._outage: dict[str, BucketSpec] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        """What /readyz reports: the store's kind, or the fallback in use."""
        if self.store.kind == "memory" or time.monotonic() >= self._down_until:
            return self.store.kind
        return self.on_failure

    @property
    def healthy(self) -> bool:
        return self.mode == self.store.kind

    async def decide(self, check: SendCheck) -> Decision:
        if self.store.kind == "memory":  # no round trip to save: decide right away
            return (await self.store.decide_many((check,)))[0]
        return await self._queue(check)

    def _queue(self, check: SendCheck) -> asyncio.Future[Decision]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((check, future))
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = True
        self._queued_at = loop.time()
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._note_lag(loop.time())
        self._scheduled = False
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = loop.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._schedule(asyncio.get_running_loop())

    def _note_lag(self, now: float) -> None:
        """How long the loop took to come round to a flush scheduled with call_soon: one
        turn of the loop, which is how late it reads Redis' answer too. The worst of the
        current and the previous LAG_WINDOW_S."""
        lag = now - self._queued_at
        if now - self._lag_since > LAG_WINDOW_S:
            self._lag_prev, self._lag_cur, self._lag_since = self._lag_cur, lag, now
        elif lag > self._lag_cur:
            self._lag_cur = lag
        self._lag_s = max(self._lag_prev, self._lag_cur)

    async def _run(self, batch: list[tuple[SendCheck, asyncio.Future[Decision]]]) -> None:
        checks = [c for c, _ in batch]
        try:
            decisions = await self._decide_many(checks)
        except StoreUnavailable as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(StoreUnavailable(str(exc)))
            return
        except BaseException as exc:  # never leave a caller waiting forever
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        for (_, fut), decision in zip(batch, decisions, strict=True):
            if fut.done():
                continue
            if decision is None:
                fut.set_exception(StoreUnavailable("no compliance snapshot for the fallback"))
            else:
                fut.set_result(decision)

    async def _shared(self, checks: list[SendCheck]) -> list[Decision]:
        """The shared store's answer within `timeout_s`, or TimeoutError. When this
        process's own event loop is running late (a saturated worker reads Redis' answer
        late, not Redis answering late), wait up to PATIENCE_S instead: falling back would
        weaken fleet-wide limits exactly under load, for no fault of Redis."""
        budget = self.timeout_s + PER_MESSAGE_S * sum(len(c.messages) for c in checks)
        patience = budget if self._lag_s <= self.timeout_s / 4 else max(budget, PATIENCE_S)
        async with asyncio.timeout(patience):
            if self._outage:
                await self.store.hold_buckets(self._handback())
            return await self.store.decide_many(checks)

    async def _decide_many(self, checks: list[SendCheck]) -> Sequence[Decision | None]:
        """One decision per check; None: the fallback could not decide it (no snapshot)."""
        if self.store.kind == "memory":
            return await self.store.decide_many(checks)
        now = time.monotonic()
        if now >= self._down_until:
            try:
                decisions = await self._shared(checks)
                self._last_ok = time.monotonic()
                if self._outage:  # back from an outage: the next one starts afresh
                    self._outage.clear()
                    self.local = self._new_local()
                if self._failing:
                    self._failing = False
                    self._log.info("store.recovered", store=self.store.kind)
                return decisions
            except Exception as exc:
                if not is_store_failure(exc):
                    raise
                self._down_until = now + RETRY_S
                failure: Exception = exc
                self._failing = True
                self._log.warning(
                    "store.failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    waited_ms=round((time.monotonic() - now) * 1000, 1),
                    lag_ms=round(self._lag_s * 1000, 1),
                    effect=self.on_failure,
                    retry_s=RETRY_S,
                )
        else:
            failure = StoreUnavailable("shared store marked down")
        return await self._fallback(checks, failure)

    async def _fallback(self, checks: list[SendCheck], failure: Exception) -> list[Decision | None]:
        if self._on_fallback is not None:
            self._on_fallback(self.on_failure, len(checks))
        if self.on_failure == "closed":
            raise StoreUnavailable(str(failure))
        if self.on_failure == "open":
            return [Decision() for _ in checks]
        known = [self._covered(c) and self._otp_allowed(c) for c in checks]
        todo = [c for c, ok in zip(checks, known, strict=True) if ok]
        await self._start_local(todo)
        local = await self.local.decide_many([self._local_share(c) for c in todo])
        self._spend_behind(todo, local)
        decided = iter(local)
        return [next(decided) if ok else None for ok in known]

    def _otp_allowed(self, check: SendCheck) -> bool:
        """Whether the fallback may decide this check's OTPs (`otp_on_failure`)."""
        return self.otp_on_failure == "local" or not any(self._otp_messages(check))

    def _otp_messages(self, check: SendCheck) -> list[bool]:
        """Which messages are OTPs, as the local decision sees them."""
        out = []
        for m in check.messages:
            otp = m.otp
            if not otp and m.template:
                state = self.local.template_state(check.account, m.template)
                otp = state is not None and (state[1] or "").upper() == AUTHENTICATION
            out.append(otp)
        return out

    def _spend_behind(self, checks: list[SendCheck], decisions: list[Decision]) -> None:
        """Tell the shared store about the sends let through locally, in the background.

        The local share (rate ÷ divisor) keeps the fleet within the limit when every process
        has fallen back. When only this one has (the store answered it too late, but answers
        the others), the others keep deciding on the shared buckets, which would not see
        these sends: so each capacity bucket's local sends are booked into the shared one
        (lua/spend.lua), best effort, one call in flight at a time, the rest gathered for
        the next. A store that is really down refuses them at no cost."""
        for check, decision in zip(checks, decisions, strict=True):
            if decision.refusal is not None or check.dry_run:  # a dry run booked nothing
                continue
            if check.messages and len(decision.dropped) == len(check.messages):
                continue
            for bucket in check.buckets:
                if decision.ticket and lanes.laned(bucket, check):
                    continue  # a bulk queue's ticket: its claim books the real TAT
                key = (bucket.key, bucket.interval_us, not bucket.shapeable)
                self._behind[key] = self._behind.get(key, 0) + 1
            gone = {i for i, _ in decision.dropped}
            until = self.local.now() + decision.wait_us + check.otp.interval_us
            for i, otp in enumerate(self._otp_messages(check)):
                if otp and i not in gone:
                    otp_key = keys.otp_bucket(check.account, check.messages[i].msisdn)
                    self._holds[otp_key] = max(self._holds.get(otp_key, 0), until)
        if (
            (self._behind or self._holds)
            and not self._spending
            and time.monotonic() >= self._spend_after
        ):
            self._spending = True
            task = asyncio.get_running_loop().create_task(self._spend())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _spend(self) -> None:
        """Hand back what was decided locally, one call at a time; OTP and end-user-IP
        bookings that the store did not take are tried again every RETRY_S (up to
        HANDBACK_TRIES times), capacity ones are left to the hand-back after the outage."""
        tries = 0
        try:
            while self._behind or self._holds:
                behind, self._behind = self._behind, {}
                holds, self._holds = self._holds, {}
                if tries:  # failing: capacity sends are the outage hand-back's to cover
                    behind = {k: n for k, n in behind.items() if k[2]}
                now = self.local.now()
                live = [(key, until - now) for key, until in holds.items() if until > now]
                try:
                    async with asyncio.timeout(PATIENCE_S):
                        if live:
                            await self.store.hold_buckets(live)
                            live = []
                        await self.store.spend_buckets(
                            [(key, interval, n) for (key, interval, _), n in behind.items()]
                        )
                except Exception as exc:
                    if not is_store_failure(exc):
                        raise
                    self._spend_after = time.monotonic() + RETRY_S
                    tries += 1
                    if tries >= HANDBACK_TRIES:
                        return
                    _add(self._behind, {k: n for k, n in behind.items() if k[2]})
                    for key, left in live:  # idempotent: a hold never lowers a bucket
                        self._holds[key] = max(self._holds.get(key, 0), now + left)
                    await asyncio.sleep(RETRY_S)
        finally:
            self._spending = False

    def _covered(self, check: SendCheck) -> bool:
        """Whether the local decision knows the compliance data this check needs."""
        if not check.messages:
            return True
        return self.snapshot is not None and self.snapshot.covers(check.account)

    def _new_local(self) -> MemoryStore:
        return MemoryStore() if self.snapshot is None else SnapshotStore(self.snapshot)

    def _local_share(self, check: SendCheck) -> SendCheck:
        d = self.divisor
        if d == 1:
            return check
        otp = check.otp
        return replace(
            check,
            buckets=tuple(_divided(b, d) for b in check.buckets),
            otp=OtpSpec(otp.interval_us * d, max(1, otp.burst // d), otp.limit, otp.window_s),
        )

    async def _start_local(self, checks: list[SendCheck]) -> None:
        """A capacity bucket met for the first time in this outage starts busy for a burst
        plus `max_wait`: the shared store may have booked those slots already, and the
        switch must not let a one-second window overflow. A laned bucket starts busy as
        far as bulk sends may book it: its reserved share is taken as free."""
        holds = []
        for check in checks:
            for bucket in check.buckets:
                if bucket.shapeable and bucket.key not in self._outage:
                    self._outage[bucket.key] = bucket
                    local = _divided(bucket, self.divisor)
                    busy = local.interval_us * local.burst + check.max_wait_us
                    if check.reserve_pm and bucket.rule in LANED:
                        # as far as bulk sends may have booked it (docs/lanes.md): a bulk send
                        # at the switch waits instead of being refused for the reserve
                        busy = busy - check.reserve_pm * busy // 1000 - local.interval_us
                    holds.append((bucket.key, busy))
        if holds:
            await self.local.hold_buckets(holds)

    def _handback(self) -> list[tuple[str, int]]:
        """After an outage: each capacity bucket counts as booked up to this process's last
        local booking, plus a full burst, so the shared bucket resumes where the local one
        left off instead of starting full."""
        now = self.local.now()
        return [
            (key, max(0, self.local.tat(key, now) - now) + spec.interval_us * spec.burst)
            for key, spec in self._outage.items()
        ]

    async def probe(self) -> str:
        """Ping the shared store when no call has told us about it lately (for /readyz)."""
        now = time.monotonic()
        if self.store.kind != "memory" and now - self._last_ok > RETRY_S:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.store.ping()
                self._last_ok = now
                self._down_until = 0.0
            except Exception as exc:
                if not is_store_failure(exc):
                    raise
                self._down_until = now + RETRY_S
        return self.mode

    async def cooldown(self, key: str, duration_us: int) -> None:
        """Record an upstream 429's cool-down fleet-wide (and locally, for the fallback)."""
        if self.store.kind == "memory":
            await self.store.set_cooldown(key, duration_us)
            return
        await self.local.set_cooldown(key, duration_us)
        if not self.healthy:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.store.set_cooldown(key, duration_us)
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            self._down_until = time.monotonic() + RETRY_S

    async def close(self) -> None:
        """Let the work under way finish, for a moment: a hand-back still retrying against
        a store that is down is dropped."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


def _add(into: dict[tuple[str, int, bool], int], more: dict[tuple[str, int, bool], int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def _divided(bucket: BucketSpec, d: int) -> BucketSpec:
    return replace(bucket, interval_us=bucket.interval_us * d, burst=max(1, bucket.burst // d))


def is_store_failure(exc: BaseException) -> bool:
    """A timeout, a broken connection, or an error Redis answered (OOM, READONLY, LOADING,
    ...): the store failed, not the gateway."""
    if isinstance(exc, TimeoutError | OSError | ConnectionError):
        return True
    return type(exc).__module__.startswith("redis")
