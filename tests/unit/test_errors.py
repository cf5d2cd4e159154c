"""Every error the gateway answers parses as 8x8's error schema (common_models.json
`ErrorResponse`: integer `code`, uuid `errorId`, RFC 3339 `timestamp`, string `message`),
with the dotted `gatewayCode` beside it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest

from gateway.errors import STATUS, GatewayError, error_response, from_exception


@dataclass(frozen=True)
class EightByEightError:
    """A model of 8x8's ErrorResponse, strict as a generated client is."""

    code: int
    errorId: uuid.UUID
    timestamp: datetime
    message: str | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> EightByEightError:
        for name in ("code", "errorId", "timestamp"):
            assert name in body, f"8x8's schema requires {name}"
        code = body["code"]
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(f"code must be an integer, got {code!r}")
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise TypeError("message must be a string")
        return cls(
            code,
            uuid.UUID(body["errorId"]),
            datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")),
            message,
        )


@pytest.mark.parametrize("code", sorted(STATUS))
def test_every_gateway_error_parses_as_8x8s_error(code: str) -> None:
    response = error_response(code, "why")
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    parsed = EightByEightError.parse(body)
    assert body["gatewayCode"] == code
    assert response.headers["X-Gateway-Reject"] == code
    assert response.status == STATUS[code]
    expected = 1000 if code == "request.invalid" else STATUS[code]
    assert parsed.code == expected


def test_invalid_msisdn_carries_8x8s_number() -> None:
    exc = GatewayError("request.invalid", "bad", number=1002, field="destination")
    body = orjson.loads(from_exception(exc).body)  # type: ignore[arg-type]
    assert (body["code"], body["gatewayCode"], body["field"]) == (
        1002,
        "request.invalid",
        "destination",
    )
