"""The control API under `/_sim/` (no auth): what arrived, settings, templates, reset.

Errors here are `{"error": "..."}` with 400: they are the test's mistakes, not 8x8's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from .app import Simulator
from .meta import inbound_event, quality_event, tier_event

SIM: web.AppKey[Simulator] = web.AppKey("sim", Simulator)


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"error": message}, status=400)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    return orjson.loads(raw) if raw else None


def stats_of(sim: Simulator) -> dict[str, Any]:
    """Counters since start or the last reset. `per_second` keys are whole seconds since
    then; `accepted` counts what passed both limits (a 400 for a bad body included, as 8x8
    counts it), `refused` the 429s of each limit; `max_window` is the most accepted in
    any sliding window, per subaccount and (`ip_max_window`) per source IP."""
    recorder = sim.recorder
    limiter = sim.limiter
    return {
        "elapsed_s": round(time.monotonic() - recorder.start, 3),
        "requests": sum(recorder.by_status.values()) + recorder.dropped,
        "totals": {str(status): n for status, n in sorted(recorder.by_status.items())},
        "dropped": recorder.dropped,
        "accepted": recorder.accepted,
        "refused": dict(recorder.refused),
        "upstream_429": recorder.status_429,
        "messages": dict(recorder.messages),
        "per_second": {
            sub: {"accepted": ok, "rejected": refused}
            for sub, (ok, refused) in recorder.seconds.items()
        },
        "max_window": {sub: w.peak for sub, w in limiter.subaccounts.items()},
        "ip_max_window": {ip: w.peak for ip, w in limiter.ips.items()},
        "config": sim.config.as_dict(),
    }


async def stats(request: web.Request) -> web.Response:
    return _json(stats_of(request.app[SIM]))


async def requests(request: web.Request) -> web.Response:
    query = request.query
    try:
        limit = int(query["limit"]) if "limit" in query else None
    except ValueError:
        return _bad("limit: an integer expected")
    found = request.app[SIM].recorder.recent(limit, query.get("product"), query.get("subaccount"))
    return _json(found)


async def reset(request: web.Request) -> web.Response:
    request.app[SIM].reset()
    return _json({"ok": True})


async def _apply_settings(
    request: web.Request, apply: Callable[[dict[str, Any]], object]
) -> web.Response | None:
    """Hand the body's JSON object of settings to `apply`; the 400 when it is none, or
    when `apply` refuses a value (ValueError)."""
    try:
        changes = await _body(request)
        if not isinstance(changes, dict):
            return _bad("a JSON object of settings expected")
        apply(changes)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _bad(str(exc))
    return None


async def config(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.method == "POST":
        refused = await _apply_settings(request, sim.config.update)
        if refused is not None:
            return refused
        sim.recorder.resize(sim.config.record_limit)
    return _json(sim.config.as_dict())


async def templates(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.method == "PUT":
        try:
            given = await _body(request)
        except orjson.JSONDecodeError as exc:
            return _bad(str(exc))
        if isinstance(given, dict):
            given = given.get("templates")
        if not isinstance(given, list) or not all(isinstance(t, dict) for t in given):
            return _bad('a JSON list of templates (or {"templates": [...]}) expected')
        account = request.query.get("account", "*")
        channel = request.query.get("channel", "*")
        sim.templates.put(given, account, channel)
    return _json(sim.templates.as_json())


async def contacts(request: web.Request) -> web.Response:
    return _json(request.app[SIM].contacts.as_json())


async def meta(request: web.Request) -> web.Response:
    """Meta's settings (POST: change them) and what it judged (gateway/simulator/meta.py)."""
    sim = request.app[SIM]
    if request.method == "POST":
        refused = await _apply_settings(request, sim.meta.configure)
        if refused is not None:
            return refused
    if request.query.get("wait") == "1":
        await sim.meta.idle()
    return _json({"config": asdict(sim.meta.config), **sim.meta.stats()})


async def meta_event(request: web.Request) -> web.Response:
    """Send a webhook to the gateway as 8x8 would: `{"kind": "tier", "number", "tier",
    "account"}`, `{"kind": "quality", "template", "language", "quality", "account"}` or
    `{"kind": "inbound", "subaccount", "msisdn"}` (which also opens the user's window)."""
    sim = request.app[SIM]
    try:
        given = await _body(request)
    except orjson.JSONDecodeError as exc:
        return _bad(str(exc))
    if not isinstance(given, dict):
        return _bad("a JSON object expected")
    kind = given.get("kind")
    try:
        if kind == "tier":
            event = tier_event(given.get("account", "acme"), given["number"], given["tier"])
            path = "/webhooks/account"
        elif kind == "quality":
            event = quality_event(given.get("account", "acme"), given["template"],
                                  given.get("language", "en"), given["quality"])  # fmt: skip
            path = "/webhooks/templates"
        elif kind == "inbound":
            sim.meta.open_window(given["msisdn"])
            event, path = inbound_event(given["subaccount"], given["msisdn"]), "/webhooks/inbound"
        else:
            return _bad("kind: tier, quality or inbound expected")
    except KeyError as exc:
        return _bad(f"{exc.args[0]}: required")
    return _json({"status": await sim.meta.post(path, event)})


async def _close_meta(app: web.Application) -> None:
    await app[SIM].meta.close()


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def add_control_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/_sim/health", health)
    router.add_get("/_sim/stats", stats)
    router.add_get("/_sim/requests", requests)
    router.add_post("/_sim/reset", reset)
    router.add_route("GET", "/_sim/config", config)
    router.add_route("POST", "/_sim/config", config)
    router.add_route("GET", "/_sim/templates", templates)
    router.add_route("PUT", "/_sim/templates", templates)
    router.add_get("/_sim/contacts", contacts)
    router.add_route("GET", "/_sim/meta", meta)
    router.add_route("POST", "/_sim/meta", meta)
    router.add_post("/_sim/meta/event", meta_event)
    app.on_cleanup.append(_close_meta)
