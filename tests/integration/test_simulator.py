"""The 8x8 simulator as a real process: 8x8's shapes, auth, exact limits, recording,
fault injection and the control API."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.support.simproc import SimProcess, free_port

KEY = "sim-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\dZ$")
DEFAULTS: dict[str, Any] = {
    "subaccount_rps": 1800,
    "ip_rps": 3000,
    "api_key": KEY,
    "delay_ms": 0,
    "fail_status": None,
    "drop": False,
    "retry_after_s": 1,
    "subaccount_rps_by_id": {},
}
CHAT = {"user": {"msisdn": "+6591234567"}, "type": "text", "content": {"text": "hi"}}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess(api_key=KEY) as process:
        yield process
        assert process.stderr() == ""  # no log line or traceback per request, drops included


@pytest.fixture(autouse=True)
def fresh(sim: SimProcess) -> None:
    sim.configure(**DEFAULTS)
    sim.reset()


async def call(
    sim: SimProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            sim.url + path,
            json=body,
            data=data,
            headers=AUTH if headers is None else headers,
        ) as resp,
    ):
        raw = await resp.read()
        answer = await resp.json() if raw else None
        return resp.status, dict(resp.headers), answer


async def burst(sim: SimProcess, paths: list[str], body: Any) -> list[tuple[int, dict[str, str]]]:
    """Send every request at once; (status, headers) of each."""
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def one(path: str) -> tuple[int, dict[str, str]]:
            async with session.post(sim.url + path, json=body) as resp:
                await resp.read()
                return resp.status, dict(resp.headers)

        return await asyncio.gather(*(one(p) for p in paths))


# --- 8x8's shapes ------------------------------------------------------------------------


async def test_chatapps_send_answers_like_8x8(sim: SimProcess) -> None:
    body = {**CHAT, "clientMessageId": "m-1"}
    status, _, answer = await call(sim, "POST", "/chatapps/api/v1/subaccounts/acme/messages", body)
    assert status == 200
    assert UUID.match(answer["umid"])
    assert answer["user"] == {"msisdn": "+6591234567"}
    assert answer["clientMessageId"] == "m-1"
    assert answer["status"]["state"] == "queued"
    assert STAMP.match(answer["status"]["timestamp"])


async def test_chatapps_batch_merges_template_and_counts(sim: SimProcess) -> None:
    body = {
        "clientBatchId": "b-1",
        "template": {"type": "text", "content": {"text": "shared"}},
        "messages": [
            {"user": {"msisdn": "+6591234567"}, "clientMessageId": "a"},
            {"user": {"msisdn": "8765 4321", "country": "SG"}},
            {"clientMessageId": "no-user"},
        ],
        "includeMessagesInResponse": True,
    }
    path = "/chatapps/api/v1/subaccounts/acme/messages/batch"
    status, _, answer = await call(sim, "POST", path, body)
    assert status == 200
    assert UUID.match(answer["batchId"])
    assert (answer["clientBatchId"], answer["acceptedCount"], answer["rejectedCount"]) == (
        "b-1",
        2,
        1,
    )
    states = [m["status"]["state"] for m in answer["messages"]]
    assert states == ["queued", "queued", "rejected"]
    assert answer["messages"][2]["status"]["errorCode"] == 3001
    _, _, quiet = await call(sim, "POST", path, {**body, "includeMessagesInResponse": False})
    assert "messages" not in quiet
    assert sim.stats()["messages"] == {"acme": 4}


async def test_sms_send_and_batch_answer_like_8x8(sim: SimProcess) -> None:
    one = {"destination": "+6591234567", "text": "hello", "clientMessageId": "s-1"}
    status, _, answer = await call(sim, "POST", "/sms/api/v1/subaccounts/acme/messages", one)
    assert status == 200
    assert answer["destination"] == "6591234567"
    assert answer["encoding"] == "GSM7"
    assert answer["status"] == {
        "code": "QUEUED",
        "description": "SMS is accepted and queued for processing",
    }
    batch = {
        "destinations": ["+6591234567", "+6591234568"],
        "messages": [{"destination": "12", "text": "x"}],
        "template": {"text": "shared"},
        "includeMessagesInResponse": True,
    }
    path = "/sms/api/v1/subaccounts/acme/messages/batch"
    status, _, answer = await call(sim, "POST", path, batch)
    assert status == 200
    assert (answer["acceptedCount"], answer["rejectedCount"]) == (2, 1)
    assert [m["status"]["code"] for m in answer["messages"]] == ["REJECTED", "QUEUED", "QUEUED"]
    status, _, bad = await call(sim, "POST", "/sms/api/v1/subaccounts/acme/messages", {"text": "x"})
    assert (status, bad["code"]) == (400, 1002)


async def test_verify_session_answers_like_8x8(sim: SimProcess) -> None:
    body = {"destination": "+6591234567", "channel": "sms"}
    status, _, answer = await call(sim, "POST", "/verify/api/v2/subaccounts/acme/sessions", body)
    assert status == 200
    assert answer["status"] == "WAITING"
    assert answer["destination"] == "+6591234567"
    assert answer["verifyUri"] == f"/api/v2/subaccounts/acme/sessions/{answer['sessionId']}"
    assert STAMP.match(answer["expiresAt"]) and answer["attempt"] == 0


async def test_template_list_answers_what_the_control_api_set(sim: SimProcess) -> None:
    mine = {"templateName": "otp", "language": "en", "category": "AUTHENTICATION"}
    sim.set_templates([{**mine, "status": "APPROVED"}], account="acme", channel="ch-1")
    sim.set_templates([{**mine, "status": "PAUSED"}])
    path = "/chatapps/api/v1/accounts/{}/channels/{}/templates"
    status, _, answer = await call(sim, "GET", path.format("acme", "ch-1"))
    assert status == 200
    (template,) = answer["templates"]
    assert template["channelId"] == "ch-1"
    assert (template["templateName"], template["status"], template["statusName"]) == (
        "otp",
        "APPROVED",
        "Approved",
    )
    _, _, other = await call(sim, "GET", path.format("other", "ch-9"))
    assert other["templates"][0]["status"] == "PAUSED"


async def test_contacts_groups_contacts_and_blacklist(sim: SimProcess) -> None:
    base = "/contacts/api/v1/accounts/acme"
    group = {"name": "Opt-out", "isBlacklist": True}
    status, _, created = await call(sim, "POST", f"{base}/groups", group)
    assert status == 201 and created["isBlacklist"] is True
    status, _, clash = await call(sim, "POST", f"{base}/groups", group)
    assert (status, clash["code"]) == (409, 5003)
    contact = {"groups": [{"id": created["id"]}], "addresses": {"msisdn": "+6591234567"}}
    status, _, answer = await call(sim, "POST", f"{base}/contacts", contact)
    assert status == 201 and answer["groups"][0]["name"] == "Opt-out"
    status, _, _ = await call(sim, "POST", f"{base}/contacts", contact)
    assert status == 200  # merged with the contact holding that msisdn
    status, _, empty = await call(sim, "POST", f"{base}/contacts/blacklist/+6590000001")
    assert (status, empty) == (200, None)
    _, _, found = await call(sim, "GET", f"{base}/groups?name=opt")
    assert [g["name"] for g in found["items"]] == ["Opt-out"]
    held = sim.contacts()["acme"]
    assert set(held["blacklist"]) == {"+6590000001", "+6591234567"}
    assert held["groups"][0]["contacts"] == 1


async def test_message_details_answer_8x8s_shape_and_unknown_paths_404(
    sim: SimProcess,
) -> None:
    status, _, answer = await call(sim, "GET", "/sms/api/v1/subaccounts/acme/messages/u-1")
    assert status == 200
    required = {"umid", "subAccountId", "direction", "status", "msisdn", "source", "body"}
    assert required | {"encoding", "createdAt", "smsCount", "price"} <= set(answer)
    assert (answer["umid"], answer["subAccountId"]) == ("u-1", "acme")
    status, _, answer = await call(sim, "GET", "/chatapps/api/v1/subaccounts/acme/messages/u-2")
    assert status == 200 and answer["data"][0]["umid"] == "u-2"
    status, _, answer = await call(sim, "POST", "/whatever/api/v1/x", {})
    assert (status, answer["code"]) == (404, 1300)
    status, _, answer = await call(sim, "GET", "/sms/api/v1/subaccounts/acme/anything/else")
    assert (status, answer["code"]) == (404, 1300)  # no placeholder answers for any GET
    assert sim.stats()["per_second"]["acme"]["accepted"] == {"0": 2}


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/chatapps/api/v1/subaccounts/acme/messages", {**CHAT, "clientMessageId": 7}, 1000),
        ("/chatapps/api/v1/subaccounts/acme/messages", {**CHAT, "type": "fax"}, 1000),
        ("/chatapps/api/v1/subaccounts/acme/lon", {"user": {"msisdn": "+6591234567"}}, 3004),
        (
            "/sms/api/v1/subaccounts/acme/messages",
            {"destination": "+6591234567", "text": "hi", "encoding": "EBCDIC"},
            1000,
        ),
        ("/sms/api/v1/subaccounts/acme/messages", {"destination": 6591234567, "text": "hi"}, 1002),
        ("/sms/api/v1/subaccounts/acme/surveys/s1/messages", {"destination": "0123"}, 1002),
        (
            "/sms/api/v1/subaccounts/acme/surveys/s1/messages/batch",
            {"messages": [{"destination": "+6591234567"}], "template": {}},
            1000,
        ),
        (
            "/verify/api/v2/subaccounts/acme/sessions",
            {"destination": "+6591234567", "codeLength": "6"},
            1000,
        ),
        ("/verify/api/v2/subaccounts/acme/sma/coverage", {"destination": "+6591234567"}, 1000),
        ("/sms/api/v1/subaccounts/ab/messages", {"destination": "+6591234567", "text": "hi"}, 1000),
        ("/sms/api/v1/subaccounts/acme/messages/u-1/feedback", {"outcome": "meh"}, 1000),
        ("/sms/api/v1/subaccounts/acme/messages/u-1/feedback", None, 1000),
        ("/contacts/api/v1/accounts/acme/contacts", {"addresses": {"msisdn": "12"}}, 1002),
        ("/contacts/api/v1/accounts/acme/groups", {"name": ""}, 1000),
    ],
)
async def test_bodies_8x8s_schema_refuses_are_400_never_echoed(
    sim: SimProcess, path: str, body: Any, code: int
) -> None:
    status, _, answer = await call(sim, "POST", path, body)
    assert (status, answer["code"]) == (400, code), answer
    assert set(answer) == {"code", "message", "errorId", "timestamp"}


async def test_lon_and_survey_sends_answer_like_8x8(sim: SimProcess) -> None:
    lon = {"user": {"channelUserId": "u-77"}, "content": {"title": "Order"}}
    status, _, answer = await call(sim, "POST", "/chatapps/api/v1/subaccounts/acme/lon", lon)
    assert status == 200 and UUID.match(answer["umid"]) and answer["user"] == lon["user"]
    batch = {
        "messages": [{"destination": "+6591234567"}, {"destination": "12"}],
        "template": {"templateBody": "Rate us"},
        "includeMessagesInResponse": True,
    }
    path = "/sms/api/v1/subaccounts/acme/surveys/s1/messages/batch"
    status, _, answer = await call(sim, "POST", path, batch)
    assert status == 200
    assert (answer["acceptedCount"], answer["rejectedCount"]) == (1, 1)
    assert [m["status"]["code"] for m in answer["messages"]] == ["QUEUED", "REJECTED"]


async def test_contacts_read_update_and_delete(sim: SimProcess) -> None:
    base = "/contacts/api/v1/accounts/acme/contacts"
    status, _, made = await call(sim, "POST", base, {"addresses": {"msisdn": "+6591234567"}})
    assert status == 201
    patch = [{"op": "replace", "path": "/firstName", "value": "Ann"}]
    status, _, answer = await call(sim, "PATCH", f"{base}/{made['id']}", patch)
    assert (status, answer["firstName"]) == (200, "Ann")
    status, _, answer = await call(sim, "GET", f"{base}/{made['id']}")
    assert (status, answer["firstName"]) == (200, "Ann")
    status, _, _ = await call(sim, "DELETE", f"{base}/{made['id']}")
    assert status == 204
    status, _, answer = await call(sim, "GET", f"{base}/{made['id']}")
    assert (status, answer["code"]) == (404, 1300)


async def test_each_arrival_records_method_raw_path_and_key(sim: SimProcess) -> None:
    path = "/sms/api/v1/subaccounts/acme%26co/messages/u-1/pii"
    url = URL(sim.url + path, encoded=True)  # as written, not re-quoted
    async with aiohttp.ClientSession() as session, session.delete(url, headers=AUTH) as resp:
        assert resp.status == 202
    [seen] = sim.requests()
    assert (seen["method"], seen["raw_path"], seen["subaccount"]) == ("DELETE", path, "acme&co")
    assert seen["headers"]["authorization"] == AUTH["Authorization"]


# --- auth and bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_missing_or_wrong_key_is_401(sim: SimProcess, headers: dict[str, str]) -> None:
    path = "/chatapps/api/v1/subaccounts/acme/messages"
    status, _, answer = await call(sim, "POST", path, CHAT, headers=headers)
    assert status == 401
    assert answer["code"] == 1200
    assert UUID.match(answer["errorId"]) and STAMP.match(answer["timestamp"])
    assert sim.stats()["accepted"] == 0  # a refused key uses no quota


async def test_bad_json_is_400_in_8x8_shape(sim: SimProcess) -> None:
    path = "/sms/api/v1/subaccounts/acme/messages"
    status, _, answer = await call(sim, "POST", path, data=b'{"destination": ', headers=AUTH)
    assert status == 400
    assert set(answer) == {"code", "message", "errorId", "timestamp"}
    assert answer["code"] == 1000


# --- limits ------------------------------------------------------------------------------


async def test_subaccount_limit_holds_exactly(sim: SimProcess) -> None:
    sim.configure(subaccount_rps=20)
    results = await burst(sim, ["/chatapps/api/v1/subaccounts/acme/messages"] * 40, CHAT)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 20 + [429] * 20
    assert all(h["Retry-After"] == "1" for status, h in results if status == 429)
    stats = sim.stats()
    assert stats["max_window"]["acme"] == 20
    assert stats["totals"] == {"200": 20, "429": 20}
    assert stats["upstream_429"] == 20 and stats["refused"]["subaccount"] == 20
    per_second = stats["per_second"]["acme"]
    assert sum(per_second["accepted"].values()) == 20
    assert sum(per_second["rejected"].values()) == 20


async def test_limit_is_a_sliding_window_across_products(sim: SimProcess) -> None:
    sim.configure(subaccount_rps=20)
    sms = "/sms/api/v1/subaccounts/acme/messages/batch"
    chat = "/chatapps/api/v1/subaccounts/acme/messages"
    first = await burst(sim, [sms] * 10, {"destinations": ["+6591234567"], "template": {}})
    first_done = time.monotonic()  # every one of the first 10 arrived before this
    await asyncio.sleep(0.5)
    second = await burst(sim, [chat] * 20, CHAT)
    await asyncio.sleep(max(0.0, first_done + 1.05 - time.monotonic()))
    third = await burst(sim, [chat] * 20, CHAT)
    accepted = [sum(s == 200 for s, _ in r) for r in (first, second, third)]
    # the first 10 left the window after 1 s; the 10 taken at 0.5 s had not
    assert accepted == [10, 10, 10]
    assert sim.stats()["max_window"]["acme"] == 20


async def test_ip_limit_holds_across_subaccounts(sim: SimProcess) -> None:
    sim.configure(ip_rps=10)
    paths = [f"/chatapps/api/v1/subaccounts/sub{i % 4}/messages" for i in range(24)]
    results = await burst(sim, paths, CHAT)
    assert sum(status == 200 for status, _ in results) == 10
    stats = sim.stats()
    assert stats["ip_max_window"] == {"127.0.0.1": 10}
    assert stats["refused"] == {"subaccount": 0, "ip": 14}


async def test_limits_change_at_run_time(sim: SimProcess) -> None:
    sim.configure(subaccount_rps=5, subaccount_rps_by_id={"vip": 8}, retry_after_s=3)
    plain = await burst(sim, ["/chatapps/api/v1/subaccounts/acme/messages"] * 10, CHAT)
    vip = await burst(sim, ["/chatapps/api/v1/subaccounts/vip/messages"] * 10, CHAT)
    assert sum(s == 200 for s, _ in plain) == 5
    assert sum(s == 200 for s, _ in vip) == 8
    assert {h["Retry-After"] for s, h in plain if s == 429} == {"3"}


# --- recording ---------------------------------------------------------------------------


async def test_records_headers_and_body(sim: SimProcess) -> None:
    headers = {**AUTH, "X-Trace": "t-42"}
    body = {**CHAT, "clientMessageId": "rec-1"}
    await call(sim, "POST", "/chatapps/api/v1/subaccounts/acme/messages?x=1", body, headers)
    await call(sim, "POST", "/sms/api/v1/subaccounts/other/messages", data=b"not json")
    first, second = sim.requests(limit=2)
    assert first["method"] == "POST"
    assert first["path"] == "/chatapps/api/v1/subaccounts/acme/messages"
    assert first["query"] == "x=1"
    assert (first["product"], first["kind"], first["subaccount"]) == ("chatapps", "send", "acme")
    assert first["ip"] == "127.0.0.1" and first["status"] == 200
    assert first["headers"]["x-trace"] == "t-42"
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert first["body"] == body
    assert (second["body"], second["status"]) == ("not json", 400)
    assert [r["subaccount"] for r in sim.requests(subaccount="other")] == ["other"]


async def test_reset_clears_records_counters_and_windows(sim: SimProcess) -> None:
    sim.configure(subaccount_rps=3)
    await burst(sim, ["/chatapps/api/v1/subaccounts/acme/messages"] * 5, CHAT)
    sim.reset()
    assert sim.requests() == []
    stats = sim.stats()
    assert (stats["requests"], stats["totals"], stats["max_window"]) == (0, {}, {})
    again = await burst(sim, ["/chatapps/api/v1/subaccounts/acme/messages"] * 3, CHAT)
    assert [s for s, _ in again] == [200] * 3  # the window was emptied too


# --- faults ------------------------------------------------------------------------------


async def test_delay_is_added_to_every_answer(sim: SimProcess) -> None:
    sim.configure(delay_ms=300)
    start = time.monotonic()
    status, _, _ = await call(sim, "POST", "/chatapps/api/v1/subaccounts/acme/messages", CHAT)
    assert status == 200
    assert time.monotonic() - start >= 0.3


async def test_fail_status_answers_that_status_until_cleared(sim: SimProcess) -> None:
    sim.configure(fail_status=503)
    path = "/chatapps/api/v1/subaccounts/acme/messages"
    status, _, answer = await call(sim, "POST", path, CHAT)
    assert status == 503
    assert set(answer) == {"code", "message", "errorId", "timestamp"}
    sim.configure(fail_status=None)
    status, _, _ = await call(sim, "POST", path, CHAT)
    assert status == 200


async def test_drop_closes_the_connection_without_an_answer(sim: SimProcess) -> None:
    sim.configure(drop=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(sim, "POST", "/chatapps/api/v1/subaccounts/acme/messages", CHAT)
    (record,) = sim.requests()
    assert record["status"] is None
    assert sim.stats()["dropped"] == 1


# --- the process -------------------------------------------------------------------------


def test_cli_flags_configure_and_sigterm_exits_0() -> None:
    port = free_port()
    process = SimProcess(port=port, subaccount_rps=7, ip_rps=9, api_key="k", delay_ms=5)
    with process:
        assert process.port == port
        assert process.health() == {"status": "ok"}
        config = process.stats()["config"]
        assert (config["subaccount_rps"], config["ip_rps"], config["delay_ms"]) == (7, 9, 5.0)
        assert config["api_key"] == "***"
        assert process.stop() == 0


def test_failed_start_reports_stderr() -> None:
    with pytest.raises(RuntimeError, match="unrecognized arguments"):
        SimProcess(no_such_flag=1).start()
