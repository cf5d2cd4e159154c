"""The port's one handler: proxied requests skip aiohttp's router and middleware chain.

aiohttp's `web.Application` resolves every request through its router, builds the
middleware chain around the matched handler and wraps it in `_fix_request_current_app`, a
context manager per request. For the gateway's own endpoints (health, metrics, admin,
webhooks) that is worth it; for the proxied 8x8 operations, nearly every request the
gateway serves, it is pure cost: the gateway routes them itself (`gateway/routes.py`).

`FrontRunner` is an `AppRunner` whose low-level `web.Server` gets `Front` as its request
handler (issue 17: aiohttp's low-level server with one handler). `Front` sends a request
whose first path segment names one of the application's own resources (or that carries
`Expect`) to the application as before; every other request goes straight to the
`observe` → `proxy.handle` pair, with one match-info built at start-up for the catch-all
route, so `request.app`, `request.match_info` and the `on_response_prepare` hook (RateLimit
fields, X-Request-Id) behave exactly as they do through the router.

The same runner serves production (`gateway serve`), `gateway demo` and the tests
(`tests/support/frontserver.py`), so what is tested is the path that serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from gateway import proxy
from gateway.app import observe
from gateway.routes import PRODUCTS

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Front:
    """The request handler of the gateway's `web.Server`."""

    __slots__ = ("_fallback", "_match", "_own")

    def __init__(self, app: web.Application, fallback: Handler) -> None:
        self._fallback = fallback  # the application's own handler: router + middlewares
        self._own, route = _own_segments(app)
        match = UrlMappingMatchInfo({"tail": ""}, route)
        match.add_app(app)
        match.freeze()
        self._match = match

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # the application's request factory made it: a web.Request, as the router's are
        assert isinstance(request, web.Request)
        path = request.rel_url.raw_path
        first = path[1:].partition("/")[0]
        if first in self._own or "%" in first or hdrs.EXPECT in request.headers:
            # an own endpoint, one spelled with escapes (the router decodes them), or a
            # request that expects 100-continue: the application, as before
            return await self._fallback(request)
        request._match_info = self._match  # what the router would have resolved
        return await observe(request, proxy.handle)


def _own_segments(app: web.Application) -> tuple[frozenset[str], web.AbstractRoute]:
    """The first path segments of the application's own resources, and the catch-all
    route that proxies everything else."""
    own: set[str] = set()
    catch_all = None
    for resource in app.router.resources():
        routes = list(resource)
        if any(route.handler is proxy.handle for route in routes):
            catch_all = routes[0]
            continue
        first = resource.canonical[1:].partition("/")[0]
        assert first and "{" not in first, f"an own resource must start plain: {resource}"
        own.add(first)
    assert catch_all is not None, "the application has no catch-all route"
    clash = own & {p.lower() for p in PRODUCTS}
    assert not clash, f"own endpoints under 8x8 product prefixes: {clash}"
    return frozenset(own), catch_all


class FrontRunner(web.AppRunner):
    """`web.AppRunner` (start-up, clean-up, shutdown as usual) whose server's request
    handler is `Front`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = Front(self.app, server.request_handler)
        return server
