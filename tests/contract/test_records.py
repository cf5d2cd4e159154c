"""Compliance records (opt-outs, consent, templates) and decide_many's equivalence."""

from __future__ import annotations

from gateway.store import keys
from gateway.store.base import ConsentRecord, Decision, MessageCheck, Rule, Store, TemplateRecord
from tests.contract.conftest import ACCOUNT, US, msg, send, spec

X, Y = "+6587654321", "+6591234567"


async def test_optout_add_remove_contains(store: Store):
    assert await store.optout_add(ACCOUNT, X) is True
    assert await store.optout_add(ACCOUNT, X) is False
    assert await store.optout_contains(ACCOUNT, X) is True
    assert await store.optout_contains("other", X) is False
    assert await store.optout_remove(ACCOUNT, X) is True
    assert await store.optout_remove(ACCOUNT, X) is False
    assert await store.optout_contains(ACCOUNT, X) is False


async def collect_optouts(store: Store, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page, cursor = await store.optout_list(ACCOUNT, cursor, limit)
        pages.append(page)
        if cursor is None:
            return pages
        assert len(pages) < 1000


async def test_optout_list_pages_through_everything_once(store: Store):
    small = [f"+6590000{i:03d}" for i in range(7)]
    for n in small:
        await store.optout_add(ACCOUNT, n)
    pages = await collect_optouts(store, 3)
    assert all(len(p) <= 3 for p in pages)
    assert sorted(n for p in pages for n in p) == small
    assert await store.optout_list("nobody", None, 10) == ([], None)


async def test_optout_list_pages_a_large_set(store: Store):
    numbers = {f"+659{i:07d}" for i in range(600)}  # past Redis' small-set encoding
    for n in numbers:
        await store.optout_add(ACCOUNT, n)
    pages = await collect_optouts(store, 50)
    flat = [n for p in pages for n in p]
    assert all(len(p) <= 50 for p in pages)
    assert len(flat) == len(numbers) and set(flat) == numbers


async def test_consent_put_get_delete(store: Store):
    record = ConsentRecord(X, "web-form", ("MARKETING", "UTILITY"), "2024-05-01T10:00:00Z")
    assert await store.consent_get(ACCOUNT, X) is None
    await store.consent_put(ACCOUNT, record)
    assert await store.consent_get(ACCOUNT, X) == record
    replaced = ConsentRecord(X, "shop", ("UTILITY",), "2024-06-01T10:00:00+02:00")
    await store.consent_put(ACCOUNT, replaced)
    assert await store.consent_get(ACCOUNT, X) == replaced
    assert await store.consent_delete(ACCOUNT, X) is True
    assert await store.consent_delete(ACCOUNT, X) is False
    assert await store.consent_get(ACCOUNT, X) is None


async def test_consent_export_yields_every_record(store: Store):
    records = {f"+6580{i:06d}": ConsentRecord(f"+6580{i:06d}", "import", ("MARKETING",),
                                               "2024-05-01T10:00:00Z") for i in range(700)}  # fmt: skip
    for r in records.values():
        await store.consent_put(ACCOUNT, r)
    exported = [r async for r in store.consent_export(ACCOUNT)]
    assert len(exported) == 700 and {r.msisdn: r for r in exported} == records
    assert [r async for r in store.consent_export("nobody")] == []


def template(status: str, when: str, name: str = "promo", lang: str = "en") -> TemplateRecord:
    return TemplateRecord(name, lang, status, "MARKETING", "GREEN", when)


async def test_template_put_get_and_fields(store: Store):
    assert await store.template_get(ACCOUNT, "promo", "en") is None
    record = TemplateRecord("promo", "pt_BR", "PAUSED", None, None, "2024-05-01T10:00:00.5Z")
    assert await store.template_put(ACCOUNT, record) is True
    assert await store.template_get(ACCOUNT, "promo", "pt_BR") == record
    assert await store.template_get(ACCOUNT, "promo", "en") is None


async def test_template_if_newer_ignores_older_updates(store: Store):
    assert await store.template_put(ACCOUNT, template("APPROVED", "2024-05-01T10:00:00Z"))
    older = template("PAUSED", "2024-05-01T11:59:59+02:00")  # 09:59:59Z
    assert await store.template_put(ACCOUNT, older, if_newer=True) is False
    assert (await store.template_get(ACCOUNT, "promo", "en")).status == "APPROVED"
    same = template("PAUSED", "2024-05-01T12:00:00+02:00")  # the same instant: not older
    assert await store.template_put(ACCOUNT, same, if_newer=True) is True
    newer = template("DISABLED", "2024-05-01T10:00:00.000001Z")
    assert await store.template_put(ACCOUNT, newer, if_newer=True) is True
    assert (await store.template_get(ACCOUNT, "promo", "en")) == newer
    oldest = template("APPROVED", "2020-01-01T00:00:00Z")
    assert await store.template_put(ACCOUNT, oldest) is True  # without if_newer: stored
    assert (await store.template_get(ACCOUNT, "promo", "en")) == oldest


async def test_template_list_pages(store: Store):
    made = {template("APPROVED", "2024-05-01T10:00:00Z", f"t{i}", lang)
            for i in range(150) for lang in ("en", "id")}  # fmt: skip
    for r in made:
        await store.template_put(ACCOUNT, r)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = await store.template_list(ACCOUNT, cursor, 40)
        assert len(page) <= 40
        seen += page
        pages += 1
        if cursor is None:
            break
    assert len(seen) == 300 and set(seen) == made and pages >= 8


def mixed_checks(account: str) -> list:
    sub = spec(Rule.SUBACCOUNT, keys.subaccount_bucket(account, "s"), 10 * US, 3)
    eu = spec(Rule.END_USER_IP, keys.end_user_bucket(account), 10 * US, 2)
    base = dict(account=account, buckets=(eu, sub), cooldown_key=keys.cooldown(account, "s"))
    out = []
    for i in range(7):
        messages: tuple[MessageCheck, ...] = (msg(X, otp=i % 3 == 0),)
        if i == 2:
            messages = (msg(Y), msg(X, otp=True), msg(X, "promo:en"))
        out.append(send(*messages, batch=i == 2, **base))
    out.append(send(msg(Y), account=account, buckets=(sub,), max_wait_us=25 * US))
    return out


def same_decision(a: Decision, b: Decision) -> bool:
    def shape(d: Decision) -> tuple:
        r = d.refusal
        ref = None if r is None else (r.rule, r.status, r.bucket and r.bucket.rule)
        return (ref, d.dropped, d.unconsented, d.remaining, d.wait_us > 0)

    close = (
        abs(a.wait_us - b.wait_us) < US
        and abs(
            (a.refusal.retry_after_us if a.refusal else 0)
            - (b.refusal.retry_after_us if b.refusal else 0)
        )
        < US
    )
    return shape(a) == shape(b) and close


async def test_decide_many_equals_deciding_one_by_one(store: Store):
    for account in ("a1", "a2"):
        await store.optout_add(account, "+6500000000")
        await store.template_put(account, TemplateRecord("promo", "en", "APPROVED",
                                                         "MARKETING", None, "2024-01-01T00:00:00Z"))  # fmt: skip
    together = await store.decide_many(mixed_checks("a1"))
    apart = [await store.decide(c) for c in mixed_checks("a2")]
    assert len(together) == len(apart) == 8
    for i, (a, b) in enumerate(zip(together, apart, strict=True)):
        assert same_decision(a, b), (i, a, b)
    assert [d.refusal is None for d in together] != [True] * 8  # the case has refusals
    assert await store.decide_many([]) == []
