"""8x8's WhatsApp feedback webhooks: delivery receipts (`POST /webhooks/receipts`,
`outbound_message_status_changed`) and the number's quality and tier (`POST
/webhooks/account`, `phone_number_quality_update`). docs/whatsapp.md.

Same secret rules and answers as gateway/webhooks.py (its handler). A receipt with a Meta
code the gateway acts on changes the shared store, so every worker follows at once:
- 130429 (8x8 1009, throughput): the sender number's bucket is held for COOL_SENDER_US;
- 131056 (1028, pair rate): the pair's bucket is held empty for 4 pair intervals;
- 131049 (1024, per-user marketing limit): MARKETING to the recipient is held for
  `whatsapp.marketing_hold_h`;
- 131026 (1018, undeliverable): the recipient is suppressed for WhatsApp for
  `whatsapp.undeliverable_hold_h` and leaves its portfolio's tier count;
- 131050 (1051, the user stopped marketing): the recipient joins the opt-outs (the store's
  opt-out event, ordered by the receipt's time like a STOP).
A `phone_number_quality_update` naming the tier of a sender of a portfolio's subaccount sets
that portfolio's tier at once, until the configured tier changes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import GatewayError
from gateway.messages import normalise
from gateway.state import LOG, State
from gateway.store import keys
from gateway.webhooks import _handler, event_time_us, identities, record_optout

RECEIPTS = "/webhooks/receipts"
ACCOUNT_EVENTS = "/webhooks/account"
COOL_SENDER_US = 1_000_000  # Meta's throughput is per second: one second without sends
PAIR_BACKOFF = 4  # pair intervals without sends after a 131056 (Meta's 4^X back-off, X=1)

#: Meta's code (as 8x8 forwards it in whatsapp.providerErrorCode) and 8x8's own number
THROUGHPUT, PAIR, MARKETING, UNDELIVERABLE, STOPPED = (
    "130429",
    "131056",
    "131049",
    "131026",
    "131050",
)
EIGHT_X8 = {1009: THROUGHPUT, 1028: PAIR, 1024: MARKETING, 1018: UNDELIVERABLE, 1051: STOPPED}
TIERS = {
    "TIER_50": 50, "TIER_250": 250, "TIER_1K": 1000, "TIER_2K": 2000, "TIER_10K": 10_000,
    "TIER_100K": 100_000, "TIER_UNLIMITED": 0, "UNLIMITED": 0,
}  # fmt: skip


def setup(app: web.Application) -> None:
    app.router.add_post(RECEIPTS, _handler("receipts", apply_receipt))
    app.router.add_post(ACCOUNT_EVENTS, _handler("account", apply_account))


def meta_code(payload: dict[str, Any]) -> str | None:
    """The Meta code of a receipt: `whatsapp.providerErrorCode`, else 8x8's `errorCode`."""
    wa = payload.get("whatsapp")
    code = wa.get("providerErrorCode") if isinstance(wa, dict) else None
    if isinstance(code, int | str) and str(code).strip() in EIGHT_X8.values():
        return str(code).strip()
    status = payload.get("status")
    number = status.get("errorCode") if isinstance(status, dict) else None
    if isinstance(number, str) and number.strip().isdigit():
        number = int(number)
    return EIGHT_X8.get(number) if isinstance(number, int) else None


async def apply_receipt(request: web.Request, state: State, body: dict[str, Any]) -> str:
    payload = body.get("payload")
    if body.get("eventType") != "outbound_message_status_changed" or not isinstance(payload, dict):
        return "ignored"
    channel = payload.get("channel")
    if not isinstance(channel, str) or channel.strip().lower() != "whatsapp":
        return "ignored"
    code = meta_code(payload)
    if code is None:
        return "no_action"
    sub = payload.get("subAccountId")
    if not isinstance(sub, str) or not sub:
        return "ignored"
    who = identities("chatapps", payload)
    plan = state.plan.whatsapp
    senders = plan.senders(sub)
    account = state.config.account_of(sub)
    request[LOG].update(account=account, code=code)
    store = state.store
    if code == THROUGHPUT:
        if not senders:
            return "ignored"
        spec = plan.sender_bucket(account, _sender(payload, senders))
        busy = COOL_SENDER_US + (spec.burst - 1) * spec.interval_us
        await store.hold_buckets([(spec.key, busy)])
        return "sender_cooled"
    if not who:
        return "ignored"
    if code == PAIR:
        if not senders:
            return "ignored"
        sender = _sender(payload, senders)
        busy = (PAIR_BACKOFF + state.config.whatsapp.pair_burst - 1) * plan.pair_interval_us
        await store.hold_buckets([(keys.wa_pair(account, sender, i), busy) for i in who])
        return "pair_cooled"
    if code == MARKETING:
        for i in who:
            await store.set_cooldown(keys.wa_hold(account, i), plan.marketing_hold_us)
        return "marketing_held"
    if code == UNDELIVERABLE:
        portfolio = state.config.portfolio_of(sub)
        for i in who:
            await store.set_cooldown(keys.wa_suppressed(account, i), plan.undeliverable_hold_us)
            if portfolio is not None:
                await store.wa_tier_remove(keys.wa_tier(account, portfolio), i)
        return "suppressed"
    applied = await record_optout(state, account, who, True, event_time_us(payload))
    return "opted_out" if any(applied) else "stale"


def _sender(payload: dict[str, Any], senders: tuple[str, ...]) -> str:
    """The sender number a receipt is about: the one it names, else the first."""
    for field in ("from", "channelId"):
        named = payload.get(field)
        if isinstance(named, str) and named.strip() in senders:
            return named.strip()
    return senders[0]


async def apply_account(request: web.Request, state: State, body: dict[str, Any]) -> str:
    if body.get("eventType") != "phone_number_quality_update":
        return "ignored"
    details = body.get("eventDetails")
    if not isinstance(details, dict):
        return "ignored"
    meta = details.get("meta")
    holders = [details, meta] if isinstance(meta, dict) else [details]
    tier_name = next(
        (h.get("maxDailyConversationsPerBusiness") for h in holders
         if isinstance(h.get("maxDailyConversationsPerBusiness"), str)),
        None,
    )  # fmt: skip
    raw = details.get("displayPhoneNumber")
    if not isinstance(tier_name, str) or tier_name.strip().upper() not in TIERS:
        return "no_action"
    try:
        number = normalise(raw if str(raw).startswith("+") else f"+{raw}", None, "number")
    except GatewayError:
        return "ignored"
    found = state.plan.whatsapp.portfolio_of_sender(number)
    if found is None:
        return "unknown_sender"
    portfolio, account = found
    tier = TIERS[tier_name.strip().upper()]
    request[LOG].update(account=account, portfolio=portfolio, tier=tier)
    await state.store.wa_tier_set(state.plan.whatsapp.tier_set_key(account, portfolio), tier)
    return "tier_set"
