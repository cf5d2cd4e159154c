"""8x8's two request limits as exact sliding windows, and the peak each one saw.

A window keeps the monotonic arrival times of the requests it accepted during the last
`window_s`; a request is accepted while fewer than the limit are in it. The peak of the
window's length, taken at each acceptance, is the most accepted in any sliding window
(a window's count can only reach a new high at an acceptance).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from .config import SimConfig

Scope = Literal["subaccount", "ip"]


class Window:
    __slots__ = ("peak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def count(self, horizon: float) -> int:
        """How many accepted after `horizon` (older ones leave the window)."""
        times = self.times
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)

    def admit(self, now: float) -> None:
        times = self.times
        times.append(now)
        if len(times) > self.peak:
            self.peak = len(times)


class Limiter:
    """Per-subaccount and per-source-IP windows; a refusal consumes nothing."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self.subaccounts: dict[str, Window] = {}
        self.ips: dict[str, Window] = {}

    def admit(self, sub: str | None, ip: str, now: float) -> Scope | None:
        """Accept the request arriving at `now`, or name the limit that refuses it."""
        config = self._config
        horizon = now - config.window_s
        ip_window = self.ips.get(ip)
        if ip_window is None:
            ip_window = self.ips[ip] = Window()
        if ip_window.count(horizon) >= config.ip_rps:
            return "ip"
        if sub is not None:
            sub_window = self.subaccounts.get(sub)
            if sub_window is None:
                sub_window = self.subaccounts[sub] = Window()
            if sub_window.count(horizon) >= config.subaccount_limit(sub):
                return "subaccount"
            sub_window.admit(now)
        ip_window.admit(now)
        return None

    def clear(self) -> None:
        self.subaccounts.clear()
        self.ips.clear()
