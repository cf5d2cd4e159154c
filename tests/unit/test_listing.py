"""gateway/listing.py: when the gateway asks 8x8 for an SMS batch's umids on the caller's
behalf, and the answer the caller gets back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway import listing, routes
from gateway.configschema import Config, PiiConfig

BATCH = routes.match("POST", "/sms/api/v1/subaccounts/acme_main/messages/batch")
CHAT_BATCH = routes.match("POST", "/chatapps/api/v1/subaccounts/acme_main/messages/batch")
RETAIN = Config(pii=PiiConfig(retain_days=30))
KEEP = Config()


def wanted(cfg: Config, body: dict[str, Any], route: Any = BATCH) -> bool:
    return listing.wanted(cfg, route, body, orjson.dumps(body))


MESSAGES = {"messages": [{"destination": "+6591234567", "text": "hi"}]}


@pytest.mark.parametrize(
    "flag",
    [{"includeMessagesInResponse": True}, {"includeMessagesInResponse": "true"},
     {"includeMessagesInResponse": 1}, {"IncludeMessagesInResponse": True},
     {"includemessagesinresponse": False}],
    ids=["true", "string", "number", "other-case", "other-case-false"],
)  # fmt: skip
def test_a_batch_that_writes_the_flag_any_other_way_than_false_goes_as_written(
    flag: dict[str, Any],
) -> None:
    assert not wanted(RETAIN, {**MESSAGES, **flag})


def test_retention_or_a_scheduled_message_asks_for_the_list() -> None:
    assert wanted(RETAIN, MESSAGES)
    assert wanted(RETAIN, {**MESSAGES, "includeMessagesInResponse": False})
    later = {"messages": [{"destination": "+6591234567", "text": "hi", "scheduled": "x"}]}
    assert wanted(KEEP, later)
    assert not wanted(KEEP, MESSAGES)
    assert not wanted(RETAIN, MESSAGES, CHAT_BATCH)


def test_the_list_is_asked_for_and_taken_out_of_the_answer_again() -> None:
    sent = orjson.loads(listing.ask(orjson.dumps({**MESSAGES, "includeMessagesInResponse": False})))
    assert sent["includeMessagesInResponse"] is True
    answer = {"batchId": "b", "acceptedCount": 1, "rejectedCount": 0, "messages": [{"umid": "u"}]}
    assert orjson.loads(listing.hide(orjson.dumps(answer))) == {
        "batchId": "b", "acceptedCount": 1, "rejectedCount": 0
    }  # fmt: skip
    assert listing.hide(b"not json") == b"not json"


def test_the_list_is_hidden_and_the_dropped_entries_reported_in_one_answer() -> None:
    answer = {"batchId": "b", "acceptedCount": 1, "rejectedCount": 0, "messages": [{"umid": "u"}]}
    report = [{"index": 1, "gatewayCode": "recipient.opted_out"}]
    assert orjson.loads(listing.hide(orjson.dumps(answer), report)) == {
        "batchId": "b", "acceptedCount": 1, "rejectedCount": 1, "gatewayRejected": report
    }  # fmt: skip
