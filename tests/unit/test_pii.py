"""PII removal: reading umids from 8x8's answers, the queue's claim/lease/move contract on
every store, and how the remover treats each 8x8 answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import fakeredis
import orjson
import pytest

from gateway import pii
from gateway.config import Config, PiiConfig
from gateway.metrics import Metrics
from gateway.state import State
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.upstream import Answer, UpstreamFailure

MS = 1000


@pytest.fixture(params=["memory", "fakeredis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made: Store = (
        MemoryStore()
        if request.param == "memory"
        else RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    )
    yield made
    await made.close()


def now_us() -> int:
    return time.time_ns() // 1000


def test_umids_of_single_and_listed_batch_answers() -> None:
    assert pii.umids({"umid": "u-1", "status": {}}) == ["u-1"]
    batch = {"batchId": "b", "messages": [{"umid": "u-2"}, {"umid": ""}, {"x": 1}, "junk"]}
    assert pii.umids(batch) == ["u-2"]
    assert pii.umids({"batchId": "b", "acceptedCount": 3}) == []
    assert pii.umids([{"umid": "u"}]) == []


async def test_claim_takes_only_due_entries_once_until_the_lease_passes(store: Store) -> None:
    now = now_us()
    await store.pii_add([("a", now - 2 * MS), ("b", now - MS), ("later", now + 60_000_000)])
    await store.pii_add([("a", now + 60_000_000)])  # queued already: keeps its due time
    claimed, wait = await store.pii_claim(10, 200 * MS)
    assert claimed == ["a", "b"]
    assert wait is not None and 0 < wait <= 200 * MS
    assert (await store.pii_claim(10, 200 * MS))[0] == []  # leased: nobody else takes them
    await store.pii_move("a", None, 0)  # finished
    await asyncio.sleep(0.3)
    assert (await store.pii_claim(10, 200 * MS))[0] == ["b"]  # its worker died: retaken


async def test_claim_limit_and_an_empty_queue(store: Store) -> None:
    assert await store.pii_claim(5, MS) == ([], None)
    now = now_us()
    await store.pii_add([(f"e{i}", now - 10 * MS + i) for i in range(5)])
    assert (await store.pii_claim(2, 60_000_000))[0] == ["e0", "e1"]
    assert (await store.pii_claim(10, 60_000_000))[0] == ["e2", "e3", "e4"]


async def test_move_replaces_a_claimed_entry_but_never_revives_a_finished_one(
    store: Store,
) -> None:
    now = now_us()
    await store.pii_add([("a", now - MS)])
    [claimed], _ = await store.pii_claim(1, 60_000_000)
    await store.pii_move(claimed, "a-retry", now - MS)
    assert (await store.pii_claim(5, 60_000_000))[0] == ["a-retry"]
    await store.pii_move("a-retry", None, 0)
    await store.pii_move("a-retry", "a-again", now - MS)  # a late worker: stays finished
    assert await store.pii_claim(5, 60_000_000) == ([], None)


async def test_captcha_tokens_are_good_once_until_released(store: Store) -> None:
    assert await store.captcha_use("d1", 60_000)
    assert not await store.captcha_use("d1", 60_000)
    assert await store.captcha_use("d2", 60_000)
    await store.captcha_release("d1")
    assert await store.captcha_use("d1", 60_000)


class FakeUpstream:
    def __init__(self, answers: list[int | Exception], retry_after: str = "2") -> None:
        self.answers = answers
        self.retry_after = retry_after
        self.paths: list[str] = []

    def request_headers(self, headers: Any) -> dict[str, str]:
        return dict(headers)

    async def forward(
        self, product: str, path: str, method: str, body: Any, headers: Any
    ) -> Answer:
        assert (product, method, body) == ("sms", "DELETE", None)
        self.paths.append(path)
        found = self.answers.pop(0)
        if isinstance(found, Exception):
            raise found
        return Answer(found, {"Retry-After": self.retry_after}, b"", 0.01)


def remover(store: Store, upstream: FakeUpstream) -> pii.Remover:
    state = SimpleNamespace(
        config=Config(pii=PiiConfig(retain_days=1, deletes_per_s=100)),
        store=store,
        upstream=upstream,
        metrics=Metrics(),
        log=SimpleNamespace(info=lambda *a, **k: None, error=lambda *a, **k: None,
                            warning=lambda *a, **k: None),
    )  # fmt: skip
    return pii.Remover(cast(State, state), base_backoff_s=10)


@pytest.mark.parametrize(
    ("answer", "queued"),
    [(202, False), (404, False), (400, False), (429, True), (503, True),
     (UpstreamFailure("upstream.timeout", "slow"), True)],
)  # fmt: skip
async def test_each_8x8_answer_finishes_or_retries_the_entry(
    answer: int | Exception, queued: bool
) -> None:
    store = MemoryStore()
    upstream = FakeUpstream([answer])
    item = pii.entry("acme/main", "u 1")
    await store.pii_add([(item, now_us() - MS)])
    worker = remover(store, upstream)
    [claimed], _ = await store.pii_claim(1, 60_000_000)
    started = now_us()
    await worker._remove(claimed)
    assert upstream.paths == ["/api/v1/subaccounts/acme%2Fmain/messages/u%201/pii"]
    left = store._privacy().pii
    if not queued:
        assert left == {}
        return
    [(retry, due)] = left.items()
    assert orjson.loads(retry) == {"s": "acme/main", "u": "u 1", "n": 1}
    wait = (due - started) / 1e6
    if answer == 429:
        assert 1.9 <= wait <= 2.5  # 8x8's Retry-After
    else:
        assert 4.9 <= wait <= 10.5  # backoff: base * 2**0 * [0.5, 1]
