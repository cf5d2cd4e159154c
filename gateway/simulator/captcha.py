"""A CAPTCHA provider's siteverify, standing in for reCAPTCHA / hCaptcha / Turnstile.

`POST /captcha/siteverify` with form fields `secret`, `response`, `remoteip` answers
`{"success": true, ...}` for a token starting `pass-` (any secret), else `success: false`
with `error-codes`. The control `POST /_sim/captcha` `{"mode": "ok" | "error" | "hang"}`
makes it answer normally, 500, or never (until the mode changes); `GET /_sim/captcha`
reports the mode and the calls received (form fields, the secret left out).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

PATH = "/captcha/siteverify"
MODES = ("ok", "error", "hang")


class Provider:
    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[dict[str, Any]] = []
        self.changed = asyncio.Event()


PROVIDER = web.AppKey("captcha_provider", Provider)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def siteverify(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    form = await request.post()
    token = str(form.get("response", ""))
    provider.calls.append({
        "response": token, "remoteip": form.get("remoteip"), "secret_set": bool(form.get("secret"))
    })  # fmt: skip
    while provider.mode == "hang":
        provider.changed.clear()
        await provider.changed.wait()
    if provider.mode == "error":
        return _json({"error": "internal"}, status=500)
    if not form.get("secret"):
        return _json({"success": False, "error-codes": ["missing-input-secret"]})
    if token.startswith("pass-"):
        return _json({"success": True, "challenge_ts": "2026-01-01T00:00:00Z",
                      "hostname": "sim"})  # fmt: skip
    return _json({"success": False, "error-codes": ["invalid-input-response"]})


async def control(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    if request.method == "POST":
        try:
            given = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            return _json({"error": str(exc)}, status=400)
        mode = given.get("mode", provider.mode) if isinstance(given, dict) else None
        if mode not in MODES:
            return _json({"error": f"mode: one of {', '.join(MODES)} expected"}, status=400)
        provider.mode = mode
        if given.get("clear"):
            provider.calls.clear()
        provider.changed.set()
    return _json({"mode": provider.mode, "calls": provider.calls})


def setup(app: web.Application) -> None:
    app[PROVIDER] = Provider()
    app.router.add_post(PATH, siteverify)
    app.router.add_route("GET", "/_sim/captcha", control)
    app.router.add_route("POST", "/_sim/captcha", control)
