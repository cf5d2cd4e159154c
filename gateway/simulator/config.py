"""The simulator's settings: what it enforces and which faults it injects.

One mutable `SimConfig` lives on the app; the control API changes it at run time, so every
request reads the values in force when it arrives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SimConfig:
    """8x8's limits and the faults to inject (all changeable through `POST /_sim/config`)."""

    subaccount_rps: int = 1800  # accepted per subaccount in any `window_s`, all products
    ip_rps: int = 3000  # accepted per source IP (request.remote) in any `window_s`
    api_key: str | None = None  # when set, every API request needs `Bearer <api_key>`
    delay_ms: float = 0.0  # added before every API answer (after the limit decision)
    record_limit: int = 10000  # how many recent requests `/_sim/requests` keeps
    fail_status: int | None = None  # answer every API request with this status
    drop: bool = False  # close every API connection without answering
    retry_after_s: int = 1  # `Retry-After` of a 429
    window_s: float = 1.0  # the sliding window of both limits
    subaccount_rps_by_id: dict[str, int] = field(default_factory=dict)  # per-sub overrides

    def subaccount_limit(self, sub: str) -> int:
        return self.subaccount_rps_by_id.get(sub, self.subaccount_rps)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values; the API key is reported as set or not."""
        out = asdict(self)
        out["api_key"] = None if self.api_key is None else "***"
        return out

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update from the control API; ValueError names a bad key."""
        checked = {key: _check(key, value) for key, value in changes.items()}
        for key, value in checked.items():
            setattr(self, key, value)


def _check(key: str, value: Any) -> Any:
    if key in ("subaccount_rps", "ip_rps", "record_limit"):
        return _non_negative_int(key, value)
    if key in ("delay_ms", "window_s"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key}: a number >= 0 expected")
        if key == "window_s" and value == 0:
            raise ValueError("window_s: must be > 0")
        return float(value)
    if key == "retry_after_s":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key}: a number >= 0 expected")
        return math.ceil(value)  # Retry-After carries whole seconds
    if key == "fail_status":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise ValueError("fail_status: null or an HTTP status 100..599 expected")
        return value
    if key == "drop":
        if not isinstance(value, bool):
            raise ValueError("drop: true or false expected")
        return value
    if key == "api_key":
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("api_key: null or a non-empty string expected")
        return value
    if key == "subaccount_rps_by_id":
        if not isinstance(value, dict):
            raise ValueError("subaccount_rps_by_id: an object of subaccount: rps expected")
        return {str(sub): _non_negative_int(f"{key}.{sub}", rps) for sub, rps in value.items()}
    raise ValueError(f"{key}: unknown setting")


def _non_negative_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: an integer >= 0 expected")
    return value
