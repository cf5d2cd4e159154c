"""The admin API (/admin/v1/...): opt-outs, consent, templates, limits."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the admin routes on `app` (before the proxy's catch-all)."""
