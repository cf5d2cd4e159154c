"""The simulator plays Meta behind 8x8's chat-apps API: WhatsApp's own limits, judged on
every message 8x8 accepted, reported as 8x8 reports them, in delivery receipts POSTed to the
gateway (`POST /_sim/meta` configures it; off until `webhook_url` is set). Research facts:
docs/whatsapp.md.

Per message, in this order: sender throughput (more than `sender_mps` from one sender number
in any second: 130429 → 8x8 1009), pair rate (GCRA per sender and recipient, `pair_burst`
then one per `pair_interval_s`: 131056 → 1028), marketing templates (`marketing_templates`)
to +1 numbers, or more than `marketing_per_user` to one user in 24 h: 131049 → 1024;
`undeliverable` numbers: 131026 → 1018. What passes is delivered; a new recipient outside
its window over the portfolio's `tier` is delivered too (Meta has no error for it) but
counted in `over_tier`: that is what gets accounts suspended.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

DAY_S = 86_400.0
#: Meta code → 8x8's errorCode
CODES = {"130429": 1009, "131056": 1028, "131049": 1024, "131026": 1018, "131050": 1051}


@dataclass
class MetaConfig:
    webhook_url: str = ""  # the gateway's base URL ("": Meta plays no part)
    webhook_secret: str = ""
    senders: dict[str, str] = field(default_factory=dict)  # subaccount -> sender number
    sender_mps: int = 80
    pair_interval_s: float = 6.0
    pair_burst: int = 45
    tier: int = 0  # unique users outside a window per 24 h; 0: unlimited
    marketing_templates: list[str] = field(default_factory=list)  # names, lower case
    marketing_per_user: int = 2
    undeliverable: list[str] = field(default_factory=list)
    delivered_receipts: bool = False  # also POST receipts of delivered messages


class Meta:
    """Meta's view of the WhatsApp traffic 8x8 accepted."""

    def __init__(self) -> None:
        self.config = MetaConfig()
        self.reset()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.sent: dict[str, deque[float]] = {}  # sender -> send times (last second)
        self.pairs: dict[tuple[str, str], float] = {}  # pair -> TAT (s)
        self.marketing: dict[str, deque[float]] = {}  # user -> marketing delivered times
        self.reached: dict[str, float] = {}  # user -> last business-initiated delivery
        self.windows: dict[str, float] = {}  # user -> window open until
        self.receipts: dict[str, int] = {}  # Meta code -> receipts sent
        self.delivered = 0
        self.over_tier = 0
        self.per_second: dict[str, dict[int, int]] = {}  # sender -> second -> delivered
        self.start = time.monotonic()

    def configure(self, changes: dict[str, Any]) -> None:
        known = set(MetaConfig.__dataclass_fields__)
        for key in changes:
            if key not in known:
                raise ValueError(f"{key}: unknown setting")
        for key, value in changes.items():
            setattr(self.config, key, value)

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "receipts": dict(self.receipts),
            "over_tier": self.over_tier,
            "reached": len(self.reached),
            "per_second": {s: dict(v) for s, v in self.per_second.items()},
        }

    def open_window(self, user: str) -> None:
        self.windows[user] = time.monotonic() + DAY_S

    # --- judging what 8x8 accepted
    def saw(self, sub: str | None, body: Any, batch: bool) -> None:
        """8x8 accepted this chat-apps send (one message or a batch)."""
        cfg = self.config
        if not cfg.webhook_url or sub is None or sub not in cfg.senders:
            return
        if not isinstance(body, dict):
            return
        if batch:
            found = body.get("template")
            shared: dict[str, Any] = found if isinstance(found, dict) else {}
            listed = body.get("messages")
            listed = listed if isinstance(listed, list) else []
            items = [{**shared, **m} for m in listed if isinstance(m, dict)]
        else:
            items = [body]
        now = time.monotonic()
        receipts = []
        for msg in items:
            user = msg.get("user")
            msisdn = user.get("msisdn") if isinstance(user, dict) else None
            if not isinstance(msisdn, str):
                continue
            if not msisdn.startswith("+"):
                msisdn = "+" + msisdn
            code = self._judge(cfg.senders[sub], msisdn, _template(msg), now)
            if code is not None or cfg.delivered_receipts:
                receipts.append(_receipt(sub, msisdn, code))
        if receipts:
            self._post_later(receipts)

    def _judge(self, sender: str, user: str, template: str | None, now: float) -> str | None:
        cfg = self.config
        sent = self.sent.setdefault(sender, deque())
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        if len(sent) >= cfg.sender_mps:
            return self._count("130429")
        sent.append(now)
        interval = cfg.pair_interval_s
        tat = self.pairs.get((sender, user), 0.0)
        if tat + interval - cfg.pair_burst * interval > now:
            return self._count("131056")
        self.pairs[(sender, user)] = max(tat, now) + interval
        if user in cfg.undeliverable:
            return self._count("131026")
        in_window = self.windows.get(user, 0.0) > now
        if template is not None and template in cfg.marketing_templates and not in_window:
            times = self.marketing.setdefault(user, deque())
            while times and times[0] <= now - DAY_S:
                times.popleft()
            if user.startswith("+1") or len(times) >= cfg.marketing_per_user:
                return self._count("131049")
            times.append(now)
        if not in_window:
            for gone in [u for u, t in self.reached.items() if t <= now - DAY_S]:
                del self.reached[gone]
            if user not in self.reached and cfg.tier and len(self.reached) >= cfg.tier:
                self.over_tier += 1
            self.reached[user] = now
        self.delivered += 1
        second = int(now - self.start)
        by_second = self.per_second.setdefault(sender, {})
        by_second[second] = by_second.get(second, 0) + 1
        return None

    def _count(self, code: str) -> str:
        self.receipts[code] = self.receipts.get(code, 0) + 1
        return code

    # --- webhooks to the gateway
    def _post_later(self, events: list[dict[str, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(self._post_all(events, "/webhooks/receipts"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_all(self, events: list[dict[str, Any]], path: str) -> None:
        for event in events:
            await self.post(path, event)

    async def post(self, path: str, event: dict[str, Any]) -> int:
        """POST one webhook event to the gateway; its status (0: it could not be reached)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.config.webhook_secret}",
                   "Content-Type": "application/json"}  # fmt: skip
        url = self.config.webhook_url.rstrip("/") + path
        try:
            async with self._session.post(url, data=orjson.dumps(event), headers=headers) as r:
                return r.status
        except aiohttp.ClientError:
            return 0

    async def idle(self) -> None:
        """Wait until every receipt was POSTed."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.idle()
        if self._session is not None:
            await self._session.close()


def _template(msg: dict[str, Any]) -> str | None:
    content = msg.get("content")
    tpl = content.get("template") if isinstance(content, dict) else None
    name = tpl.get("name") if isinstance(tpl, dict) else None
    return name.lower() if isinstance(name, str) else None


def _receipt(sub: str, msisdn: str, code: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "state": "delivered" if code is None else "undelivered",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if code is not None:
        status["errorCode"] = CODES[code]
    return {"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
            "description": "ChatApps outbound message delivery receipt",
            "payload": {"umid": "sim", "subAccountId": sub, "channel": "whatsapp",
                        "user": {"msisdn": msisdn}, "status": status,
                        "whatsapp": {"providerErrorCode": code} if code else {}}}  # fmt: skip


def tier_event(account: str, number: str, tier: str) -> dict[str, Any]:
    """8x8's phone_number_quality_update naming the number's tier."""
    return {"eventId": f"sim-{time.time_ns()}", "provider": "WhatsApp", "accountId": account,
            "eventType": "phone_number_quality_update",
            "eventDetails": {"displayPhoneNumber": number.lstrip("+"),
                             "maxDailyConversationsPerBusiness": tier,
                             "meta": {"event": "DOWNGRADE"}}}  # fmt: skip


def quality_event(account: str, name: str, language: str, quality: str) -> dict[str, Any]:
    """8x8's template_quality_update."""
    return {"eventId": f"sim-{time.time_ns()}", "provider": "WhatsApp", "accountId": account,
            "eventType": "template_quality_update",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "eventDetails": {"templateName": name, "templateLanguage": language,
                             "meta": {"newQualityScore": quality}}}  # fmt: skip


def inbound_event(sub: str, msisdn: str) -> dict[str, Any]:
    """8x8's inbound_message_received of a WhatsApp user writing in."""
    return {"namespace": "ChatApps", "eventType": "inbound_message_received",
            "payload": {"umid": "sim-in", "subAccountId": sub, "channel": "whatsapp",
                        "user": {"msisdn": msisdn}, "type": "Text",
                        "content": {"text": "hello"}}}  # fmt: skip
