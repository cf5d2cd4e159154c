"""aiohttp's HTTP server with the gateway's answer to a request it cannot parse.

aiohttp answers a malformed request (a bad header byte, a broken Content-Length) with a
plain-text 400 that quotes the offending bytes, an Authorization header included. The
gateway answers it in 8x8's error shape instead (400 `request.invalid`), quoting nothing,
and its log line comes through the JSON logger's aiohttp bridge (`http.bad_request`).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from gateway.errors import error_response


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:  # some of an answer went out: nothing to add
            raise ConnectionError("the answer was already being sent")
        response = error_response("request.invalid", "the request is not valid HTTP/1.1")
        response.force_close()
        return response


class _Server(Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


def install(runner: web.BaseRunner) -> None:
    """After `runner.setup()`: connections made from now on get the gateway's handler."""
    server = runner.server
    assert server is not None and type(server) is Server, "aiohttp's Server changed"
    server.__class__ = _Server
