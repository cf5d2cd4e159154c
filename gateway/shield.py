"""The OTP pumping shield (`[otp_shield]`, docs/otp-shield.md): judged for OTP sends only,
before the send is decided.

- An OTP is a Verify session, or a chat-apps template the worker's own compliance copy
  knows as AUTHENTICATION (the memory store, or Redis with `[redis] snapshot`: no extra
  call); a template whose category only Redis knows is not judged.
- `safe_list` (E.164 numbers or prefixes) is never judged. `countries` (ISO regions of
  the number, phonenumbers' reading; empty: any) refuses others 403 `otp.country`.
- Each number's prefix (country code + `prefix_digits` digits, never more than the number
  without its last 4) has its sends and Verify validations counted in a sliding window
  (gateway/store/shield.py): at `min_sends` sends with validated/sent under
  `min_conversion` it is held for the next step of `quarantine_s`, then until released
  (`DELETE /admin/v1/otp-shield/prefixes/{prefix}`); 403 `otp.prefix_quarantined` with
  Retry-After (the hold's rest; a hold until release says the ladder's longest step).
- A validation is credited when 8x8 answers a Verify code check that passed through the
  gateway (`GET .../sessions/{id}?code=`) with `status` VERIFIED, once per session.
- `mode`: `shadow` judges and counts (`gateway_otp_shield_total{outcome}`) and logs what
  it would refuse, refusing nothing; `enforce` refuses; `off` skips everything.

Cost: one store call per OTP send (one per credited validation); other sends pay one
attribute test. The shared store failing lets the send on to be decided (logged, counted
`error`): the signal is missing, the other limits still hold.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import unquote

import orjson
import phonenumbers
from aiohttp import web
from prometheus_client import Counter

from gateway.admin import PREFIX, _admin
from gateway.configschema import OtpShieldConfig
from gateway.errors import error_response
from gateway.messages import invalid
from gateway.numbers import NumberError, e164
from gateway.policy.decider import is_store_failure
from gateway.routes import Route
from gateway.state import LOG, STATE, State
from gateway.store.base import MessageCheck
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.shield import MANUAL, MemoryShield, RedisShield, Rules, ShieldStore
from gateway.upstream import Answer

AUTHENTICATION = "AUTHENTICATION"
VALIDATE = ("verify", "sessions.validate")  # the route whose answer credits a prefix
_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
_MESSAGES = {
    "otp.country": "OTPs to this country are not allowed",
    "otp.prefix_quarantined": "OTPs to this number range are paused (suspected SMS pumping)",
}


def rules(cfg: OtpShieldConfig) -> Rules:
    return Rules(
        window_ms=cfg.window_s * 1000,
        min_sends=cfg.min_sends,
        min_conversion=cfg.min_conversion,
        holds_ms=tuple(s * 1000 for s in cfg.quarantine_s),
        reset_ms=cfg.ladder_reset_s * 1000,
    )


def read(msisdn: str, prefix_digits: int) -> tuple[str | None, str | None]:
    """(ISO region, prefix) of an E.164 number; None where phonenumbers cannot tell."""
    try:
        number = phonenumbers.parse(msisdn, None)
    except phonenumbers.NumberParseException:
        return None, None
    region = phonenumbers.region_code_for_number(number)
    national = phonenumbers.national_significant_number(number)
    digits = min(prefix_digits, max(1, len(national) - 4))
    return region, f"+{number.country_code}{national[:digits]}"


class Shield:
    """One per process: the shield's store, its counters and the clock it judges by."""

    def __init__(
        self, state: State, store: ShieldStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.store = store
        self.clock = clock
        registry = state.metrics.registry
        self.outcomes = Counter(
            "gateway_otp_shield",
            "OTP sends judged by the pumping shield, by outcome (shadow mode too)",
            ["outcome"],
            registry=registry,
        )
        self.validations = Counter(
            "gateway_otp_shield_validations",
            "Verify validations seen by the pumping shield, by outcome",
            ["outcome"],
            registry=registry,
        )

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def check(self, numbers: Sequence[str]) -> tuple[str, int, str | None] | None:
        """(refusal code, Retry-After s, prefix) for OTPs to `numbers`, or None to go on."""
        cfg = self.state.config.otp_shield
        judged = []
        for msisdn in numbers:
            if any(msisdn.startswith(safe) for safe in cfg.safe_list):
                self.outcomes.labels("safe_list").inc()
                continue
            region, prefix = read(msisdn, cfg.prefix_digits)
            if cfg.countries and region not in cfg.countries:
                self.outcomes.labels("country").inc()
                return "otp.country", 0, None
            if prefix is not None:
                judged.append(prefix)
        if not judged:
            return None
        try:
            verdicts = await self.store.sends(judged, self.now_ms(), rules(cfg))
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            self.state.log.warning("otp_shield.store_failed", error=type(exc).__name__)
            self.outcomes.labels("error").inc(len(judged))
            return None
        refusal = None
        for prefix, verdict in zip(judged, verdicts, strict=True):
            held = verdict.retry_ms != 0
            self.outcomes.labels("quarantined" if held else "passed").inc()
            if held and refusal is None:
                longest = max(cfg.quarantine_s, default=cfg.window_s)
                retry_s = longest if verdict.retry_ms == MANUAL else verdict.retry_ms / 1000
                refusal = ("otp.prefix_quarantined", math.ceil(retry_s), prefix)
                self.state.log.info(
                    "otp_shield.held", prefix=prefix, level=verdict.level, mode=cfg.mode
                )
        return refusal

    async def credit(self, session: str, destination: str) -> None:
        """A Verify validation 8x8 said VERIFIED: credit the number's prefix, once."""
        cfg = self.state.config.otp_shield
        try:
            msisdn = e164(destination)
        except NumberError:
            self.validations.labels("unreadable").inc()
            return
        _, prefix = read(msisdn, cfg.prefix_digits)
        if prefix is None:
            self.validations.labels("unreadable").inc()
            return
        try:
            done = await self.store.validated(prefix, session, self.now_ms(), rules(cfg))
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            self.state.log.warning("otp_shield.store_failed", error=type(exc).__name__)
            self.validations.labels("error").inc()
            return
        self.validations.labels("credited" if done else "repeat").inc()


SHIELD = web.AppKey("otp_shield", Shield)


def otp_numbers(state: State, account: str, messages: Sequence[MessageCheck]) -> list[str]:
    """The numbers of the OTP messages of a send (see the module's docstring)."""
    out = []
    for m in messages:
        if not m.msisdn.startswith("+"):
            continue  # a chat-apps user id: no number to judge
        if m.otp or m.category == AUTHENTICATION or _authentication(state, account, m):
            out.append(m.msisdn)
    return out


def _authentication(state: State, account: str, m: MessageCheck) -> bool:
    if m.template is None:
        return False
    if isinstance(state.store, MemoryStore):
        found = state.store.template_state(account, m.template)
    elif state.snapshot is not None and state.snapshot.covers(account):
        found = state.snapshot.template_state(account, m.template)
    else:
        return False
    return found is not None and (found[1] or "").upper() == AUTHENTICATION


async def check(
    request: web.Request, route: Route, messages: Sequence[MessageCheck]
) -> web.Response | None:
    """The proxy's hook before a send is decided: None, or the refusal to answer."""
    state = request.app[STATE]
    cfg = state.config.otp_shield
    if cfg.mode == "off":
        return None
    numbers = otp_numbers(state, state.config.account_of(route.subaccount or ""), messages)
    if not numbers:
        return None
    found = await request.app[SHIELD].check(numbers)
    if found is None:
        return None
    code, retry_s, prefix = found
    if cfg.mode != "enforce":
        request[LOG]["otp_shield"] = f"would_refuse:{code}"
        state.log.info("otp_shield.would_refuse", code=code, prefix=prefix)
        return None
    request[LOG]["decision"] = code
    headers = {"Retry-After": str(retry_s)} if retry_s else None
    return error_response(code, _MESSAGES[code], headers=headers)


def watches(request: web.Request, route: Route) -> bool:
    """Whether this pass-through is a Verify code check whose answer `after` reads."""
    return (
        (route.product, route.op) == VALIDATE
        and request.method == "GET"
        and "code" in request.rel_url.query
        and request.app[STATE].config.otp_shield.mode != "off"
    )


async def after(request: web.Request, route: Route, answer: Answer) -> None:
    """After 8x8 answered a watched code check: a VERIFIED session credits its prefix.
    Never raises: 8x8's answer stands whatever happens here."""
    if not watches(request, route) or answer.status != 200:
        return
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(body, dict) or body.get("status") != "VERIFIED":
        return
    destination = body.get("destination")
    if isinstance(destination, str):
        session = unquote(route.path.rsplit("/", 1)[-1])
        await request.app[SHIELD].credit(session, destination)


# --- admin: the held prefixes --------------------------------------------------------------


async def held_list(request: web.Request, state: State) -> web.StreamResponse:
    shield = request.app[SHIELD]
    found = await shield.store.held(shield.now_ms())
    out = [
        {"prefix": h.prefix, "until": None if h.until_ms == MANUAL else _rfc3339(h.until_ms),
         "level": h.level}
        for h in found
    ]  # fmt: skip
    return web.Response(body=orjson.dumps({"prefixes": out}), content_type="application/json")


async def held_release(request: web.Request, state: State) -> web.StreamResponse:
    raw = request.match_info["prefix"].strip()
    prefix = raw if raw.startswith("+") else "+" + raw
    if not _PREFIX.fullmatch(prefix):
        raise invalid("prefix", "a prefix is + and up to 15 digits, e.g. +4479001")
    shield = request.app[SHIELD]
    if await shield.store.release(prefix, shield.now_ms()):
        state.log.info("otp_shield.released", prefix=prefix)
    return web.Response(status=204)


def _rfc3339(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def install(app: web.Application) -> None:
    """Give `app` its shield (needs `app[STATE]`) and the admin routes (before the proxy's
    catch-all). Redis-backed when the store is Redis, in-process otherwise."""
    state = app[STATE]
    store = state.store
    backend: ShieldStore = (
        RedisShield(store.client) if isinstance(store, RedisStore) else MemoryShield()
    )
    app[SHIELD] = Shield(state, backend)
    path = PREFIX + "/otp-shield/prefixes"
    app.router.add_route("GET", path, _admin("otp_shield", held_list))
    app.router.add_route("DELETE", path + "/{prefix}", _admin("otp_shield", held_release))
