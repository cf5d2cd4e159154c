"""`gateway lint-templates`: every rule, the file shapes, output format and garbage input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lint import Finding, lint_templates, main

Template = dict[str, Any]


# --- template builders -------------------------------------------------------------------


def tpl(
    category: str, *components: dict[str, Any], name: str = "t", lang: str = "en_US"
) -> Template:
    return {"name": name, "language": lang, "category": category, "components": list(components)}


def body(text: str, *rows: list[Any]) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "BODY", "text": text}
    if rows:
        component["example"] = {"body_text": [list(r) for r in rows]}
    return component


def footer(text: str) -> dict[str, Any]:
    return {"type": "FOOTER", "text": text}


def header(fmt: str = "TEXT", text: str | None = None, *samples: str) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "HEADER", "format": fmt}
    if text is not None:
        component["text"] = text
    if samples:
        component["example"] = {"header_text": list(samples)}
    return component


def buttons(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "BUTTONS", "buttons": list(items)}


COPY_CODE = {"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}
STOP_REPLY = {"type": "QUICK_REPLY", "text": "Stop promotions"}

UTILITY = tpl("UTILITY", body("Hi {{1}}, your order {{2}} shipped.", ["Ann", "A-1"]))
MARKETING = tpl(
    "MARKETING",
    body("Hi {{1}}, our summer sale starts today.", ["Ann"]),
    footer("Reply STOP to unsubscribe"),
)
AUTH_8X8 = tpl(  # 8x8's own example: Meta writes the body
    "AUTHENTICATION",
    {"type": "BODY", "add_security_recommendation": True},
    {"type": "FOOTER", "code_expiration_minutes": 5},
    buttons(COPY_CODE),
)


def auth(*components: dict[str, Any]) -> Template:
    return tpl("AUTHENTICATION", *components)


AUTH_TEXT = auth(body("{{1}} is your verification code.", ["123456"]), buttons(COPY_CODE))


def rules(template: Template) -> set[str]:
    return {f.rule for f in lint_templates([("t.json", template)])}


def run(*paths: Path | str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main([str(p) for p in paths], out)
    return code, out.getvalue().splitlines()


def write(directory: Path, name: str, data: object) -> Path:
    path = directory / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- every rule: a passing and a failing template ----------------------------------------


@pytest.mark.parametrize("template", [UTILITY, MARKETING, AUTH_8X8, AUTH_TEXT], ids=str)
def test_compliant_templates_have_no_findings(template: Template) -> None:
    assert lint_templates([("t.json", template)]) == []


def without(template: Template, key: str) -> Template:
    return {k: v for k, v in template.items() if k != key}


RULE_CASES: list[tuple[str, Template, Template]] = [
    ("template.field", UTILITY, without(UTILITY, "name")),
    ("template.field", UTILITY, without(UTILITY, "language")),
    ("template.field", UTILITY, without(UTILITY, "category")),
    ("template.field", UTILITY, {**UTILITY, "name": ""}),
    ("template.field", UTILITY, {**UTILITY, "language": 7}),
    ("template.category", {**UTILITY, "category": "utility"}, {**UTILITY, "category": "PROMO"}),
    ("template.body", AUTH_8X8, tpl("UTILITY", footer("Thanks"))),
    ("template.body", UTILITY, without(UTILITY, "components")),
    ("template.body", UTILITY, tpl("UTILITY", body("Order shipped."), body("Again."))),
    ("template.body", UTILITY, tpl("UTILITY", body("   "))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Hi {{name}}, hello.", ["Ann"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Hi {{ 1 }}, hello.", ["Ann"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Pay {{#1}} today.", ["5"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Pay {{$1}} today.", ["5"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Up {{1%}} today.", ["5"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Hi {{0}}, hello.", ["Ann"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Hi {{01}}, hello.", ["Ann"]))),
    ("placeholder.format", UTILITY, tpl("UTILITY", body("Hi {{1}, hello.", ["Ann"]))),
    (
        "placeholder.sequence",
        tpl("UTILITY", body("Hi {{1}}, order {{2}} for {{1}} shipped.", ["Ann", "A-1"])),
        tpl("UTILITY", body("Hi {{1}}, order {{3}} shipped.", ["Ann", "A-1"])),
    ),
    (
        "placeholder.sequence",
        UTILITY,
        tpl("UTILITY", body("Hi {{2}}, order {{3}} shipped.", ["Ann", "A-1"])),
    ),
    (
        "placeholder.sequence",
        UTILITY,
        tpl("UTILITY", body("Hi {{2}}, order {{1}} shipped.", ["Ann", "A-1"])),
    ),
    (
        "placeholder.sequence",
        tpl("UTILITY", header("TEXT", "Order {{1}} update", "A-1"), UTILITY["components"][0]),
        tpl("UTILITY", header("TEXT", "Order {{2}} update", "A-1"), UTILITY["components"][0]),
    ),
    ("placeholder.edge", UTILITY, tpl("UTILITY", body("{{1}}, your order shipped.", ["Ann"]))),
    ("placeholder.edge", UTILITY, tpl("UTILITY", body("Your order shipped to {{1}}", ["Ann"]))),
    ("placeholder.edge", UTILITY, tpl("UTILITY", body("Your code is {{1}}.", ["42"]))),
    ("placeholder.edge", AUTH_TEXT, tpl("UTILITY", body("  *{{1}}* is your order.", ["4"]))),
    ("sample.missing", UTILITY, tpl("UTILITY", body("Hi {{1}}, order {{2}} shipped."))),
    ("sample.missing", UTILITY, tpl("UTILITY", body("Hi {{1}}, order {{2}} shipped.", ["A"]))),
    ("sample.missing", UTILITY, tpl("UTILITY", body("Hi {{1}}, order shipped.", [""]))),
    ("sample.missing", UTILITY, tpl("UTILITY", body("Hi {{1}}, order shipped.", [5]))),
    (
        "sample.missing",
        tpl("UTILITY", {"type": "body", "text": "Hi {{1}}, order shipped.", "examples": ["Ann"]}),
        tpl("UTILITY", {"type": "body", "text": "Hi {{1}}, order shipped.", "example": 5}),
    ),
    (
        "sample.missing",
        tpl("UTILITY", header("TEXT", "Order {{1}} update", "A-1"), body("It shipped.")),
        tpl("UTILITY", header("TEXT", "Order {{1}} update"), body("It shipped.")),
    ),
    (
        "sample.missing",
        tpl(
            "UTILITY",
            body("Your order shipped."),
            buttons(
                {"type": "URL", "text": "Track", "url": "https://x.co/{{1}}", "example": ["a"]}
            ),
        ),
        tpl(
            "UTILITY",
            body("Your order shipped."),
            buttons({"type": "URL", "text": "Track", "url": "https://x.co/{{1}}"}),
        ),
    ),
    (
        "content.sensitive",
        tpl("UTILITY", body("Charged to the card ending {{1}} today.", ["4242"])),
        tpl("UTILITY", body("Reply with your full card number to confirm.")),
    ),
    (
        "content.sensitive",
        tpl("UTILITY", body("We will never ask for your CVV. Stay safe.")),
        tpl("UTILITY", body("Please send the CVV on the back of your card.")),
    ),
    ("content.sensitive", UTILITY, tpl("UTILITY", body("Share your NRIC to continue."))),
    ("content.sensitive", UTILITY, tpl("UTILITY", body("Reply with your passport number."))),
    ("content.sensitive", UTILITY, tpl("UTILITY", body("Enter your Aadhaar now, please."))),
    ("content.sensitive", UTILITY, tpl("UTILITY", body("Confirm your SSN below."))),
    ("content.sensitive", UTILITY, tpl("UTILITY", body("Ok."), footer("Send us your ATM PIN"))),
    (
        "content.unclear",
        tpl("MARKETING", body("{{1}}", ["Sale"]), footer("Reply STOP to opt out")),
        tpl("UTILITY", body("{{1}}", ["Your order shipped"])),
    ),
    ("content.unclear", UTILITY, tpl("UTILITY", body(" {{1}}  {{2}}! ", ["a", "b"]))),
    ("marketing.opt-out", MARKETING, tpl("MARKETING", body("Hi {{1}}, sale today.", ["Ann"]))),
    (
        "marketing.opt-out",
        tpl("MARKETING", body("Hi {{1}}, sale today.", ["Ann"]), buttons(STOP_REPLY)),
        tpl("MARKETING", body("Big sale today!"), footer("Powered by 8x8")),
    ),
    (
        "marketing.opt-out",
        tpl("MARKETING", body("Sale today. Opt-out any time in settings.")),
        tpl("MARKETING", body("Sale today, stopover flights included.")),
    ),
    ("auth.otp-button", AUTH_8X8, auth(body("{{1}} is your code.", ["123456"]))),
    (
        "auth.otp-button",
        auth(
            body("Use {{1}} to log in.", ["1234"]), buttons({"type": "otp", "otp_type": "one_tap"})
        ),
        auth(
            body("Use {{1}} to log in.", ["1234"]), buttons({"type": "QUICK_REPLY", "text": "Ok"})
        ),
    ),
    (
        "auth.otp-button",
        AUTH_TEXT,
        auth(body("Use {{1}} to log in.", ["1234"]), buttons({"type": "OTP", "otp_type": "SMS"})),
    ),
    (
        "auth.url",
        AUTH_TEXT,
        auth(body("{{1}} is your code.", ["1"]), buttons(COPY_CODE, {"type": "URL", "url": "x"})),
    ),
    (
        "auth.url",
        AUTH_TEXT,
        auth(body("{{1}} is your code. See https://x.example/help", ["1"]), buttons(COPY_CODE)),
    ),
    ("auth.url", AUTH_TEXT, auth(body("Code {{1}}, www.shop.example", ["1"]), buttons(COPY_CODE))),
    ("auth.url", AUTH_TEXT, auth(body("Code {{1}} from acme.com", ["1"]), buttons(COPY_CODE))),
    (
        "auth.media",
        auth(header("TEXT", "Your code"), *AUTH_TEXT["components"]),
        auth(header("IMAGE"), *AUTH_TEXT["components"]),
    ),
    ("auth.media", AUTH_TEXT, auth(header("video"), *AUTH_TEXT["components"])),
    ("auth.media", AUTH_TEXT, auth(header("DOCUMENT"), *AUTH_TEXT["components"])),
    ("auth.media", AUTH_TEXT, auth(header("LOCATION"), *AUTH_TEXT["components"])),
    ("auth.emoji", AUTH_TEXT, auth(body("{{1}} is your code 🔐", ["123456"]), buttons(COPY_CODE))),
    ("auth.emoji", AUTH_TEXT, auth(body("{{1}} is your code ✅", ["123456"]), buttons(COPY_CODE))),
    (
        "auth.emoji",
        AUTH_TEXT,
        auth(body("{{1}} is your code.", ["1"]), footer("⭐ Acme"), buttons(COPY_CODE)),
    ),
    (
        "auth.param-length",
        auth(body("{{1}} is your code.", ["x" * 15]), buttons(COPY_CODE)),
        auth(body("{{1}} is your code.", ["x" * 16]), buttons(COPY_CODE)),
    ),
]


@pytest.mark.parametrize(
    ("rule", "passing", "failing"),
    RULE_CASES,
    ids=[f"{rule}-{i}" for i, (rule, _, _) in enumerate(RULE_CASES)],
)
def test_rule_passes_and_fails(rule: str, passing: Template, failing: Template) -> None:
    assert rule not in rules(passing)
    assert rule in rules(failing)


def test_marketing_without_opt_out_is_a_warning_only() -> None:
    template = tpl("MARKETING", body("Hi {{1}}, sale today.", ["Ann"]))
    [finding] = lint_templates([("m.json", template)])
    assert (finding.severity, finding.rule) == ("warning", "marketing.opt-out")


def test_authentication_is_exempt_from_edge_and_duplicate_rules() -> None:
    found = lint_templates([("a.json", AUTH_TEXT), ("b.json", AUTH_TEXT)])
    assert found == []


def test_only_placeholder_body_reports_one_edge_finding() -> None:
    found = lint_templates([("u.json", tpl("MARKETING", body("{{1}}", ["x"]), footer("STOP")))])
    assert [(f.rule, f.text) for f in found] == [
        ("placeholder.edge", "BODY starts and ends with a placeholder; put words around it")
    ]


# --- duplicates --------------------------------------------------------------------------


def test_duplicate_body_across_two_files_names_the_earlier(tmp_path: Path) -> None:
    first = write(tmp_path, "a.json", tpl("UTILITY", body("Your order shipped."), name="a"))
    copy = tpl("MARKETING", body("  your ORDER\nshipped. "), name="b", lang="fr")
    second = write(tmp_path, "b.json", [copy])
    code, lines = run(first, second)
    assert code == 1
    assert lines == [
        f"{second}:b/fr: warning marketing.opt-out: no opt-out hint "
        "(e.g. 'Reply STOP to unsubscribe' or an opt-out quick reply)",
        f"{second}:b/fr: error content.duplicate: body same as {first}:a/en_US",
    ]


def test_duplicate_flags_every_later_copy() -> None:
    found = lint_templates([("f", UTILITY), ("f", UTILITY), ("g", UTILITY)])
    assert [(f.file, f.rule) for f in found] == [
        ("f", "content.duplicate"),
        ("g", "content.duplicate"),
    ]
    assert all(f.text == "body same as f:t/en_US" for f in found)


def test_duplicate_compares_body_and_footer_together() -> None:
    shared_footer = [
        ("f", tpl("UTILITY", body("Order shipped."), footer("Acme Ltd"))),
        ("f", tpl("UTILITY", body("Order delivered."), footer("Acme Ltd"))),
        ("f", tpl("UTILITY", body("Order shipped."), footer("Acme Inc"))),
    ]
    assert lint_templates(shared_footer) == []
    same = [shared_footer[0], ("g", tpl("UTILITY", body("order shipped."), footer("ACME  ltd")))]
    [finding] = lint_templates(same)
    assert finding.text == "body and footer same as f:t/en_US"


# --- file shapes, output format, exit codes ----------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda t: t, id="object"),
        pytest.param(lambda t: [t], id="array"),
        pytest.param(lambda t: {"templates": [t]}, id="templates-key"),
    ],
)
def test_file_shapes_are_read(tmp_path: Path, shape: Any) -> None:
    good = write(tmp_path, "good.json", shape(UTILITY))
    assert run(good) == (0, [])
    bad = write(tmp_path, "bad.json", shape(tpl("UTILITY", body("Hi {{2}} there."), name="n")))
    code, lines = run(bad)
    assert code == 1
    assert f"{bad}:n/en_US: error placeholder.sequence: " in lines[0]


def test_output_line_format_and_exit_code(tmp_path: Path) -> None:
    path = write(tmp_path, "t.json", {"name": "promo", "language": "en", "category": "PROMO"})
    code, lines = run(path)
    assert code == 1
    pattern = re.compile(r"^(.+):([^/]+)/(\S+): (error|warning) ([a-z]+\.[a-z-]+): .+$")
    assert all(pattern.match(line) for line in lines)
    assert lines[0] == (
        f"{path}:promo/en: error template.category: "
        "unknown category 'PROMO'; expected MARKETING, UTILITY, AUTHENTICATION"
    )


def test_warnings_alone_exit_zero(tmp_path: Path) -> None:
    path = write(tmp_path, "m.json", tpl("MARKETING", body("Hi {{1}}, sale.", ["Ann"])))
    code, lines = run(path)
    assert code == 0
    assert len(lines) == 1
    assert " warning marketing.opt-out: " in lines[0]


def test_findings_follow_the_order_of_the_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    late = write(tmp_path, "late.json", tpl("UTILITY", body("{{1}} hi."), name="late"))
    _, lines = run(late, broken)
    assert lines[0].startswith(f"{late}:late/")
    assert lines[-1].startswith(f"{broken}:-/-: error file.invalid: not JSON")


def test_line_escapes_newlines() -> None:
    finding = Finding("f", "a\nb", "en", "error", "x.y", "t\r\nu")
    assert finding.line() == "f:a\\nb/en: error x.y: t\\r\\nu"


# --- garbage never raises ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"{not json", "not JSON", id="invalid-json"),
        pytest.param(b"", "not JSON", id="empty-file"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"42", "top level is int", id="number"),
        pytest.param(b'"hello"', "top level is str", id="string"),
        pytest.param(b"null", "top level is NoneType", id="null"),
        pytest.param(b'{"templates": {"name": "x"}}', '"templates" is not an array', id="tpl-obj"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not JSON", id="deep-nesting"),
    ],
)
def test_unusable_file_is_a_file_invalid_finding(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, lines = run(path)
    assert code == 1
    assert lines == [lines[0]]
    assert lines[0].startswith(f"{path}:-/-: error file.invalid: {expected}")


def test_missing_file_and_directory_are_findings(tmp_path: Path) -> None:
    code, lines = run(tmp_path / "absent.json", tmp_path)
    assert code == 1
    assert [line.split(": ")[1] for line in lines] == ["error file.invalid"] * 2


GARBAGE: list[tuple[object, str]] = [
    ([1, "x", None], "templates[0] is not an object"),
    ({**UTILITY, "components": 5}, "components is int, not an array"),
    ({**UTILITY, "components": "BODY"}, "components is str, not an array"),
    ({**UTILITY, "components": {"type": "BODY"}}, "components is dict, not an array"),
    ({**UTILITY, "components": [7]}, "components[0] is not an object"),
    ({**UTILITY, "components": [{"text": "hi"}]}, "components[0].type is missing"),
    ({**UTILITY, "components": [{"type": "BODY", "text": 3}]}, "components[0].text is not a"),
    (tpl("UTILITY", body("Hi."), {"type": "BUTTONS", "buttons": 1}), "buttons is not an array"),
    (
        tpl("UTILITY", body("Hi."), {"type": "BUTTONS", "buttons": ["x"]}),
        "components[1].buttons[0] is not an object",
    ),
    (tpl("UTILITY", body("Hi."), buttons({"url": []})), "buttons[0].url is not a string"),
]


@pytest.mark.parametrize(("data", "text"), GARBAGE, ids=[t for _, t in GARBAGE])
def test_wrong_types_are_template_invalid_findings(tmp_path: Path, data: object, text: str) -> None:
    code, lines = run(write(tmp_path, "g.json", data))
    assert code == 1
    assert any(" error template.invalid: " in line and text in line for line in lines)


def test_wrong_typed_fields_in_lint_templates_directly() -> None:
    odd: Any = [("f", 5), ("f", {"name": 1, "language": [], "category": {}, "components": None})]
    found = lint_templates(odd)
    assert {f.rule for f in found} == {"template.invalid", "template.field", "template.body"}
    assert all(f.name == "-" and f.language == "-" for f in found)


KEYS = st.sampled_from(
    [
        "name", "language", "category", "components", "type", "text", "format", "example",
        "examples", "body_text", "header_text", "buttons", "otp_type", "url", "templates",
    ]
)  # fmt: skip
WORDS = st.sampled_from(
    ["BODY", "body", "HEADER", "FOOTER", "BUTTONS", "OTP", "COPY_CODE", "URL", "IMAGE",
     "TEXT", "MARKETING", "UTILITY", "AUTHENTICATION", "{{1}}", "Hi {{1}}.", "{{", "}}"]
)  # fmt: skip
STRINGS = st.one_of(WORDS, st.text(), st.text(alphabet="{}12 #a.*😀"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | STRINGS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.one_of(KEYS, st.text(max_size=3)), inner, max_size=6)
    ),
    max_leaves=40,
)


def near(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-typed values, sometimes any JSON, so the checks past parsing run too."""
    return st.one_of(strategy, strategy, strategy, JSON)


def pick(*words: str) -> st.SearchStrategy[str]:
    return st.sampled_from(words)


SAMPLES = st.lists(STRINGS, max_size=3)
EXAMPLE = st.one_of(
    st.fixed_dictionaries({"body_text": st.lists(SAMPLES, max_size=2)}),
    st.fixed_dictionaries({"header_text": SAMPLES}),
    SAMPLES,
)
BUTTON = st.fixed_dictionaries(
    {"type": near(pick("OTP", "otp", "URL", "QUICK_REPLY", "PHONE_NUMBER"))},
    optional={"otp_type": near(pick("COPY_CODE", "ONE_TAP", "ZERO_TAP", "SMS")),
              "text": near(STRINGS), "url": near(STRINGS), "example": near(SAMPLES)},
)  # fmt: skip
COMPONENT = st.fixed_dictionaries(
    {"type": near(pick("BODY", "body", "HEADER", "FOOTER", "BUTTONS", "CAROUSEL"))},
    optional={"text": near(STRINGS), "format": near(pick("TEXT", "image", "VIDEO")),
              "example": near(EXAMPLE), "examples": near(SAMPLES),
              "buttons": near(st.lists(BUTTON, max_size=3))},
)  # fmt: skip
TEMPLATE = st.fixed_dictionaries(
    {"components": near(st.lists(COMPONENT, max_size=4))},
    optional={"name": near(pick("a", "b")), "language": near(pick("en", "fr")),
              "category": near(pick("MARKETING", "UTILITY", "AUTHENTICATION", "x"))},
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(near(TEMPLATE), max_size=4))
def test_lint_templates_never_raises_on_json_like_input(items: list[Any]) -> None:
    found = lint_templates([("f.json", item) for item in items])
    for finding in found:
        assert finding.severity in ("error", "warning")
        assert "\n" not in finding.line()
