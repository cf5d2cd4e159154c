"""Which gateway paths are 8x8 paths, and where they go.

The first path segment names the product; the rest is 8x8's own path, forwarded as is.
Anything not listed here is 404 `route.unknown` and never reaches 8x8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SUB = r"(?P<sub>[A-Za-z0-9\-._&]{3,50})"  # 8x8's subAccountId pattern
_SEGMENT = r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+"  # one RFC 3986 path segment, no escapes


class Kind(StrEnum):
    SEND = "send"  # one message
    BATCH = "batch"  # a batch of messages
    VERIFY = "verify"  # a Verify session: an OTP
    READ = "read"  # a GET: subaccount and egress-IP buckets only


@dataclass(frozen=True, slots=True)
class Route:
    product: str  # chatapps | sms | verify: the upstream.urls key
    kind: Kind
    subaccount: str
    path: str  # 8x8's path (after the product prefix)

    @property
    def name(self) -> str:
        """A low-cardinality label for logs and metrics."""
        return f"{self.product}.{self.kind}"


_POSTS = (
    (
        re.compile(rf"^/(?P<p>chatapps|sms)(?P<path>/api/v1/subaccounts/{_SUB}/messages)$"),
        Kind.SEND,
    ),
    (
        re.compile(rf"^/(?P<p>chatapps|sms)(?P<path>/api/v1/subaccounts/{_SUB}/messages/batch)$"),
        Kind.BATCH,
    ),
    (re.compile(rf"^/(?P<p>verify)(?P<path>/api/v2/subaccounts/{_SUB}/sessions)$"), Kind.VERIFY),
)
_READ = re.compile(
    rf"^/(?P<p>chatapps|sms|verify)(?P<path>/api(?:/{_SEGMENT})*?/subaccounts/{_SUB}"
    rf"(?:/{_SEGMENT})+)$"
)


def match(method: str, raw_path: str) -> Route | None:
    """The route for a request's method and raw (undecoded, query-less) path, if proxied."""
    if method == "POST":
        for pattern, kind in _POSTS:
            m = pattern.fullmatch(raw_path)
            if m:
                return Route(m["p"], kind, m["sub"], m["path"])
        return None
    if method == "GET":
        m = _READ.fullmatch(raw_path)
        if m and "/./" not in raw_path + "/" and "/../" not in raw_path + "/":
            return Route(m["p"], Kind.READ, m["sub"], m["path"])
    return None
