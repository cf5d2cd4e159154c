"""The Lua scripts of gateway/lua/: loading them and calling them by SHA.

Scripts are files (one per script, each opening with its KEYS/ARGV comment), shipped as
package data of `gateway.lua`. Calls go by EVALSHA; after NOSCRIPT (a Redis
restart, failover or SCRIPT FLUSH) the script is loaded again and the call repeated.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

from redis.exceptions import NoScriptError
from redis.typing import EncodableT


def lua_source(name: str) -> str:
    """The text of gateway/lua/<name>.lua."""
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
    """The script gateway/lua/<name>.lua, read once per process."""
    return LuaScript(name, lua_source(name))
