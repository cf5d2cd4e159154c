"""Which WhatsApp limits a chat-apps send meets: config → `WhatsAppCheck` (docs/whatsapp.md).

A send is a WhatsApp send when it goes to chat apps from a subaccount with
`whatsapp_senders` and its `channels` (a batch: its `template.channels`), if given, name
WhatsApp. Its sender number is the one that entry names (`channelId` or `from`, when it is
one of the subaccount's senders), else the subaccount's first sender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.config import Config
from gateway.routes import Kind, Route
from gateway.store import keys
from gateway.store.base import (
    BucketSpec,
    MessageCheck,
    Rule,
    SendCheck,
    Store,
    WhatsAppCheck,
    WhatsAppMessage,
)

US = 1_000_000
WINDOW_US = 86_400 * US  # Meta's moving window of the messaging limit, and a service window


class WhatsAppPlan:
    """WhatsApp's limits in force, precomputed once per config (rebuilt on SIGHUP)."""

    def __init__(
        self, cfg: Config, capacity_bucket: Callable[[Rule, str, int, int], BucketSpec]
    ) -> None:
        self.cfg = cfg
        self._capacity = capacity_bucket  # limits.capacity_bucket (limits.py imports this)
        wa = cfg.whatsapp
        self.pair_interval_us = round(wa.pair_interval_s * US)
        self.marketing_hold_us = round(wa.marketing_hold_h * 3600 * US)
        self.undeliverable_hold_us = round(wa.undeliverable_hold_h * 3600 * US)
        self._senders: dict[str, tuple[str, ...]] = {
            name.lower(): sub.whatsapp_senders
            for name, sub in cfg.subaccounts.items()
            if sub.whatsapp_senders
        }
        self._buckets: dict[tuple[str, str], BucketSpec] = {}

    def tier_set_key(self, account: str, portfolio: str) -> str:
        """Where a portfolio's tier from 8x8's webhook is kept: named with the configured
        tier, so a reload that changes the configured tier drops the learned one."""
        configured = self.cfg.portfolios[portfolio].tier_value()
        return f"{keys.wa_tier_set(account, portfolio)}:{configured}"

    async def note_window(self, store: Store, account: str, who: Sequence[str]) -> None:
        """An inbound WhatsApp message opened (or renewed) the sender's 24 h window."""
        for identity in who:
            await store.set_cooldown(keys.wa_window(account, identity), WINDOW_US)

    async def red_marketing(self, store: Store, check: SendCheck) -> list[str]:
        """`quality_red = "warn"`: the MARKETING templates rated RED this WhatsApp send uses
        (one registry read per distinct template; nothing read in any other mode)."""
        if check.whatsapp is None or self.cfg.whatsapp.quality_red != "warn":
            return []
        found = []
        for template in sorted({m.template for m in check.messages if m.template}):
            name, _, language = template.rpartition(":")
            record = await store.template_get(check.account, name, language)
            if record is None or (record.category or "").upper() != "MARKETING":
                continue
            if (record.quality or "").upper() == "RED":
                found.append(template)
        return found

    def senders(self, subaccount: str) -> tuple[str, ...]:
        return self._senders.get(subaccount.lower(), ())

    def portfolio_of_sender(self, number: str) -> tuple[str, str] | None:
        """(portfolio, account) of the portfolio whose subaccount sends from `number`."""
        for sub, numbers in self._senders.items():
            if number in numbers:
                portfolio = self.cfg.portfolio_of(sub)
                if portfolio is not None:
                    return portfolio, self.cfg.account_of(sub)
        return None

    def sender_bucket(self, account: str, sender: str) -> BucketSpec:
        found = self._buckets.get((account, sender))
        if found is None:
            mps = self.cfg.whatsapp.sender_mps
            burst = max(1, mps // 10) if mps > 1 else 0  # docs/whatsapp.md: batches
            key = keys.wa_sender(account, sender)
            if burst:
                found = self._capacity(Rule.SENDER, key, mps, burst)
            else:
                found = BucketSpec(Rule.SENDER, key, US, 1, 1, 1, shapeable=True)
            if len(self._buckets) < 10_000:
                self._buckets[(account, sender)] = found
        return found

    def check(
        self,
        route: Route,
        account: str,
        subaccount: str | None,
        messages: tuple[MessageCheck, ...],
        body: Any,
    ) -> WhatsAppCheck | None:
        """The send's WhatsApp limits, or None when it is not a WhatsApp send."""
        if route.product != "chatapps" or subaccount is None or not messages:
            return None
        if route.kind not in (Kind.SEND, Kind.BATCH):
            return None
        numbers = self.senders(subaccount)
        if not numbers:
            return None
        sender = choose_sender(body, route.kind is Kind.BATCH, numbers)
        if sender is None:
            return None
        wa = self.cfg.whatsapp
        portfolio = self.cfg.portfolio_of(subaccount)
        tier = 0
        tier_key = tier_set = ""
        if portfolio is not None:
            tier = self.cfg.portfolios[portfolio].tier_value()
            tier_key = keys.wa_tier(account, portfolio)
            tier_set = self.tier_set_key(account, portfolio)
        else:  # no portfolio: no tier (an unlimited one, never stored)
            tier_key = keys.wa_tier(account, "")
        return WhatsAppCheck(
            sender=self.sender_bucket(account, sender),
            pair_interval_us=self.pair_interval_us,
            pair_burst=wa.pair_burst,
            tier_key=tier_key,
            tier=tier,
            tier_override_key=tier_set,
            window_us=WINDOW_US,
            us_refuse=wa.us_marketing == "refuse",
            quality_refuse=wa.quality_red == "refuse",
            messages=tuple(
                WhatsAppMessage(
                    keys.wa_pair(account, sender, m.msisdn),
                    keys.wa_window(account, m.msisdn),
                    keys.wa_hold(account, m.msisdn),
                    keys.wa_suppressed(account, m.msisdn),
                )
                for m in messages
            ),
        )


def choose_sender(body: Any, batch: bool, numbers: tuple[str, ...]) -> str | None:
    """The sender number a send uses: the WhatsApp entry of its `channels` names it (by
    `channelId` or `from`), else the first; None when `channels` names no WhatsApp."""
    holder = body.get("template") if batch and isinstance(body, dict) else body
    channels = holder.get("channels") if isinstance(holder, dict) else None
    if not isinstance(channels, list) or not channels:
        return numbers[0]
    for entry in channels:
        if not isinstance(entry, dict):
            continue
        if str(entry.get("channel", "")).strip().lower() != "whatsapp":
            continue
        for field in ("channelId", "from"):
            named = entry.get(field)
            if isinstance(named, str) and named.strip() in numbers:
                return named.strip()
        return numbers[0]
    return None
