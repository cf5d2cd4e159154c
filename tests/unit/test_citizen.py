"""The citizen hooks: templates created through the gateway are linted first and enter the
registry; numbers blacklisted through it are opted out. Called as the proxy calls them,
against the real simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway import citizen, config, scheduled
from gateway.app import build_app
from gateway.config import ConfigError
from gateway.state import STATE
from gateway.store.base import Store, TemplateRecord
from gateway.store.memory import MemoryStore
from gateway.upstream import Answer
from tests.support.gatewayproc import API_KEY, base_config, to_toml
from tests.support.simproc import SimProcess
from tests.unit.test_webhooks import ENV, Client, eventually, make_config

NUMBER = "+6591234567"
CREATE = "/api/v1/accounts/acme/channels/wa-1/templates"
BLACKLIST = "/api/v1/accounts/acme/contacts/blacklist/"

GOOD = {
    "name": "order_update", "language": "en_US", "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Your order {{1}} has shipped today.",
                    "examples": ["A-1001"]}],
}  # fmt: skip
BAD = {
    "name": "promo", "language": "en", "category": "MARKETING",
    "components": [{"type": "BODY", "text": "{{1}}, buy now! Reply STOP to opt out {{3}}"}],
}  # fmt: skip


@pytest.fixture
def make(aiohttp_client: Any, sim: SimProcess, tmp_path: Path) -> Any:
    async def start(mode: str = "enforce") -> Client:
        cfg = make_config(sim.url, tmp_path, templates={"lint_on_create": mode})
        made: Client = await aiohttp_client(build_app(cfg, API_KEY, ENV, store=MemoryStore()))
        return made

    return start


def store_of(client: Client) -> Store:
    return client.app[STATE].store


def answer(status: int, body: Any = None) -> Answer:
    raw = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
    return Answer(status, CIMultiDict(), raw, 0.01)


async def through_proxy(
    app: web.Application, method: str, product: str, path: str, body: bytes
) -> tuple[int, Any]:
    """What the proxy does for a forwarded call, with the two hook lines in place."""
    refused = citizen.check(app, method, product, path, body)
    if refused is not None:
        assert isinstance(refused.body, bytes)
        return refused.status, orjson.loads(refused.body)
    state = app[STATE]
    headers = state.upstream.request_headers({"Content-Type": "application/json"})
    got = await state.upstream.forward(product, path, method, body, headers)
    await citizen.after(app, method, product, path, body, got)
    return got.status, orjson.loads(got.body) if got.body else None


# --- templates -----------------------------------------------------------------------------


async def test_a_template_meta_would_reject_is_400_and_never_sent(
    make: Any, sim: SimProcess
) -> None:
    client = await make()
    status, body = await through_proxy(client.app, "POST", "chatapps", CREATE, orjson.dumps(BAD))
    assert (status, body["gatewayCode"], body["field"]) == (400, "request.invalid", "body")
    assert body["code"] == 1000
    rules = {f["rule"] for f in body["findings"]}
    assert {"placeholder.sequence", "sample.missing"} <= rules
    assert all(set(f) == {"severity", "rule", "text"} for f in body["findings"])
    assert sim.requests() == []
    assert await store_of(client).template_get("acme", "promo", "en") is None


@pytest.mark.parametrize("mode", ["warn", "off"])
async def test_warn_and_off_forward_what_enforce_refuses(make: Any, mode: str) -> None:
    client = await make(mode)
    assert citizen.check(client.app, "POST", "chatapps", CREATE, orjson.dumps(BAD)) is None
    assert citizen.check(client.app, "POST", "chatapps", CREATE, b"{not json") is None


async def test_only_template_creates_are_linted(make: Any) -> None:
    client = await make()
    app, bad = client.app, orjson.dumps(BAD)
    assert citizen.check(app, "POST", "chatapps", CREATE, orjson.dumps(GOOD)) is None
    for method, product, path in (("GET", "chatapps", CREATE), ("POST", "sms", CREATE),
                                  ("DELETE", "chatapps", CREATE + "/promo"),
                                  ("POST", "chatapps", "/api/v1/accounts/a%7Bb/channels/c/templates"),
                                  ("POST", "chatapps", "/api/v1/subaccounts/s/messages")):  # fmt: skip
        assert citizen.check(app, method, product, path, bad) is None
    huge = orjson.dumps({**GOOD, "pad": "x" * citizen.LINT_MAX_BYTES})
    for raw in (b"{not json", b"[1]", huge):
        refused = citizen.check(app, "POST", "chatapps", CREATE + "?x=1", raw)
        assert refused is not None and refused.status == 400


async def test_a_created_template_enters_the_registry(make: Any) -> None:
    client = await make()
    app, store = client.app, store_of(client)
    good = orjson.dumps(GOOD)
    await citizen.after(app, "POST", "chatapps", CREATE, good, answer(200, {}))
    record = await store.template_get("acme", "order_update", "en_US")
    assert record is not None
    assert (record.status, record.category, record.quality) == ("PENDING", "UTILITY", None)
    other = {**GOOD, "name": "welcome", "category": "marketing"}
    said = answer(201, {"status": "approved"})
    await citizen.after(app, "POST", "chatapps", CREATE, orjson.dumps(other), said)
    record = await store.template_get("acme", "welcome", "en_US")
    assert record is not None and (record.status, record.category) == ("APPROVED", "MARKETING")


async def test_refused_or_unreadable_creates_change_nothing(make: Any) -> None:
    client = await make()
    app = client.app
    good = orjson.dumps(GOOD)
    await citizen.after(app, "POST", "chatapps", CREATE, good, answer(409, {"code": 409}))
    await citizen.after(app, "POST", "chatapps", CREATE, good, answer(400, {"code": 1000}))
    for body in (
        b"{",
        b"[]",
        orjson.dumps({**GOOD, "name": 5}),
        orjson.dumps({**GOOD, "language": "e:n"}),
    ):
        await citizen.after(app, "POST", "chatapps", CREATE, body, answer(200, {}))
    await citizen.after(app, "POST", "chatapps", CREATE, good, answer(200, b"not json"))
    page, _ = await store_of(client).template_list("acme", None, 10)
    assert [r.name for r in page] == ["order_update"]  # the last one: 8x8's odd answer


async def test_a_newer_registry_record_is_not_overwritten(make: Any) -> None:
    client = await make()
    store = store_of(client)
    newer = TemplateRecord("order_update", "en_US", "APPROVED", "UTILITY", "GREEN",
                           "2999-01-01T00:00:00.000Z")  # fmt: skip
    await store.template_put("acme", newer)
    await citizen.after(client.app, "POST", "chatapps", CREATE, orjson.dumps(GOOD), answer(200))
    assert await store.template_get("acme", "order_update", "en_US") == newer


# --- blacklist -----------------------------------------------------------------------------


async def test_a_number_blacklisted_through_the_gateway_is_opted_out(
    make: Any, sim: SimProcess
) -> None:
    client = await make()
    status, _ = await through_proxy(
        client.app, "POST", "contacts", BLACKLIST + "%2B6591234567", b""
    )
    assert status == 200
    assert sim.contacts()["acme"]["blacklist"] == [NUMBER]
    assert await store_of(client).optout_contains("acme", NUMBER)


async def test_blacklist_opt_out_needs_8x8s_yes_and_a_number(make: Any) -> None:
    client = await make()
    app, store = client.app, store_of(client)
    await citizen.after(app, "POST", "contacts", BLACKLIST + NUMBER, b"", answer(400, {}))
    await citizen.after(app, "POST", "contacts", BLACKLIST + "not-a-number", b"", answer(200))
    await citizen.after(app, "GET", "contacts", BLACKLIST + NUMBER, b"", answer(200))
    assert (await store.optout_list("acme", None, 10))[0] == []
    await citizen.after(app, "POST", "contacts", BLACKLIST + "6598765432", b"", answer(200))
    assert await store.optout_contains("acme", "+6598765432")


async def test_blacklisting_cancels_scheduled_sends(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make()
    app = client.app
    await store_of(client).scheduled_add(
        "acme", NUMBER, scheduled.entry("chatapps", "acme_main", "u1"), 2**62
    )
    calls: list[str] = []

    async def forward(product: str, path: str, method: str, *_: Any) -> Answer:
        calls.append(f"{method} {product}{path}")
        return answer(200, {"cancelledCount": 1})

    monkeypatch.setattr(app[STATE].upstream, "forward", forward)
    await citizen.after(app, "POST", "contacts", BLACKLIST + NUMBER, b"", answer(200))
    await eventually(lambda: calls == ["DELETE chatapps/api/v1/subaccounts/acme_main/messages/u1"])


def test_lint_on_create_is_checked_by_the_config(tmp_path: Path, sim: SimProcess) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(to_toml(base_config(sim.url, templates={"lint_on_create": "maybe"})))
    with pytest.raises(ConfigError, match=r"templates\.lint_on_create"):
        config.load(path, environ={})
    assert make_config(sim.url, tmp_path).templates.lint_on_create == "enforce"
