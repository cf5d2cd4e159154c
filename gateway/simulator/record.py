"""What arrived: counters by status and by second, and a ring of the latest requests.

The hot path appends tuples and bumps counters; turning them into JSON (headers, parsed
bodies) happens only when the control API asks.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, NamedTuple

import orjson
from multidict import CIMultiDictProxy

from .limits import Scope


class Arrival(NamedTuple):
    seq: int
    t: float  # seconds since the simulator (re)started, monotonic
    time: float  # wall clock, epoch seconds
    method: str
    path: str
    query: str
    product: str
    kind: str
    subaccount: str | None
    account: str | None
    ip: str
    headers: CIMultiDictProxy[str]
    body: bytes
    status: int | None  # None: the connection was dropped without an answer
    raw_path: str = ""  # the path as it arrived, percent-escapes and all

    def as_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["headers"] = _headers(self.headers)
        out["body"] = _body(self.body)
        return out


class Recorder:
    def __init__(self, record_limit: int) -> None:
        self.start = time.monotonic()
        self.ring: deque[Arrival] = deque(maxlen=record_limit)
        self.seq = 0
        self.by_status: dict[int, int] = {}
        self.dropped = 0
        self.accepted = 0
        self.refused: dict[str, int] = {"subaccount": 0, "ip": 0}
        self.status_429 = 0
        self.messages: dict[str, int] = {}
        self.seconds: dict[str, tuple[dict[int, int], dict[int, int]]] = {}

    def second(self, now: float) -> int:
        return int(now - self.start)

    def admitted(self, sub: str | None, now: float) -> None:
        self.accepted += 1
        if sub is not None:
            counts = self._seconds(sub)[0]
            sec = int(now - self.start)
            counts[sec] = counts.get(sec, 0) + 1

    def refused_by(self, scope: Scope, sub: str | None, now: float) -> None:
        self.refused[scope] += 1
        if sub is not None:
            counts = self._seconds(sub)[1]
            sec = int(now - self.start)
            counts[sec] = counts.get(sec, 0) + 1

    def sent(self, sub: str, count: int) -> None:
        self.messages[sub] = self.messages.get(sub, 0) + count

    def answered(self, status: int | None) -> None:
        if status is None:
            self.dropped += 1
            return
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status == 429:
            self.status_429 += 1

    def keep(self, *fields: Any) -> None:
        """Keep one arrival: the fields of `Arrival` after `seq`."""
        if self.ring.maxlen:
            self.seq += 1
            self.ring.append(Arrival(self.seq, *fields))

    def resize(self, record_limit: int) -> None:
        if record_limit != self.ring.maxlen:
            self.ring = deque(self.ring, maxlen=record_limit)

    def recent(
        self, limit: int | None, product: str | None = None, subaccount: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest arrivals, oldest first, optionally filtered."""
        chosen = [
            a
            for a in self.ring
            if (product is None or a.product == product)
            and (subaccount is None or a.subaccount == subaccount)
        ]
        if limit is not None:
            chosen = chosen[-limit:] if limit > 0 else []
        return [a.as_json() for a in chosen]

    def _seconds(self, sub: str) -> tuple[dict[int, int], dict[int, int]]:
        pair = self.seconds.get(sub)
        if pair is None:
            pair = self.seconds[sub] = ({}, {})
        return pair


def _headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Header names lower-cased; repeated headers joined with ', ' as HTTP allows."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
