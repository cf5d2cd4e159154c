"""What the bench sends and the compliance data it loads: pre-encoded HTTP/1.1 requests
and the Redis records they need.

A request is a `Template`: the bytes before a slot, the bytes after it, and the slot's kind.
The load generator fills the slot per send with fixed-width bytes (so Content-Length holds):
`ip` — bits 32-63 of an IPv6 end-user address, its /64 network (every send a new end
user: the gateway counts IPv6 end users per /64, so the 10-per-minute end-user-IP rule
never refuses a benchmark send); `num` — 9 digits of a
never-repeating phone number; `rand:N:W` — a random number below N in W digits (a number
from a pool, a template from a list). A template without a slot is sent as is.

The scenario-1 mix (also scenarios 2 and 5), every check on (`policy.opt_in = enforce`):
- 80% WhatsApp text sends (`/chatapps/.../messages`), each to a number drawn at random
  from a pool of 100,000 (more than the gateway's 65,536-entry number cache);
- 10% WhatsApp template sends, each of an APPROVED MARKETING template drawn at random from
  the account's templates, to numbers with a consent record for MARKETING;
- 10% SMS sends (`/sms/.../messages`) to the text pool carrying a fresh `clientIp`, so the
  end-user-IP bucket is decided too.
Opted-out numbers come from another range, so nothing in the mix is refused: every send
runs the opt-out lookup, the template sends also the template and consent lookups.
"""

from __future__ import annotations

import random
import time
from typing import Any, NamedTuple

import orjson
import redis

from gateway.store import keys

SLOT = b"@@SLOT@@"
SLOT_WIDTH = {"ip": 9, "num": 9, "": 0}
TEMPLATE_WIDTH = 5  # template names: bench_promo_00042
TEXT_POOL = 100_000
CONSENT_POOL = 10_000
TEXT_SHARE, TEMPLATE_SHARE = 0.80, 0.10  # the rest: SMS with clientIp


class Template(NamedTuple):
    pre: bytes
    post: bytes
    slot: str  # "", "ip", "num" or "rand:N:W"


class Account(NamedTuple):
    """One 8x8 account's bench data: which subaccount sends, and how much is loaded."""

    name: str
    subaccount: str
    optouts: int
    templates: int


def text_number(i: int) -> str:
    return f"+6592{i % TEXT_POOL:06d}"


def consent_number(i: int) -> str:
    return f"+6591{i % CONSENT_POOL:06d}"


def optout_number(i: int) -> str:
    return f"+6580{i:06d}" if i < 1_000_000 else f"+6581{i - 1_000_000:06d}"


def otp_number(i: int) -> str:
    return f"+6593{i:06d}"


def template_name(i: int) -> str:
    return f"bench_promo_{i:0{TEMPLATE_WIDTH}d}"


def slot_width(slot: str) -> int:
    return int(slot.rsplit(":", 1)[1]) if slot.startswith("rand:") else SLOT_WIDTH[slot]


def request(host: str, path: str, token: str, body: object, slot: str = "") -> Template:
    """A POST with a JSON body; the string "@@SLOT@@" in the body marks the slot."""
    raw = orjson.dumps(body)
    pre, sep, post = raw.partition(SLOT)
    if not sep:
        slot, post = "", b""
    length = len(pre) + len(post) + slot_width(slot)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    return Template(head + pre, post, slot)


def mix(host: str, token: str, account: Account, n: int = 1_000, seed: int = 1) -> list[Template]:
    """`n` requests of the scenario-1 mix for one account's subaccount."""
    rnd = random.Random(seed)
    sub = account.subaccount
    chat = f"/chatapps/api/v1/subaccounts/{sub}/messages"
    sms = f"/sms/api/v1/subaccounts/{sub}/messages"
    out = []
    for i in range(n):
        draw = rnd.random()
        if draw < TEXT_SHARE:
            body: dict[str, object] = {
                "user": {"msisdn": "+6592" + SLOT.decode()},
                "type": "text",
                "content": {"text": "Your order has shipped and arrives tomorrow."},
                "clientMessageId": f"b{i}",
            }
            out.append(request(host, chat, token, body, f"rand:{TEXT_POOL}:6"))
        elif draw < TEXT_SHARE + TEMPLATE_SHARE:
            tpl = "bench_promo_" + SLOT.decode()
            body = {
                "user": {"msisdn": consent_number(rnd.randrange(CONSENT_POOL))},
                "type": "template",
                "content": {
                    "template": {
                        "name": tpl,
                        "language": "en",
                        "components": [
                            {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}
                        ],
                    }
                },
                "clientMessageId": f"b{i}",
            }
            slot = f"rand:{max(1, account.templates)}:{TEMPLATE_WIDTH}"
            out.append(request(host, chat, token, body, slot))
        else:
            body = {
                "destination": text_number(rnd.randrange(TEXT_POOL)),
                "text": "Your code expires soon, reply STOP to opt out.",
                "clientIp": "2001:db8:" + SLOT.decode() + "::1",
                "clientMessageId": f"b{i}",
            }
            out.append(request(host, sms, token, body, "ip"))
    return out


def texts(host: str, token: str, subaccount: str, n: int = 5_000) -> list[Template]:
    """Plain WhatsApp text sends (scenarios 3 and 6)."""
    path = f"/chatapps/api/v1/subaccounts/{subaccount}/messages"
    return [
        request(
            host,
            path,
            token,
            {
                "user": {"msisdn": text_number(i * 7919)},
                "type": "text",
                "content": {"text": "Hello from the bench"},
            },
        )
        for i in range(n)
    ]


def verifies(host: str, token: str, subaccount: str, numbers: list[str]) -> list[Template]:
    """Verify sessions to these numbers, in turn (scenario 4)."""
    path = f"/verify/api/v2/subaccounts/{subaccount}/sessions"
    return [request(host, path, token, {"destination": n, "brand": "Bench"}) for n in numbers]


def distinct_verifies(host: str, token: str, subaccount: str, prefix: str) -> list[Template]:
    """One Verify template whose slot makes every send's number new (scenario 7);
    `prefix` + 9 digits, e.g. "+4477" for UK mobiles."""
    path = f"/verify/api/v2/subaccounts/{subaccount}/sessions"
    body = {"destination": prefix + SLOT.decode(), "brand": "Bench"}
    return [request(host, path, token, body, "num")]


def build(w: dict[str, Any]) -> list[Template]:
    """The request list a workload spec names (the parent and wrk build the same)."""
    host, token, kind = w["host"], w["token"], w["kind"]
    if kind == "mix":
        acct = Account(w["account"], w["subaccount"], 0, int(w["templates"]))
        return mix(host, token, acct, int(w.get("n", 1_000)), int(w.get("seed", 1)))
    if kind == "texts":
        return texts(host, token, w["subaccount"])
    if kind == "verifies":
        return verifies(host, token, w["subaccount"], list(w["numbers"]))
    if kind == "distinct":
        return distinct_verifies(host, token, w["subaccount"], w["prefix"])
    raise ValueError(f"unknown workload {kind!r}")


# --- compliance data, written straight into Redis with the gateway's key names and formats


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load_account(client: redis.Redis, account: Account, chunk: int = 10_000) -> dict[str, int]:
    """Opt-outs (a set), templates and consent (hashes) for `account`, as
    gateway/store/redis.py writes them; returns how many of each were loaded."""
    stamp = _now_iso()
    ts = int(time.time() * 1_000_000)
    optout_key = keys.optouts(account.name)
    client.delete(optout_key, keys.templates(account.name), keys.consents(account.name))
    pipe = client.pipeline(transaction=False)
    for start in range(0, account.optouts, chunk):
        stop = min(start + chunk, account.optouts)
        pipe.sadd(optout_key, *(optout_number(i) for i in range(start, stop)))
        if len(pipe) >= 20:
            pipe.execute()
    tpl = {
        "status": "APPROVED",
        "category": "MARKETING",
        "quality": "GREEN",
        "updatedAt": stamp,
        "ts": ts,
    }
    value = orjson.dumps(tpl)
    fields = {f"{template_name(i)}:en": value for i in range(account.templates)}
    for start in range(0, len(fields), chunk):
        part = dict(list(fields.items())[start : start + chunk])
        pipe.hset(keys.templates(account.name), mapping=part)  # type: ignore[arg-type]
    consent = orjson.dumps({"source": "bench", "categories": ["MARKETING"], "timestamp": stamp})
    people = {consent_number(i): consent for i in range(CONSENT_POOL)}
    pipe.hset(keys.consents(account.name), mapping=people)  # type: ignore[arg-type]
    pipe.execute()
    return {"optouts": account.optouts, "templates": account.templates, "consents": CONSENT_POOL}


def is_loaded(client: redis.Redis, account: Account) -> bool:
    return bool(
        client.scard(keys.optouts(account.name)) == account.optouts
        and client.hlen(keys.templates(account.name)) == account.templates
    )
