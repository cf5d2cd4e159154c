"""The 8x8 key file watched for changes: a rotated Kubernetes Secret (its mounted file is
swapped through a symlink, no signal sent) takes effect within a few seconds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import Config, ConfigError, read_api_key

POLL_S = 2.0


def signature(path: str) -> tuple[int, int, int, int] | None:
    """What changes when the file is replaced or rewritten (the link followed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


async def watch(
    config: Callable[[], Config],
    environ: Mapping[str, str],
    set_key: Callable[[str], None],
    log: Any,
    poll_s: float = POLL_S,
) -> None:
    """Until cancelled: re-read `upstream.api_key_file` whenever its signature changes."""
    path = config().upstream.api_key_file
    seen = signature(path) if path else None
    while True:
        await asyncio.sleep(poll_s)
        cfg = config()
        if cfg.upstream.api_key_file != path:  # a reload named another file
            path = cfg.upstream.api_key_file
            seen = signature(path) if path else None
            continue
        if not path:
            continue
        now = signature(path)
        if now == seen:
            continue
        try:
            key = read_api_key(cfg, environ)
        except ConfigError as exc:  # mid-rotation or gone: keep the key in use, say so
            log.warning("key.unreadable", problems=exc.problems)
        else:
            set_key(key)
            log.info("key.reloaded", file=path)
        seen = now
