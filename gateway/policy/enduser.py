"""Which end users a send comes from: one bucket id per person (INTERFACE.md, "End-user IP").

Sources, first found wins: the `X-End-User-IP` header; else the body's `clientIp` values
(SMS and Verify; in an SMS batch each message's own as well as the batch's); else, for a
client with `end_user_ip_from_xff` whose connection comes from a trusted proxy, the
right-most `X-Forwarded-For` address that is not a trusted proxy, every header line read
as one list in order.

`bucket_id` is the one canonical reading of an address: an IPv4-mapped IPv6 address is its
IPv4 address, a zone id (`%eth0`) and a port (`1.2.3.4:5678`, `[v6]:port`) are dropped,
and an IPv6 address stands for its network of `limits.end_user_ipv6_prefix` bits (one
household, one bucket): the id is that network, `2001:db8::/64`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from gateway.config import Network
from gateway.errors import GatewayError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_BRACKETED = re.compile(r"\[([^\[\]]+)\](?::[0-9]{1,5})?")
_V4_PORT = re.compile(r"([0-9.]+):[0-9]{1,5}")


def address(value: str) -> IPAddress | None:
    """The address `value` names (ports, brackets and zone ids dropped), or None."""
    text = value.strip()
    m = _BRACKETED.fullmatch(text) or _V4_PORT.fullmatch(text)
    if m:
        text = m.group(1)
    text = text.partition("%")[0]  # a zone id names a link, not a person
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def bucket_id(value: str, v6_prefix: int) -> str | None:
    """The end-user bucket id of one address as a caller may write it, or None."""
    ip = address(value)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((ip, v6_prefix), strict=False))


def end_users(
    header: str | None,
    body_ips: Iterable[str],
    *,
    from_xff: bool,
    remote: str | None,
    xff: Sequence[str],
    trusted: Sequence[Network],
    v6_prefix: int,
) -> tuple[str, ...]:
    """The end-user bucket ids of one send (none: the end-user-IP limit does not apply).

    An `X-End-User-IP` that is not an address, or an `X-Forwarded-For` chain from a
    trusted proxy that cannot be read up to its first untrusted hop, is 400. A body
    `clientIp` that is not an address names nobody (8x8 takes any string) and is skipped.
    """
    if header is not None and header.strip():
        found = bucket_id(header, v6_prefix)
        if found is None:
            raise GatewayError(
                "request.invalid", "X-End-User-IP is not an IP address", field="X-End-User-IP"
            )
        return (found,)
    ids = [b for b in (bucket_id(v, v6_prefix) for v in body_ips) if b is not None]
    if ids:
        return tuple(dict.fromkeys(ids))
    lines = [line for line in xff if line.strip()]
    if not (lines and from_xff and _trusted(address(remote or ""), trusted)):
        return ()
    for hop in reversed(",".join(lines).split(",")):
        ip = address(hop)
        if ip is None:
            raise GatewayError(
                "request.invalid",
                "X-Forwarded-For from a trusted proxy holds something that is not an address",
                field="X-Forwarded-For",
            )
        if not _trusted(ip, trusted):
            found = bucket_id(str(ip), v6_prefix)
            return (found,) if found else ()
    return ()


def _trusted(ip: IPAddress | None, trusted: Sequence[Network]) -> bool:
    return ip is not None and any(ip in net for net in trusted)
