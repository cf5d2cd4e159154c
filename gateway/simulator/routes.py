"""The paths the simulator answers, each 8x8's own path under a product prefix, and the
function that builds each answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import shapes
from .app import Answer, Route, Simulator, parse_json
from .shapes import ApiError

_SUBACCOUNT = "/api/v1/subaccounts/{sub}"
_CONTACTS = "/contacts/api/v1/accounts/{account}"


def _chat_one(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    answer = shapes.chat_single(sim.ids, sim.clock, parse_json(raw))
    sim.recorder.sent(sub or "", 1)
    return 200, answer


def _chat_batch(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    answer, accepted = shapes.chat_batch(sim.ids, sim.clock, parse_json(raw))
    sim.recorder.sent(sub or "", accepted)
    return 200, answer


def _sms_one(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    answer = shapes.sms_single(sim.ids, parse_json(raw))
    sim.recorder.sent(sub or "", 1)
    return 200, answer


def _sms_batch(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    answer, accepted = shapes.sms_batch(sim.ids, parse_json(raw))
    sim.recorder.sent(sub or "", accepted)
    return 200, answer


def _verify(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    answer = shapes.verify_session(sim.ids, sim.clock, sub or "", parse_json(raw))
    sim.recorder.sent(sub or "", 1)
    return 200, answer


def _templates(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    channel = request.match_info["channel"]
    return 200, {"templates": sim.templates.get(account or "", channel)}


def _any_get(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    return 200, {"subAccountId": sub, "path": request.path}


def _create_group(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    return sim.contacts.create_group(account or "", parse_json(raw))


def _search_groups(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
        offset = int(query.get("offset", "0"))
    except ValueError:
        raise ApiError(shapes.INVALID_PARAMETER, "Invalid parameter: limit/offset") from None
    return 200, sim.contacts.search_groups(account or "", query.get("name"), limit, offset)


def _create_contact(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    return sim.contacts.create_contact(account or "", parse_json(raw))


def _add_to_group(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    try:
        group = int(request.match_info["group"])
    except ValueError:
        raise ApiError(shapes.NOT_FOUND, "Unable to find group", 404) from None
    return sim.contacts.add_to_group(account or "", group, parse_json(raw))


def _blacklist(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    sim.contacts.blacklist(account or "", request.match_info["msisdn"])
    return 200, None  # contacts_api.json: 200 OK, no body


def _unknown(
    sim: Simulator, request: web.Request, raw: bytes, sub: str | None, account: str | None
) -> tuple[int, Any]:
    raise ApiError(shapes.NOT_FOUND, "Not found", 404)


def _product_routes() -> list[Route]:
    routes = []
    for product, one, batch in (
        ("chatapps", _chat_one, _chat_batch),
        ("sms", _sms_one, _sms_batch),
    ):
        base = f"/{product}{_SUBACCOUNT}/messages"
        routes.append(Route("POST", base, product, "send", one))
        routes.append(Route("POST", f"{base}/batch", product, "batch", batch))
    routes.append(
        Route("POST", "/verify/api/v2/subaccounts/{sub}/sessions", "verify", "verify", _verify)
    )
    routes.append(
        Route(
            "GET",
            "/chatapps/api/v1/accounts/{account}/channels/{channel}/templates",
            "chatapps",
            "templates",
            _templates,
            per_subaccount=False,
        )
    )
    for product in ("chatapps", "sms", "verify"):
        path = f"/{product}/api/{{head:.+}}/subaccounts/{{sub}}/{{rest:.*}}"
        routes.append(Route("GET", path, product, "get", _any_get))
    return routes


def _contacts_routes() -> list[Route]:
    def route(method: str, tail: str, kind: str, answer: Answer) -> Route:
        return Route(method, f"{_CONTACTS}{tail}", "contacts", kind, answer, per_subaccount=False)

    return [
        route("POST", "/groups", "create_group", _create_group),
        route("GET", "/groups", "search_groups", _search_groups),
        route("POST", "/contacts", "create_contact", _create_contact),
        route("POST", "/contacts/blacklist/{msisdn}", "blacklist", _blacklist),
        route("POST", "/groups/{group}/contacts", "add_to_group", _add_to_group),
    ]


ROUTES: tuple[Route, ...] = (*_product_routes(), *_contacts_routes())
UNKNOWN = Route("*", "/{tail:.*}", "", "unknown", _unknown, api=False)
