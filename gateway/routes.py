"""Which gateway paths are 8x8 operations, and where they go.

The first path segment names the product; the rest is 8x8's own path, forwarded exactly as
the caller wrote it. `OPERATIONS` lists every operation of 8x8's chat-apps, SMS, Verify
and Contacts APIs (derived from 8x8's OpenAPI files, 2026-07) by method and path template;
anything else is 404 `route.unknown` and never reaches 8x8.

Segments are percent-decoded for matching, so a subaccount id may hold any character 8x8
allows (`&` written `%26`). A segment that decodes to `.` or `..`, holds a `;` (`..;`
tricks servers that strip path parameters), a `/`, a `\\` or a control character, or is
not valid percent-encoded UTF-8, matches nothing: what 8x8 (or a proxy before it) would
resolve differently from the gateway is not forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

PRODUCTS = ("chatapps", "sms", "verify", "contacts")
SUBACCOUNT_ID = re.compile(r"[A-Za-z0-9\-._&]{3,50}")  # 8x8's subAccountId pattern
_BAD_SEGMENT = re.compile(r"[;/\\\x00-\x1f\x7f]")
_ESCAPES = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a '%' that starts no escape


class Kind(StrEnum):
    SEND = "send"  # one message: the recipient checks apply
    BATCH = "batch"  # a batch of messages
    VERIFY = "verify"  # a Verify session: an OTP
    OTHER = "other"  # any other operation: subaccount and egress-IP buckets only
    READ = "other"  # the name before every operation was proxied (an alias of OTHER)


@dataclass(frozen=True, slots=True)
class Route:
    product: str  # chatapps | sms | verify | contacts: the upstream.urls key
    kind: Kind
    subaccount: str | None  # decoded `{subAccountId}` of the path, if any
    path: str  # 8x8's path (after the product prefix), raw as the caller wrote it
    account: str | None = None  # decoded `{accountId}` of /accounts/{accountId}/ paths
    op: str = ""  # the operation's short name, e.g. "templates.list"

    @property
    def name(self) -> str:
        """A low-cardinality label for logs and metrics."""
        return f"{self.product}.{self.op or self.kind}"


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    product: str
    template: str  # 8x8's path template: {sub}, {account} and {name} placeholders
    kind: Kind
    op: str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.split("/")[1:])


_SUB = "/api/v1/subaccounts/{sub}"
_ACCT = "/api/v1/accounts/{account}"
_CHANNEL = f"{_ACCT}/channels/{{channel}}"
_WA = "/api/v1/whatsapp/subaccounts/{sub}/channels/{channel}"
_V2 = "/api/v2/subaccounts/{sub}"


def _ops(product: str, *rows: tuple[str, str, str] | tuple[str, str, str, Kind]) -> list[Operation]:
    out = []
    for row in rows:
        method, template, op = row[0], row[1], row[2]
        kind = row[3] if len(row) == 4 else Kind.OTHER
        out.append(Operation(method, product, template, kind, op))
    return out


OPERATIONS: tuple[Operation, ...] = (
    *_ops(
        "chatapps",
        ("POST", f"{_SUB}/messages", "send", Kind.SEND),
        ("POST", f"{_SUB}/messages/batch", "batch", Kind.BATCH),
        ("POST", f"{_SUB}/lon", "lon", Kind.SEND),
        ("POST", f"{_SUB}/lon/batch", "lon_batch", Kind.BATCH),
        ("POST", f"{_SUB}/events", "events"),
        ("POST", f"{_SUB}/messages/{{umid}}/read", "messages.read"),
        ("GET", f"{_SUB}/messages/{{umid}}", "messages.get"),
        ("DELETE", f"{_SUB}/messages/{{umid}}", "messages.cancel"),
        ("DELETE", f"{_SUB}/messages/batch/{{batchId}}", "batch.cancel"),
        ("POST", f"{_SUB}/messages/exports", "exports.start"),
        ("GET", f"{_SUB}/messages/exports/{{jobId}}", "exports.get"),
        ("DELETE", f"{_SUB}/messages/exports/{{jobId}}", "exports.cancel"),
        ("POST", f"{_SUB}/files", "files.upload"),
        ("GET", "/files/{filename}", "files.download"),
        ("GET", f"{_CHANNEL}/templates", "templates.list"),
        ("POST", f"{_CHANNEL}/templates", "templates.create"),
        ("DELETE", f"{_CHANNEL}/templates/{{templateName}}", "templates.delete"),
        ("GET", f"{_CHANNEL}/flows", "flows.list"),
        ("POST", f"{_CHANNEL}/flows", "flows.create"),
        ("GET", f"{_CHANNEL}/flows/{{flowId}}", "flows.get"),
        ("PUT", f"{_CHANNEL}/flows/{{flowId}}", "flows.update"),
        ("DELETE", f"{_CHANNEL}/flows/{{flowId}}", "flows.delete"),
        ("GET", f"{_CHANNEL}/flows/{{flowId}}/preview", "flows.preview"),
        ("POST", f"{_CHANNEL}/flows/{{flowId}}/publish", "flows.publish"),
        ("POST", f"{_CHANNEL}/flows/{{flowId}}/deprecate", "flows.deprecate"),
        ("GET", f"{_WA}/callPermissions", "call_permissions"),
        ("POST", f"{_WA}/directSend/sample", "direct_send.sample"),
        ("GET", f"{_ACCT}/webhooks", "webhooks.list"),
        ("POST", f"{_ACCT}/webhooks", "webhooks.add"),
        ("DELETE", f"{_ACCT}/webhooks", "webhooks.delete"),
        ("GET", f"{_ACCT}/usage/messages", "usage"),
    ),
    *_ops(
        "sms",
        ("POST", f"{_SUB}/messages", "send", Kind.SEND),
        ("POST", f"{_SUB}/messages/batch", "batch", Kind.BATCH),
        ("POST", f"{_SUB}/surveys/{{surveyId}}/messages", "survey", Kind.SEND),
        ("POST", f"{_SUB}/surveys/{{surveyId}}/messages/batch", "survey_batch", Kind.BATCH),
        ("GET", f"{_SUB}/messages/{{umid}}", "messages.get"),
        ("DELETE", f"{_SUB}/messages/{{umid}}", "messages.cancel"),
        ("DELETE", f"{_SUB}/messages/batch/{{batchId}}", "batch.cancel"),
        ("POST", f"{_SUB}/messages/{{umid}}/feedback", "feedback"),
        ("DELETE", f"{_SUB}/messages/{{umid}}/pii", "pii.delete"),
        ("POST", f"{_SUB}/messages/exports", "exports.start"),
        ("GET", f"{_SUB}/messages/exports/{{jobId}}", "exports.get"),
        ("DELETE", f"{_SUB}/messages/exports/{{jobId}}", "exports.cancel"),
        ("GET", f"{_ACCT}/prices", "prices"),
        ("GET", f"{_ACCT}/balance", "balance"),
        ("GET", f"{_ACCT}/webhooks", "webhooks.list"),
        ("POST", f"{_ACCT}/webhooks", "webhooks.add"),
        ("DELETE", f"{_ACCT}/webhooks", "webhooks.delete"),
    ),
    *_ops(
        "verify",
        ("POST", f"{_V2}/sessions", "verify", Kind.VERIFY),
        ("GET", f"{_V2}/sessions/{{sessionId}}", "sessions.validate"),
        ("POST", f"{_V2}/sma/coverage", "sma.coverage"),
    ),
    *_ops(
        "contacts",
        ("GET", f"{_ACCT}/contacts", "contacts.search"),
        ("POST", f"{_ACCT}/contacts", "contacts.create"),
        ("POST", f"{_ACCT}/contacts/blacklist/{{msisdn}}", "contacts.blacklist"),
        ("GET", f"{_ACCT}/contacts/{{contactId}}", "contacts.get"),
        ("DELETE", f"{_ACCT}/contacts/{{contactId}}", "contacts.delete"),
        ("PATCH", f"{_ACCT}/contacts/{{contactId}}", "contacts.update"),
        ("GET", f"{_ACCT}/groups", "groups.search"),
        ("POST", f"{_ACCT}/groups", "groups.create"),
        ("GET", f"{_ACCT}/groups/{{groupId}}", "groups.get"),
        ("DELETE", f"{_ACCT}/groups/{{groupId}}", "groups.delete"),
        ("PATCH", f"{_ACCT}/groups/{{groupId}}", "groups.update"),
        ("POST", f"{_ACCT}/groups/{{groupId}}/contacts", "groups.add_contacts"),
        ("DELETE", f"{_ACCT}/groups/{{groupId}}/contacts", "groups.remove_contacts"),
        ("POST", f"{_ACCT}/contacts/batches/createContacts", "batches.create_contacts"),
        ("POST", f"{_ACCT}/contacts/batches/deleteContacts", "batches.delete_contacts"),
        ("POST", f"{_ACCT}/groups/batches/copyContacts", "batches.copy_contacts"),
        ("POST", f"{_ACCT}/groups/batches/moveContacts", "batches.move_contacts"),
        ("POST", f"{_ACCT}/groups/batches/deleteGroups", "batches.delete_groups"),
        ("GET", f"{_ACCT}/batches", "batches.list"),
        ("GET", f"{_ACCT}/batches/{{batchId}}", "batches.get"),
    ),
)


def _specificity(op: Operation) -> tuple[int, ...]:
    # a literal segment beats a placeholder at the same place (`messages/batch/{batchId}`
    # before `messages/{umid}/pii` for DELETE .../messages/batch/pii)
    return tuple(0 if s.startswith("{") else 1 for s in op.segments)


def _index(ops: tuple[Operation, ...]) -> dict[tuple[str, str, int], tuple[Operation, ...]]:
    table: dict[tuple[str, str, int], list[Operation]] = {}
    for op in ops:
        table.setdefault((op.method, op.product, len(op.segments)), []).append(op)
    return {
        key: tuple(sorted(found, key=_specificity, reverse=True)) for key, found in table.items()
    }


_TABLE = _index(OPERATIONS)


def decode_segment(raw: str) -> str | None:
    """A path segment as 8x8 reads it, or None when it must match nothing."""
    if "%" in raw:
        if _ESCAPES.search(raw):
            return None
        try:
            value = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
    else:
        value = raw
    if not value or value in (".", "..") or _BAD_SEGMENT.search(value):
        return None
    return value


def match(method: str, raw_path: str) -> Route | None:
    """The route for a request's method and raw (undecoded, query-less) path, if proxied."""
    product, sep, rest = raw_path[1:].partition("/")
    if not raw_path.startswith("/") or not sep:
        return None
    raws = rest.split("/")
    candidates = _TABLE.get((method, product, len(raws)))
    if candidates is None:
        return None
    decoded = []
    for raw in raws:
        value = decode_segment(raw)
        if value is None:
            return None
        decoded.append(value)
    for op in candidates:
        found = _bind(op.segments, decoded)
        if found is not None:
            sub, account = found
            return Route(product, op.kind, sub, "/" + rest, account, op.op)
    return None


def _bind(template: tuple[str, ...], segments: list[str]) -> tuple[str | None, str | None] | None:
    """(subaccount, account) when `segments` fit the template, else None."""
    sub = account = None
    for want, got in zip(template, segments, strict=True):
        if want == "{sub}":
            if not SUBACCOUNT_ID.fullmatch(got):
                return None
            sub = got
        elif want == "{account}":
            account = got
        elif not want.startswith("{") and want != got:
            return None
    return sub, account
