"""Property tests over the whole app: any body, path or header a caller, 8x8 or an admin
sends gets a documented answer (never a 500), and nothing reaches a non-8x8 host or an
unlisted path. Config files of any shape load or fail with `key.path: reason` lines."""

from __future__ import annotations

import asyncio
import json
import string
from pathlib import Path
from typing import Any

import orjson
import yarl
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import routes
from gateway.app import build_app
from gateway.config import ClientConfig, Config, ConfigError, UpstreamConfig, load
from gateway.errors import STATUS
from gateway.store.memory import MemoryStore
from tests.support.frontserver import FrontServer
from tests.support.gatewayproc import ADMIN_TOKEN, CLIENT_TOKEN, WEBHOOK_SECRET, sha

UPSTREAM = "http://127.0.0.1:9"  # discard port: nothing listens; forwarding fails fast
CFG = Config(
    upstream=UpstreamConfig(
        urls={p: f"{UPSTREAM}/{p}" for p in ("chatapps", "sms", "verify", "contacts")}, timeout_s=1
    ),
    clients=(ClientConfig(name="c", token_sha256=(sha(CLIENT_TOKEN),), subaccounts=("*",)),),
)
ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET}
DOCUMENTED = set(STATUS.values()) - {500} | {200, 204}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
msisdns = st.sampled_from(["+6591234567", "6591234567", "8765 4321", "12", "", "+1"]) | st.text(
    max_size=20
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "user": st.fixed_dictionaries(
            {},
            optional={
                "msisdn": msisdns | json_values,
                "country": st.sampled_from(["SG", "xx", ""]),
            },
        ),
        "type": st.sampled_from(["text", "template", "TEMPLATE"]) | json_values,
        "content": st.fixed_dictionaries(
            {}, optional={"template": json_values, "text": json_values}
        ),
        "destination": msisdns,
        "destinations": st.lists(msisdns, max_size=3),
        "messages": st.lists(json_values, max_size=3),
        "template": json_values,
        "clientIp": st.sampled_from(["1.2.3.4", "::1", "nope"]) | json_values,
        "namespace": st.sampled_from(["ChatApps", "SMS"]) | json_values,
        "eventType": st.sampled_from(
            ["inbound_message_received", "template_status_update", "template_quality_update"]
        )
        | json_values,
        "payload": json_values,
        "eventDetails": json_values,
        "accountId": json_values,
        "timestamp": json_values,
        "status": json_values,
        "categories": json_values,
        "source": json_values,
    },
)
PATHS = [
    "/chatapps/api/v1/subaccounts/acme_main/messages",
    "/chatapps/api/v1/subaccounts/acme_main/messages/batch",
    "/sms/api/v1/subaccounts/acme_main/messages/batch",
    "/verify/api/v2/subaccounts/acme_main/sessions",
    "/webhooks/inbound",
    "/webhooks/templates",
    "/admin/v1/accounts/acme/consents/6591234567",
    "/admin/v1/accounts/acme/templates/welcome/en",
    "/admin/v1/accounts/acme/optouts/6591234567",
]
AUTH = {
    "/chatapps": CLIENT_TOKEN,
    "/sms": CLIENT_TOKEN,
    "/verify": CLIENT_TOKEN,
    "/webhooks": WEBHOOK_SECRET,
    "/admin": ADMIN_TOKEN,
}


async def _answer(method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    app = build_app(CFG, "k", ENV, store=MemoryStore())
    async with TestClient(FrontServer(app)) as client:
        resp = await client.request(method, path, data=body, headers=headers)
        await resp.read()
        return resp.status


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(PATHS), method=st.sampled_from(["POST", "PUT"]), body=shaped | json_values
)
@example(path="/webhooks/templates", method="POST", body={"eventType": []})
@example(path="/webhooks/inbound", method="POST", body={"namespace": [], "eventType": {}})
def test_any_json_body_gets_a_documented_answer(path: str, method: str, body: Any) -> None:
    token = next(v for k, v in AUTH.items() if path.startswith(k))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status = asyncio.run(_answer(method, path, json.dumps(body).encode(), headers))
    assert status in DOCUMENTED, status


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(PATHS),
    raw=st.binary(max_size=200),
    ctype=st.sampled_from(["application/json", "text/plain", "application/x-ndjson", ""]),
)
def test_any_bytes_get_a_documented_answer(path: str, raw: bytes, ctype: str) -> None:
    token = next(v for k, v in AUTH.items() if path.startswith(k))
    headers = {"Authorization": f"Bearer {token}"}
    if ctype:
        headers["Content-Type"] = ctype
    status = asyncio.run(_answer("POST", path, raw, headers))
    assert status in DOCUMENTED, status


segment = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/\\?#",
    min_size=1,
    max_size=12,
)


@settings(max_examples=400)
@given(
    prefix=st.sampled_from(["/chatapps", "/sms", "/verify", "//", "/", "/contacts"]),
    parts=st.lists(segment, max_size=8),
    query=st.text(max_size=20),
)
def test_no_path_or_query_trick_leaves_the_8x8_host(
    prefix: str, parts: list[str], query: str
) -> None:
    raw_path = prefix + "/" + "/".join(["api", "v1", "subaccounts", "acme_main", *parts])
    route = routes.match("GET", raw_path)
    if route is None:
        return
    forwarded = yarl.URL(f"{UPSTREAM}/{route.product}{route.path}?{query}", encoded=True)
    assert (forwarded.scheme, forwarded.host, forwarded.port) == ("http", "127.0.0.1", 9)
    assert forwarded.raw_path == f"/{route.product}{route.path}"
    assert "/../" not in forwarded.raw_path + "/" and "/subaccounts/" in forwarded.raw_path


toml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 100_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
config_tables = st.dictionaries(
    st.sampled_from(
        [
            "server",
            "redis",
            "upstream",
            "limits",
            "policy",
            "admin",
            "webhooks",
            "templates",
            "bogus",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "port",
                "workers",
                "url",
                "mode",
                "on_failure",
                "subaccount_rps",
                "subaccount_burst",
                "opt_in",
                "stop_keywords",
                "timeout_s",
                "sync_s",
                "x",
            ]
        ),
        toml_scalars | st.lists(st.text(max_size=5), max_size=3),
        max_size=4,
    ),
    max_size=4,
)


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is None:
                continue
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300)
@given(tables=config_tables)
def test_any_config_loads_or_names_its_problems(
    tables: dict[str, dict[str, Any]], tmp_path_factory: Any
) -> None:
    path: Path = tmp_path_factory.mktemp("cfg") / "gateway.toml"
    path.write_text(_toml(tables))
    try:
        load(path, {})
    except ConfigError as exc:
        assert exc.problems
        assert all(":" in p and p.split(":")[0].strip() for p in exc.problems), exc.problems
