"""Which buckets a send touches, with what rates: config → `SendCheck`.

A configured `rps` is a ceiling on what 8x8 sees in ANY one-second window, so a bucket
emits at `rps - burst` per second and lets `burst` go at once (DESIGN.md, Token buckets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.config import Config, subaccount_key
from gateway.policy.lanes import shadow_rules
from gateway.policy.whatsapp import WhatsAppPlan
from gateway.routes import Kind, Route
from gateway.store import keys
from gateway.store.base import BucketSpec, MessageCheck, OtpSpec, Rule, SendCheck

US = 1_000_000
JITTER_S = 0.005  # how late after its slot a send may reach 8x8 (pacing.LATE_S + the rest)


def capacity_bucket(rule: Rule, key: str, rps: int, burst: int) -> BucketSpec:
    """A bucket whose sends 8x8 sees within `rps` in any one-second window even though each
    may leave up to JITTER_S after its booked slot (gateway/policy/pacing.py re-books a
    later one): the bookings of any 1 + JITTER_S seconds must fit, and GCRA lets
    `burst + floor((1 + JITTER_S) / T)` through in such a stretch. The margin comes out of
    the burst (at least 1 left), which costs no sustained rate; only when the burst cannot
    give enough does the emission interval T grow."""
    window = US + round(JITTER_S * US)
    interval = -(-US // (rps - burst))
    held = min(burst, rps - window // interval)
    if held < 1:
        held, interval = 1, -(-window // (rps - 1))
    return BucketSpec(
        rule,
        key,
        interval_us=interval,
        burst=held,
        limit=rps,
        window_s=1,
        shapeable=True,
    )


class LimitPlan:
    """The limits in force, precomputed once per config (rebuilt on SIGHUP)."""

    def __init__(self, cfg: Config) -> None:
        lim = cfg.limits
        self.cfg = cfg
        self.egress = capacity_bucket(
            Rule.EGRESS_IP,
            keys.egress_bucket(lim.egress_ip),
            lim.egress_ip_rps,
            lim.egress_ip_burst,
        )
        self.otp = OtpSpec(
            interval_us=lim.otp_window_s * US,
            burst=lim.otp_per_recipient,
            limit=lim.otp_per_recipient,
            window_s=lim.otp_window_s,
        )
        self._end_user_n = lim.end_user_ip_per_minute
        self.max_wait_us = lim.max_wait_ms * 1000
        self.opt_in = cfg.policy.opt_in
        self.unknown_allowed = cfg.policy.unknown_template == "allow"
        self._subs: dict[str, tuple[str, BucketSpec, str]] = {}
        # docs/lanes.md
        self.reserve_pm = round(lim.reserved_share * 1000)
        self.shadow = shadow_rules(lim.shadow)
        self.deadlines_ms = (lim.deadline_ms, lim.priority_deadline_ms)
        self.fair_clients = lim.fair_clients
        self.whatsapp = WhatsAppPlan(cfg, capacity_bucket)

    def subaccount(self, subaccount: str) -> tuple[str, BucketSpec, str]:
        """(account, bucket, cool-down key) of a subaccount."""
        found = self._subs.get(subaccount)
        if found is None:
            account = self.cfg.account_of(subaccount)
            rps, burst = self.cfg.subaccount_limit(subaccount)
            sub = subaccount_key(subaccount)  # one bucket whatever the case of the id
            spec = capacity_bucket(
                Rule.SUBACCOUNT, keys.subaccount_bucket(account, sub), rps, burst
            )
            found = (account, spec, keys.cooldown(account, sub))
            if len(self._subs) < 100_000:  # subaccount names come from callers' paths
                self._subs[subaccount] = found
        return found

    def booked_for(self, account: str | None) -> str | None:
        """The subaccount whose bucket an account-level request books: the account's first
        configured subaccount (8x8 counts every request against some subaccount)."""
        if account is None:
            return None
        wanted = account.lower()
        for name in self.cfg.subaccounts:
            if self.cfg.account_of(name).lower() == wanted:
                return name
        return None

    def end_user(self, ip: str) -> BucketSpec:
        """The bucket of one end user, `ip` a canonical id (gateway/policy/enduser.py)."""
        n = self._end_user_n
        return BucketSpec(
            Rule.END_USER_IP,
            keys.end_user_bucket(ip),
            interval_us=60 * US // n,
            burst=n,
            limit=n,
            window_s=60,
            shapeable=False,
        )

    def check(
        self,
        route: Route,
        messages: tuple[MessageCheck, ...],
        end_user_ips: str | Sequence[str] | None,
        deadlines_us: tuple[int, int] = (0, 0),
        lane: int = 0,
        body: Any = None,
        client: str = "",
    ) -> SendCheck:
        """A request's check; every end user it names (an SMS batch may name several) has its
        own bucket, and any of them refusing refuses the whole request. `deadlines_us`:
        (bulk, priority), 0 none; `lane`: 0 from the messages (docs/lanes.md). `body`: the
        decoded send, for a WhatsApp send's sender number (gateway/policy/whatsapp.py).
        `client`: the caller's `[[clients]]` name, for fairness between the clients of
        one subaccount (docs/lanes.md; dropped when `limits.fair_clients` is off)."""
        sub = route.subaccount if route.subaccount is not None else self.booked_for(route.account)
        capacity: tuple[BucketSpec, ...]
        if sub is None:  # an account with no configured subaccount, or GET /files/{name}
            account, capacity, cooldown = route.account or self.cfg.upstream.account_id, (), ""
        else:
            account, sub_bucket, cooldown = self.subaccount(sub)
            capacity = (sub_bucket,)
        if isinstance(end_user_ips, str):
            end_user_ips = (end_user_ips,)
        users: tuple[BucketSpec, ...] = ()
        if end_user_ips and route.kind is not Kind.OTHER:
            users = tuple(self.end_user(ip) for ip in dict.fromkeys(end_user_ips))
        buckets = (*users, *capacity, self.egress)
        return SendCheck(
            account=account,
            messages=messages,
            buckets=buckets,
            otp=self.otp,
            cooldown_key=cooldown,
            batch=route.kind is Kind.BATCH,
            opt_in=self.opt_in,
            unknown_template_allowed=self.unknown_allowed,
            max_wait_us=self.max_wait_us,
            reserve_pm=self.reserve_pm,
            lane=lane,
            deadline_us=deadlines_us[0],
            priority_deadline_us=deadlines_us[1],
            shadow=self.shadow,
            whatsapp=self.whatsapp.check(route, account, sub, messages, body),
            client=client if self.fair_clients else "",
        )

    def all_buckets(self) -> dict[str, dict[str, int]]:
        """The limits in force, for GET /admin/v1/limits."""
        lim = self.cfg.limits
        out = {
            "subaccount": {
                "limit": lim.subaccount_rps,
                "window_s": 1,
                "burst": lim.subaccount_burst,
            },
            "egress_ip": {"limit": lim.egress_ip_rps, "window_s": 1, "burst": lim.egress_ip_burst},
            "otp_recipient": {
                "limit": lim.otp_per_recipient,
                "window_s": lim.otp_window_s,
                "burst": lim.otp_per_recipient,
            },
            "end_user_ip": {"limit": self._end_user_n, "window_s": 60, "burst": self._end_user_n},
        }
        for name in self.cfg.subaccounts:
            rps, burst = self.cfg.subaccount_limit(name)
            out[f"subaccount:{name}"] = {"limit": rps, "window_s": 1, "burst": burst}
        wa = self.cfg.whatsapp
        for name, sub in self.cfg.subaccounts.items():  # WhatsApp's own (docs/whatsapp.md)
            for number in sub.whatsapp_senders:
                spec = self.whatsapp.sender_bucket(self.cfg.account_of(name), number)
                out[f"sender:{number}"] = {"limit": spec.limit, "window_s": 1, "burst": spec.burst}
        if any(sub.whatsapp_senders for sub in self.cfg.subaccounts.values()):
            out["pair"] = {"limit": 1, "window_s": round(wa.pair_interval_s),
                           "burst": wa.pair_burst}  # fmt: skip
        for name, portfolio in self.cfg.portfolios.items():  # limit 0: unlimited
            out[f"messaging_tier:{name}"] = {"limit": portfolio.tier_value(), "window_s": 86_400,
                                             "burst": portfolio.tier_value()}  # fmt: skip
        return out
