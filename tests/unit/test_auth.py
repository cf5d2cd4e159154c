"""Client tokens, subaccount scope and caller allow-lists (end-user IPs: test_enduser.py)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.config import ClientConfig, parse_networks
from gateway.errors import GatewayError
from gateway.policy.auth import Client, Clients
from gateway.routes import match

TRUSTED = parse_networks(("10.0.0.0/8", "fd00::/8"))
PROXY = "10.1.2.3"  # a trusted proxy
OUTSIDER = "203.0.113.9"  # any other caller


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def client_config(
    name: str,
    *tokens: str,
    subaccounts: tuple[str, ...] = ("acme_main",),
    allowed_cidrs: tuple[str, ...] = (),
) -> ClientConfig:
    return ClientConfig(
        name=name,
        token_sha256=tuple(sha(t) for t in tokens),
        subaccounts=subaccounts,
        allowed_cidrs=allowed_cidrs,
    )


CLIENTS = Clients(
    [
        client_config("orders", "orders-token"),
        client_config("billing", "billing-old", "billing-new", subaccounts=("*",)),
        client_config("office", "office-token", allowed_cidrs=("192.0.2.0/24", "2001:db8::/32")),
    ]
)


def auth_error(authorization: str | None, remote: str | None = OUTSIDER) -> str:
    with pytest.raises(GatewayError) as info:
        CLIENTS.authenticate(authorization, remote)
    return info.value.code


def client(*, xff: bool = False) -> Client:
    return Client("c", frozenset({"acme_main"}), (), xff)


# --- authenticate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["Bearer orders-token", "bearer orders-token", "BEARER  orders-token "]
)
def test_known_token_names_its_client(header: str) -> None:
    assert CLIENTS.authenticate(header, OUTSIDER).name == "orders"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic b3JkZXJzLXRva2Vu", "orders-token"],
)
def test_no_bearer_token_is_auth_missing(header: str | None) -> None:
    assert auth_error(header) == "auth.missing"


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer ORDERS-TOKEN", "Bearer orders-token2", f"Bearer {sha('orders-token')}"],
)
def test_unknown_token_is_auth_invalid(header: str) -> None:
    assert auth_error(header) == "auth.invalid"


def test_every_hash_of_a_client_is_accepted_during_rotation() -> None:
    assert CLIENTS.authenticate("Bearer billing-old", None).name == "billing"
    assert CLIENTS.authenticate("Bearer billing-new", None).name == "billing"


def test_non_ascii_token_is_hashed_as_utf8() -> None:
    clients = Clients([client_config("intl", "tökén✓")])
    assert clients.authenticate("Bearer tökén✓", None).name == "intl"


@pytest.mark.parametrize("remote", ["192.0.2.1", "192.0.2.254", "2001:db8::5"])
def test_caller_inside_allowed_cidrs_is_accepted(remote: str) -> None:
    assert CLIENTS.authenticate("Bearer office-token", remote).name == "office"


@pytest.mark.parametrize("remote", ["192.0.3.1", "10.0.0.1", "2001:db9::1", None, "", "garbage"])
def test_caller_outside_allowed_cidrs_is_auth_address(remote: str | None) -> None:
    assert auth_error("Bearer office-token", remote) == "auth.address"


def test_unknown_token_from_outside_the_cidrs_is_auth_invalid() -> None:
    assert auth_error("Bearer nope", "198.51.100.1") == "auth.invalid"


def test_client_with_no_cidrs_may_call_from_anywhere() -> None:
    assert CLIENTS.authenticate("Bearer orders-token", None).name == "orders"


def test_no_clients_means_every_token_is_invalid() -> None:
    with pytest.raises(GatewayError) as info:
        Clients([]).authenticate("Bearer anything", OUTSIDER)
    assert info.value.code == "auth.invalid"


def test_refusals_do_not_carry_the_token() -> None:
    with pytest.raises(GatewayError) as info:
        CLIENTS.authenticate("Bearer secret-guess", OUTSIDER)
    assert "secret-guess" not in str(info.value)
    assert "secret-guess" not in repr(info.value.extra)


# --- subaccount scope ----------------------------------------------------------------------


def test_client_may_use_only_its_subaccounts() -> None:
    orders = CLIENTS.authenticate("Bearer orders-token", None)
    assert orders.may_use("acme_main")
    assert not orders.may_use("acme_bills")


def test_star_means_any_subaccount() -> None:
    billing = CLIENTS.authenticate("Bearer billing-new", None)
    assert billing.may_use("acme_main")
    assert billing.may_use("anything_else")


def test_subaccount_scope_ignores_case_as_8x8_does() -> None:
    orders = CLIENTS.authenticate("Bearer orders-token", None)
    assert orders.may_use("ACME_main") and orders.may_use("acme_MAIN")
    upper = Clients([client_config("u", "u-token", subaccounts=("ACME_Main",))])
    assert upper.authenticate("Bearer u-token", None).may_use("acme_main")


def scoped(accounts: tuple[str, ...]) -> Client:
    return Client("c", frozenset({"acme_main"}), (), False, frozenset(accounts))


@pytest.mark.parametrize(
    ("method", "path", "accounts", "refusal"),
    [
        ("GET", "/sms/api/v1/subaccounts/acme_main/messages/u1", (), None),
        ("GET", "/sms/api/v1/subaccounts/Acme_Main/messages/u1", (), None),
        ("GET", "/sms/api/v1/subaccounts/acme_other/messages/u1", ("*",), "auth.subaccount"),
        ("GET", "/sms/api/v1/accounts/acme/balance", (), "auth.account"),
        ("GET", "/sms/api/v1/accounts/acme/balance", ("other",), "auth.account"),
        ("GET", "/sms/api/v1/accounts/acme/balance", ("acme",), None),
        ("GET", "/sms/api/v1/accounts/ACME/balance", ("acme",), None),
        ("GET", "/contacts/api/v1/accounts/beta/groups", ("*",), None),
        ("GET", "/chatapps/files/x.png", (), None),  # any valid token
    ],
)
def test_authorize_by_subaccount_and_account(
    method: str, path: str, accounts: tuple[str, ...], refusal: str | None
) -> None:
    route = match(method, path)
    assert route is not None
    if refusal is None:
        scoped(accounts).authorize(route)
        return
    with pytest.raises(GatewayError) as info:
        scoped(accounts).authorize(route)
    assert info.value.code == refusal


def test_configured_accounts_reach_the_client() -> None:
    config = ClientConfig(name="a", token_sha256=(sha("a-token"),), accounts=("acme",))
    client = Clients([config]).authenticate("Bearer a-token", None)
    assert client.may_use_account("acme") and not client.may_use_account("beta")
