"""Property: the gateway checks exactly the recipients 8x8 would deliver to.

A small model of 8x8's reading, written from its OpenAPI schemas (not from the gateway's
code): which fields are required and of which JSON type, which `type` spellings exist,
which fields a batch `template` holds, that `msisdn` wins over `channelUserId`, and, for
numbers, a table of spellings with the E.164 number each means (or none). For any body
drawn from 8x8-shaped bodies with faults mixed in (duplicate keys, wrong JSON types,
padded or missing `type`, bad numbers), the gateway either reads the same messages as
the model, the same ones dropped, or refuses the body where the model says 8x8 cannot
read it as a whole.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.messages import parse
from gateway.routes import Kind, Route

SUB = "acme_main"
CHAT_SEND = Route("chatapps", Kind.SEND, SUB, f"/api/v1/subaccounts/{SUB}/messages")
CHAT_BATCH = Route("chatapps", Kind.BATCH, SUB, f"/api/v1/subaccounts/{SUB}/messages/batch")
SMS_SEND = Route("sms", Kind.SEND, SUB, f"/api/v1/subaccounts/{SUB}/messages")
SMS_BATCH = Route("sms", Kind.BATCH, SUB, f"/api/v1/subaccounts/{SUB}/messages/batch")
VERIFY = Route("verify", Kind.VERIFY, SUB, f"/api/v2/subaccounts/{SUB}/sessions")

# (spelling, country, the number 8x8 delivers to or None: 8x8 rejects it). Hand-made from
# 8x8's pattern ^\+{0,1}[1-9]{1}[0-9]{6,14}$ and the numbering plans, not computed.
NUMBERS: list[tuple[Any, str | None, str | None]] = [
    ("+6587654321", None, "+6587654321"),
    ("6587654321", None, "+6587654321"),
    ("1000000", None, "+1000000"),
    ("+999999999999999", None, "+999999999999999"),
    ("+65(876)54321", None, "+6587654321"),
    ("8765 4321", "SG", "+6587654321"),
    ("87654321", "sg", "+6587654321"),
    ("6587654321", "SG", "+6587654321"),
    ("07700900123", "GB", "+447700900123"),
    ("+447700900123", "SG", "+447700900123"),
    ("87654321", None, "+87654321"),  # no country: the international reading
    ("087654321", None, None),  # a leading 0 needs a country
    ("+6587654321/x12", None, None),
    ("+65 8765 4321 ext 1", None, None),
    ("1-800-FLOWERS", "US", None),
    ("2025550123", "US", None),  # +1 202-555-0123 or +20 25550123: ambiguous
    ("123456", None, None),
    ("", None, None),
    (6587654321, None, None),  # a JSON number where 8x8 wants a string
]
TYPES = ["text", "template", "Template", "image", " template", "template ", "sms", 5, None]
CHANNEL_IDS = ["US.13491208655302741918", "SG.77"]


# --- the model -----------------------------------------------------------------------------

Read = tuple[str, str | None, str | None]  # (recipient, template key, Direct Send category)
REFUSED = "refused"  # 8x8 cannot read the body as a whole


def number(raw: Any, country: Any) -> str | None:
    for spelling, cc, expected in NUMBERS:
        if spelling == raw and type(spelling) is type(raw) and cc == country:
            return expected
    raise AssertionError("drawn numbers come from NUMBERS")


def chat_one(msg: Any, typed: bool = True) -> Read | None:
    """8x8's reading of one chat-apps message: what it sends, or None (rejected)."""
    if not isinstance(msg, dict) or not isinstance(msg.get("user"), dict):
        return None
    user = msg["user"]
    if "country" in user and not isinstance(user["country"], str):
        return None
    if "msisdn" in user:
        to = number(user["msisdn"], user.get("country"))
    elif isinstance(user.get("channelUserId"), str) and user["channelUserId"]:
        to = "cu:whatsapp:" + user["channelUserId"]
    else:
        to = None
    kind = msg.get("type")
    content = msg.get("content")
    if to is None or not isinstance(content, dict) or not isinstance(kind, str):
        return None
    if kind.lower() not in {"text", "template", "image"} or kind != kind.strip():
        return None
    if kind.lower() != "template":
        ds = content.get("whatsApp", {}).get("directSend") if content.get("whatsApp") else None
        return (to, None, "UTILITY" if ds else None)
    tpl = content.get("template")
    if not isinstance(tpl, dict) or not all(
        isinstance(tpl.get(k), str) for k in ("name", "language")
    ):
        return None
    return (to, f"{tpl['name']}:{tpl['language']}".lower(), None)


def sms_one(msg: Any, text: Any = None, otp: bool = False) -> Read | None:
    if not isinstance(msg, dict) or (not isinstance(msg.get("text", text), str) and not otp):
        return None
    if "destination" not in msg or ("clientIp" in msg and not isinstance(msg["clientIp"], str)):
        return None
    return (t, None, None) if (t := number(msg["destination"], msg.get("country"))) else None


def model(route: Route, body: Any) -> str | list[Read | None]:
    """What 8x8 reads: REFUSED, or per entry of the body the message it sends (or None)."""
    if route is CHAT_SEND:
        return [chat_one(body)] if chat_one(body) else REFUSED
    if route in (SMS_SEND, VERIFY):
        one = sms_one(body, otp=route is VERIFY)
        return [one] if one else REFUSED
    tpl = body.get("template", {})
    if route is CHAT_BATCH:
        if not isinstance(tpl.get("type", ""), str):  # the schema of the batch itself
            return REFUSED
        shared = {k: v for k, v in tpl.items() if k in ("type", "content")}  # never `user`
        out = [chat_one({**shared, **m} if isinstance(m, dict) else m) for m in body["messages"]]
        # a Direct Send in the batch template is read into every message's own content too
        # (the stricter reading, docs/reading.md)
        if "directSend" in shared.get("content", {}).get("whatsApp", {}):
            out = [(r[0], None, "UTILITY") if r and r[1] is None else r for r in out]
        return out
    text = tpl.get("text")  # no `country` in an SMS batch template: 8x8 reads none
    out = [sms_one(m, text) for m in body.get("messages", [])]
    return out + [
        (t, None, None) if isinstance(d, str) and (t := number(d, None)) else None
        for d in body.get("destinations", [])
    ]


# --- bodies --------------------------------------------------------------------------------

numbers = st.sampled_from(NUMBERS)


@st.composite
def users(draw: st.DrawFn) -> dict[str, Any]:
    raw, country, _ = draw(numbers)
    user: dict[str, Any] = {}
    if draw(st.booleans()):
        user["msisdn"] = raw
        if country is not None:
            user["country"] = country
    if draw(st.integers(0, 3)) == 0 or not user:
        user["channelUserId"] = draw(st.sampled_from(CHANNEL_IDS))
    return user


@st.composite
def chat_messages(draw: st.DrawFn, *, in_batch: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"user": draw(users())}
    kind = draw(st.sampled_from(TYPES))
    if kind is not None and not (in_batch and draw(st.booleans())):
        msg["type"] = kind
    name = draw(st.sampled_from(["promo", "Order_Update"]))
    content = {"template": {"name": name, "language": draw(st.sampled_from(["en", "EN_gb"]))}}
    if draw(st.booleans()):
        content = {"text": "hi"}
        if draw(st.booleans()):
            content["whatsApp"] = {"directSend": {"category": "utility"}}
    if not (in_batch and draw(st.booleans())):
        msg["content"] = content
    return msg


@st.composite
def sms_messages(draw: st.DrawFn) -> dict[str, Any]:
    raw, country, _ = draw(numbers)
    msg: dict[str, Any] = {"destination": raw}
    if country is not None:
        msg["country"] = country
    if draw(st.booleans()):
        msg["text"] = "hi"
    if draw(st.integers(0, 3)) == 0:
        msg["clientIp"] = draw(st.sampled_from(["192.0.2.1", "not an ip", 7]))
    return msg


@st.composite
def chat_batches(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": draw(st.lists(chat_messages(in_batch=True), min_size=1, max_size=4))
    }
    if draw(st.booleans()):
        tpl = draw(chat_messages())
        tpl["user"] = {"msisdn": "+6587654321"}  # not a field of the batch template
        body["template"] = tpl
    return body


@st.composite
def sms_batches(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": draw(st.lists(sms_messages(), min_size=1, max_size=4))}
    if draw(st.booleans()):
        world = [n for n in NUMBERS if n[1] is None]  # 8x8 reads destinations[] without one
        body["destinations"] = [
            r for r, _, _ in draw(st.lists(st.sampled_from(world), min_size=1, max_size=3))
        ]
    if draw(st.booleans()):
        body["template"] = {"text": "hi", "country": "SG"}
    return body


SHAPES = {
    CHAT_SEND: chat_messages(),
    CHAT_BATCH: chat_batches(),
    SMS_SEND: sms_messages(),
    SMS_BATCH: sms_batches(),
    VERIFY: sms_messages(),
}


def twice(text: str, key: str) -> str | None:
    """The JSON text with the first `"key": value` pair written twice (8x8 and the gateway
    could each keep another copy), or None when the key is not in it."""
    at = text.find(f'"{key}": ')
    if at < 0:
        return None
    return text[:at] + f'"{key}": "+447700900123", ' + text[at:]


@pytest.mark.parametrize("route", list(SHAPES), ids=lambda r: r.name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_gateway_checks_exactly_the_recipients_8x8_would_deliver_to(
    route: Route, data: st.DataObject
) -> None:
    body = data.draw(SHAPES[route], label="body")
    text = json.dumps(body)
    duplicated = twice(text, data.draw(st.sampled_from(["msisdn", "destination", "type"])))
    if duplicated is not None and data.draw(st.booleans(), label="duplicate a key"):
        with pytest.raises(GatewayError) as info:
            parse(route, duplicated.encode())
        assert info.value.code == "request.invalid"
        return
    expected = model(route, body)
    if expected == REFUSED or (
        isinstance(expected, list) and not any(expected) and route.kind is not Kind.BATCH
    ):
        with pytest.raises(GatewayError) as info:
            parse(route, text.encode())
        assert info.value.code == "request.invalid"
        return
    assert isinstance(expected, list)
    parsed = parse(route, text.encode())
    entries = parsed.entries or tuple(range(len(parsed.messages)))
    got: list[Read | None] = [None] * len(expected)
    for index, check in zip(entries, parsed.messages, strict=True):
        got[index] = (check.msisdn, check.template, check.category)
    assert got == expected
    assert {i for i, _ in parsed.invalid} == {i for i, e in enumerate(expected) if e is None}
