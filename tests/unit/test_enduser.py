"""End-user IPs: one bucket per person whatever the spelling of the address, the order of
the sources (header, body `clientIp`s, trusted X-Forwarded-For), and what is a 400."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.config import parse_networks
from gateway.errors import GatewayError
from gateway.policy.enduser import bucket_id, end_users

TRUSTED = parse_networks(("10.0.0.0/8", "fd00::/8"))
PROXY = "10.1.2.3"  # a trusted proxy
OUTSIDER = "203.0.113.9"  # any other caller


def users(
    header: str | None = None,
    body: Sequence[str] = (),
    *,
    xff: Sequence[str] = (),
    from_xff: bool = True,
    remote: str | None = PROXY,
    trusted: Sequence[object] = TRUSTED,
    prefix: int = 64,
) -> tuple[str, ...]:
    return end_users(
        header,
        body,
        from_xff=from_xff,
        remote=remote,
        xff=xff,
        trusted=TRUSTED if trusted is TRUSTED else (),
        v6_prefix=prefix,
    )


# --- one person, one bucket ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),  # IPv4-mapped
        ("::FFFF:0102:0304", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),  # a port
        ("[::ffff:1.2.3.4]:443", "1.2.3.4"),
        ("2001:db8::1", "2001:db8::/64"),  # IPv6: its /64
        ("2001:DB8:0:0:ffff::7", "2001:db8::/64"),
        ("[2001:db8::1]:8080", "2001:db8::/64"),
        ("[2001:db8::1]", "2001:db8::/64"),
        ("fe80::1%0", "fe80::/64"),  # zone ids dropped
        ("fe80::1%eth1", "fe80::/64"),
    ],
)
def test_every_spelling_of_one_person_is_one_bucket(spelling: str, expected: str) -> None:
    assert bucket_id(spelling, 64) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"), [(48, "2001:db8:1::/48"), (128, "2001:db8:1:2::9/128")]
)
def test_ipv6_networks_follow_the_configured_prefix(prefix: int, expected: str) -> None:
    assert bucket_id("2001:db8:1:2::9", prefix) == expected


@pytest.mark.parametrize("value", ["", "not-an-ip", "1.2.3", "192.0.2.300", "1.2.3.4:", "[1.2.3.4"])
def test_not_an_address_is_no_bucket(value: str) -> None:
    assert bucket_id(value, 64) is None


# --- sources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("2001:DB8::1", "2001:db8::/64"),
    ],
)
def test_header_comes_first(header: str, expected: str) -> None:
    assert users(header, ["192.0.2.1"], xff=["203.0.113.5"]) == (expected,)


@pytest.mark.parametrize("header", ["not-an-ip", "198.51.100.300", "1.2.3.4, 5.6.7.8"])
def test_a_header_that_is_not_an_address_is_request_invalid(header: str) -> None:
    with pytest.raises(GatewayError) as info:
        users(header, remote=OUTSIDER)
    assert (info.value.code, info.value.extra["field"]) == ("request.invalid", "X-End-User-IP")


def test_body_client_ips_come_next_each_its_own_bucket() -> None:
    body = ["192.0.2.1", "::ffff:192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"]
    assert users(None, body, xff=["203.0.113.5"]) == ("192.0.2.1", "192.0.2.2", "2001:db8::/64")


def test_a_client_ip_that_is_no_address_does_not_count() -> None:
    assert users(None, ["not an ip", "192.0.2.1"]) == ("192.0.2.1",)
    assert users(None, ["not an ip"], remote=OUTSIDER) == ()


def test_empty_header_falls_through_to_the_body() -> None:
    assert users("", ["192.0.2.1"], remote=OUTSIDER) == ("192.0.2.1",)


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        (["203.0.113.5"], ("203.0.113.5",)),
        (["198.51.100.1, 203.0.113.5"], ("203.0.113.5",)),  # right-most wins
        (["203.0.113.5, 10.9.9.9"], ("203.0.113.5",)),  # trusted hops skipped
        (["203.0.113.5,10.9.9.9, 10.8.8.8"], ("203.0.113.5",)),
        (["2001:db8::7, fd00::1"], ("2001:db8::/64",)),
        (["203.0.113.5:4711, 10.9.9.9"], ("203.0.113.5",)),
        (["198.51.100.1", "203.0.113.5, 10.9.9.9"], ("203.0.113.5",)),  # lines in order
        (["203.0.113.5", "10.9.9.9"], ("203.0.113.5",)),  # a second line is not ignored
        (["garbage, 203.0.113.5"], ("203.0.113.5",)),  # left of the hop found: not read
        (["10.9.9.9, 10.8.8.8"], ()),  # only proxies
        ([""], ()),
    ],
)
def test_xff_from_a_trusted_proxy_for_a_flagged_client(
    xff: list[str], expected: tuple[str, ...]
) -> None:
    assert users(xff=xff) == expected


@pytest.mark.parametrize(
    "xff", [["203.0.113.5, garbage, 10.9.9.9"], ["203.0.113.5", "unknown"], ["1.2.3.4,"]]
)
def test_xff_from_a_trusted_proxy_that_cannot_be_read_is_request_invalid(xff: list[str]) -> None:
    with pytest.raises(GatewayError) as info:
        users(xff=xff)
    assert (info.value.code, info.value.extra["field"]) == ("request.invalid", "X-Forwarded-For")


def test_xff_from_an_untrusted_remote_is_ignored() -> None:
    assert users(xff=["203.0.113.5"], remote=OUTSIDER) == ()
    assert users(xff=["garbage"], remote=OUTSIDER) == ()


def test_xff_for_a_client_without_the_flag_is_ignored() -> None:
    assert users(xff=["203.0.113.5"], from_xff=False) == ()


def test_xff_with_no_trusted_proxies_is_ignored() -> None:
    assert users(xff=["203.0.113.5"], trusted=()) == ()


def test_xff_with_no_remote_is_ignored() -> None:
    assert users(xff=["203.0.113.5"], remote=None) == ()


def test_a_mapped_remote_proxy_is_still_trusted() -> None:
    assert users(xff=["203.0.113.5"], remote="::ffff:10.1.2.3") == ("203.0.113.5",)


def test_nothing_named_means_no_end_user_ip() -> None:
    assert users() == ()
