"""Reading a request body within the gateway's limits: size (`server.max_body_bytes`),
time (`server.body_timeout_s`), and a caller hanging up mid-body. Sends, webhooks and
the admin API all read through here."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import GatewayError


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, or the GatewayError that answers it."""
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError("request.too_large", f"body over {limit} bytes")
    try:
        if request.content.is_eof():  # the whole body came with the head (usual): no timer
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise GatewayError("request.too_large", f"body over {limit} bytes") from exc
    except TimeoutError as exc:
        raise GatewayError("request.timeout", f"body not received within {timeout_s} s") from exc
    except ConnectionError as exc:  # the caller hung up mid-body: nothing to act on
        raise GatewayError("request.invalid", "the body did not arrive", field="body") from exc
