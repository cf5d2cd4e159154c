"""Reading send bodies exactly as 8x8 will (INTERFACE.md), or refusing them.

One strict reader: the JSON is decoded once by orjson, and a body holding a key twice
anywhere is refused (8x8's reader and ours could each keep another copy). Every field the
gateway acts on is read with the JSON type, the presence and the exact spelling 8x8's
OpenAPI schema gives it (business_messaging_api.json, sms_api.json,
verification_api.json); what cannot be read that way is 400 `request.invalid` with
`field`. The body goes upstream as the caller wrote it.

A batch is read message by message. A message 8x8 would reject on its own (bad number,
empty destination, a field of the wrong type) is not a reason to refuse the batch, as
8x8 rejects it alone: it is kept in `ParsedSend.invalid` and dropped from the forwarded
body. `ParsedSend.entries` gives, for each `MessageCheck`, its index in the body (SMS
`destinations[]` are indexed after `messages[]`).

Recipients are E.164 numbers (gateway/numbers.py), or, for a chat-apps user given only by
a channel's user id, the identity `channel_user(channel, id)`: see its docstring.
Templates are keyed `name:language` in lower case (Meta's names are lower case; the
registry matches them case-insensitively).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import phonenumbers

from gateway.errors import INVALID_MSISDN, GatewayError
from gateway.numbers import NumberError, e164
from gateway.routes import Kind, Route
from gateway.store import keys
from gateway.store.base import MessageCheck

MAX_BATCH = 10_000

#: 8x8's message types (the schema's enum). Matched without regard to case, as 8x8's own
#: examples write "Text"; surrounding whitespace is refused.
CHAT_TYPES = frozenset(
    {"text", "audio", "video", "image", "location", "file", "interactive", "template"}
    | {"carousel", "richcard"}
)
#: Direct Send categories (the schema's enum) → the template category they are sent as.
DIRECT_SEND = {"utility": "UTILITY"}
#: The fields a chat-apps batch `template` may hold; 8x8 reads no other (no `user`).
CHAT_DEFAULTS = ("type", "content", "dlrCallbackUrl", "channels")
#: Likewise for an SMS batch `template`: no `country`, `destination` or `clientIp`.
SMS_DEFAULTS = ("source", "text", "encoding", "scheduled", "expiry", "dlrCallbackUrl")


@dataclass(frozen=True, slots=True)
class ParsedSend:
    body: Any  # the decoded JSON (None for a GET)
    messages: tuple[MessageCheck, ...]  # the messages read, to check
    client_ips: tuple[str, ...] = ()  # the body's clientIp strings (SMS, Verify), any text
    n_messages: int = 0  # in a batch, how many entries come from `messages[]`
    entries: tuple[int, ...] = ()  # batch: body index of each of `messages`
    invalid: tuple[tuple[int, GatewayError], ...] = field(default=())  # batch: dropped unread

    @property
    def total(self) -> int:
        """How many entries the batch holds (read or not)."""
        return len(self.messages) + len(self.invalid)

    @property
    def client_ip(self) -> str | None:
        return self.client_ips[0] if self.client_ips else None


def preload() -> None:
    """Load every region's number metadata now (~70 ms, ~1.5 MB) rather than on the first
    send to each country, which would stall the event loop mid-traffic."""
    for region in phonenumbers.SUPPORTED_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_region(region)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)


def invalid(field: str, message: str, number: int | None = None) -> GatewayError:
    return GatewayError("request.invalid", message, number=number, field=field)


def normalise(raw: Any, country: Any, field: str) -> str:
    """E.164 form of a phone number in any of 8x8's accepted spellings (admin, webhooks)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        raise invalid(field, "a phone number is required", INVALID_MSISDN)
    if country is not None and not isinstance(country, str):
        raise invalid(_sibling(field, "country"), "country must be a string")
    try:
        return e164(raw, country or None)
    except NumberError as exc:
        if exc.on_country:
            raise invalid(_sibling(field, "country"), str(exc)) from exc
        raise invalid(field, str(exc), INVALID_MSISDN) from exc


def _sibling(field: str, name: str) -> str:
    return field.rsplit(".", 1)[0] + "." + name if "." in field else name


def channel_user(channel: str, user_id: str) -> str:
    """The identity of a recipient known only by a channel's user id: `cu:<channel>:<id>`.

    8x8 takes `user.channelUserId` (WhatsApp's business-scoped user id, `US.1349...`) or
    `user.lineUserId` instead of `msisdn`; `msisdn` wins when both are given. The gateway
    then has no number, so it keys that person by this string, which the store treats as
    an opaque member like a number: opt-outs are recorded under it (an inbound STOP carries
    the same `channelUserId`, so the webhook records it under both), while consent, which
    is keyed by number, finds no record under it and a template send to it is refused
    `recipient.no_consent` under `opt_in = enforce`. `channel` is the lower-case channel
    name (`whatsapp` for `channelUserId`, `line` for `lineUserId`); the id is kept as
    written (8x8 documents it as case-sensitive). It cannot collide with a number, which
    always starts with `+`. The webhooks record an inbound STOP under the same key
    (`keys.channel_user_id`, the one place the format lives).
    """
    return keys.channel_user_id(channel, user_id)


# --- the JSON ----------------------------------------------------------------------------

# Every key of a JSON text ends in an unescaped quote, optional whitespace, then a colon:
# this counts at least one match per key (strings holding `":` add more, never fewer).
_KEY_END = re.compile(rb'"[ \t\n\r]*:')


def decode_object(raw: bytes, *, unique_keys: bool = False) -> dict[str, Any]:
    """A body that must be one JSON object, or the 400 that answers it. With `unique_keys`
    (send bodies: 8x8 must act on what was checked) a key twice in any object is a 400
    too; webhooks and the admin API read the last, as before."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", "body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise invalid("body", "body must be a JSON object")
    if unique_keys and len(_KEY_END.findall(raw)) != _count_keys(body):
        _refuse_duplicates(raw)  # a key twice, or only `":` inside a string: look closely
    return body


def _count_keys(value: Any) -> int:
    n, stack = 0, [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            n += len(item)
            stack.extend(v for v in item.values() if type(v) is dict or type(v) is list)
        else:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)
    return n


def _refuse_duplicates(raw: bytes) -> None:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise invalid(key, f"the key {key!r} appears twice in one object")
            seen[key] = value
        return seen

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except RecursionError as exc:  # nesting orjson took but Python's reader cannot
        raise invalid("body", "body nested too deeply") from exc


# --- typed fields ------------------------------------------------------------------------


def _get(obj: dict[str, Any], key: str, kind: type, path: str, *, required: bool = False) -> Any:
    """`obj[key]` if it has the JSON type `kind`; None when absent or null (optional)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(path + key, f"{key} is required")
        return None
    if type(value) is not kind:
        raise invalid(path + key, f"{key} must be a JSON {_JSON_NAMES[kind]}")
    return value


_JSON_NAMES = {str: "string", dict: "object", list: "array", bool: "boolean"}


def _exact(value: str, path: str) -> str:
    if value != value.strip() or not value:
        raise invalid(path, "no surrounding whitespace, not empty")
    return value


def _number(obj: dict[str, Any], key: str, country: str | None, path: str) -> str:
    raw = obj.get(key)
    if type(raw) is not str:
        raise invalid(path + key, f"{key} must be a phone number in a JSON string", INVALID_MSISDN)
    return normalise(raw, country, path + key)


# --- products ----------------------------------------------------------------------------


def parse(route: Route, raw: bytes) -> ParsedSend:
    if route.kind is Kind.READ:
        return ParsedSend(None, ())
    body = decode_object(raw, unique_keys=True)
    lon = route.path.endswith(("/lon", "/lon/batch"))
    if route.kind is Kind.VERIFY:
        return ParsedSend(body, (_sms_message(body, "", otp=True, text=False),), _ips(body, ""))
    if route.product == "chatapps":
        if route.kind is Kind.SEND:
            return ParsedSend(body, (_chat_message(body, "", typed=not lon),))
        return _chat_batch(body, typed=not lon)
    if "/surveys/" in route.path:  # SMS-shaped, `templateBody` not `text`, no clientIp
        if route.kind is Kind.SEND:
            return ParsedSend(body, (_sms_message(body, "", text=False),))
        return _survey_batch(body)
    if route.kind is Kind.SEND:
        return ParsedSend(body, (_sms_message(body, ""),), _ips(body, ""))
    return _sms_batch(body)


def _ips(body: dict[str, Any], path: str) -> tuple[str, ...]:
    value = _get(body, "clientIp", str, path)  # any string: 8x8 takes any
    return (value,) if value else ()


def _country(obj: dict[str, Any], path: str) -> str | None:
    country = _get(obj, "country", str, path)
    if country is not None and len(country) > 2:
        raise invalid(path + "country", "country is at most 2 characters")
    return country or None


def _sms_message(
    msg: Any, path: str, *, otp: bool = False, text: bool = True, defaults: Any = None
) -> MessageCheck:
    if type(msg) is not dict:
        raise invalid(path.rstrip(".") or "body", "a message must be a JSON object")
    country = _country(msg, path)
    msisdn = _number(msg, "destination", country, path)
    _get(msg, "clientIp", str, path)  # any string, but a string
    if text:
        own = _get(msg, "text", str, path)
        if own is None and (type(defaults) is not dict or type(defaults.get("text")) is not str):
            raise invalid(path + "text", "text is required")
    return MessageCheck(msisdn, otp=otp)


def _chat_message(
    msg: Any, path: str, *, typed: bool = True, shared: str | None = None
) -> MessageCheck:
    if type(msg) is not dict:
        raise invalid(path.rstrip(".") or "body", "a message must be a JSON object")
    recipient = _recipient(_get(msg, "user", dict, path, required=True), path + "user.")
    content = _get(msg, "content", dict, path, required=True)
    kind = _get(msg, "type", str, path, required=typed)
    if kind is not None and _exact(kind, path + "type").lower() not in CHAT_TYPES:
        raise invalid(path + "type", f"type must be one of {sorted(CHAT_TYPES)}")
    if kind is not None and kind.lower() == "template":
        return MessageCheck(recipient, template=_template_key(content, path + "content."))
    category = _direct_send(content, path + "content.") or shared
    return MessageCheck(recipient, category=category)


def _recipient(user: dict[str, Any], path: str) -> str:
    country = _country(user, path)
    ids = {k: _get(user, k, str, path) for k in ("channelUserId", "lineUserId")}
    if user.get("msisdn") is not None:
        return _number(user, "msisdn", country, path)
    for key, channel in (("channelUserId", "whatsapp"), ("lineUserId", "line")):
        if ids[key]:
            return channel_user(channel, _exact(ids[key], path + key))
    raise invalid(path + "msisdn", "user needs msisdn (or channelUserId)", INVALID_MSISDN)


def _template_key(content: dict[str, Any], path: str) -> str:
    tpl = _get(content, "template", dict, path, required=True)
    tpath = path + "template."
    name = _exact(_get(tpl, "name", str, tpath, required=True), tpath + "name")
    language = _exact(_get(tpl, "language", str, tpath, required=True), tpath + "language")
    if len(name) > 512 or len(language) > 32:
        raise invalid(tpath + "name", "template name or language too long")
    return f"{name}:{language}".lower()


def _direct_send(content: dict[str, Any], path: str) -> str | None:
    """The template category of a WhatsApp Direct Send (`content.whatsApp.directSend`)."""
    wa = _get(content, "whatsApp", dict, path)
    ds = _get(wa, "directSend", dict, path + "whatsApp.") if wa else None
    if ds is None:
        return None
    dpath = path + "whatsApp.directSend."
    category = _exact(_get(ds, "category", str, dpath, required=True), dpath + "category")
    found = DIRECT_SEND.get(category.lower())
    if found is None:
        raise invalid(dpath + "category", f"category must be one of {sorted(DIRECT_SEND)}")
    return found


# --- batches -----------------------------------------------------------------------------


def _items(body: dict[str, Any], key: str, required: bool) -> list[Any]:
    items: list[Any] | None = _get(body, key, list, "")
    if items is None and not required:
        return []
    if not items:
        raise invalid(key, f"{key} must be a non-empty array")
    if len(items) > MAX_BATCH:
        raise invalid(key, f"at most {MAX_BATCH} {key} per batch")
    return items


def _defaults(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    tpl = _get(body, "template", dict, "")
    return {k: tpl[k] for k in names if k in tpl and tpl[k] is not None} if tpl else {}


class _Batch:
    """Collects a batch's messages: each read, or kept as the reason 8x8 rejects it."""

    def __init__(self) -> None:
        self.checks: list[MessageCheck] = []
        self.entries: list[int] = []
        self.invalid: list[tuple[int, GatewayError]] = []

    def read(self, index: int, read: Callable[[], MessageCheck]) -> bool:
        try:
            self.checks.append(read())
        except GatewayError as exc:
            self.invalid.append((index, exc))
            return False
        self.entries.append(index)
        return True

    def parsed(self, body: Any, ips: tuple[str, ...], n_messages: int) -> ParsedSend:
        return ParsedSend(
            body, tuple(self.checks), ips, n_messages, tuple(self.entries), tuple(self.invalid)
        )


def _chat_batch(body: dict[str, Any], *, typed: bool) -> ParsedSend:
    defaults = _defaults(body, CHAT_DEFAULTS)
    _check_defaults(defaults)
    # a Direct Send named by the batch's `template` applies even where a message has its
    # own `content` (the stricter of the two readings; docs/reading.md)
    content = defaults.get("content")
    shared = _direct_send(content, "template.content.") if content else None
    batch = _Batch()
    for i, msg in enumerate(_items(body, "messages", required=True)):
        merged = {**defaults, **msg} if type(msg) is dict else msg
        path = f"messages[{i}]."
        batch.read(i, partial(_chat_message, merged, path, typed=typed, shared=shared))
    return batch.parsed(body, (), len(body["messages"]))


def _check_defaults(defaults: dict[str, Any]) -> None:
    """A batch `template` field of the wrong type refuses the batch: it is every message's."""
    if "content" in defaults and type(defaults["content"]) is not dict:
        raise invalid("template.content", "content must be a JSON object")
    if "type" in defaults and type(defaults["type"]) is not str:
        raise invalid("template.type", "type must be a JSON string")
    if "text" in defaults and type(defaults["text"]) is not str:
        raise invalid("template.text", "text must be a JSON string")


def _sms_batch(body: dict[str, Any]) -> ParsedSend:
    defaults = _defaults(body, SMS_DEFAULTS)
    _check_defaults(defaults)
    messages = _items(body, "messages", required=False)
    destinations = _items(body, "destinations", required=False)
    if not messages and not destinations:
        raise invalid("messages", "messages or destinations must be a non-empty array")
    ips = list(_ips(body, ""))
    batch = _Batch()
    for i, msg in enumerate(messages):
        path = f"messages[{i}]."
        if batch.read(i, partial(_sms_message, msg, path, defaults=defaults)):
            ips.extend(_ips(msg, path))
    n = len(messages)
    for j, dest in enumerate(destinations):
        batch.read(n + j, partial(_destination, dest, f"destinations[{j}]"))
    return batch.parsed(body, tuple(dict.fromkeys(ips)), n)


def _survey_batch(body: dict[str, Any]) -> ParsedSend:
    """A survey batch: `messages[]` only (8x8's BatchSurveyRequest has no `destinations`)."""
    _defaults(body, ())
    batch = _Batch()
    messages = _items(body, "messages", required=True)
    for i, msg in enumerate(messages):
        batch.read(i, partial(_sms_message, msg, f"messages[{i}].", text=False))
    return batch.parsed(body, (), len(messages))


def _destination(dest: Any, path: str) -> MessageCheck:
    """An SMS batch `destinations[]` entry: a number without a country (8x8 reads none)."""
    if type(dest) is not str:
        raise invalid(path, "a destination must be a phone number in a JSON string", INVALID_MSISDN)
    return MessageCheck(normalise(dest, None, path))


def without(parsed: ParsedSend, dropped: set[int]) -> bytes:
    """The batch body with the entries at body indices `dropped` taken out."""
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
