"""Idempotency in one process: keys from requests, which outcomes keep a key, stored
answers, the waiting of duplicates, and the RateLimit fields of a decision."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway import answers
from gateway.config import ConfigError, load
from gateway.errors import GatewayError, error_response
from gateway.idempotency import (
    Idempotency,
    MemoryKeeper,
    encode,
    may_have_sent,
    replay,
    request_key,
)
from gateway.store.base import BucketSpec, Decision, OtpSpec, Refusal, Rule, SendCheck

PATH = "/chatapps/api/v1/subaccounts/acme_main/messages"
BODY = b'{"user": {"msisdn": "+6591234567"}, "type": "text", "content": {"text": "hi"}}'


def _request(*headers: tuple[str, str], path: str = PATH) -> web.Request:
    return make_mocked_request("POST", path, headers=CIMultiDict(headers))


def test_no_header_and_no_opt_in_is_no_key() -> None:
    body = b'{"clientMessageId": "cm-1"}'
    assert request_key(_request(), "orders", body, client_message_id=False) is None


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_a_key_that_is_not_1_to_255_printable_characters_is_refused(value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        request_key(_request(("Idempotency-Key", value)), "orders", BODY, client_message_id=False)
    assert (caught.value.code, caught.value.extra["field"]) == (
        "request.invalid",
        "Idempotency-Key",
    )


def test_two_key_headers_are_refused() -> None:
    req = _request(("Idempotency-Key", "a"), ("Idempotency-Key", "b"))
    with pytest.raises(GatewayError):
        request_key(req, "orders", BODY, client_message_id=False)


def test_the_key_is_scoped_per_client_and_the_fingerprint_covers_path_and_body() -> None:
    header = ("Idempotency-Key", "k-1")
    mine = request_key(_request(header), "orders", BODY, client_message_id=False)
    theirs = request_key(_request(header), "billing", BODY, client_message_id=False)
    other_body = request_key(_request(header), "orders", BODY + b" ", client_message_id=False)
    other_path = request_key(
        _request(header, path=PATH + "?x=1"), "orders", BODY, client_message_id=False
    )
    assert mine is not None and theirs is not None and other_body and other_path
    assert mine.id != theirs.id
    assert mine.id == other_body.id == other_path.id
    assert len({mine.fingerprint, other_body.fingerprint, other_path.fingerprint}) == 3


def test_client_message_id_is_a_key_only_when_opted_in_and_usable() -> None:
    body = b'{"clientMessageId": "cm-1", "destination": "+6591234567"}'
    found = request_key(_request(), "orders", body, client_message_id=True)
    header = request_key(_request(("Idempotency-Key", "cm-1")), "orders", body,
                         client_message_id=True)  # fmt: skip
    assert found is not None and header is not None and found.id != header.id
    for unusable in (b'{"clientMessageId": 7}', b'{"clientMessageId": ""}', b"[1]"):
        assert request_key(_request(), "orders", unusable, client_message_id=True) is None


def _answer(status: int, code: str | None = None, message: str = "m") -> web.Response:
    if code is not None:
        return error_response(code, message)
    return web.Response(status=status, body=b"{}", content_type="application/json")


@pytest.mark.parametrize(
    ("response", "kept"),
    [
        (_answer(200), True),
        (_answer(500), True),
        (_answer(503), True),
        (_answer(400), False),
        (_answer(429), False),
        (_answer(0, "upstream.timeout"), True),
        (_answer(0, "upstream.error", "8x8 connection failed"), True),
        (_answer(0, "upstream.error", "8x8 is unreachable"), False),
        (_answer(0, "upstream.unavailable"), False),
        (_answer(0, "store.unavailable"), False),
        (_answer(0, "rate_limited.subaccount"), False),
        (_answer(0, "recipient.opted_out"), False),
    ],
)
def test_a_key_is_kept_exactly_when_8x8_may_have_sent(response: web.Response, kept: bool) -> None:
    assert may_have_sent(response) is kept


def test_a_stored_answer_replays_status_headers_and_body() -> None:
    first = web.Response(status=202, body=b'{"umid": "u-1"}', content_type="application/json",
                         headers={"X-Request-Id": "r-1"})  # fmt: skip
    again = replay(encode(first, 1024))
    assert (again.status, again.body) == (202, b'{"umid": "u-1"}')
    assert again.headers["X-Request-Id"] == "r-1"
    assert again.headers["Content-Type"].startswith("application/json")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Body-Omitted" not in again.headers


def test_an_answer_over_the_size_bound_keeps_status_and_a_marker_only() -> None:
    first = web.Response(status=200, body=b"x" * 2048, content_type="application/json")
    stored = encode(first, 1024)
    assert len(stored) < 200
    again = replay(stored)
    assert (again.status, again.body) == (200, b"")
    assert again.headers["Idempotent-Body-Omitted"] == "true"
    assert "Content-Type" not in again.headers


async def test_concurrent_duplicates_wait_for_the_first_and_share_its_answer() -> None:
    idem = Idempotency(MemoryKeeper())
    key = request_key(_request(("Idempotency-Key", "k")), "orders", BODY,
                      client_message_id=False)  # fmt: skip
    assert key is not None
    runs = 0
    gate = asyncio.Event()

    async def send() -> web.StreamResponse:
        nonlocal runs
        runs += 1
        await gate.wait()
        return web.Response(status=200, body=orjson.dumps({"umid": f"u-{runs}"}))

    tasks = [
        asyncio.create_task(idem.once(key, send, ttl_s=60, lease_s=30, max_answer_bytes=1024))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    gate.set()
    done = await asyncio.gather(*tasks)
    assert runs == 1
    assert {bytes(r.body) for r in done if isinstance(r, web.Response)} == {b'{"umid":"u-1"}'}
    assert [r.headers.get("Idempotent-Replayed") for r in done].count("true") == 4


async def test_a_released_key_lets_a_waiting_duplicate_go_itself() -> None:
    idem = Idempotency(MemoryKeeper())
    key = request_key(_request(("Idempotency-Key", "k")), "orders", BODY,
                      client_message_id=False)  # fmt: skip
    assert key is not None
    statuses = iter([429, 200])

    async def send() -> web.StreamResponse:
        await asyncio.sleep(0)
        return _answer(next(statuses))

    first, second = await asyncio.gather(
        idem.once(key, send, ttl_s=60, lease_s=30, max_answer_bytes=1024),
        idem.once(key, send, ttl_s=60, lease_s=30, max_answer_bytes=1024),
    )
    assert (first.status, second.status) == (429, 200)
    assert "Idempotent-Replayed" not in second.headers


def _bucket(rule: Rule, burst: int, limit: int, interval_us: int = 1000) -> BucketSpec:
    return BucketSpec(rule, f"k:{rule}", interval_us, burst, limit, 1, shapeable=True)


def _check(*buckets: BucketSpec) -> SendCheck:
    return SendCheck("acme", (), buckets, OtpSpec(60_000_000, 1, 1, 60), "cool")


def test_ratelimit_fields_name_the_bucket_with_the_smallest_share_left() -> None:
    sub, egress = _bucket(Rule.SUBACCOUNT, 36, 1800), _bucket(Rule.EGRESS_IP, 60, 3000)
    decision = Decision(remaining=((Rule.SUBACCOUNT, 30), (Rule.EGRESS_IP, 20)))
    policy, current = answers.ratelimit_fields(_check(sub, egress), decision) or ("", "")
    assert policy == '"egress_ip";q=3000;w=1'
    assert current == '"egress_ip";r=20;t=1'


def test_ratelimit_fields_of_a_refusal_are_the_refusing_bucket() -> None:
    sub = _bucket(Rule.SUBACCOUNT, 36, 1800)
    refused = Decision(refusal=Refusal(Rule.SUBACCOUNT, 2_500_000, bucket=sub, remaining=0))
    assert answers.ratelimit_fields(_check(sub), refused) == (
        '"subaccount";q=1800;w=1',
        '"subaccount";r=0;t=3',
    )
    assert answers.ratelimit_fields(_check(sub), Decision(refusal=Refusal(Rule.OPTED_OUT))) is None


def test_idempotency_config_defaults_overrides_and_checks(tmp_path: Path) -> None:
    cfg = load(None, {})
    assert (cfg.idempotency.ttl_s, cfg.idempotency.client_message_id) == (86400, False)
    assert cfg.idempotency.max_answer_bytes == 65536
    env = {"GATEWAY_IDEMPOTENCY_TTL_S": "600", "GATEWAY_IDEMPOTENCY_CLIENT_MESSAGE_ID": "true"}
    cfg = load(None, env)
    assert (cfg.idempotency.ttl_s, cfg.idempotency.client_message_id) == (600, True)
    path = tmp_path / "gw.toml"
    path.write_text("[idempotency]\nttl_s = 0\nmax_answer_bytes = -1\nkeep = 1\n")
    with pytest.raises(ConfigError) as caught:
        load(path, {})
    problems = "\n".join(caught.value.problems)
    for where in ("idempotency.ttl_s", "idempotency.max_answer_bytes", "idempotency.keep"):
        assert where in problems


async def test_a_first_attempt_that_never_finished_lapses_into_an_unknown_outcome() -> None:
    idem = Idempotency(MemoryKeeper())
    key = request_key(_request(("Idempotency-Key", "k")), "orders", BODY,
                      client_message_id=False)  # fmt: skip
    assert key is not None

    async def crash() -> web.StreamResponse:
        raise RuntimeError("the worker fell over mid-send")

    with pytest.raises(RuntimeError):
        await idem.once(key, crash, ttl_s=60, lease_s=0.01, max_answer_bytes=1024)
    await asyncio.sleep(0.02)
    sent: list[int] = []

    async def send() -> web.StreamResponse:
        sent.append(1)
        return _answer(200)

    again = await idem.once(key, send, ttl_s=60, lease_s=30, max_answer_bytes=1024)
    assert isinstance(again, web.Response) and isinstance(again.body, bytes)
    assert (again.status, orjson.loads(again.body)["gatewayCode"]) == (504, "upstream.timeout")
    assert again.headers["Idempotent-Replayed"] == "true" and sent == []


class _Down(MemoryKeeper):
    async def claim(self, *args: object, **kwargs: object) -> Any:
        raise ConnectionError("redis is down")


async def test_a_keyed_send_is_refused_503_and_not_sent_when_keys_cannot_be_claimed() -> None:
    idem = Idempotency(_Down())
    key = request_key(_request(("Idempotency-Key", "k")), "orders", BODY,
                      client_message_id=False)  # fmt: skip
    assert key is not None
    sent: list[int] = []

    async def send() -> web.StreamResponse:
        sent.append(1)
        return _answer(200)

    refused = await idem.once(key, send, ttl_s=60, lease_s=30, max_answer_bytes=1024)
    assert (refused.status, refused.headers["X-Gateway-Reject"]) == (503, "store.unavailable")
    assert sent == []
