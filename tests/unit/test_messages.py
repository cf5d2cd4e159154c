"""Reading send bodies as 8x8 does: recipients in E.164 whatever the spelling (or a channel
user), templates, Direct Send, duplicate keys, JSON types, batches read message by message,
`clientIp`, the `field` of every refusal, `without`, and no crash on any input."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import INVALID_MSISDN, GatewayError
from gateway.messages import (
    ParsedSend,
    channel_user,
    decode_object,
    normalise,
    parse,
    without,
)
from gateway.routes import Kind, Route
from gateway.store.base import MessageCheck

SUB = "acme_main"
CHAT_SEND = Route("chatapps", Kind.SEND, SUB, f"/api/v1/subaccounts/{SUB}/messages")
CHAT_BATCH = Route("chatapps", Kind.BATCH, SUB, f"/api/v1/subaccounts/{SUB}/messages/batch")
SMS_SEND = Route("sms", Kind.SEND, SUB, f"/api/v1/subaccounts/{SUB}/messages")
SMS_BATCH = Route("sms", Kind.BATCH, SUB, f"/api/v1/subaccounts/{SUB}/messages/batch")
VERIFY = Route("verify", Kind.VERIFY, SUB, f"/api/v2/subaccounts/{SUB}/sessions")
READ = Route("sms", Kind.READ, SUB, f"/api/v1/subaccounts/{SUB}/messages/abc")
ROUTES = [CHAT_SEND, CHAT_BATCH, SMS_SEND, SMS_BATCH, VERIFY, READ]

SG = "+6587654321"
UK = "+447700900123"


def run(route: Route, body: Any) -> ParsedSend:
    return parse(route, orjson.dumps(body))


def refusal(route: Route, body: Any) -> GatewayError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(GatewayError) as info:
        parse(route, raw)
    assert info.value.code == "request.invalid"
    return info.value


def template(name: str = "promo", language: str = "en") -> dict[str, Any]:
    return {"type": "template", "content": {"template": {"name": name, "language": language}}}


# --- normalise -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("+6587654321", None),
        ("6587654321", None),
        ("8765 4321", "SG"),
        ("87654321", "sg"),
        ("+65(876)54321", None),
        ("+65 8765-4321", None),
        (" +6587654321 ", None),
        ("+6587654321", "US"),  # a '+' number ignores the country
        (6587654321, None),  # admin and webhooks: a JSON number
    ],
)
def test_normalise_gives_e164_whatever_the_spelling(raw: Any, country: str | None) -> None:
    assert normalise(raw, country, "destination") == SG


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        True,
        6.5,
        ["+6587654321"],
        "not a number",
        "+6512",
        "1" * 65,
        "+1 800 FLOWERS",  # letters: phonenumbers would read them as digits
        "+6587654321/x12",  # an extension
        "+6587654321 ext 12",
        "+6587654321#12",
        "06587654321",  # a leading 0 without country
        "+06587654321",
        "++6587654321",
        "+" + "".join(chr(0xFF10 + int(d)) for d in "6587654321"),  # not ASCII digits
    ],
)
def test_normalise_refuses_bad_numbers_naming_the_field(raw: Any) -> None:
    with pytest.raises(GatewayError) as info:
        normalise(raw, None, "messages[1].user.msisdn")
    assert info.value.code == "request.invalid"
    assert info.value.number == INVALID_MSISDN
    assert info.value.extra["field"] == "messages[1].user.msisdn"


@pytest.mark.parametrize("raw", ["1000000", "+1000000", "999999999999999", "+99912345678"])
def test_every_number_matching_8x8s_pattern_is_that_international_number(raw: str) -> None:
    assert normalise(raw, None, "destination") == "+" + raw.lstrip("+")


def test_a_national_number_without_country_is_refused() -> None:
    with pytest.raises(GatewayError) as info:
        normalise("0 8765 4321", None, "destination")
    assert info.value.extra["field"] == "destination"


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("87654321", "SG", SG),  # national only: 8 digits is no international number
        ("6587654321", "SG", SG),  # international only: too long for Singapore
        ("07700900123", "GB", UK),  # national with its trunk 0
        ("07700 900123", "UK", UK),  # 8x8's docs write `uk`
        ("6587654321", "ZZ", SG),  # no national reading in an unknown region
    ],
)
def test_with_country_the_one_possible_reading_wins(raw: str, country: str, expected: str) -> None:
    assert normalise(raw, country, "destination") == expected


def test_with_country_two_different_possible_readings_are_ambiguous() -> None:
    # 2025550123 in the US is +12025550123; as digits it is +2025550123 (Egypt), possible too
    with pytest.raises(GatewayError) as info:
        normalise("2025550123", "US", "destination")
    assert (info.value.number, info.value.extra["field"]) == (INVALID_MSISDN, "destination")


@pytest.mark.parametrize(
    ("field", "country_field"),
    [
        ("destination", "country"),
        ("messages[1].user.msisdn", "messages[1].user.country"),
        ("messages[0].destination", "messages[0].country"),
    ],
)
@pytest.mark.parametrize("country", ["SGP", "S1", 65])
def test_bad_country_names_the_country_field(field: str, country_field: str, country: Any) -> None:
    with pytest.raises(GatewayError) as info:
        normalise("87654321", country, field)
    assert info.value.extra["field"] == country_field


# --- the JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user": {"msisdn": "+6587654321", "msisdn": "+447700900123"}, "type": "text"}',
        b'{"type": "text", "type": "template"}',
        b'{"messages": [{"destination": "+6587654321", "destination" : "+4477009001"}]}',
        b'{"a": "x\\":", "a": 1}',  # a `":` inside a string hides nothing
    ],
)
@pytest.mark.parametrize("route", [CHAT_SEND, CHAT_BATCH, SMS_SEND, SMS_BATCH, VERIFY])
def test_a_key_twice_anywhere_is_refused(raw: bytes, route: Route) -> None:
    assert refusal(route, raw).code == "request.invalid"


def test_strings_holding_key_ends_are_not_duplicates() -> None:
    body = {"user": {"msisdn": SG}, "type": "text", "content": {"text": 'a": "b":'}}
    assert run(CHAT_SEND, body).messages == (MessageCheck(SG),)


# --- one message ---------------------------------------------------------------------------


def text(msisdn: Any = SG, **user: Any) -> dict[str, Any]:
    return {"user": {"msisdn": msisdn, **user}, "type": "text", "content": {"text": "hi"}}


def test_chatapps_send_reads_the_user_msisdn() -> None:
    body = text("6587654321")
    parsed = run(CHAT_SEND, body)
    assert parsed.messages == (MessageCheck(SG),)
    assert parsed.body == body
    assert parsed.client_ips == ()


def test_chatapps_send_uses_the_user_country() -> None:
    parsed = run(CHAT_SEND, text("8765 4321", country="SG"))
    assert parsed.messages[0].msisdn == SG


@pytest.mark.parametrize("kind", ["template", "Template", "TEMPLATE"])
def test_chatapps_template_send_is_read_as_lower_case_name_and_language(kind: str) -> None:
    body = {"user": {"msisdn": SG}, **template("Promo_Sale", "en_GB"), "type": kind}
    assert run(CHAT_SEND, body).messages == (MessageCheck(SG, template="promo_sale:en_gb"),)


@pytest.mark.parametrize("kind", ["text", "Text", "image", "interactive"])
def test_chatapps_other_types_are_not_templates(kind: str) -> None:
    body = {**template(), "user": {"msisdn": SG}, "type": kind}
    assert run(CHAT_SEND, body).messages == (MessageCheck(SG),)


def test_whatsapp_direct_send_is_a_template_send_of_its_category() -> None:
    body = text()
    body["content"]["whatsApp"] = {"directSend": {"category": "utility"}}
    assert run(CHAT_SEND, body).messages == (MessageCheck(SG, category="UTILITY"),)


@pytest.mark.parametrize(
    ("user", "identity"),
    [
        ({"channelUserId": "US.13491208655302741918"}, "cu:whatsapp:US.13491208655302741918"),
        ({"lineUserId": "Ua12b345"}, "cu:line:Ua12b345"),
        ({"msisdn": SG, "channelUserId": "US.1349"}, SG),  # msisdn wins
    ],
)
def test_chatapps_recipient_by_channel_user_id(user: dict[str, Any], identity: str) -> None:
    body = {"user": user, "type": "text", "content": {"text": "hi"}}
    assert run(CHAT_SEND, body).messages == (MessageCheck(identity),)
    assert channel_user("WhatsApp", "US.1") == "cu:whatsapp:US.1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user"),
        ({"user": 5, "type": "text", "content": {}}, "user"),
        ({"user": {}, "type": "text", "content": {}}, "user.msisdn"),
        ({"user": {"msisdn": "12"}, "type": "text", "content": {}}, "user.msisdn"),
        ({"user": {"msisdn": 6587654321}, "type": "text", "content": {}}, "user.msisdn"),
        (
            {"user": {"msisdn": SG, "channelUserId": 5}, "type": "text", "content": {}},
            "user.channelUserId",
        ),
        ({"user": {"msisdn": SG, "country": 65}, "type": "text", "content": {}}, "user.country"),
        ({"user": {"msisdn": SG}, "content": {}}, "type"),
        ({"user": {"msisdn": SG}, "type": " template", "content": {}}, "type"),
        ({"user": {"msisdn": SG}, "type": "template ", "content": {}}, "type"),
        ({"user": {"msisdn": SG}, "type": "sms", "content": {}}, "type"),
        ({"user": {"msisdn": SG}, "type": 1, "content": {}}, "type"),
        ({"user": {"msisdn": SG}, "type": "text"}, "content"),
        ({"user": {"msisdn": SG}, "type": "text", "content": "hi"}, "content"),
        ({"user": {"msisdn": SG}, "type": "template", "content": {}}, "content.template"),
        (
            {"user": {"msisdn": SG}, "type": "template", "content": {"template": 1}},
            "content.template",
        ),
        (
            {
                "user": {"msisdn": SG},
                "type": "template",
                "content": {"template": {"language": "en"}},
            },
            "content.template.name",
        ),
        (
            {
                "user": {"msisdn": SG},
                "type": "template",
                "content": {"template": {"name": " promo", "language": "en"}},
            },
            "content.template.name",
        ),
        (
            {"user": {"msisdn": SG}, "type": "template", "content": {"template": {"name": "x"}}},
            "content.template.language",
        ),
        (
            {"user": {"msisdn": SG}, "type": "text", "content": {"whatsApp": {"directSend": {}}}},
            "content.whatsApp.directSend.category",
        ),
        (
            {
                "user": {"msisdn": SG},
                "type": "text",
                "content": {"whatsApp": {"directSend": {"category": "marketing"}}},
            },
            "content.whatsApp.directSend.category",
        ),
        (
            {"user": {"msisdn": SG}, "type": "text", "content": {"whatsApp": {"directSend": 1}}},
            "content.whatsApp.directSend",
        ),
    ],
)
def test_chatapps_send_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert refusal(CHAT_SEND, body).extra["field"] == field


def test_sms_send_reads_destination_and_client_ip() -> None:
    parsed = run(
        SMS_SEND,
        {"destination": "8765 4321", "country": "SG", "text": "hi", "clientIp": "192.0.2.1"},
    )
    assert parsed.messages == (MessageCheck(SG),)
    assert parsed.client_ips == ("192.0.2.1",)


def test_verify_is_an_otp_to_the_destination() -> None:
    parsed = run(VERIFY, {"destination": "6587654321", "clientIp": "2001:DB8::1"})
    assert parsed.messages == (MessageCheck(SG, otp=True),)
    assert parsed.client_ips == ("2001:DB8::1",)  # as written: gateway/policy/enduser.py reads it


@pytest.mark.parametrize("route", [SMS_SEND, VERIFY])
@pytest.mark.parametrize("value", [None, ""])
def test_absent_client_ip_is_none(route: Route, value: Any) -> None:
    assert run(route, {"destination": SG, "text": "hi", "clientIp": value}).client_ips == ()


@pytest.mark.parametrize("route", [SMS_SEND, VERIFY])
@pytest.mark.parametrize("value", ["not-an-ip", "192.0.2.300"])
def test_client_ip_is_any_string_as_at_8x8(route: Route, value: str) -> None:
    assert run(route, {"destination": SG, "text": "hi", "clientIp": value}).client_ips == (value,)


@pytest.mark.parametrize("route", [SMS_SEND, VERIFY, SMS_BATCH])
@pytest.mark.parametrize("value", [3232235777, ["192.0.2.1"], False])
def test_client_ip_of_another_json_type_is_refused(route: Route, value: Any) -> None:
    body = {"destination": SG, "text": "hi", "destinations": [SG], "clientIp": value}
    assert refusal(route, body).extra["field"] == "clientIp"


@pytest.mark.parametrize("route", [SMS_SEND, VERIFY])
def test_missing_destination_is_refused(route: Route) -> None:
    assert refusal(route, {"text": "hi"}).extra["field"] == "destination"


@pytest.mark.parametrize("value", [6587654321, 6.5e9])
def test_a_number_in_a_json_number_is_refused(value: Any) -> None:
    err = refusal(SMS_SEND, {"destination": value, "text": "hi"})
    assert (err.extra["field"], err.number) == ("destination", INVALID_MSISDN)


def test_sms_text_is_required() -> None:
    assert refusal(SMS_SEND, {"destination": SG}).extra["field"] == "text"


@pytest.mark.parametrize("route", [CHAT_SEND, CHAT_BATCH, SMS_SEND, SMS_BATCH, VERIFY])
@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"42"])
def test_non_object_body_is_refused_naming_the_body(route: Route, raw: bytes) -> None:
    assert refusal(route, raw).extra["field"] == "body"


def test_read_route_does_not_look_at_the_body() -> None:
    assert parse(READ, b"\xff not json") == ParsedSend(None, ())


# --- batches -------------------------------------------------------------------------------


def dropped(parsed: ParsedSend) -> dict[int, str]:
    return {i: str(exc.extra["field"]) for i, exc in parsed.invalid}


def test_chatapps_batch_reads_every_message() -> None:
    body = {"messages": [text(SG), text("447700900123")]}
    parsed = run(CHAT_BATCH, body)
    assert parsed.messages == (MessageCheck(SG), MessageCheck(UK))
    assert (parsed.n_messages, parsed.entries, parsed.invalid) == (2, (0, 1), ())


def test_chatapps_batch_template_defaults_apply_unless_the_message_overrides() -> None:
    body = {
        "template": template("promo", "en"),
        "messages": [
            {"user": {"msisdn": SG}},
            {"user": {"msisdn": SG}, "type": "text", "content": {"text": "hi"}},
            {"user": {"msisdn": SG}, "content": {"template": {"name": "other", "language": "fr"}}},
        ],
    }
    templates = [m.template for m in run(CHAT_BATCH, body).messages]
    assert templates == ["promo:en", None, "other:fr"]


def test_chatapps_batch_template_holds_no_user() -> None:
    body = {
        "template": {"type": "text", "content": {}, "user": {"msisdn": SG}},
        "messages": [{"user": {"country": "SG"}}],
    }
    assert dropped(run(CHAT_BATCH, body)) == {0: "messages[0].user.msisdn"}


def test_chatapps_batch_direct_send_in_the_template_applies_to_every_message() -> None:
    body = {
        "template": {
            "type": "text",
            "content": {"whatsApp": {"directSend": {"category": "utility"}}},
        },
        "messages": [{"user": {"msisdn": SG}}, text(UK)],
    }
    checks = run(CHAT_BATCH, body).messages
    assert [m.category for m in checks] == ["UTILITY", "UTILITY"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": {}}, "messages"),
        ({"messages": [text()], "template": "promo"}, "template"),
        ({"messages": [text()], "template": {"type": 5}}, "template.type"),
    ],
)
def test_chatapps_batch_level_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert refusal(CHAT_BATCH, body).extra["field"] == field


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (5, "messages[1]"),
        (text("x"), "messages[1].user.msisdn"),
        (text(6587654321), "messages[1].user.msisdn"),
        ({"type": "text", "content": {}}, "messages[1].user"),
        (
            {"user": {"msisdn": SG}, "type": "template", "content": {}},
            "messages[1].content.template",
        ),
        (text(SG, country="SGP"), "messages[1].user.country"),
        ({"user": {"msisdn": SG}, "type": " text", "content": {}}, "messages[1].type"),
    ],
)
def test_chatapps_batch_drops_a_message_8x8_would_reject_alone(message: Any, field: str) -> None:
    parsed = run(CHAT_BATCH, {"messages": [text(), message, text(UK)]})
    assert parsed.messages == (MessageCheck(SG), MessageCheck(UK))
    assert parsed.entries == (0, 2)
    assert dropped(parsed) == {1: field}
    assert all(exc.code == "request.invalid" for _, exc in parsed.invalid)


def test_sms_batch_recipients_are_messages_then_destinations() -> None:
    body = {
        "template": {"text": "hi"},
        "messages": [{"destination": "87654321", "country": "SG"}, {"destination": UK}],
        "destinations": ["6587654321", "+447700900123"],
        "clientIp": "198.51.100.7",
    }
    parsed = run(SMS_BATCH, body)
    assert [m.msisdn for m in parsed.messages] == [SG, UK, SG, UK]
    assert parsed.n_messages == 2
    assert parsed.client_ips == ("198.51.100.7",)


def test_sms_batch_template_country_is_not_read() -> None:
    # 8x8's SMS batch `template` has no `country`: a number is read without it
    body = {
        "template": {"country": "SG", "text": "hi"},
        "messages": [{"destination": "87654321"}, {"destination": "087654321"}],
        "destinations": ["87654321"],
    }
    parsed = run(SMS_BATCH, body)
    assert parsed.messages == (MessageCheck("+87654321"), MessageCheck("+87654321"))
    assert dropped(parsed) == {1: "messages[1].destination"}


def test_sms_batch_each_message_client_ip_counts() -> None:
    body = {
        "clientIp": "192.0.2.1",
        "messages": [
            {"destination": SG, "text": "a", "clientIp": "192.0.2.2"},
            {"destination": UK, "text": "b", "clientIp": "192.0.2.1"},
            {"destination": UK, "text": "c"},
            {"destination": "x", "text": "d", "clientIp": "192.0.2.9"},  # dropped: not counted
        ],
    }
    assert run(SMS_BATCH, body).client_ips == ("192.0.2.1", "192.0.2.2")


def test_sms_batch_of_destinations_only() -> None:
    parsed = run(SMS_BATCH, {"destinations": [SG, UK], "template": {"text": "hi"}})
    assert [m.msisdn for m in parsed.messages] == [SG, UK]
    assert parsed.n_messages == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": [], "destinations": []}, "messages"),
        ({"messages": "x"}, "messages"),
        ({"destinations": "x"}, "destinations"),
        ({"template": [], "destinations": [SG]}, "template"),
        ({"template": {"text": 5}, "destinations": [SG]}, "template.text"),
    ],
)
def test_sms_batch_level_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert refusal(SMS_BATCH, body).extra["field"] == field


@pytest.mark.parametrize(
    ("body", "index", "field"),
    [
        ({"messages": [7]}, 0, "messages[0]"),
        (
            {"messages": [{"destination": SG, "text": "a"}, {"text": "hi"}]},
            1,
            "messages[1].destination",
        ),
        (
            {"messages": [{"destination": SG, "text": "a"}, {"destination": ""}]},
            1,
            "messages[1].destination",
        ),
        (
            {"messages": [{"destination": SG, "text": "a"}, {"destination": UK}]},
            1,
            "messages[1].text",
        ),
        (
            {"messages": [{"destination": SG, "text": "a"}], "destinations": [SG, "12"]},
            2,
            "destinations[1]",
        ),
        (
            {"messages": [{"destination": SG, "text": "a"}], "destinations": [SG, 6587654321]},
            2,
            "destinations[1]",
        ),
        (
            {"messages": [{"destination": "87654321", "country": "XYZ", "text": "a"}]},
            0,
            "messages[0].country",
        ),
        (
            {"messages": [{"destination": SG, "text": "a", "clientIp": 5}]},
            0,
            "messages[0].clientIp",
        ),
    ],
)
def test_sms_batch_drops_a_message_8x8_would_reject_alone(
    body: dict[str, Any], index: int, field: str
) -> None:
    assert dropped(run(SMS_BATCH, body))[index] == field


@pytest.mark.parametrize(("route", "key"), [(CHAT_BATCH, "messages"), (SMS_BATCH, "destinations")])
def test_batch_over_10000_is_refused(route: Route, key: str) -> None:
    item: Any = text() if key == "messages" else SG
    assert refusal(route, {key: [item] * 10_001}).extra["field"] == key


# --- without -------------------------------------------------------------------------------


def test_without_drops_chatapps_messages_by_index() -> None:
    msgs = [{"user": {"msisdn": n}} for n in (SG, UK, "+6591234567")]
    body = {"template": template(), "messages": msgs}
    out = orjson.loads(without(run(CHAT_BATCH, body), {0, 2}))
    assert out == {"template": template(), "messages": [msgs[1]]}


def test_without_indexes_destinations_after_messages() -> None:
    body = {
        "messages": [{"destination": SG}, {"destination": UK}],
        "destinations": ["+6591234567", "+6598765432"],
        "template": {"text": "hi"},
    }
    out = orjson.loads(without(run(SMS_BATCH, body), {1, 2}))
    assert out == {
        "messages": [{"destination": SG}],
        "destinations": ["+6598765432"],
        "template": {"text": "hi"},
    }


def test_without_deletes_an_array_left_empty() -> None:
    body = {"messages": [{"destination": SG}], "destinations": [UK, "+6591234567"]}
    out = orjson.loads(without(run(SMS_BATCH, body), {0}))
    assert out == {"destinations": [UK, "+6591234567"]}


def test_without_nothing_dropped_keeps_the_body() -> None:
    body = {"messages": [{"destination": SG}], "destinations": [UK]}
    parsed = run(SMS_BATCH, body)
    assert orjson.loads(without(parsed, set())) == body
    assert parsed.body == body  # the parsed body itself is not changed


def test_without_leaves_the_parsed_body_alone() -> None:
    body = {"destinations": [SG, UK]}
    parsed = run(SMS_BATCH, body)
    without(parsed, {0})
    assert parsed.body == body


# --- never any other exception -------------------------------------------------------------

KEYS = ["destination", "destinations", "country", "clientIp", "messages", "template", "user"]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
ODD = LEAVES.map(lambda v: v)  # one branch of a `|`, not five: keep the shapes likely
# many distinct good values, or hypothesis (which skips repeats) soon tries only odd ones
PHONES = (
    st.from_regex(r"\+?65 ?[689]\d{3} ?\d{4}", fullmatch=True)
    | st.sampled_from(["8765 4321", "+65(876)54321", "+6512"])
    | ODD
)
COUNTRIES = st.sampled_from(["SG", "sg", "GB", "ZZ", "SGP"]) | ODD
IPS = st.sampled_from(["192.0.2.1", "2001:DB8::1", "1.2.3", ""]) | ODD
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# bodies shaped like 8x8's, with an odd value at any place, to reach past the first check
NAMES = st.text("abcdef_", min_size=1, max_size=8) | ODD
TEMPLATE = st.fixed_dictionaries({}, optional={"name": NAMES, "language": NAMES}) | ODD
CONTENT = {
    "type": st.sampled_from(["template", "Template", "text"]) | ODD,
    "content": st.fixed_dictionaries({}, optional={"template": TEMPLATE}) | ODD,
}
USER = st.fixed_dictionaries({"msisdn": PHONES}, optional={"country": COUNTRIES}) | ODD
CHAT_ONE = st.fixed_dictionaries({"user": USER}, optional=CONTENT)
CHAT_MANY = st.fixed_dictionaries(
    {"messages": st.lists(CHAT_ONE | ODD, min_size=1, max_size=3) | ODD},
    optional={"template": st.fixed_dictionaries({}, optional=CONTENT) | ODD},
)
SMS_ONE = st.fixed_dictionaries(
    {"destination": PHONES}, optional={"country": COUNTRIES, "clientIp": IPS}
)
SMS_MANY = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(SMS_ONE | ODD, max_size=3) | ODD,
        "destinations": st.lists(PHONES, max_size=3) | ODD,
        "template": st.fixed_dictionaries({}, optional={"country": COUNTRIES}) | ODD,
        "clientIp": IPS,
    },
)
SHAPES = [
    pytest.param(route, shape, id=route.name)
    for route, shape in [
        (CHAT_SEND, CHAT_ONE),
        (CHAT_BATCH, CHAT_MANY),
        (SMS_SEND, SMS_ONE),
        (SMS_BATCH, SMS_MANY),
        (VERIFY, SMS_ONE),
    ]
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_parse_arbitrary_bytes_returns_or_refuses(route: Route, raw: bytes) -> None:
    try:
        parse(route, raw)
    except GatewayError as exc:
        assert exc.code == "request.invalid"


@pytest.mark.parametrize(("route", "shape"), SHAPES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_parse_arbitrary_json_returns_or_refuses(
    route: Route, shape: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    raw = json.dumps(data.draw(shape | JSON, label="body")).encode()
    try:
        parsed = parse(route, raw)
    except GatewayError as exc:
        assert exc.code == "request.invalid"
        assert isinstance(exc.extra.get("field"), str)
        return
    for check in parsed.messages:
        assert check.msisdn.startswith("+")
        assert check.msisdn[1:].isdigit()


def test_only_send_bodies_refuse_a_key_twice() -> None:
    raw = b'{"text": "STOP", "text": "STOP"}'
    assert decode_object(raw) == {"text": "STOP"}  # webhooks: a STOP is never lost to it
    with pytest.raises(GatewayError):
        decode_object(raw, unique_keys=True)


SURVEY = Route("sms", Kind.SEND, "acme_main", "/api/v1/subaccounts/acme_main/surveys/s1/messages")
SURVEY_BATCH = Route(
    "sms", Kind.BATCH, "acme_main", "/api/v1/subaccounts/acme_main/surveys/s1/messages/batch"
)


def test_a_survey_is_sms_shaped_without_text() -> None:
    body = {"destination": "+6591234567", "templateBody": "Rate us {{url:}}"}
    assert parse(SURVEY, orjson.dumps(body)).messages == (MessageCheck("+6591234567"),)


def test_a_survey_batch_reads_messages_only_as_8x8_does() -> None:
    # BatchSurveyRequest has no `destinations`: 8x8 sends to none of them, nor do we check them
    body = {
        "messages": [{"destination": "+6591234567"}, {"destination": "12"}],
        "destinations": ["+6598765432"],
        "template": {"templateBody": "Rate us {{url:}}"},
    }
    parsed = parse(SURVEY_BATCH, orjson.dumps(body))
    assert parsed.messages == (MessageCheck("+6591234567"),)
    assert [index for index, _ in parsed.invalid] == [1]
