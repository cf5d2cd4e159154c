"""SMS batches: the umids the gateway needs, and the answer the caller asked for.

8x8 answers an SMS batch with a batch id and counts only, unless the batch says
`includeMessagesInResponse: true`; then its answer lists every message with its `umid`.
The gateway needs those umids for two duties: PII removal after `[pii] retain_days`
(gateway/pii.py) and cancelling a person's scheduled sends when they send STOP
(gateway/scheduled.py). So when either applies (retention on, or a message of the batch is
`scheduled`) and the caller did not ask for the list, the gateway asks 8x8 for it and
takes it out of the answer again: the caller gets exactly the shape 8x8 would have given
it (`messages` is the only key the flag adds), the gateway gets every umid.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import answers
from gateway.config import Config
from gateway.routes import Kind, Route

FLAG = "includeMessagesInResponse"
_FLAG_LOWER = FLAG.lower()


def wanted(cfg: Config, route: Route, body: Any, raw: bytes) -> bool:
    """Whether to ask 8x8 for this send's list of messages on the caller's behalf."""
    if route.product != "sms" or route.kind is not Kind.BATCH or not isinstance(body, dict):
        return False
    if body.get(FLAG, False) is not False or any(
        k.lower() == _FLAG_LOWER and k != FLAG for k in body
    ):
        # the caller asked for it (or wrote the flag in a way only 8x8 can judge): the
        # batch goes as written and its answer comes back whole
        return False
    return cfg.pii.retain_days > 0 or b'"scheduled"' in raw


def ask(body: bytes) -> bytes:
    """The batch as forwarded: with `includeMessagesInResponse: true`."""
    batch = orjson.loads(body)
    batch[FLAG] = True
    return orjson.dumps(batch)


def hide(payload: bytes, report: list[dict[str, Any]] | None = None) -> bytes:
    """8x8's answer as the caller asked for it: without the `messages` list, and with the
    gateway's `report` of dropped entries when there is one (answers.add_rejected), in one
    decoding of a possibly large answer."""
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if not isinstance(answer, dict) or ("messages" not in answer and report is None):
        return payload
    answer.pop("messages", None)
    if report is not None:
        answers.add_rejected(answer, report)
    return orjson.dumps(answer)
