"""The admin API (/admin/v1/...): opt-outs, consent, erasure, templates, limits.

Every route takes `Authorization: Bearer <admin token>` (none configured: 401) and answers
JSON; PUT and DELETE answer 204 (DELETE of an absent record too); a GET of an absent record
is 404 `not_found`. Phone numbers in paths are matched by their E.164 form (`?country=`
allows a national spelling). Answers never carry a secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway import dryrun, optoutpush, scheduled, templatesync
from gateway.errors import GatewayError, error_response, now_rfc3339
from gateway.logs import mask
from gateway.messages import invalid, normalise
from gateway.policy.decider import is_store_failure
from gateway.policy.guard import refusal
from gateway.state import LOG, STATE, State
from gateway.store.base import BucketSpec, ConsentRecord, TemplateRecord
from gateway.webhooks import ACCOUNT, read_object, record_optout

PREFIX = "/admin/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CHUNK = 64 * 1024  # NDJSON export: bytes gathered per write
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_CATEGORY = re.compile(r"[A-Za-z_]{1,64}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, State], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    """Register the admin routes on `app` (before the proxy's catch-all)."""
    templatesync.install(app)
    scheduled.install(app)
    add = app.router.add_route
    account = PREFIX + "/accounts/{account}"
    for method, path, name, action in (
        ("PUT", "/optouts/{msisdn}", "optouts", optout_put),
        ("DELETE", "/optouts/{msisdn}", "optouts", optout_delete),
        ("GET", "/optouts/{msisdn}", "optouts", optout_get),
        ("GET", "/optouts", "optouts.list", optout_list),
        ("PUT", "/consents/{msisdn}", "consents", consent_put),
        ("DELETE", "/consents/{msisdn}", "consents", consent_delete),
        ("GET", "/consents/{msisdn}", "consents", consent_get),
        ("GET", "/consents", "consents.export", consent_export),
        ("DELETE", "/people/{msisdn}", "people", person_erase),
        ("PUT", "/templates/{name}/{language}", "templates", template_put),
        ("GET", "/templates/{name}/{language}", "templates", template_get),
    ):
        add(method, account + path, _admin(name, action))
    add("GET", PREFIX + "/limits", _admin("limits", limits))
    add("POST", PREFIX + "/decide", _admin("decide", dryrun.decide))  # docs/lanes.md


def _admin(name: str, action: Action) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        request[LOG]["route"] = f"admin.{name}"
        try:
            state.guard.check(request, state.secrets["admin"])
            return await action(request, state)
        except GatewayError as exc:
            return refusal(exc)
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            state.log.warning("admin.store_failed", route=name, error=type(exc).__name__)
            return error_response("store.unavailable", "the store is unavailable")

    return handle


# --- request pieces ------------------------------------------------------------------------


def _account(request: web.Request) -> str:
    account = request.match_info["account"]
    if not ACCOUNT.fullmatch(account):
        raise invalid("account", "not an 8x8 account id")
    return account


def _msisdn(request: web.Request) -> str:
    msisdn = normalise(request.match_info["msisdn"], request.query.get("country"), "msisdn")
    request[LOG]["msisdn"] = msisdn
    return msisdn


def _page(request: web.Request) -> tuple[str | None, int]:
    """(the store's cursor, limit). Cursors go out base64url-wrapped: opaque and URL-safe
    whatever the store's own cursor looks like."""
    cursor = request.query.get("cursor") or None
    if cursor is not None:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            cursor = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid("cursor", "not a cursor this API gave out") from exc
        if len(cursor) > 1024:
            raise invalid("cursor", "not a cursor this API gave out")
    raw = request.query.get("limit", "")
    if not raw:
        return cursor, DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return cursor, int(raw)


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _not_found(what: str) -> web.Response:
    return error_response("not_found", f"no such {what}")


def _done() -> web.Response:
    return web.Response(status=204)


# --- opt-outs ------------------------------------------------------------------------------


async def optout_put(request: web.Request, state: State) -> web.StreamResponse:
    """An opt-out as of now (it wins over any older STOP/START event still to arrive); the
    person's pending scheduled sends are cancelled."""
    account, msisdn = _account(request), _msisdn(request)
    await record_optout(state, account, [msisdn], True, None)
    optoutpush.push(request.app, account, msisdn)
    scheduled.cancel_for(request.app, account, [msisdn])
    return _done()


async def optout_delete(request: web.Request, state: State) -> web.StreamResponse:
    account, msisdn = _account(request), _msisdn(request)
    await record_optout(state, account, [msisdn], False, None)
    return _done()


async def optout_get(request: web.Request, state: State) -> web.StreamResponse:
    msisdn = _msisdn(request)
    if not await state.store.optout_contains(_account(request), msisdn):
        return _not_found("opt-out")
    return _json({"msisdn": msisdn})


async def optout_list(request: web.Request, state: State) -> web.StreamResponse:
    account = _account(request)
    cursor, limit = _page(request)
    try:
        items, nxt = await state.store.optout_list(account, cursor, limit)
    except ValueError as exc:
        raise invalid("cursor", "not a cursor this API gave out") from exc
    if nxt is not None:
        nxt = base64.urlsafe_b64encode(nxt.encode()).decode().rstrip("=")
    return _json({"items": [{"msisdn": m} for m in items], "next": nxt})


# --- consent -------------------------------------------------------------------------------


def consent_record(msisdn: str, body: dict[str, Any]) -> ConsentRecord:
    """A validated consent record; categories upper-cased, duplicates dropped."""
    source = body.get("source")
    if not isinstance(source, str) or not source.strip() or len(source) > 1000:
        raise invalid("source", "source must be a non-empty string (what the person did)")
    cats = body.get("categories")
    cats = cats if isinstance(cats, list) and cats else [None]
    if not all(isinstance(c, str) and _CATEGORY.fullmatch(c) for c in cats):
        raise invalid("categories", 'categories must be a non-empty list like ["MARKETING"]')
    stamp = body.get("timestamp")
    stamp = stamp if isinstance(stamp, str) and _RFC3339.fullmatch(stamp) else None
    if stamp is None or templatesync.instant(stamp) is None:
        raise invalid("timestamp", "timestamp must be RFC 3339, e.g. 2025-01-31T09:30:00Z")
    categories = tuple(dict.fromkeys(c.upper() for c in cats))
    return ConsentRecord(msisdn, source.strip(), categories, stamp)


def consent_json(record: ConsentRecord) -> dict[str, Any]:
    return {"msisdn": record.msisdn, "source": record.source,
            "categories": list(record.categories), "timestamp": record.timestamp}  # fmt: skip


async def consent_put(request: web.Request, state: State) -> web.StreamResponse:
    account, msisdn = _account(request), _msisdn(request)
    record = consent_record(msisdn, await read_object(request))
    await state.store.consent_put(account, record)
    if state.snapshot is not None:
        state.snapshot.note_consent(account, msisdn, record.categories)
    return _done()


async def consent_delete(request: web.Request, state: State) -> web.StreamResponse:
    """Noted in this worker's snapshot before and after the write, as an opt-out is."""
    account, msisdn = _account(request), _msisdn(request)
    if state.snapshot is not None:
        state.snapshot.note_consent(account, msisdn, None)
    await state.store.consent_delete(account, msisdn)
    if state.snapshot is not None:
        state.snapshot.note_consent(account, msisdn, None)
    return _done()


async def consent_get(request: web.Request, state: State) -> web.StreamResponse:
    msisdn = _msisdn(request)
    record = await state.store.consent_get(_account(request), msisdn)
    return _not_found("consent") if record is None else _json(consent_json(record))


async def consent_export(request: web.Request, state: State) -> web.StreamResponse:
    """Every record of the account, one JSON object a line, streamed. A store failure
    before the first byte is a 503; after it the connection is cut, so the reader sees a
    truncated chunked body rather than a short export that looks complete."""
    account = _account(request)
    records = state.store.consent_export(account).__aiter__()
    record = await anext(records, None)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    count = 0
    try:
        chunk = bytearray()
        while record is not None:
            chunk += orjson.dumps(consent_json(record)) + b"\n"
            count += 1
            if len(chunk) >= _CHUNK:
                await response.write(bytes(chunk))
                chunk.clear()
            record = await anext(records, None)
        async for tombstone in state.store.erasures(account):  # after the records
            chunk += tombstone.encode() + b"\n"
            if len(chunk) >= _CHUNK:
                await response.write(bytes(chunk))
                chunk.clear()
        await response.write(bytes(chunk))
        await response.write_eof()
    except Exception as exc:
        state.log.error(
            "admin.export_failed", account=account, exported=count, error=type(exc).__name__
        )
        response.force_close()
        if request.transport is not None:
            request.transport.abort()
    request[LOG]["exported"] = count
    return response


# --- erasure -------------------------------------------------------------------------------


async def person_erase(request: web.Request, state: State) -> web.StreamResponse:
    """Erase a person's consent records (their right to erasure). The export keeps a
    tombstone with no PII (the masked number and when) as proof; an
    opt-out is kept as it is: the suppression is what erasure must not undo."""
    account, msisdn = _account(request), _msisdn(request)
    if state.snapshot is not None:
        state.snapshot.note_consent(account, msisdn, None)
    tombstone = {"msisdn": mask(msisdn), "erased": now_rfc3339()}
    found = await state.store.person_erase(account, msisdn, orjson.dumps(tombstone).decode())
    if state.snapshot is not None:
        state.snapshot.note_consent(account, msisdn, None)
    request[LOG]["erased"] = int(found)
    return _done()


# --- templates -----------------------------------------------------------------------------


def _template_key(request: web.Request) -> tuple[str, str]:
    name, language = request.match_info["name"], request.match_info["language"]
    if not name or len(name) > 512:
        raise invalid("name", "template name must be 1 to 512 characters")
    if not language or len(language) > 32 or ":" in language:
        raise invalid("language", "not a language code")
    return name, language


def _optional_word(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise invalid(key, f"{key} must be a non-empty string or null")
    return value.strip().upper()


async def template_put(request: web.Request, state: State) -> web.StreamResponse:
    """Set a template's status (and category, quality): fields left out keep their stored
    value, `null` clears one. The admin's word wins whatever the stored updatedAt."""
    account = _account(request)
    name, language = _template_key(request)
    body = await read_object(request)
    status = _optional_word(body, "status")
    if status is None:
        raise invalid("status", "status is required, e.g. APPROVED")
    category, quality = _optional_word(body, "category"), _optional_word(body, "quality")
    async with request.app[templatesync.LOCK]:
        stored = await state.store.template_get(account, name, language)
        if stored is not None:
            category = category if "category" in body else stored.category
            quality = quality if "quality" in body else stored.quality
        record = TemplateRecord(name, language, status, category, quality, now_rfc3339())
        await state.store.template_put(account, record)
        if state.snapshot is not None:
            state.snapshot.note_template(account, f"{name}:{language}", (status, category))
    return _done()


async def template_get(request: web.Request, state: State) -> web.StreamResponse:
    account = _account(request)
    name, language = _template_key(request)
    record = await state.store.template_get(account, name, language)
    if record is None:
        return _not_found("template")
    return _json({
        "name": record.name, "language": record.language, "status": record.status,
        "category": record.category, "quality": record.quality, "updatedAt": record.updated_at,
    })  # fmt: skip


# --- limits --------------------------------------------------------------------------------


async def limits(request: web.Request, state: State) -> web.StreamResponse:
    """The limits in force and the fill of the capacity buckets in use: every subaccount
    named in `[subaccounts.*]` or a client's `subaccounts`, and this host's egress IP."""
    cfg, plan = state.config, state.plan
    subs = sorted((set(cfg.subaccounts) | {s for c in cfg.clients for s in c.subaccounts}) - {"*"})
    named: list[tuple[str, str, BucketSpec]] = [
        ("subaccount", sub, plan.subaccount(sub)[1]) for sub in subs
    ]
    named.append(("egress_ip", cfg.limits.egress_ip, plan.egress))
    fills = await state.store.bucket_fill([spec for _, _, spec in named])
    buckets = [
        {"bucket": kind, "id": ident, "remaining": fill.remaining,
         "reset_s": round(fill.reset_us / 1_000_000, 3)}
        for (kind, ident, _), fill in zip(named, fills, strict=True)
    ]  # fmt: skip
    return _json({"limits": plan.all_buckets(), "buckets": buckets})
