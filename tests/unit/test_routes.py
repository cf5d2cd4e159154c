"""`routes.match`: exactly the proxied paths of INTERFACE.md, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routes import Kind, Route, match

SUB = "acme_main"


@pytest.mark.parametrize(
    ("path", "product", "kind"),
    [
        (f"/chatapps/api/v1/subaccounts/{SUB}/messages", "chatapps", Kind.SEND),
        (f"/chatapps/api/v1/subaccounts/{SUB}/messages/batch", "chatapps", Kind.BATCH),
        (f"/sms/api/v1/subaccounts/{SUB}/messages", "sms", Kind.SEND),
        (f"/sms/api/v1/subaccounts/{SUB}/messages/batch", "sms", Kind.BATCH),
        (f"/verify/api/v2/subaccounts/{SUB}/sessions", "verify", Kind.VERIFY),
    ],
)
def test_proxied_posts(path: str, product: str, kind: Kind) -> None:
    route = match("POST", path)
    assert route == Route(product, kind, SUB, path.removeprefix(f"/{product}"))
    assert route.name == f"{product}.{kind}"


@pytest.mark.parametrize("sub", ["abc", "a" * 50, "Acme-Main.2&co", "my_sub", "..."])
def test_subaccount_ids_of_8x8s_pattern_are_accepted(sub: str) -> None:
    route = match("POST", f"/sms/api/v1/subaccounts/{sub}/messages")
    assert route is not None
    assert route.subaccount == sub


@pytest.mark.parametrize(
    "path",
    [
        f"/sms/api/v1/subaccounts/{SUB}/messages/abc123",
        f"/sms/api/v1/subaccounts/{SUB}/messages/batch/xyz",
        f"/chatapps/api/v1/subaccounts/{SUB}/channels/whatsapp/templates",
        f"/chatapps/api/v1/subaccounts/{SUB}/messages",
        f"/verify/api/v2/subaccounts/{SUB}/sessions/5f1c-uuid",
        f"/sms/api/v1/subaccounts/{SUB}/x:y@z~1",
    ],
)
def test_gets_under_a_subaccount_are_reads(path: str) -> None:
    route = match("GET", path)
    assert route is not None
    assert route.kind is Kind.READ
    assert route.subaccount == SUB
    assert "/" + route.product + route.path == path


def test_read_subaccount_is_the_first_after_subaccounts() -> None:
    route = match("GET", "/sms/api/v1/subaccounts/acme_a/subaccounts/acme_b/x")
    assert route is not None
    assert route.subaccount == "acme_a"


@pytest.mark.parametrize(
    "path",
    [
        f"/sms/api/v1/subaccounts/{SUB}",  # nothing after the subaccount
        f"/sms/api/v1/subaccounts/{SUB}/",
        f"/contacts/api/v1/subaccounts/{SUB}/groups",  # not a proxied product
        f"/sms/v1/subaccounts/{SUB}/messages",  # not under /api
        f"/sms/api/v1/subaccounts/{SUB}/../../other_sub/messages",
        f"/sms/api/v1/subaccounts/{SUB}/./messages",
        f"/sms/api/v1/subaccounts/{SUB}/messages/..",
        f"/sms/api/v1/subaccounts/{SUB}/messages/.",
        f"/sms/api/v1/subaccounts/{SUB}/%2e%2e/x",
        f"/sms/api/v1/subaccounts/{SUB}/messages%2Fbatch",
        f"/sms/api/v1/subaccounts/{SUB}//messages",
        "/sms/api/v1/subaccounts/ab/messages",  # subaccount id too short
        f"/sms/api/v1/subaccounts/{'a' * 51}/messages",  # too long
        "/sms/api/v1/subaccounts/acme%20main/messages",
        "/sms/api/v1/subaccounts/acme main/messages",
        f"/SMS/api/v1/subaccounts/{SUB}/messages",
        "/healthz",
        "/",
        "",
    ],
)
def test_other_gets_are_not_routed(path: str) -> None:
    assert match("GET", path) is None


@pytest.mark.parametrize(
    "path",
    [
        f"/sms/api/v2/subaccounts/{SUB}/messages",
        f"/verify/api/v1/subaccounts/{SUB}/sessions",
        f"/verify/api/v2/subaccounts/{SUB}/sessions/batch",
        f"/chatapps/api/v1/subaccounts/{SUB}/messages/",
        f"/chatapps/api/v1/subaccounts/{SUB}/messages/batch/",
        f"/chatapps/api/v1/subaccounts/{SUB}/messages?x=1",
        f"/chatapps/api/v1/subaccounts/{SUB}/templates",
        f"/contacts/api/v1/subaccounts/{SUB}/messages",
        "/sms/api/v1/subaccounts/ab/messages",
        "/sms/api/v1/subaccounts/%61cme_main/messages",
        f"/sms/api/v1/subaccounts/{SUB}/./messages",
        f"//sms/api/v1/subaccounts/{SUB}/messages",
    ],
)
def test_other_posts_are_not_routed(path: str) -> None:
    assert match("POST", path) is None


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post", "get"])
@pytest.mark.parametrize(
    "path",
    [f"/sms/api/v1/subaccounts/{SUB}/messages", f"/sms/api/v1/subaccounts/{SUB}/messages/abc"],
)
def test_other_methods_are_not_routed(method: str, path: str) -> None:
    assert match(method, path) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/sms/api/v1/subaccounts/{SUB}/messages\n"),
        ("GET", f"/sms/api/v1/subaccounts/{SUB}/messages/abc\n"),
    ],
)
def test_a_trailing_newline_is_not_routed(method: str, path: str) -> None:
    assert match(method, path) is None


# --- properties ----------------------------------------------------------------------------

ODD_SEGMENT = st.sampled_from([".", "..", "", "%2e", "a%2Fb", "x y", "é", "~ok", "ab", "a" * 51])
SEGMENT = (
    st.sampled_from(["api", "v1", "v2", "subaccounts", SUB, "messages", "batch", "sessions"])
    | ODD_SEGMENT
    # newline excluded: see test_a_trailing_newline_is_not_routed
    | st.text(st.characters(blacklist_characters="\n/"), max_size=6)
)


def mutate(path: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace (op 0), insert before (op 1) or drop (op 2) the segment at each index."""
    segments = path.split("/")[1:]
    for op, at, segment in edits:
        i = at % (len(segments) + 1)
        if op == 0 and i < len(segments):
            segments[i] = segment
        elif op == 1:
            segments.insert(i, segment)
        elif segments and i < len(segments):
            del segments[i]
    return "/" + "/".join(segments)


# 8x8's own paths (routable ones and near misses), then a few segments changed
PRODUCT_PATHS = st.sampled_from(
    [
        "/{p}/api/v1/subaccounts/{s}/messages",
        "/{p}/api/v1/subaccounts/{s}/messages/batch",
        "/{p}/api/v2/subaccounts/{s}/sessions",
        "/{p}/api/v1/subaccounts/{s}/messages/{x}",
        "/{p}/api/v1/subaccounts/{s}/channels/{x}/templates",
    ]
)
PATHS = st.builds(
    mutate,
    st.builds(
        lambda template, product, sub, extra: template.format(p=product, s=sub, x=extra),
        PRODUCT_PATHS,
        st.sampled_from(["chatapps", "sms", "verify", "contacts"]),
        st.from_regex(r"[A-Za-z0-9\-._&]{3,50}", fullmatch=True),
        SEGMENT,
    ),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), SEGMENT), max_size=2),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"])


def check_route(method: str, path: str) -> None:
    route = match(method, path)
    if route is None:
        return
    assert route.product in ("chatapps", "sms", "verify")
    assert "/" + route.product + route.path == path
    segments = path.split("/")
    assert "." not in segments and ".." not in segments and "" not in segments[1:]
    assert "%" not in path
    assert f"/subaccounts/{route.subaccount}/" in path + "/"
    assert method in ("GET", "POST")
    assert (method == "GET") == (route.kind is Kind.READ)


@settings(max_examples=200, deadline=None)
@given(method=METHODS, path=PATHS)
def test_any_route_is_its_path_under_a_product(method: str, path: str) -> None:
    check_route(method, path)


@settings(max_examples=200, deadline=None)
@given(method=METHODS, path=st.text(st.characters(blacklist_characters="\n"), max_size=80))
def test_any_text_routes_only_to_its_own_path(method: str, path: str) -> None:
    check_route(method, path)
