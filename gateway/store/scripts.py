"""The Lua scripts of lua/: loading them and calling them by SHA.

Scripts are files (one per script, each opening with its KEYS/ARGV comment). In a source
checkout they are read from the repository's lua/ directory; an installed package carries
them as the resource package `gateway.lua`. Calls go by EVALSHA; after NOSCRIPT (a Redis
restart, failover or SCRIPT FLUSH) the script is loaded again and the call repeated.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from redis.exceptions import NoScriptError
from redis.typing import EncodableT

import gateway

_SOURCE_DIR = Path(gateway.__file__).resolve().parent.parent / "lua"


def lua_source(name: str) -> str:
    """The text of lua/<name>.lua."""
    path = _SOURCE_DIR / f"{name}.lua"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return importlib.resources.files("gateway.lua").joinpath(f"{name}.lua").read_text("utf-8")


class ScriptClient(Protocol):
    """What a script call needs: redis-py's clients and gateway/store/channel.py's."""

    def execute_command(self, *args: Any) -> Any: ...  # awaitable

    def script_load(self, source: str, /) -> Any: ...  # awaitable


class LuaScript:
    """One script, called by SHA with a reload on NOSCRIPT."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: ScriptClient, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        call = client.execute_command
        try:
            return await call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await call("EVALSHA", self.sha, len(keys), *keys, *args)


@cache
def script(name: str) -> LuaScript:
    """The script lua/<name>.lua, read once per process."""
    return LuaScript(name, lua_source(name))
