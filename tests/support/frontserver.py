"""In-process gateway test servers served as `gateway serve` serves: through `FrontRunner`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.front import FrontRunner


class FrontServer(TestServer):
    """`aiohttp.test_utils.TestServer` whose runner is the gateway's `FrontRunner`."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return FrontRunner(self.app, **kwargs)
