"""Reading send bodies: decode once, find every recipient, normalise it to E.164.

The body goes upstream as the caller wrote it; what is read here only feeds the policy
(recipients, templates, the body's `clientIp`). A batch is expanded into its messages;
SMS `destinations[]` are recipients too, indexed after `messages[]`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import phonenumbers

from gateway.errors import INVALID_MSISDN, GatewayError
from gateway.routes import Kind, Route
from gateway.store.base import MessageCheck

MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class ParsedSend:
    body: Any  # the decoded JSON (None for a GET)
    messages: tuple[MessageCheck, ...]
    client_ip: str | None  # the body's clientIp (SMS, Verify)
    n_messages: int = 0  # in a batch, how many recipients come from `messages[]`


def preload() -> None:
    """Load every region's number metadata now (~70 ms, ~1.5 MB) rather than on the first
    send to each country, which would stall the event loop mid-traffic."""
    for region in phonenumbers.SUPPORTED_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_region(region)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)


def invalid(field: str, message: str, number: int | None = None) -> GatewayError:
    return GatewayError("request.invalid", message, number=number, field=field)


@lru_cache(maxsize=65_536)
def _e164(raw: str, country: str | None) -> str | None:
    try:
        if raw.startswith("+"):
            number = phonenumbers.parse(raw, None)
        elif country:
            number = phonenumbers.parse(raw, country.upper())
        else:
            number = phonenumbers.parse("+" + raw, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(raw: Any, country: Any, field: str) -> str:
    """E.164 form of a phone number in any of 8x8's accepted spellings."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 32:
        raise invalid(field, "a phone number is required", INVALID_MSISDN)
    if country is not None and (not isinstance(country, str) or len(country) != 2):
        raise invalid(
            field.rsplit(".", 1)[0] + ".country" if "." in field else "country",
            "country must be an ISO 3166-1 alpha-2 code",
        )
    e164 = _e164(raw.strip(), country)
    if e164 is None:
        raise invalid(field, "not a possible phone number", INVALID_MSISDN)
    return e164


def decode_object(raw: bytes) -> dict[str, Any]:
    """A body that must be one JSON object, or the 400 that answers it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", "body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise invalid("body", "body must be a JSON object")
    return body


def parse(route: Route, raw: bytes) -> ParsedSend:
    if route.kind is Kind.READ:
        return ParsedSend(None, (), None)
    body = decode_object(raw)
    if route.kind is Kind.VERIFY:
        msisdn = normalise(body.get("destination"), body.get("country"), "destination")
        return ParsedSend(body, (MessageCheck(msisdn, otp=True),), _client_ip(body))
    if route.product == "chatapps":
        if route.kind is Kind.SEND:
            return ParsedSend(body, (_chatapps_message(body, ""),), None)
        return _chatapps_batch(body)
    if route.kind is Kind.SEND:
        msisdn = normalise(body.get("destination"), body.get("country"), "destination")
        return ParsedSend(body, (MessageCheck(msisdn),), _client_ip(body))
    return _sms_batch(body)


def _client_ip(body: dict[str, Any]) -> str | None:
    value = body.get("clientIp")
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(value)) if isinstance(value, str) else _bad_ip()
    except ValueError:
        return _bad_ip()


def _bad_ip() -> str:
    raise invalid("clientIp", "clientIp must be an IP address")


def _chatapps_message(msg: Any, prefix: str) -> MessageCheck:
    if not isinstance(msg, dict):
        raise invalid(prefix.rstrip(".") or "body", "a message must be a JSON object")
    user = msg.get("user")
    if not isinstance(user, dict):
        raise invalid(f"{prefix}user", "user with msisdn is required")
    msisdn = normalise(user.get("msisdn"), user.get("country"), f"{prefix}user.msisdn")
    return MessageCheck(msisdn, template=_template_of(msg, prefix))


def _template_of(msg: dict[str, Any], prefix: str) -> str | None:
    kind = msg.get("type")
    if not isinstance(kind, str) or kind.lower() != "template":
        return None
    content = msg.get("content")
    tpl = content.get("template") if isinstance(content, dict) else None
    if not isinstance(tpl, dict):
        raise invalid(f"{prefix}content.template", "a template message needs content.template")
    name, language = tpl.get("name"), tpl.get("language")
    if not isinstance(name, str) or not name or len(name) > 512:
        raise invalid(f"{prefix}content.template.name", "template name is required")
    if not isinstance(language, str) or not language or len(language) > 32:
        raise invalid(f"{prefix}content.template.language", "template language is required")
    return f"{name}:{language}"


def _items(body: dict[str, Any], key: str, required: bool) -> list[Any]:
    items = body.get(key)
    if items is None and not required:
        return []
    if not isinstance(items, list) or (required and not items):
        raise invalid(key, f"{key} must be a non-empty array")
    if len(items) > MAX_BATCH:
        raise invalid(key, f"at most {MAX_BATCH} {key} per batch")
    return items


def _chatapps_batch(body: dict[str, Any]) -> ParsedSend:
    defaults = body.get("template")
    if defaults is not None and not isinstance(defaults, dict):
        raise invalid("template", "template must be a JSON object")
    checks = []
    for i, msg in enumerate(_items(body, "messages", required=True)):
        merged = {**defaults, **msg} if defaults and isinstance(msg, dict) else msg
        checks.append(_chatapps_message(merged, f"messages[{i}]."))
    return ParsedSend(body, tuple(checks), None, len(checks))


def _sms_batch(body: dict[str, Any]) -> ParsedSend:
    defaults = body.get("template")
    if defaults is not None and not isinstance(defaults, dict):
        raise invalid("template", "template must be a JSON object")
    country = (defaults or {}).get("country")
    messages = _items(body, "messages", required=False)
    destinations = _items(body, "destinations", required=False)
    if not messages and not destinations:
        raise invalid("messages", "messages or destinations must be a non-empty array")
    checks = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid(f"messages[{i}]", "a message must be a JSON object")
        merged = {**defaults, **msg} if defaults else msg
        field = f"messages[{i}].destination"
        checks.append(
            MessageCheck(normalise(merged.get("destination"), merged.get("country"), field))
        )
    for j, dest in enumerate(destinations):
        checks.append(MessageCheck(normalise(dest, country, f"destinations[{j}]")))
    return ParsedSend(body, tuple(checks), _client_ip(body), len(messages))


def without(parsed: ParsedSend, dropped: set[int]) -> bytes:
    """The batch body with the recipients at `dropped` indices taken out."""
    body = dict(parsed.body)
    offsets = {"messages": 0, "destinations": parsed.n_messages}
    for key, offset in offsets.items():
        items = body.get(key)
        if isinstance(items, list):
            kept = [item for i, item in enumerate(items) if i + offset not in dropped]
            if kept:
                body[key] = kept
            else:
                del body[key]  # 8x8 refuses an empty array; the other one still has recipients
    return orjson.dumps(body)
