"""8x8's answer and error bodies, as the OpenAPI files in 8x8Cloud/public-developer-docs
(docs_oas/connect/*.json) describe them, and the light validation 8x8 applies first.

Builders return plain dicts; the caller serialises them with orjson.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from . import specs
from .schema import Spec, check

# 8x8's numeric error codes (docs/connect/docs/api-error-codes.md)
INVALID_PARAMETER = 1000
INVALID_MSISDN = 1002
INVALID_TEXT = 1004
UNAUTHORIZED = 1200
NOT_FOUND = 1300
INTERNAL = 2000
MISSED_USER = 3001
MISSED_CONTENT = 3004
INVALID_CONTENT_TYPE = 3010
MISSED_MESSAGES = 3012
TOO_MANY_MESSAGES = 3013
QUOTA = 429
GROUP_EXISTS = 5003

MSG_MSISDN = "Invalid MSISDN format (not E.164 international number)"
MSG_UNAUTHORIZED = "Request was not authenticated properly"
MAX_BATCH = 10000  # messages (and SMS destinations) per batch in 8x8's schemas

_MSISDN = re.compile(r"^\+?[1-9][0-9]{6,14}$")  # sms_api.json's destination pattern
BILLING_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")  # usage's billingPeriod, YYYY-MM
_SEPARATORS = str.maketrans("", "", " ()-.")
_SMS_QUEUED = {"code": "QUEUED", "description": "SMS is accepted and queued for processing"}

_FAULT_CODES = {400: INVALID_PARAMETER, 401: UNAUTHORIZED, 404: NOT_FOUND, 429: QUOTA}


class Ids:
    """Unique UUID-shaped ids without uuid4's cost on the hot path."""

    def __init__(self) -> None:
        hex_ = uuid.uuid4().hex
        self._prefix = f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-"
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:012x}"

    def next_hex(self) -> str:
        return self.next().replace("-", "")


class Clock:
    """8x8-style UTC timestamps (`2020-12-22T05:52:01.85Z`), the seconds part cached."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def iso(self, offset_s: float = 0.0) -> str:
        now = time.time() + offset_s
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((now - second) * 100):02d}Z"

    def iso_at(self, epoch: float) -> str:
        second = int(epoch)
        head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{head}.{int((epoch - second) * 100):02d}Z"


def error(ids: Ids, clock: Clock, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "errorId": ids.next(), "timestamp": clock.iso()}


def quota_error(ids: Ids, clock: Clock, retry_after_s: int) -> dict[str, Any]:
    message = f"Quota exceeded. Please try again in {retry_after_s} second(s)."
    return error(ids, clock, QUOTA, message)


def fault_error(ids: Ids, clock: Clock, status: int) -> dict[str, Any]:
    code = _FAULT_CODES.get(status, INTERNAL)
    return error(ids, clock, code, "Injected fault: simulated 8x8 error")


def msisdn_ok(value: Any, country: Any = None) -> bool:
    """E.164 with or without '+'; with a country, any national spelling of digits."""
    if not isinstance(value, str):
        return False
    compact = value.translate(_SEPARATORS)
    if country:
        digits = compact.removeprefix("+")
        return digits.isdigit() and 4 <= len(digits) <= 15
    return _MSISDN.match(compact) is not None


def digits_of(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


class ApiError(Exception):
    """A request 8x8 refuses as a whole: its HTTP status and 8x8's numeric code."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(INVALID_PARAMETER, "Invalid parameter: the body must be a JSON object")
    return body


# --- Messaging Apps (business_messaging_api.json) ---------------------------------------


def chat_problem(message: Any) -> tuple[int, str] | None:
    """Why 8x8 refuses one chat apps message, or None."""
    if not isinstance(message, dict):
        return INVALID_PARAMETER, "Invalid parameter: a message must be an object"
    user = message.get("user")
    if not isinstance(user, dict):
        return MISSED_USER, "Missed User"
    msisdn = user.get("msisdn")
    if msisdn is None and not (user.get("channelUserId") or user.get("lineUserId")):
        return MISSED_USER, "Missed User"
    if msisdn is not None and not msisdn_ok(msisdn, user.get("country")):
        return INVALID_MSISDN, MSG_MSISDN
    if not isinstance(message.get("type"), str):
        return INVALID_CONTENT_TYPE, "Invalid Content Type"
    if not isinstance(message.get("content"), dict):
        return MISSED_CONTENT, "Missed Content"
    return schema_problem(specs.CHAT_MESSAGE, message)


def lon_problem(message: Any) -> tuple[int, str] | None:
    """Why 8x8 refuses one LON message (a chat apps user, no `type`), or None."""
    if not isinstance(message, dict):
        return INVALID_PARAMETER, "Invalid parameter: a message must be an object"
    user = message.get("user")
    if not isinstance(user, dict) or (user.get("msisdn") is None and not user.get("channelUserId")):
        return MISSED_USER, "Missed User"
    msisdn = user.get("msisdn")
    if msisdn is not None and not msisdn_ok(msisdn, user.get("country")):
        return INVALID_MSISDN, MSG_MSISDN
    if not isinstance(message.get("content"), dict):
        return MISSED_CONTENT, "Missed Content"
    return schema_problem(specs.LON_MESSAGE, message)


def schema_problem(spec: Spec, value: Any) -> tuple[int, str] | None:
    """8x8's code and message for the first way `value` breaks `spec`, or None."""
    found = check(spec, value)
    if found is None:
        return None
    if found.msisdn:
        return INVALID_MSISDN, MSG_MSISDN
    return INVALID_PARAMETER, f"Invalid parameter: {found.field} {found.reason}"


def require(spec: Spec, value: Any) -> None:
    problem = schema_problem(spec, value)
    if problem is not None:
        raise ApiError(*problem)


def chat_answer(ids: Ids, clock: Clock, message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"umid": ids.next(), "user": message.get("user")}
    if "clientMessageId" in message:
        out["clientMessageId"] = message["clientMessageId"]
    out["status"] = {"state": "queued", "timestamp": clock.iso()}
    return out


def chat_single(ids: Ids, clock: Clock, body: Any, lon: bool = False) -> dict[str, Any]:
    message = require_object(body)
    problem = lon_problem(message) if lon else chat_problem(message)
    if problem is not None:
        raise ApiError(*problem)
    return chat_answer(ids, clock, message)


def chat_batch(ids: Ids, clock: Clock, body: Any, lon: bool = False) -> tuple[dict[str, Any], int]:
    """The batch answer and how many messages were accepted."""
    batch = require_object(body)
    messages = _batch_list(batch.get("messages"), required=True)
    require(specs.LON_BATCH if lon else specs.CHAT_BATCH, batch)
    shared = batch.get("template") if not lon else None
    shared = shared if isinstance(shared, dict) else {}
    listed = bool(batch.get("includeMessagesInResponse"))
    judge = lon_problem if lon else chat_problem
    accepted, answers = 0, []
    for item in messages:
        message = {**shared, **item} if isinstance(item, dict) else item
        problem = judge(message)
        if problem is None:
            accepted += 1
            if listed:
                answers.append(chat_answer(ids, clock, message))
        elif listed:
            answers.append(_chat_rejected(ids, clock, message, problem))
    return _batch_answer(ids, batch, accepted, len(messages) - accepted, answers), accepted


def _chat_rejected(ids: Ids, clock: Clock, message: Any, problem: tuple[int, str]) -> Any:
    found = message if isinstance(message, dict) else {}
    out: dict[str, Any] = {"umid": ids.next(), "user": found.get("user")}
    if "clientMessageId" in found:
        out["clientMessageId"] = found["clientMessageId"]
    status = {"state": "rejected", "timestamp": clock.iso()}
    out["status"] = {**status, "errorCode": problem[0], "errorMessage": problem[1]}
    return out


# --- SMS (sms_api.json) ------------------------------------------------------------------


def sms_problem(message: Any) -> str | None:
    """8x8's REJECTED description for one SMS, or None."""
    if not isinstance(message, dict):
        return "Invalid parameter"
    if not msisdn_ok(message.get("destination"), message.get("country")):
        return MSG_MSISDN
    text = message.get("text")
    if not isinstance(text, str) or not text:
        return "Text value is missing"
    found = schema_problem(specs.SMS_MESSAGE, message)
    return None if found is None else found[1]


def sms_answer(ids: Ids, message: dict[str, Any], problem: str | None) -> dict[str, Any]:
    destination = message.get("destination")
    text = message.get("text")
    encoding = message.get("encoding", "AUTO")
    if encoding not in ("GSM7", "UCS2"):
        encoding = "GSM7" if isinstance(text, str) and text.isascii() else "UCS2"
    out: dict[str, Any] = {"umid": ids.next()}
    if "clientMessageId" in message:
        out["clientMessageId"] = message["clientMessageId"]
    out["destination"] = digits_of(destination) if isinstance(destination, str) else ""
    out["encoding"] = encoding
    out["status"] = _SMS_QUEUED if problem is None else {"code": "REJECTED", "description": problem}
    return out


def sms_single(ids: Ids, body: Any) -> dict[str, Any]:
    message = require_object(body)
    problem = sms_problem(message)
    if problem == MSG_MSISDN:
        raise ApiError(INVALID_MSISDN, MSG_MSISDN)
    if problem is not None and problem.startswith("Invalid parameter"):
        raise ApiError(INVALID_PARAMETER, problem)
    if problem is not None:
        raise ApiError(INVALID_TEXT, problem)
    return sms_answer(ids, message, None)


def survey_batch(ids: Ids, batch: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A survey batch (its body already checked against 8x8's schema)."""
    shared = batch.get("template") or {}
    listed = bool(batch.get("includeMessagesInResponse"))
    accepted, answers = 0, []
    for item in batch["messages"]:
        message = {**shared, **item}
        ok = msisdn_ok(message.get("destination"), message.get("country"))
        accepted += ok
        if listed:
            answers.append(sms_answer(ids, message, None if ok else MSG_MSISDN))
    total = len(batch["messages"])
    return _batch_answer(ids, batch, accepted, total - accepted, answers), accepted


def sms_batch(ids: Ids, body: Any) -> tuple[dict[str, Any], int]:
    """The batch answer and how many SMS were accepted (`messages` and `destinations`)."""
    batch = require_object(body)
    has_destinations = "destinations" in batch
    messages = _batch_list(batch.get("messages"), required=not has_destinations)
    destinations = _batch_list(batch.get("destinations"), required=not messages)
    require(specs.SMS_BATCH, batch)
    shared = batch.get("template")
    shared = shared if isinstance(shared, dict) else {}
    listed = bool(batch.get("includeMessagesInResponse"))
    every = [{**shared, **m} if isinstance(m, dict) else m for m in messages]
    every.extend({**shared, "destination": d} for d in destinations)
    accepted, answers = 0, []
    for message in every:
        problem = sms_problem(message)
        accepted += problem is None
        if listed:
            answers.append(sms_answer(ids, message if isinstance(message, dict) else {}, problem))
    return _batch_answer(ids, batch, accepted, len(every) - accepted, answers), accepted


# --- Verify v2 (verification_api.json) ---------------------------------------------------


def verify_session(ids: Ids, clock: Clock, sub: str, body: Any) -> dict[str, Any]:
    request = require_object(body)
    require(specs.VERIFY_SESSION, request)
    destination = request.get("destination")
    if not msisdn_ok(destination, request.get("country")):
        raise ApiError(INVALID_MSISDN, MSG_MSISDN)
    assert isinstance(destination, str)
    validity = request.get("codeValidity")
    validity = validity if isinstance(validity, int) and 30 <= validity <= 7200 else 300
    interval = request.get("resendingInterval")
    interval = interval if isinstance(interval, int) and 10 <= interval <= 7200 else 10
    session = ids.next_hex()
    digits = digits_of(destination)
    return {
        "sessionId": session,
        "verifyUri": f"/api/v2/subaccounts/{sub}/sessions/{session}",
        "destination": digits if request.get("country") else f"+{digits}",
        "status": "WAITING",
        "attempt": 0,
        "expiresAt": clock.iso(validity),
        "retryAfter": clock.iso(interval),
    }


# --- shared ------------------------------------------------------------------------------


def _batch_list(value: Any, *, required: bool) -> list[Any]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise ApiError(MISSED_MESSAGES, "Missed messages")
    if len(value) > MAX_BATCH:
        raise ApiError(TOO_MANY_MESSAGES, "Too much messages")
    return value


def _batch_answer(
    ids: Ids, batch: dict[str, Any], accepted: int, rejected: int, answers: list[Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"batchId": ids.next()}
    if "clientBatchId" in batch:
        out["clientBatchId"] = batch["clientBatchId"]
    out["acceptedCount"] = accepted
    out["rejectedCount"] = rejected
    if batch.get("includeMessagesInResponse"):
        out["messages"] = answers
    return out
