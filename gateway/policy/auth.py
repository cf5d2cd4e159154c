"""Who is calling: client tokens (hashed, compared in constant time), subaccount and
account scope, caller address allow-lists, and which end-user IP a send carries."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import ClientConfig, Network, parse_networks, subaccount_key
from gateway.errors import GatewayError
from gateway.routes import Route

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    subaccounts: frozenset[str]  # "*" = any; compared case-insensitively, as 8x8 does
    allowed: tuple[Network, ...]  # empty = any caller address
    end_user_ip_from_xff: bool
    accounts: frozenset[str] = frozenset()  # /accounts/{id}/ paths it may call; "*" = any
    public_form: bool = False  # its sends need a CAPTCHA token (gateway/captcha.py)
    deadlines_ms: tuple[int, int] = (0, 0)  # (bulk, priority); 0: [limits]' (docs/lanes.md)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subaccounts", frozenset(map(subaccount_key, self.subaccounts)))
        object.__setattr__(self, "accounts", frozenset(a.lower() for a in self.accounts))

    def may_use(self, subaccount: str) -> bool:
        return "*" in self.subaccounts or subaccount_key(subaccount) in self.subaccounts

    def may_use_account(self, account: str) -> bool:
        return "*" in self.accounts or account.lower() in self.accounts

    def authorize(self, route: Route) -> None:
        """Refuse a route outside this client's scope: a path's subaccount needs the client
        allowed it, an /accounts/{id}/ path the account; `GET /files/{name}` (neither)
        needs only a valid token."""
        if route.subaccount is not None and not self.may_use(route.subaccount):
            raise GatewayError("auth.subaccount", "this client may not use this subaccount")
        if route.account is not None and not self.may_use_account(route.account):
            raise GatewayError("auth.account", "this client may not use this account")


class Clients:
    """The token table. Every configured hash is compared, so timing says nothing."""

    def __init__(self, configs: Sequence[ClientConfig]) -> None:
        self._entries: list[tuple[bytes, Client]] = []
        for c in configs:
            client = Client(
                c.name,
                frozenset(c.subaccounts),
                parse_networks(c.allowed_cidrs),
                c.end_user_ip_from_xff,
                frozenset(c.accounts),
                c.public_form,
                (c.deadline_ms, c.priority_deadline_ms),
            )
            self._entries.extend((bytes.fromhex(h), client) for h in c.token_sha256)

    def authenticate(
        self, authorization: str | None, remote: str | None, *, check_address: bool = True
    ) -> Client:
        token = bearer(authorization)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Client | None = None
        for stored, client in self._entries:
            if hmac.compare_digest(stored, digest):
                found = client
        if found is None:
            raise GatewayError("auth.invalid", "unknown client token")
        if check_address and found.allowed and not in_networks(remote, found.allowed):
            raise GatewayError("auth.address", "this client may not call from this address")
        return found


def bearer(authorization: str | None) -> str:
    if not authorization:
        raise GatewayError("auth.missing", "Authorization: Bearer <token> is required")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise GatewayError("auth.missing", "Authorization: Bearer <token> is required")
    return token


def parse_ip(value: str | None) -> IPAddress | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def in_networks(address: str | None, networks: Sequence[Network]) -> bool:
    ip = parse_ip(address)
    return ip is not None and any(ip in net for net in networks)
