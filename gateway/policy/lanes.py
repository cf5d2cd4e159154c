"""Lanes, deadlines and shadow rules as config and headers see them (docs/lanes.md).

The decision itself is the store's (lua/decide.lua and its twin gateway/store/gcra.py);
this module turns `[limits]`, `[[clients]]` and `X-Send-Deadline-Ms` into the fields of a
`SendCheck`, and names the rules for `limits.shadow` and the shadow metric.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.store.base import Rule

DEADLINE_HEADER = "X-Send-Deadline-Ms"
MAX_DEADLINE_MS = 86_400_000


def rule_name(rule: Rule) -> str:
    """A rule's name in `limits.shadow` and `gateway_shadow_refusals_total{rule}`: the last
    part of its code (`template.not_active` is `template`). A new rule is named alike."""
    return "template" if rule is Rule.TEMPLATE else rule.value.rsplit(".", 1)[-1]


#: every rule `limits.shadow` may name
RULE_NAMES: dict[str, Rule] = {rule_name(r): r for r in Rule}


def shadow_rules(names: tuple[str, ...]) -> frozenset[Rule]:
    """The rules named in `limits.shadow` (unknown names: check-config refuses them)."""
    return frozenset(RULE_NAMES[n] for n in names if n in RULE_NAMES)


def header_deadline_ms(value: str | None) -> int | None:
    """`X-Send-Deadline-Ms`: a whole number of ms, 1 to a day; None when absent."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_DEADLINE_MS:
        raise GatewayError(
            "request.invalid",
            f"{DEADLINE_HEADER} must be a whole number of milliseconds, 1 to {MAX_DEADLINE_MS}",
            field=DEADLINE_HEADER,
        )
    return int(text)


def deadlines_us(header_ms: int | None, client: tuple[int, int], default: tuple[int, int]
                 ) -> tuple[int, int]:  # fmt: skip
    """(bulk, priority) deadlines in µs, 0 = none: the header's for both lanes, else the
    client's, else `[limits]`'s, each lane on its own."""
    if header_ms is not None:
        return header_ms * 1000, header_ms * 1000
    bulk = client[0] or default[0]
    prio = client[1] or default[1]
    return bulk * 1000, prio * 1000
