"""8x8's webhooks: inbound messages (STOP/START) and template status updates."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the webhook routes and background tasks on `app`."""
