"""Every 8x8 operation through the gateway: it reaches 8x8 (the simulator) with the real key,
as the caller wrote it, and comes back with 8x8's status; a client without the scope gets
403; every error the gateway itself answers parses as 8x8's error schema.

The operation list below was written from 8x8's OpenAPI files (2026-07), independently of
gateway/routes.py, with a body each operation's schema accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from yarl import URL

from gateway.routes import OPERATIONS
from tests.support.gatewayproc import API_KEY, CLIENT_TOKEN, OTHER_TOKEN, GatewayProcess, sha
from tests.support.gatewayproc import base_config as gateway_config
from tests.support.simproc import SimProcess
from tests.unit.test_errors import EightByEightError

SUB = "acme_main"
ACCT = "acme"
MSISDN = "+6591234567"
UMID = "3c0e7d4a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
TEXT = {"user": {"msisdn": MSISDN}, "type": "text", "content": {"text": "hello"}}
LON = {"user": {"msisdn": MSISDN}, "content": {"title": "Order shipped", "greeting": "Hi"}}
SMS = {"destination": MSISDN, "text": "hello"}
TEMPLATE = {
    "name": "order_update",
    "language": "en",
    "category": "UTILITY",
    "components": [
        {"type": "BODY", "text": "Order {{1}} shipped", "example": {"body_text": [["A1"]]}}
    ],
}
FILE = object()  # marker: a multipart body with a `file` part


class Op(NamedTuple):
    method: str
    product: str
    template: str  # 8x8's path template, as gateway.routes spells it
    path: str  # a concrete 8x8 path (query included)
    body: Any  # JSON body, None, or FILE
    status: int  # what the simulator answers for it


S = f"/api/v1/subaccounts/{SUB}"
A = f"/api/v1/accounts/{ACCT}"
C = f"{A}/channels/wa-1"
TS = "/api/v1/subaccounts/{sub}"
TA = "/api/v1/accounts/{account}"
TC = f"{TA}/channels/{{channel}}"
WA = f"/api/v1/whatsapp/subaccounts/{SUB}/channels/wa-1"
TWA = "/api/v1/whatsapp/subaccounts/{sub}/channels/{channel}"
V = f"/api/v2/subaccounts/{SUB}"
TV = "/api/v2/subaccounts/{sub}"
HOOKS = [{"subAccountId": SUB, "url": "https://example.com/hook"}]

OPS = [
    # chat apps
    Op("POST", "chatapps", f"{TS}/messages", f"{S}/messages", TEXT, 200),
    Op(
        "POST", "chatapps", f"{TS}/messages/batch", f"{S}/messages/batch", {"messages": [TEXT]}, 200
    ),
    Op("POST", "chatapps", f"{TS}/lon", f"{S}/lon", LON, 200),
    Op("POST", "chatapps", f"{TS}/lon/batch", f"{S}/lon/batch", {"messages": [LON]}, 200),
    Op(
        "POST",
        "chatapps",
        f"{TS}/events",
        f"{S}/events",
        {"channel": "whatsapp", "type": "typing", "umid": UMID},
        200,
    ),
    Op("POST", "chatapps", f"{TS}/messages/{{umid}}/read", f"{S}/messages/{UMID}/read", None, 200),
    Op("GET", "chatapps", f"{TS}/messages/{{umid}}", f"{S}/messages/{UMID}", None, 200),
    Op("DELETE", "chatapps", f"{TS}/messages/{{umid}}", f"{S}/messages/{UMID}", None, 200),
    Op(
        "DELETE",
        "chatapps",
        f"{TS}/messages/batch/{{batchId}}",
        f"{S}/messages/batch/b-1",
        None,
        200,
    ),
    Op(
        "POST",
        "chatapps",
        f"{TS}/messages/exports",
        f"{S}/messages/exports",
        {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
        202,
    ),
    Op(
        "GET",
        "chatapps",
        f"{TS}/messages/exports/{{jobId}}",
        f"{S}/messages/exports/j-1",
        None,
        200,
    ),
    Op(
        "DELETE",
        "chatapps",
        f"{TS}/messages/exports/{{jobId}}",
        f"{S}/messages/exports/j-1",
        None,
        204,
    ),
    Op("POST", "chatapps", f"{TS}/files", f"{S}/files", FILE, 201),
    Op("GET", "chatapps", "/files/{filename}", "/files/pic.png?token=t0k", None, 302),
    Op("GET", "chatapps", f"{TC}/templates", f"{C}/templates", None, 200),
    Op("POST", "chatapps", f"{TC}/templates", f"{C}/templates", TEMPLATE, 200),
    Op(
        "DELETE",
        "chatapps",
        f"{TC}/templates/{{templateName}}",
        f"{C}/templates/old_one",
        None,
        200,
    ),
    Op("GET", "chatapps", f"{TC}/flows", f"{C}/flows?limit=10", None, 200),
    Op(
        "POST",
        "chatapps",
        f"{TC}/flows",
        f"{C}/flows",
        {"name": "f", "categories": ["SIGN_UP"]},
        200,
    ),
    Op("GET", "chatapps", f"{TC}/flows/{{flowId}}", f"{C}/flows/fl-1", None, 200),
    Op("PUT", "chatapps", f"{TC}/flows/{{flowId}}", f"{C}/flows/fl-1", {"name": "g"}, 200),
    Op("DELETE", "chatapps", f"{TC}/flows/{{flowId}}", f"{C}/flows/fl-1", None, 200),
    Op("GET", "chatapps", f"{TC}/flows/{{flowId}}/preview", f"{C}/flows/fl-1/preview", None, 200),
    Op("POST", "chatapps", f"{TC}/flows/{{flowId}}/publish", f"{C}/flows/fl-1/publish", None, 200),
    Op(
        "POST",
        "chatapps",
        f"{TC}/flows/{{flowId}}/deprecate",
        f"{C}/flows/fl-1/deprecate",
        None,
        200,
    ),
    Op(
        "GET",
        "chatapps",
        f"{TWA}/callPermissions",
        f"{WA}/callPermissions?destination=%2B6591234567",
        None,
        200,
    ),
    Op(
        "POST",
        "chatapps",
        f"{TWA}/directSend/sample",
        f"{WA}/directSend/sample",
        {"type": "text", "text": {"body": "hello"}},
        200,
    ),
    Op("GET", "chatapps", f"{TA}/webhooks", f"{A}/webhooks", None, 200),
    Op("POST", "chatapps", f"{TA}/webhooks", f"{A}/webhooks", HOOKS, 200),
    Op("DELETE", "chatapps", f"{TA}/webhooks", f"{A}/webhooks", [{"subAccountId": SUB}], 200),
    Op(
        "GET",
        "chatapps",
        f"{TA}/usage/messages",
        f"{A}/usage/messages?billingPeriod=2026-11",
        None,
        200,
    ),
    # SMS
    Op("POST", "sms", f"{TS}/messages", f"{S}/messages", SMS, 200),
    Op("POST", "sms", f"{TS}/messages/batch", f"{S}/messages/batch", {"messages": [SMS]}, 200),
    Op(
        "POST",
        "sms",
        f"{TS}/surveys/{{surveyId}}/messages",
        f"{S}/surveys/sv-1/messages",
        {"destination": MSISDN, "templateBody": "Rate us 1-5"},
        200,
    ),
    Op(
        "POST",
        "sms",
        f"{TS}/surveys/{{surveyId}}/messages/batch",
        f"{S}/surveys/sv-1/messages/batch",
        {"messages": [{"destination": MSISDN}], "template": {"templateBody": "Rate us"}},
        200,
    ),
    Op("GET", "sms", f"{TS}/messages/{{umid}}", f"{S}/messages/{UMID}", None, 200),
    Op("DELETE", "sms", f"{TS}/messages/{{umid}}", f"{S}/messages/{UMID}", None, 200),
    Op("DELETE", "sms", f"{TS}/messages/batch/{{batchId}}", f"{S}/messages/batch/b-1", None, 200),
    Op(
        "POST",
        "sms",
        f"{TS}/messages/{{umid}}/feedback",
        f"{S}/messages/{UMID}/feedback",
        {"outcome": "success"},
        200,
    ),
    Op("DELETE", "sms", f"{TS}/messages/{{umid}}/pii", f"{S}/messages/{UMID}/pii", None, 202),
    Op("POST", "sms", f"{TS}/messages/exports", f"{S}/messages/exports", {"limit": 100}, 202),
    Op("GET", "sms", f"{TS}/messages/exports/{{jobId}}", f"{S}/messages/exports/j-1", None, 200),
    Op("DELETE", "sms", f"{TS}/messages/exports/{{jobId}}", f"{S}/messages/exports/j-1", None, 204),
    Op("GET", "sms", f"{TA}/prices", f"{A}/prices?country=SG", None, 200),
    Op("GET", "sms", f"{TA}/balance", f"{A}/balance", None, 200),
    Op("GET", "sms", f"{TA}/webhooks", f"{A}/webhooks", None, 200),
    Op("POST", "sms", f"{TA}/webhooks", f"{A}/webhooks", HOOKS, 200),
    Op("DELETE", "sms", f"{TA}/webhooks", f"{A}/webhooks", [{"subAccountId": SUB}], 200),
    # Verify
    Op("POST", "verify", f"{TV}/sessions", f"{V}/sessions", {"destination": MSISDN}, 200),
    Op(
        "GET", "verify", f"{TV}/sessions/{{sessionId}}", f"{V}/sessions/abc123?code=1234", None, 404
    ),
    Op(
        "POST",
        "verify",
        f"{TV}/sma/coverage",
        f"{V}/sma/coverage",
        {"clientIp": "203.0.113.7", "destination": MSISDN},
        200,
    ),
    # Contacts
    Op("GET", "contacts", f"{TA}/contacts", f"{A}/contacts?limit=10", None, 200),
    Op(
        "POST",
        "contacts",
        f"{TA}/contacts",
        f"{A}/contacts",
        {"addresses": {"msisdn": MSISDN}},
        201,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/contacts/blacklist/{{msisdn}}",
        # not MSISDN: a blacklist add through the gateway opts the number out (citizen.py)
        f"{A}/contacts/blacklist/6598765432",
        None,
        200,
    ),
    Op("GET", "contacts", f"{TA}/contacts/{{contactId}}", f"{A}/contacts/1", None, 404),
    Op("DELETE", "contacts", f"{TA}/contacts/{{contactId}}", f"{A}/contacts/1", None, 204),
    Op(
        "PATCH",
        "contacts",
        f"{TA}/contacts/{{contactId}}",
        f"{A}/contacts/1",
        [{"op": "replace", "path": "/firstName", "value": "Ann"}],
        404,
    ),
    Op("GET", "contacts", f"{TA}/groups", f"{A}/groups?name=vip", None, 200),
    Op("POST", "contacts", f"{TA}/groups", f"{A}/groups", {"name": "vip"}, 201),
    Op("GET", "contacts", f"{TA}/groups/{{groupId}}", f"{A}/groups/1", None, 404),
    Op("DELETE", "contacts", f"{TA}/groups/{{groupId}}", f"{A}/groups/1", None, 404),
    Op(
        "PATCH",
        "contacts",
        f"{TA}/groups/{{groupId}}",
        f"{A}/groups/1",
        [{"op": "replace", "path": "/name", "value": "vip2"}],
        404,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/groups/{{groupId}}/contacts",
        f"{A}/groups/1/contacts",
        {"contacts": [1]},
        404,
    ),
    Op(
        "DELETE",
        "contacts",
        f"{TA}/groups/{{groupId}}/contacts",
        f"{A}/groups/1/contacts",
        {"contacts": [1]},
        404,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/contacts/batches/createContacts",
        f"{A}/contacts/batches/createContacts",
        FILE,
        202,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/contacts/batches/deleteContacts",
        f"{A}/contacts/batches/deleteContacts",
        {"ids": [1]},
        202,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/groups/batches/copyContacts",
        f"{A}/groups/batches/copyContacts?from=1&to=2",
        None,
        202,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/groups/batches/moveContacts",
        f"{A}/groups/batches/moveContacts?from=1&to=2",
        None,
        202,
    ),
    Op(
        "POST",
        "contacts",
        f"{TA}/groups/batches/deleteGroups",
        f"{A}/groups/batches/deleteGroups",
        {"ids": [1], "deleteContacts": False},
        202,
    ),
    Op("GET", "contacts", f"{TA}/batches", f"{A}/batches", None, 200),
    Op("GET", "contacts", f"{TA}/batches/{{batchId}}", f"{A}/batches/{UMID}", None, 404),
]
IDS = [f"{op.method} {op.product}{op.template}" for op in OPS]
SCOPED = [op for op in OPS if op.template != "/files/{filename}"]


def test_the_list_is_every_operation_the_gateway_routes() -> None:
    assert len(OPS) == 71
    listed = {(op.method, op.product, op.template) for op in OPS}
    routed = {(op.method, op.product, op.template) for op in OPERATIONS}
    assert listed == routed


# --- one gateway for the module -------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sim_session: SimProcess) -> Iterator[str]:
    cfg = gateway_config(
        sim_session.url,
        clients=[
            {
                "name": "orders",
                "token_sha256": sha(CLIENT_TOKEN),
                "subaccounts": ["ACME_MAIN", "acme&co"],
                "accounts": [ACCT],
            },
            {"name": "billing", "token_sha256": sha(OTHER_TOKEN), "subaccounts": ["acme_bills"]},
        ],
    )
    with GatewayProcess(Path(tmp_path_factory.mktemp("ops")), cfg) as gw:
        yield gw.url


class Seen(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Any


async def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = CLIENT_TOKEN,
    content_type: str | None = None,
) -> Seen:
    """One request as written (no path normalising); a gateway error is parsed on arrival
    with the model of 8x8's error schema, as a generated client would."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data: Any = None
    if body is FILE:
        data = aiohttp.FormData()
        data.add_field("file", b"a,b\n1,2\n", filename="list.csv", content_type="text/csv")
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type or "application/json"
    elif content_type:
        headers["Content-Type"] = content_type
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            URL(url + path, encoded=True),
            data=data,
            headers=headers,
            allow_redirects=False,
        ) as resp,
    ):
        raw = await resp.read()
        parsed = json.loads(raw) if raw and resp.content_type == "application/json" else raw
        if "X-Gateway-Reject" in resp.headers:
            EightByEightError.parse(parsed)
            assert parsed["gatewayCode"] == resp.headers["X-Gateway-Reject"]
        return Seen(resp.status, dict(resp.headers), parsed)


# --- every operation -----------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS, ids=IDS)
async def test_every_operation_reaches_8x8_with_the_real_key(
    gateway: str, sim: SimProcess, op: Op
) -> None:
    path = f"/{op.product}{op.path}"
    seen = await call(gateway, op.method, path, op.body)
    assert "X-Gateway-Reject" not in seen.headers, seen.body
    assert seen.status == op.status, seen.body
    [arrived] = sim.requests()
    assert arrived["method"] == op.method
    assert arrived["raw_path"] + (f"?{arrived['query']}" if arrived["query"] else "") == path
    assert arrived["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert CLIENT_TOKEN not in json.dumps(arrived)


@pytest.mark.parametrize(
    "op", SCOPED, ids=[f"{op.method} {op.product}{op.template}" for op in SCOPED]
)
async def test_every_operation_without_scope_is_403(gateway: str, sim: SimProcess, op: Op) -> None:
    seen = await call(gateway, op.method, f"/{op.product}{op.path}", op.body, token=OTHER_TOKEN)
    expected = "auth.account" if "{account}" in op.template else "auth.subaccount"
    assert (seen.status, seen.body["gatewayCode"]) == (403, expected)
    assert sim.requests() == []


async def test_a_file_download_needs_only_a_valid_token(gateway: str, sim: SimProcess) -> None:
    path = "/chatapps/files/pic.png?token=t0k"
    seen = await call(gateway, "GET", path, token=OTHER_TOKEN)
    assert seen.status == 302
    assert seen.headers["Location"] == "https://storage.example/files/pic.png"
    seen = await call(gateway, "GET", path, token=None)
    assert (seen.status, seen.body["gatewayCode"]) == (401, "auth.missing")
    assert len(sim.requests()) == 1


# --- paths as 8x8 reads them ---------------------------------------------------------------


async def test_a_percent_encoded_subaccount_is_scoped_decoded_and_forwarded_raw(
    gateway: str, sim: SimProcess
) -> None:
    path = "/sms/api/v1/subaccounts/acme%26co/messages"
    seen = await call(gateway, "POST", path, SMS)
    assert seen.status == 200, seen.body
    [arrived] = sim.requests()
    assert (arrived["raw_path"], arrived["subaccount"]) == (path, "acme&co")


async def test_subaccount_scope_is_case_insensitive(gateway: str, sim: SimProcess) -> None:
    seen = await call(gateway, "GET", f"/sms/api/v1/subaccounts/acme_MAIN/messages/{UMID}")
    assert seen.status == 200, seen.body
    assert len(sim.requests()) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/sms{S}/messages/..;/x"),
        ("GET", f"/sms{S}/messages/..;"),
        ("GET", f"/sms{S}/messages/%2e%2e"),
        ("GET", f"/sms{S}/messages/."),
        ("GET", f"/sms/api/v1/subaccounts/acme_bills/../{SUB}/messages/x"),
        ("GET", f"/sms{S}/messages/a;b"),
        ("GET", f"/sms{S}/messages/a%2Fb"),
        ("PUT", f"/sms{S}/messages/{UMID}"),
        ("PATCH", f"/chatapps{C}/flows/fl-1"),
        ("GET", f"/sms{S}/messages"),
        ("GET", f"/contacts{S}/messages/{UMID}"),
        ("POST", "/chatapps/files/pic.png"),
    ],
)
async def test_unknown_or_ambiguous_paths_are_404_and_never_forwarded(
    gateway: str, sim: SimProcess, method: str, path: str
) -> None:
    seen = await call(gateway, method, path)
    assert (seen.status, seen.body["gatewayCode"]) == (404, "route.unknown")
    assert sim.requests() == []


# --- bodies --------------------------------------------------------------------------------


async def test_a_send_without_a_body_is_400_not_415(gateway: str, sim: SimProcess) -> None:
    seen = await call(gateway, "POST", f"/sms{S}/messages")
    assert (seen.status, seen.body["gatewayCode"], seen.body["code"]) == (
        400,
        "request.invalid",
        1000,
    )
    assert sim.requests() == []


async def test_a_send_that_is_not_json_is_415(gateway: str, sim: SimProcess) -> None:
    seen = await call(gateway, "POST", f"/sms{S}/messages", SMS, content_type="text/plain")
    assert (seen.status, seen.body["gatewayCode"]) == (415, "request.content_type")
    assert sim.requests() == []


async def test_an_upload_goes_out_multipart_as_the_caller_wrote_it(
    gateway: str, sim: SimProcess
) -> None:
    seen = await call(gateway, "POST", f"/chatapps{S}/files", FILE)
    assert seen.status == 201, seen.body
    [arrived] = sim.requests()
    assert arrived["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert 'name="file"' in arrived["body"] and "a,b\n1,2\n" in arrived["body"]


async def test_8x8s_400_for_an_invalid_body_passes_through_unchanged(
    gateway: str, sim: SimProcess
) -> None:
    seen = await call(gateway, "POST", f"/contacts{A}/groups", {"name": 5})
    assert seen.status == 400
    assert "X-Gateway-Reject" not in seen.headers and "gatewayCode" not in seen.body
    assert EightByEightError.parse(seen.body).code == 1000


async def test_a_non_send_books_the_subaccount_bucket(tmp_path: Path, sim: SimProcess) -> None:
    cfg = gateway_config(
        sim.url,
        limits={"subaccount_rps": 2, "subaccount_burst": 1, "max_wait_ms": 0},
        subaccounts={SUB: {"account": ACCT}},
        clients=[
            {
                "name": "orders",
                "token_sha256": sha(CLIENT_TOKEN),
                "subaccounts": [SUB],
                "accounts": [ACCT],
            }
        ],
    )
    with GatewayProcess(tmp_path, cfg) as gw:
        # an account-level read books the account's first configured subaccount
        codes = [
            (await call(gw.url, "GET", f"/sms{A}/balance")).headers.get("X-Gateway-Reject"),
            (await call(gw.url, "GET", f"/sms{S}/messages/{UMID}")).headers.get("X-Gateway-Reject"),
        ]
    assert "rate_limited.subaccount" in codes
    assert len(sim.requests()) == codes.count(None)


async def test_an_upload_over_max_body_bytes_is_413_and_not_forwarded(
    tmp_path: Path, sim: SimProcess
) -> None:
    cfg = gateway_config(sim.url, server={"max_body_bytes": 1000})
    with GatewayProcess(tmp_path, cfg) as gw:
        form = aiohttp.FormData()
        form.add_field("file", b"x" * 5000, filename="big.bin")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{gw.url}/chatapps{S}/files",
                data=form,
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
            ) as resp,
        ):
            body = await resp.json()
    assert (resp.status, body["gatewayCode"]) == (413, "request.too_large")
    EightByEightError.parse(body)
    assert sim.requests() == []


# --- the gateway learns from what passes (gateway/citizen.py) -------------------------------


async def test_a_template_meta_would_reject_is_400_with_findings_and_never_sent(
    gateway: str, sim: SimProcess
) -> None:
    bad = {**TEMPLATE, "components": [{"type": "BODY", "text": "{{1}} shipped"}]}
    seen = await call(gateway, "POST", f"/chatapps{C}/templates", bad)
    assert (seen.status, seen.body["gatewayCode"]) == (400, "request.invalid")
    assert seen.body["findings"] and sim.requests() == []


async def test_a_number_blacklisted_through_the_gateway_is_opted_out_at_once(
    tmp_path: Path, sim: SimProcess
) -> None:
    cfg = gateway_config(
        sim.url,
        clients=[
            {
                "name": "orders",
                "token_sha256": sha(CLIENT_TOKEN),
                "subaccounts": [SUB],
                "accounts": [ACCT],
            }
        ],
    )
    with GatewayProcess(tmp_path, cfg) as gw:
        before = await call(gw.url, "POST", f"/chatapps{S}/messages", TEXT)
        added = await call(gw.url, "POST", f"/contacts{A}/contacts/blacklist/6591234567")
        after = await call(gw.url, "POST", f"/chatapps{S}/messages", TEXT)
    assert (before.status, added.status) == (200, 200)
    assert (after.status, after.body["gatewayCode"]) == (403, "recipient.opted_out")
    assert [r["method"] for r in sim.requests()] == ["POST", "POST"]
