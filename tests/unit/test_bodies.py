"""Reading bodies: the size limit holds for the decoded body of a gzip or deflate request,
is enforced while decoding (a small bomb is refused 413 after at most the limit, and other
work runs between slices), and a body that does not decode is 400."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.bodies import SLICE, decode
from gateway.config import ClientConfig, Config, ServerConfig, UpstreamConfig
from gateway.errors import GatewayError
from gateway.store.memory import MemoryStore
from tests.support.frontserver import FrontServer
from tests.support.gatewayproc import CLIENT_TOKEN, sha

LIMIT = 1 << 20
SEND = "/sms/api/v1/subaccounts/acme_main/messages"
BODY = orjson.dumps({"destination": "+6587654321", "text": "hi"})


def bomb(decoded: int, wbits: int = 31) -> bytes:
    """`decoded` zero bytes, compressed (about 1000:1)."""
    enc = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = b"\0" * (1 << 20)
    parts = [enc.compress(zeros) for _ in range(decoded >> 20)]
    return b"".join([*parts, enc.flush()])


def config() -> Config:
    urls = {p: f"http://127.0.0.1:9/{p}" for p in ("chatapps", "sms", "verify", "contacts")}
    return Config(
        server=ServerConfig(max_body_bytes=LIMIT),
        upstream=UpstreamConfig(urls=urls, timeout_s=1),
        clients=(ClientConfig(name="c", token_sha256=(sha(CLIENT_TOKEN),), subaccounts=("*",)),),
    )


async def post(body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    app = build_app(config(), "k", {}, store=MemoryStore())
    hdrs = {"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"}
    async with TestClient(FrontServer(app)) as client:
        resp = await client.post(SEND, data=body, headers={**hdrs, **headers})
        answer = await resp.read()
        return resp.status, orjson.loads(answer) if answer[:1] == b"{" else {}


async def test_a_gzip_bomb_is_refused_413_by_its_decoded_size() -> None:
    data = bomb(400 << 20)  # ~400 KB on the wire, 400 MB decoded
    assert len(data) < 1 << 20
    status, answer = await post(data, **{"Content-Encoding": "gzip"})
    assert (status, answer["gatewayCode"]) == (413, "request.too_large")


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, no zlib header
        ("identity", lambda b: b),
    ],
)
async def test_a_compressed_send_is_read_decoded(coding: str, encode: Any) -> None:
    status, answer = await post(encode(BODY), **{"Content-Encoding": coding})
    assert answer.get("gatewayCode") in ("upstream.error", "upstream.timeout")  # read: forwarded
    assert status in (502, 504)


@pytest.mark.parametrize(
    ("coding", "body", "status", "code"),
    [
        ("gzip", b"not gzip", 400, "request.invalid"),
        ("gzip", gzip.compress(BODY)[:-12], 400, "request.invalid"),  # truncated
        ("br", BODY, 415, "request.content_type"),
        ("gzip, gzip", gzip.compress(gzip.compress(BODY)), 415, "request.content_type"),
    ],
)
async def test_a_body_that_does_not_decode_is_refused(
    coding: str, body: bytes, status: int, code: str
) -> None:
    got, answer = await post(body, **{"Content-Encoding": coding})
    assert (got, answer["gatewayCode"]) == (status, code)


async def test_decoding_stops_at_the_limit_and_lets_other_work_run() -> None:
    ticks = 0

    async def other_request() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    with pytest.raises(GatewayError) as info:
        await decode(bomb(64 << 20), "gzip", 8 * SLICE)
    task.cancel()
    assert info.value.code == "request.too_large"
    assert ticks >= 8  # the other task ran between slices, not only before or after


async def test_decoding_just_within_the_limit_is_whole() -> None:
    assert await decode(bomb(LIMIT), "gzip", LIMIT) == b"\0" * LIMIT
