"""Erasure of a person's consent records through the admin API, end to end, on the
in-process store and a real redis-server: the consent is gone, the auditor's export proves
the erasure without naming the person, and an opt-out still refuses every send."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory
from tests.integration.test_compliance import (
    ADMIN,
    ADMIN_AUTH,
    NUMBER,
    OTHER,
    admin,
    send,
    set_template,
    templated,
    text,
)
from tests.support.gatewayproc import GatewayProcess
from tests.support.simproc import SimProcess

CONSENT = {"source": "web form", "categories": ["MARKETING"], "timestamp": "2026-01-05T10:00:00Z"}


async def export(gw: GatewayProcess) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(gw.url + ADMIN + "/consents", headers=ADMIN_AUTH) as r,
    ):
        assert r.status == 200
        return [json.loads(line) for line in (await r.text()).splitlines()]


async def test_erasure_drops_consent_proves_it_and_keeps_the_opt_out(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(policy={"opt_in": "enforce"}, **backend)
    await set_template(gw, "promo", "MARKETING")
    for number in (NUMBER, OTHER):
        assert (await admin(gw, "PUT", f"/consents/{number}", CONSENT))[0] == 204
    assert (await send(gw, templated(NUMBER)))[0] == 200
    assert (await admin(gw, "PUT", f"/optouts/{NUMBER}"))[0] == 204

    assert await admin(gw, "DELETE", f"/people/{NUMBER}") == (204, None)

    status, body = await admin(gw, "GET", f"/consents/{NUMBER}")
    assert (status, body["gatewayCode"]) == (404, "not_found")
    lines = await export(gw)
    assert [line["msisdn"] for line in lines if "source" in line] == [OTHER]
    [tombstone] = [line for line in lines if "erased" in line]
    assert tombstone["msisdn"] == "+******4567"
    assert tombstone["erased"].endswith("Z")
    assert NUMBER not in json.dumps(lines)
    for body in (text(NUMBER), templated(NUMBER)):
        status, _, answer = await send(gw, body)
        assert (status, answer["gatewayCode"]) == (403, "recipient.opted_out")
    assert (await admin(gw, "GET", f"/optouts/{NUMBER}"))[0] == 200
    assert (await send(gw, templated(OTHER)))[0] == 200


async def test_erasure_of_a_person_without_records_still_leaves_proof(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    assert (await admin(gw, "DELETE", "/people/8765%204321?country=SG"))[0] == 204
    assert [line["msisdn"] for line in await export(gw)] == ["+******4321"]
    status, body = await admin(gw, "DELETE", "/people/not-a-number")
    assert (status, body["gatewayCode"]) == (400, "request.invalid")
    async with (
        aiohttp.ClientSession() as s,
        s.delete(gw.url + ADMIN + f"/people/{NUMBER}") as r,
    ):
        assert r.status == 401
