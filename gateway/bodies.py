"""Reading a request body within the gateway's limits: size (`server.max_body_bytes`, of
the decoded body), time (`server.body_timeout_s`), and a caller hanging up mid-body.
Sends, webhooks and the admin API all read through here.

A compressed body (`Content-Encoding: gzip` or `deflate`) is decoded here, a slice at a
time, and refused 413 as soon as what it decodes to passes the limit: a few hundred KB
of gzip can decode to gigabytes, and decoding it all at once would stall every request
of the worker. aiohttp's own decoding is switched off (gateway/app.py,
`auto_decompress=False`) because, after the handler answers, it goes on decoding the rest
of a refused body while it lingers on the connection.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from gateway.errors import GatewayError

#: decoded bytes per slice: one slice is well under a millisecond of the event loop
SLICE = 256 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, decoded, or the GatewayError that answers it."""
    coding = _coding(request.headers.get("Content-Encoding"))
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError("request.too_large", f"body over {limit} bytes")
    try:
        if request.content.is_eof():  # the whole body came with the head (usual): no timer
            raw = await _read_raw(request, limit)
        else:
            async with asyncio.timeout(timeout_s):
                raw = await _read_raw(request, limit)
    except TimeoutError as exc:
        raise GatewayError("request.timeout", f"body not received within {timeout_s} s") from exc
    except ConnectionError as exc:  # the caller hung up mid-body: nothing to act on
        raise GatewayError("request.invalid", "the body did not arrive", field="body") from exc
    if coding is None:
        return raw
    return await decode(raw, coding, limit)


def _coding(header: str | None) -> str | None:
    """The one content coding of a body (None: as is), or 415 for one not supported."""
    if header is None:
        return None
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _WBITS:
        raise GatewayError(
            "request.content_type", "Content-Encoding may be gzip or deflate (one of them)"
        )
    return codings[0]


async def _read_raw(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise GatewayError("request.too_large", f"body over {limit} bytes")
    return bytes(body)


async def decode(raw: bytes, coding: str, limit: int) -> bytes:
    """`raw` decoded, a slice at a time, never holding more than `limit` + one slice."""
    wbits = _WBITS[coding]
    if coding == "deflate" and raw[:1] and raw[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate without the zlib header, as browsers send
    decoder = zlib.decompressobj(wbits)
    out = bytearray()
    data = raw
    try:
        while data:
            out += decoder.decompress(data, SLICE)
            if len(out) > limit:
                raise GatewayError("request.too_large", f"body over {limit} bytes decoded")
            data = decoder.unconsumed_tail
            if decoder.eof:
                break
            await asyncio.sleep(0)  # let the worker's other requests run between slices
    except zlib.error as exc:
        raise GatewayError("request.invalid", f"body is not valid {coding}", field="body") from exc
    if not decoder.eof:
        raise GatewayError("request.invalid", f"body is truncated {coding}", field="body")
    return bytes(out)
