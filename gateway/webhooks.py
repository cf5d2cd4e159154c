"""8x8's webhooks: inbound messages (STOP/START keywords change opt-outs) and WhatsApp
template status, quality and category updates.

Both take the webhook secret as a Bearer token, a Basic-auth password or `?token=`
(gateway/policy/guard.py: the right secret always passes). An event takes effect before
its 200 is sent. The answer is `{"status": "ok", "effect": ...}` for every well-formed
event, including those that change nothing (other event types, non-text messages, texts
that are no keyword, `stale` events). Malformed JSON, a body that is not an object, and a
template event missing what it needs are 400 `request.invalid`; a store that fails is 503
`store.unavailable`, so 8x8 retries the event (1, 10, 30, 90 s) instead of losing a STOP.

STOP and START apply in the order they happened, not the order they arrive: the store
keeps the time of each identity's last change (`Store.optout_event`), and an event stamped
earlier (its payload `timestamp`, at most FUTURE_SKEW_US ahead of this host's clock; none:
now) is answered `stale`. A chat-apps sender is recorded under its E.164 number and its
channel user (`keys.channel_user_id`). A STOP also queues the number for 8x8's blacklist
(`policy.push_optouts`) and cancels the person's scheduled sends (gateway/scheduled.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any, TypeGuard

import orjson
from aiohttp import web

from gateway import optoutpush, scheduled, templatesync
from gateway.bodies import read_body
from gateway.errors import GatewayError, error_response, now_rfc3339
from gateway.messages import decode_object, invalid, normalise
from gateway.policy.decider import is_store_failure
from gateway.policy.guard import refusal
from gateway.state import LOG, STATE, State
from gateway.store import keys
from gateway.store.gcra import instant_us

INBOUND = "/webhooks/inbound"
TEMPLATES = "/webhooks/templates"

ACCOUNT = re.compile(r"[A-Za-z0-9\-._&]{1,100}")  # no braces: account ids sit in hash tags
_NAMESPACES = frozenset({"chatapps", "sms"})
_TEMPLATE_EVENTS = frozenset(
    {"template_status_update", "template_quality_update", "template_category_update"}
)
FUTURE_SKEW_US = 300_000_000  # an event's timestamp may be this far ahead of our clock
ADVISORY = "template_correct_category_detection"  # Meta's hint only: the category stays
# otherInfo.title of a status update → the status stored (INTERFACE.md; the pauses need a
# manual or timed unpause, UNPAUSE makes the template sendable again)
TITLES = {
    "DISABLED": "DISABLED",
    "FIRST_PAUSE": "PAUSED",
    "SECOND_PAUSE": "PAUSED",
    "RATE_LIMITING_PAUSE": "PAUSED",
    "UNPAUSE": "APPROVED",
}

Apply = Callable[[web.Request, State, dict[str, Any]], Awaitable[str]]


def setup(app: web.Application) -> None:
    """Register the webhook routes and the background work (the opt-out push worker and
    the template sync, both started and stopped with the app through cleanup_ctx)."""
    templatesync.install(app)
    optoutpush.install(app)
    scheduled.install(app)
    app.cleanup_ctx.append(templatesync.lifecycle)
    app.router.add_post(INBOUND, _handler("inbound", apply_inbound))
    app.router.add_post(TEMPLATES, _handler("templates", apply_template))


def _handler(kind: str, apply: Apply) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        info = request[LOG]
        info["route"] = f"webhooks.{kind}"
        try:
            state.guard.check(request, state.secrets["webhook"], webhook=True)
            body = await read_object(request)
            effect = await apply(request, state, body)
        except GatewayError as exc:
            _count(state, kind, "refused" if exc.code.startswith(("auth", "rate")) else "invalid")
            return refusal(exc)
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            _count(state, kind, "store_failed")
            state.log.warning("webhook.store_failed", kind=kind, error=type(exc).__name__)
            return error_response("store.unavailable", "the store is unavailable; retry")
        _count(state, kind, effect)
        info["decision"] = info["effect"] = effect
        return web.Response(
            body=orjson.dumps({"status": "ok", "effect": effect}), content_type="application/json"
        )

    return handle


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object, or the GatewayError that answers it."""
    server = request.app[STATE].config.server
    return decode_object(await read_body(request, server.max_body_bytes, server.body_timeout_s))


def _count(state: State, kind: str, effect: str) -> None:
    state.metrics.webhooks.labels(kind, effect).inc()


# --- inbound messages ----------------------------------------------------------------------


def keyword_form(text: str) -> str:
    """What keywords are compared as: trimmed, inner whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


@lru_cache(maxsize=16)
def _keywords(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(keyword_form(w) for w in words) - {""}


def message_text(payload: dict[str, Any]) -> str | None:
    """The text of an inbound message: `content.text` (chat apps), `body` (SMS), `text`,
    or the title of a tapped WhatsApp reply button."""
    content = payload.get("content")
    content = content if isinstance(content, dict) else {}
    interactive = content.get("interactive")
    reply = interactive.get("button_reply") if isinstance(interactive, dict) else None
    for value in (
        content.get("text"),
        payload.get("body"),
        payload.get("text"),
        reply.get("title") if isinstance(reply, dict) else None,
    ):
        if isinstance(value, str):
            return value
    return None


def _sender(namespace: str, payload: dict[str, Any]) -> str | None:
    """The E.164 number of whoever sent the message; None when there is none usable."""
    user = payload.get("user")
    user = user if isinstance(user, dict) else {}
    raw = user.get("msisdn") if namespace == "chatapps" else payload.get("source")
    country = user.get("country") if namespace == "chatapps" else payload.get("country")
    if not (isinstance(country, str) and len(country) == 2):
        country = None
    try:
        return normalise(raw, country, "msisdn")
    except GatewayError:
        return None


def identities(namespace: str, payload: dict[str, Any]) -> list[str]:
    """Every identity an inbound message's sender is known by: the E.164 number, and for
    chat apps the channel user (`keys.channel_user_id`), since a send may name either."""
    found = []
    msisdn = _sender(namespace, payload)
    if msisdn is not None:
        found.append(msisdn)
    if namespace == "chatapps":
        user, channel, to = payload.get("user"), payload.get("channel"), payload.get("recipient")
        if not isinstance(channel, str) and isinstance(to, dict):
            channel = to.get("channel")
        cuid = user.get("channelUserId") if isinstance(user, dict) else None
        if _usable(channel, 64) and _usable(cuid, 256):
            found.append(keys.channel_user_id(channel, cuid))
    return found


def _usable(value: Any, limit: int) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= limit


def event_time_us(payload: dict[str, Any]) -> int:
    """When the event happened (µs since the epoch): its `timestamp`, at most
    FUTURE_SKEW_US ahead of this host's clock (so a wrong clock cannot freeze a number's
    opt-out state); without a readable one, now."""
    now = time.time_ns() // 1000
    when = templatesync.instant(payload.get("timestamp"))
    if when is None:
        return now
    try:
        return min(instant_us(when), now + FUTURE_SKEW_US)
    except (ValueError, OverflowError):
        return now


async def apply_inbound(request: web.Request, state: State, body: dict[str, Any]) -> str:
    namespace, payload = body.get("namespace"), body.get("payload")
    if not isinstance(namespace, str) or namespace.lower() not in _NAMESPACES:
        return "ignored"
    if body.get("eventType") != "inbound_message_received" or not isinstance(payload, dict):
        return "ignored"
    await _note_window(state, namespace.lower(), payload)  # WhatsApp's service window
    text = message_text(payload)
    if text is None:
        return "ignored"
    policy = state.config.policy
    said = keyword_form(text)
    stop = said in _keywords(policy.stop_keywords)  # STOP wins when a word is in both lists
    if not stop and said not in _keywords(policy.start_keywords):
        return "no_keyword"
    who = identities(namespace.lower(), payload)
    if not who:
        return "ignored"
    sub = payload.get("subAccountId")
    account = (
        state.config.account_of(sub)
        if isinstance(sub, str) and sub
        else state.config.upstream.account_id
    )
    info = request[LOG]
    info["account"], info["msisdn"] = account, who[0]
    applied = await record_optout(state, account, who, stop, event_time_us(payload))
    if not any(applied):
        return "stale"  # a later STOP or START is stored: 8x8 retried an older event
    if stop:
        changed = [i for i, done in zip(who, applied, strict=True) if done]
        if changed[0] == who[0] and who[0].startswith("+"):
            info["pushed"] = optoutpush.push(request.app, account, who[0])
        scheduled.cancel_for(request.app, account, changed)
        return "opted_out"
    return "opted_in"


async def _note_window(state: State, namespace: str, payload: dict[str, Any]) -> None:
    """Any inbound WhatsApp message opens its sender's 24 h customer-service window: sends
    to them then do not count against the messaging tier (docs/whatsapp.md)."""
    channel, sub = payload.get("channel"), payload.get("subAccountId")
    if namespace != "chatapps" or not isinstance(channel, str) or not isinstance(sub, str):
        return
    if channel.strip().lower() != "whatsapp" or not state.plan.whatsapp.senders(sub):
        return
    who = identities(namespace, payload)
    await state.plan.whatsapp.note_window(state.store, state.config.account_of(sub), who)


async def record_optout(
    state: State, account: str, who: Sequence[str], opted_out: bool, at_us: int | None
) -> list[bool]:
    """Opt `who` out (or back in) as of `at_us` (None: now, as the admin API does); per
    identity, whether it applied (False: a later change is stored).

    An opt-out is noted in this worker's compliance snapshot before the write (so the
    fallback enforces it here even if the write fails) and after it (so the note outlives
    a snapshot load that began in between); what did not apply is noted as the store has it.
    """
    snapshot = state.snapshot
    if snapshot is not None and opted_out:
        for identity in who:
            snapshot.note_optout(account, identity, True)
    applied = await state.store.optout_event(account, who, opted_out, at_us)
    if snapshot is not None:
        for identity, done in zip(who, applied, strict=True):
            if done:
                snapshot.note_optout(account, identity, opted_out)
            elif opted_out:
                present = await state.store.optout_contains(account, identity)
                snapshot.note_optout(account, identity, present)
    return applied


# --- template updates ----------------------------------------------------------------------


def _word(value: Any, field: str, limit: int = 64) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise invalid(field, f"{field} must be a non-empty string")
    return value.strip()


def template_status(details: dict[str, Any], meta: dict[str, Any]) -> str:
    """The status a status update stores: `otherInfo.title` when it names one, else
    `meta.status` as 8x8 sends it."""
    for holder in (meta, details):
        other = holder.get("otherInfo")
        title = other.get("title") if isinstance(other, dict) else None
        if isinstance(title, str) and title.strip().upper() in TITLES:
            return TITLES[title.strip().upper()]
    return _word(meta.get("status"), "eventDetails.meta.status").upper()


async def apply_template(request: web.Request, state: State, body: dict[str, Any]) -> str:
    event = body.get("eventType")
    if not isinstance(event, str) or event not in _TEMPLATE_EVENTS:
        return "ignored"  # ADVISORY included: 8x8 does not change the category
    account = body.get("accountId")
    if not isinstance(account, str) or not ACCOUNT.fullmatch(account):
        raise invalid("accountId", "accountId must be an 8x8 account id")
    details = body.get("eventDetails")
    if not isinstance(details, dict):
        raise invalid("eventDetails", "eventDetails must be an object")
    name = _word(details.get("templateName"), "eventDetails.templateName", 512)
    language = _word(details.get("templateLanguage"), "eventDetails.templateLanguage", 32)
    if ":" in language:
        raise invalid("eventDetails.templateLanguage", "not a language code")
    meta = details.get("meta")
    if not isinstance(meta, dict):
        raise invalid("eventDetails.meta", "eventDetails.meta must be an object")
    raw_ts = body.get("timestamp")
    when = now_rfc3339() if raw_ts is None else templatesync.instant(raw_ts)
    if when is None:
        raise invalid("timestamp", "timestamp must be RFC 3339 or epoch seconds or ms")
    status = quality = category = None
    if event == "template_status_update":
        status = template_status(details, meta)
    elif event == "template_quality_update":
        quality = _word(meta.get("newQualityScore"), "eventDetails.meta.newQualityScore").upper()
    else:
        category = _word(meta.get("newCategory"), "eventDetails.meta.newCategory").upper()
    request[LOG].update(account=account, template=f"{name}:{language}", event_type=event)
    effect = await templatesync.merge_put(
        state.store, request.app[templatesync.LOCK], account, name, language, when,
        status=status, quality=quality, category=category,
    )  # fmt: skip
    if effect == "stored" and state.snapshot is not None:
        state.snapshot.merge_template(account, f"{name}:{language}", status, category)
    return effect
