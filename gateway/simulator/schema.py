"""A small JSON-schema subset, enough to read request bodies as 8x8's OpenAPI schemas do:
JSON types, required properties, enums, patterns, lengths, bounds and item counts.

Specs are built with `string()`, `integer()`, `number()`, `boolean()`, `array()`,
`obj()` and `anything()`; `check(spec, value)` names the first problem or returns None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MSISDN = r"^\+{0,1}[1-9]{1}[0-9]{6,14}$"  # 8x8's destination and msisdn pattern


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str
    msisdn: bool = False  # a phone number failed 8x8's pattern (code 1002, not 1000)


@dataclass(frozen=True, slots=True)
class Spec:
    type: str  # string | integer | number | boolean | array | object | any
    pattern: re.Pattern[str] | None = None
    enum: tuple[Any, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    items: Spec | None = None
    min_items: int | None = None
    max_items: int | None = None
    props: Mapping[str, Spec] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    msisdn: bool = False


def string(
    pattern: str | None = None,
    *,
    enum: tuple[str, ...] = (),
    min_length: int | None = None,
    max_length: int | None = None,
) -> Spec:
    return Spec(
        "string",
        re.compile(pattern) if pattern else None,
        enum,
        min_length,
        max_length,
        msisdn=pattern == MSISDN,
    )


def msisdn() -> Spec:
    return string(MSISDN)


def integer(minimum: float | None = None, maximum: float | None = None) -> Spec:
    return Spec("integer", minimum=minimum, maximum=maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> Spec:
    return Spec("number", minimum=minimum, maximum=maximum)


def boolean() -> Spec:
    return Spec("boolean")


def anything() -> Spec:
    return Spec("any")


def array(items: Spec, min_items: int | None = None, max_items: int | None = None) -> Spec:
    return Spec("array", items=items, min_items=min_items, max_items=max_items)


def obj(required: tuple[str, ...] = (), /, **props: Spec) -> Spec:
    return Spec("object", props=props, required=frozenset(required))


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def check(spec: Spec, value: Any, where: str = "body") -> Problem | None:
    """The first way `value` breaks `spec`, or None."""
    if spec.type == "any":
        return None
    wanted = _TYPES[spec.type]
    if not isinstance(value, wanted) or (isinstance(value, bool) and spec.type != "boolean"):
        return Problem(where, f"must be {spec.type}", spec.msisdn)
    if spec.enum and value not in spec.enum:
        return Problem(where, f"must be one of {', '.join(map(str, spec.enum))}")
    if isinstance(value, str):
        return _check_string(spec, value, where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return Problem(where, f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            return Problem(where, f"must be at most {spec.maximum:g}")
        return None
    if isinstance(value, list):
        return _check_array(spec, value, where)
    if isinstance(value, dict):
        return check_object(spec, value, where)
    return None


def _check_string(spec: Spec, value: str, where: str) -> Problem | None:
    if spec.min_length is not None and len(value) < spec.min_length:
        return Problem(where, f"must be at least {spec.min_length} characters")
    if spec.max_length is not None and len(value) > spec.max_length:
        return Problem(where, f"must be at most {spec.max_length} characters")
    if spec.pattern is not None and not spec.pattern.search(value):
        return Problem(where, f"must match {spec.pattern.pattern}", spec.msisdn)
    return None


def _check_array(spec: Spec, value: list[Any], where: str) -> Problem | None:
    if spec.min_items is not None and len(value) < spec.min_items:
        return Problem(where, f"must hold at least {spec.min_items} items")
    if spec.max_items is not None and len(value) > spec.max_items:
        return Problem(where, f"must hold at most {spec.max_items} items")
    if spec.items is not None:
        for i, item in enumerate(value):
            found = check(spec.items, item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def check_object(spec: Spec, value: Mapping[str, Any], where: str) -> Problem | None:
    for name in sorted(spec.required):
        if name not in value or value[name] is None:
            return Problem(f"{where}.{name}", "is required")
    for name, sub in spec.props.items():
        if name in value and value[name] is not None:
            found = check(sub, value[name], f"{where}.{name}")
            if found is not None:
                return found
    return None
