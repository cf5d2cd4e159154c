"""The wire format of lua/decide.lua: requests into (KEYS, ARGV[1]), its flat reply back
into `Decision`s. RedisStore (gateway/store/redis.py) and the Cluster split
(gateway/store/cluster.py) both speak it; this module owns it so neither imports the other
for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.store import gcra, keys, lanes
from gateway.store.base import Decision, Refusal, Rule, SendCheck

#: Rule codes of lua/decide.lua (1-based, in the order refusals win)
RULES: tuple[Rule, ...] = tuple(Rule)
CODE = {rule: i + 1 for i, rule in enumerate(RULES)}
_OPT_IN = {"off": 0, "warn": 1, "enforce": 2}
_NONE: tuple[tuple[Rule, int], ...] = ()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode(checks: Sequence[SendCheck]) -> tuple[list[str], bytes]:
    """(KEYS, ARGV[1]) of lua/decide.lua for these requests."""
    names, _, blob = encode_split(checks, None)
    return names, blob


def encode_split(
    checks: Sequence[SendCheck], local: Callable[[str], bool] | None
) -> tuple[list[str], list[str], bytes]:
    """(KEYS, other-slot keys, ARGV[1]) of lua/decide.lua. With `local`, a key it rejects
    is named by a negative index into the other-slot keys (Redis Cluster: ARGV[2])."""
    names: list[str] = []
    others: list[str] = []
    index: dict[str, int] = {}

    def ix(key: str) -> int:
        i = index.get(key)
        if i is None:
            if local is None or local(key):
                names.append(key)
                i = index[key] = len(names)
            else:
                others.append(key)
                i = index[key] = -len(others)
        return i

    payload = []
    for c in checks:
        account = c.account
        msgs: list[object] = []
        any_template = any_otp = False
        for m in c.messages:
            if m.template or m.category:  # "\x01CATEGORY": no registry entry (Direct Send)
                any_template = any_otp = True
                # one template whatever the case (keys.template_id)
                tpl = m.template.lower() if m.template else "\x01" + (m.category or "")
                msgs += (m.msisdn, tpl, int(m.otp), ix(keys.otp_bucket(account, m.msisdn)))
            elif m.otp:
                any_otp = True
                msgs += (m.msisdn, "", 1, ix(keys.otp_bucket(account, m.msisdn)))
            else:
                msgs += (m.msisdn, "", 0, 0)
        bks: list[int] = []
        for b in c.buckets:
            bks += (CODE[b.rule], ix(b.key), b.interval_us, b.burst, int(b.shapeable))
        payload.append((
            int(c.batch), _OPT_IN.get(c.opt_in, 2), int(c.unknown_template_allowed),
            c.max_wait_us, ix(keys.optouts(account)) if c.messages else 0,
            ix(keys.consents(account)) if any_template else 0,
            ix(keys.templates(account)) if any_template else 0,
            ix(c.cooldown_key) if c.cooldown_key else 0,
            c.otp.interval_us, c.otp.burst, bks, msgs,
            ix(keys.changes(account)) if any_otp else 0,
            c.reserve_pm, c.lane, c.deadline_us, c.priority_deadline_us,
            sorted(CODE[r] for r in c.shadow), int(c.dry_run),
            _whatsapp(c, ix), _queues(c, ix), int(c.claim), _fair(c, ix),
        ))  # fmt: skip
    return names, others, orjson.dumps(payload)


def _queues(c: SendCheck, ix: Callable[[str], int]) -> object:
    """decide.lua's `queues` entry: each bucket's bulk queue key, 0 not laned (0: none)."""
    if not c.reserve_pm:
        return 0
    return [ix(keys.queue(b.key)) if lanes.laned(b, c) else 0 for b in c.buckets]


def _fair(c: SendCheck, ix: Callable[[str], int]) -> object:
    """decide.lua's `fair` entry: the laned subaccount bucket's ZSET of clients and the
    caller's name (0: none; docs/lanes.md)."""
    if not c.client or not c.reserve_pm or c.claim:
        return 0
    for b in c.buckets:
        if b.rule is Rule.SUBACCOUNT and lanes.laned(b, c):
            return [ix(keys.fair(b.key)), c.client]
    return 0


def _whatsapp(c: SendCheck, ix: Callable[[str], int]) -> object:
    """decide.lua's `whatsapp` entry of a request (0: not a WhatsApp send)."""
    w = c.whatsapp
    if w is None:
        return 0
    per: list[int] = []
    for m in w.messages:
        per += (ix(m.pair), ix(m.window), ix(m.hold), ix(m.suppressed))
    sender = w.sender
    return (
        ix(sender.key) if sender else 0, sender.interval_us if sender else 0,
        sender.burst if sender else 0, w.pair_interval_us, w.pair_burst, ix(w.tier_key),
        w.tier, ix(w.tier_override_key) if w.tier_override_key else 0, w.window_us,
        int(w.us_refuse), int(w.quality_refuse), w.sender_n, per,
    )  # fmt: skip


def decode(checks: Sequence[SendCheck], reply: Sequence[Any]) -> list[Decision]:
    """Decisions from lua/decide.lua's flat reply."""
    return decode_from(checks, reply)[0]


def decode_from(checks: Sequence[SendCheck], reply: Sequence[Any]) -> tuple[list[Decision], int]:
    """Decisions from lua/decide.lua's flat reply, and where the decisions end in it."""
    parts: list[tuple[Any, ...]] = []
    i = 0
    for c in checks:
        code = reply[i]
        refusal, wait, remaining = None, 0, _NONE
        if code == 0:
            n = len(c.buckets)
            wait = reply[i + 1]
            remaining = tuple(
                zip((b.rule for b in c.buckets), reply[i + 2 : i + 2 + n], strict=True)
            )
            i += 2 + n
        elif code == 1:
            refusal = _refusal(c, RULES[reply[i + 1] - 1], reply[i + 2], reply[i + 3],
                               reply[i + 4])  # fmt: skip
            i += 5
        else:
            i += 1
        n = reply[i]
        dropped = tuple((reply[j], RULES[reply[j + 1] - 1]) for j in range(i + 1, i + 2 * n, 2))
        i += 1 + 2 * n
        n = reply[i]
        unconsented = tuple(reply[i + 1 : i + 1 + n])
        i += 1 + n
        n = reply[i]
        shadowed = tuple(RULES[r - 1] for r in reply[i + 1 : i + 1 + n])
        flags = reply[i + 1 + n]  # 1: priority, 2: a bulk queue's ticket
        i += 2 + n
        parts.append((wait, refusal, dropped, unconsented, remaining, shadowed, flags))
    # the server's now, after the decisions when it is there: each allowed request's slot
    now = int(reply[i]) if i < len(reply) else None
    out = [
        Decision(wait, refusal, dropped, unconsented, remaining,
                 now + wait if now is not None and remaining else 0,
                 shadowed=shadowed, priority=bool(flags & 1), ticket=bool(flags & 2))
        for wait, refusal, dropped, unconsented, remaining, shadowed, flags in parts
    ]  # fmt: skip
    return out, i


def _refusal(c: SendCheck, rule: Rule, retry: int, status: Any, ref: int) -> Refusal:
    if rule is Rule.OTP:
        return Refusal(rule, retry, bucket=gcra.otp_bucket_spec(c, c.messages[ref].msisdn))
    if rule is Rule.TEMPLATE:
        return Refusal(rule, status=None if status is None else text(status))
    if rule in (Rule.OPTED_OUT, Rule.NO_CONSENT, Rule.MARKETING_REGION, Rule.TEMPLATE_QUALITY):
        return Refusal(rule)
    if rule in (Rule.PAIR, Rule.MESSAGING_TIER, Rule.SUPPRESSED):
        return Refusal(rule, retry)
    sender = c.whatsapp.sender if c.whatsapp else None
    if rule is Rule.SENDER or ref == -2:  # -2: the sender bucket (a deadline it set)
        return Refusal(rule, retry, bucket=sender)
    return Refusal(rule, retry, bucket=c.buckets[ref] if ref >= 0 else None)
