"""The port's one handler (gateway/front.py): proxied requests skip aiohttp's router and
middleware chain, and answer exactly as through them; the gateway's own endpoints, and a
request that carries `Expect`, still go through the application."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config import ClientConfig, Config, UpstreamConfig
from gateway.front import Front
from gateway.store.memory import MemoryStore
from tests.support.frontserver import FrontServer
from tests.support.gatewayproc import CLIENT_TOKEN, sha

UNROUTED = "/sms/api/v1/nothing/here"
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


def app() -> web.Application:
    urls = {p: f"http://127.0.0.1:9/{p}" for p in ("chatapps", "sms", "verify", "contacts")}
    cfg = Config(
        upstream=UpstreamConfig(urls=urls, timeout_s=1),
        clients=(ClientConfig(name="c", token_sha256=(sha(CLIENT_TOKEN),), subaccounts=("*",)),),
    )
    return build_app(cfg, "k", {}, store=MemoryStore())


def count_resolves(served: web.Application) -> list[str]:
    """Record every path the application's router resolves."""
    seen: list[str] = []
    resolve = served.router.resolve

    async def counted(request: web.Request) -> Any:
        seen.append(request.path)
        return await resolve(request)

    served.router.resolve = counted  # type: ignore[method-assign]
    return seen


async def test_a_proxied_path_is_not_resolved_by_the_router_and_answers_as_through_it() -> None:
    served = app()
    seen = count_resolves(served)
    async with TestClient(FrontServer(served)) as client:
        resp = await client.post(UNROUTED, data=b"{}", headers=AUTH)
        body = orjson.loads(await resp.read())
        assert resp.status == 404 and body["gatewayCode"] == "route.unknown"
        assert resp.headers["X-Request-Id"]  # the on_response_prepare hook still ran
        assert isinstance(body["code"], int)
        assert seen == []
        health = await client.get("/healthz")
        assert health.status == 200
        assert seen == ["/healthz"]


async def test_an_expect_header_goes_through_the_application() -> None:
    served = app()
    seen = count_resolves(served)
    async with TestClient(FrontServer(served)) as client:
        resp = await client.post(UNROUTED, data=b"{}", headers={**AUTH, "Expect": "100-continue"})
        assert resp.status == 404
        assert seen == [UNROUTED]


async def test_an_own_endpoint_reached_with_another_case_is_not_one() -> None:
    """Own endpoints are matched by their first segment exactly (aiohttp's router is
    case-sensitive too): `/HEALTHZ` is a proxied path, unknown to 8x8."""
    async with TestClient(FrontServer(app())) as client:
        resp = await client.get("/HEALTHZ")
        assert resp.status == 404
        assert orjson.loads(await resp.read())["gatewayCode"] == "route.unknown"


def test_the_own_segments_are_the_applications_resources() -> None:
    served = app()

    async def fallback(request: web.Request) -> web.StreamResponse:
        raise AssertionError  # pragma: no cover

    front = Front(served, fallback)
    assert {"healthz", "readyz", "metrics", "admin", "webhooks"} <= front._own
    assert not front._own & {"chatapps", "sms", "verify", "contacts"}


async def test_an_own_endpoint_spelled_with_escapes_goes_through_the_application() -> None:
    """The router decodes the path before matching: `/%68ealthz` is `/healthz` there."""
    served = app()
    seen = count_resolves(served)
    async with TestClient(FrontServer(served)) as client:
        resp = await client.get("/%68ealthz")
        assert resp.status == 200
        assert seen == ["/healthz"]
