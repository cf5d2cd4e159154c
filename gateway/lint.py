"""`gateway lint-templates`: WhatsApp template definitions checked against the rejection rules.

Owns reading template files (one template in 8x8's/Meta's create-template shape, an array
of them, or `{"templates": [...]}`), the rules below, and the output format
`FILE:NAME/LANG: error|warning RULE: text` (`-` for a missing name or language). `main`
exits 1 when any finding is an error. Component, header-format, button and category words
are compared case-insensitively. Samples are read from Meta's `example` (`body_text` rows,
`header_text`, a URL button's list) or 8x8's flat `examples` list.

Rules (all errors except `marketing.opt-out`):
- `file.invalid`: unreadable, not UTF-8, not JSON, or top level not an object/array.
- `template.invalid`: a template, component or button has the wrong JSON type.
- `template.field`: `name`, `language` or `category` missing, empty or not a string.
- `template.category`: category not MARKETING, UTILITY or AUTHENTICATION.
- `template.body`: no BODY component, more than one, or a BODY without text
  (AUTHENTICATION may omit the text: Meta supplies the OTP wording).
- `placeholder.format`: a `{{...}}` that is not `{{N}}` with N a positive integer without
  leading zeros or spaces (`{{name}}`, `{{ 1 }}`, `{{#1}}`, `{{0}}`), or a stray `{{`/`}}`.
  Named parameters are refused: the gateway sends positional parameters only.
- `placeholder.sequence`: per text (header, body, footer, URL button), first appearances
  must run `{{1}}`, `{{2}}`, ... with no gap; reusing an earlier number is allowed.
- `placeholder.edge`: a BODY placeholder with only whitespace or punctuation (Unicode P*,
  plus `*~` formatting marks) before or after it, so `Code: {{1}}.` ends with one.
  AUTHENTICATION is exempt: Meta's own OTP body starts with the code.
- `sample.missing`: a text with placeholders lacks an example, or a sample row has fewer
  values than distinct placeholders, or a value is not a non-blank string.
- `content.duplicate`: same body and footer (casefolded, whitespace collapsed, a missing
  footer counts as empty) as an earlier template in any file given; names and languages
  do not matter, a footer shared by different bodies is fine. AUTHENTICATION is exempt.
- `content.sensitive`: a text asks for card numbers, CVV/CVC, card PINs or national IDs
  (SSN, NRIC/FIN, passport, Aadhaar, PAN, national ID/insurance numbers...), matched as
  phrases; a sentence holding a negation (never, not, don't...) is a warning to users,
  not a request, and is skipped.
- `content.unclear`: a body of placeholders only (after whitespace/punctuation) in a
  category other than MARKETING; Meta files unclear content under MARKETING.
- `marketing.opt-out` (warning): a MARKETING template with no "stop", "unsubscribe" or
  "opt out" in any text or button label.
- `auth.otp-button`: AUTHENTICATION without a button of type OTP whose `otp_type` is
  COPY_CODE, ONE_TAP or ZERO_TAP.
- `auth.url`: AUTHENTICATION with a URL button or a URL (`scheme://`, `www.`, or a bare
  domain ending in a common TLD) in any text.
- `auth.media`: AUTHENTICATION with a non-TEXT header (IMAGE, VIDEO, DOCUMENT, LOCATION...).
- `auth.emoji`: AUTHENTICATION text with an emoji: U+1F000-1FAFF, U+2600-27BF, U+2B05-2B07,
  U+2B1B-2B1C, U+2B50, U+2B55, U+231A-231B, U+23E9-23FA, U+3030, U+303D, U+3297, U+3299,
  U+FE0F (emoji presentation) or U+20E3 (keycap).
- `auth.param-length`: AUTHENTICATION sample value longer than 15 characters.

Components of other types (CAROUSEL, LIMITED_TIME_OFFER...) are not checked.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

Severity = Literal["error", "warning"]
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
OTP_TYPES = ("COPY_CODE", "ONE_TAP", "ZERO_TAP")
AUTH_MAX_PARAM = 15

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_LAST = re.compile(r"\{\{[^{}]*\}\}\Z")
_NUMBER = re.compile(r"[1-9][0-9]{0,8}")
_EDGE_MARKS = "*~"
_OPT_OUT = re.compile(r"\bstop\b|\bunsubscribe|\bopt[\s-]?out\b", re.I)
_URL = re.compile(
    r"[a-z][a-z0-9+.-]*://|\bwww\.|\b[a-z0-9-]+\.(?:com|net|org|io|co|me|ly|app|link|info|biz)\b",
    re.I,
)
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55"
    "\u231a\u231b\u23e9-\u23fa\u3030\u303d\u3297\u3299\ufe0f\u20e3]"
)
_SENSITIVE = re.compile(
    r"\b(?:full\s+)?(?:credit\s+|debit\s+|bank\s+|atm\s+)?card\s+(?:number|no\b\.?|#)"
    r"|\bcv[vc]2?\b|\bcvn\b|\bcard\s+(?:security|verification)\s+(?:code|value)"
    r"|\b(?:card|atm|debit|credit)\s+pin\b"
    r"|\bssn\b|\bsocial\s+(?:security|insurance)\s+(?:number|no\b)"
    r"|\bnric\b|\bfin\s+(?:number|no\b)|\bpassport\s+(?:number|no\b|#|details)"
    r"|\baadhaa?r\b|\bpan\s+(?:card|number)\b|\bmykad\b|\bhkid\b"
    r"|\bnational\s+(?:id|identity|identification|insurance)\b"
    r"|\b(?:identity|id)\s+card\s+number\b|\btax\s+(?:id|file\s+number)\b",
    re.I,
)
_NEGATION = re.compile(r"\b(?:never|not|no\s+one|nobody)\b|n't\b", re.I)
_SENTENCE_END = re.compile(r"[.!?\n]+")


@dataclass(frozen=True)
class Finding:
    file: str
    name: str
    language: str
    severity: Severity
    rule: str
    text: str

    def line(self) -> str:
        where = f"{self.file}:{self.name}/{self.language}"
        line = f"{where}: {self.severity} {self.rule}: {self.text}"
        return line.replace("\r", "\\r").replace("\n", "\\n")  # one finding, one line


@dataclass
class _Text:
    where: str  # "BODY", "HEADER", "FOOTER", "button 2 url", "button 2 text"
    text: str
    params: bool  # whether placeholders are meaningful here
    samples: list[list[object]] | None = None  # None: no example given at all


@dataclass
class _Parsed:
    category: str | None
    texts: list[_Text] = field(default_factory=list)
    bodies: list[str | None] = field(default_factory=list)
    footer: str = ""
    media: list[str] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (type, otp_type)
    invalid: list[str] = field(default_factory=list)
    components_ok: bool = True  # False when `components` is not an array (already reported)


_Problem = tuple[Severity, str, str]


def main(paths: Sequence[str], out: TextIO) -> int:
    """Lint every file, write one finding per line, return 1 if any is an error."""
    findings: list[Finding] = []
    templates: list[tuple[str, Mapping[str, object]]] = []
    for path in paths:
        items, problem = _load(path)
        if problem is not None:
            findings.append(Finding(path, "-", "-", "error", "file.invalid", problem))
        for index, item in enumerate(items):
            if isinstance(item, Mapping):
                templates.append((path, item))
            else:
                text = f"templates[{index}] is not an object"
                findings.append(Finding(path, "-", "-", "error", "template.invalid", text))
    findings.extend(lint_templates(templates))
    order: dict[str, int] = {}
    for index, path in enumerate(paths):
        order.setdefault(path, index)
    findings.sort(key=lambda f: order.get(f.file, 0))  # stable: each file's findings together
    for finding in findings:
        out.write(finding.line() + "\n")
    return 1 if any(f.severity == "error" for f in findings) else 0


def _load(path: str) -> tuple[list[object], str | None]:
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        return [], f"cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return [], f"not UTF-8: {exc.reason} at byte {exc.start}"
    except ValueError as exc:
        return [], f"not JSON: {exc}"
    except RecursionError:
        return [], "not JSON: nested too deeply"
    if isinstance(data, list):
        return data, None
    if isinstance(data, dict) and "templates" in data:
        items = data["templates"]
        return (items, None) if isinstance(items, list) else ([], '"templates" is not an array')
    if isinstance(data, dict):
        return [data], None
    return [], f"top level is {type(data).__name__}, not a template, array or {{templates}}"


def lint_templates(templates: Sequence[tuple[str, Mapping[str, object]]]) -> list[Finding]:
    """Findings for (source file, template) pairs, duplicates checked across all of them."""
    findings: list[Finding] = []
    seen: dict[tuple[str, str], str] = {}
    for source, template in templates:
        if not isinstance(template, Mapping):
            text = "template is not an object"
            findings.append(Finding(source, "-", "-", "error", "template.invalid", text))
            continue
        name, language = _label(template.get("name")), _label(template.get("language"))
        parsed = _parse(template)
        problems = [*_check(template, parsed), *_duplicate(parsed, seen, source, name, language)]
        findings.extend(Finding(source, name, language, *p) for p in problems)
    return findings


def _label(value: object) -> str:
    return value if isinstance(value, str) and value.strip() else "-"


def _upper(value: object) -> str:
    return value.strip().upper() if isinstance(value, str) else ""


def _parse(template: Mapping[str, object]) -> _Parsed:
    category = template.get("category")
    parsed = _Parsed(category.strip().upper() if isinstance(category, str) else None)
    components = template.get("components")
    if components is not None and not isinstance(components, list):
        parsed.invalid.append(f"components is {type(components).__name__}, not an array")
        parsed.components_ok = False
        return parsed
    for i, component in enumerate(components or []):
        if not isinstance(component, Mapping):
            parsed.invalid.append(f"components[{i}] is not an object")
            continue
        if not isinstance(component.get("type"), str):
            parsed.invalid.append(f"components[{i}].type is missing or not a string")
            continue
        _parse_component(parsed, i, component)
    return parsed


def _parse_component(parsed: _Parsed, i: int, component: Mapping[str, object]) -> None:
    kind = _upper(component.get("type"))
    text = component.get("text")
    if text is not None and not isinstance(text, str):
        parsed.invalid.append(f"components[{i}].text is not a string")
        text = None
    if kind == "HEADER":
        header_format = _upper(component.get("format")) or "TEXT"
        if header_format != "TEXT":
            parsed.media.append(header_format)
        elif text is not None:
            parsed.texts.append(_Text("HEADER", text, True, _samples(component, "header_text")))
    elif kind == "BODY":
        parsed.bodies.append(text)
        if text is not None:
            parsed.texts.append(_Text("BODY", text, True, _samples(component, "body_text")))
    elif kind == "FOOTER" and text is not None:
        parsed.footer = text
        parsed.texts.append(_Text("FOOTER", text, True, _samples(component, None)))
    elif kind == "BUTTONS":
        buttons = component.get("buttons")
        if not isinstance(buttons, list):
            parsed.invalid.append(f"components[{i}].buttons is not an array")
            return
        for j, button in enumerate(buttons, start=1):
            _parse_button(parsed, f"components[{i}].buttons[{j - 1}]", j, button)


def _parse_button(parsed: _Parsed, path: str, j: int, button: object) -> None:
    if not isinstance(button, Mapping):
        parsed.invalid.append(f"{path} is not an object")
        return
    parsed.buttons.append((_upper(button.get("type")), _upper(button.get("otp_type"))))
    for key, params in (("text", False), ("url", True)):
        value = button.get(key)
        if isinstance(value, str):
            samples = _samples(button, None) if params else None
            parsed.texts.append(_Text(f"button {j} {key}", value, params, samples))
        elif value is not None:
            parsed.invalid.append(f"{path}.{key} is not a string")


def _samples(owner: Mapping[str, object], key: str | None) -> list[list[object]] | None:
    example = owner.get("example", owner.get("examples"))
    if example is None:
        return None
    if isinstance(example, Mapping):
        example = example.get(key) if key is not None else None
    if isinstance(example, str):
        example = [example]
    if not isinstance(example, list):
        return []
    if example and all(isinstance(row, list) for row in example):
        return [list(row) for row in example]
    return [example]


def _check(template: Mapping[str, object], parsed: _Parsed) -> Iterator[_Problem]:
    for key in ("name", "language", "category"):
        if _label(template.get(key)) == "-":
            yield "error", "template.field", f"{key} is missing, empty or not a string"
    if parsed.category is not None and parsed.category not in CATEGORIES:
        text = f"unknown category {parsed.category!r}; expected {', '.join(CATEGORIES)}"
        yield "error", "template.category", text
    for text in parsed.invalid:
        yield "error", "template.invalid", text
    yield from _check_body(parsed)
    for item in parsed.texts:
        if item.params:
            yield from _check_placeholders(item)
        yield from _check_sensitive(item)
    if parsed.category == "AUTHENTICATION":
        yield from _check_auth(parsed)
    if parsed.category == "MARKETING" and not any(_OPT_OUT.search(t.text) for t in parsed.texts):
        text = "no opt-out hint (e.g. 'Reply STOP to unsubscribe' or an opt-out quick reply)"
        yield "warning", "marketing.opt-out", text


def _check_body(parsed: _Parsed) -> Iterator[_Problem]:
    auth = parsed.category == "AUTHENTICATION"
    if len(parsed.bodies) != 1 and parsed.components_ok:
        yield "error", "template.body", f"{len(parsed.bodies)} BODY components; need exactly 1"
    body = parsed.bodies[0] if parsed.bodies else None
    if body is None or not body.strip():
        if parsed.bodies and not auth:
            yield "error", "template.body", "BODY has no text"
        return
    placeholders = _PLACEHOLDER.findall(body)
    only_placeholders = placeholders and not _strip_edges(_PLACEHOLDER.sub("", body))
    if only_placeholders and parsed.category != "MARKETING":
        text = "BODY is only placeholders; unclear content must be categorised MARKETING"
        yield "error", "content.unclear", text
    core = _strip_edges(body)
    edges = [
        w for w, hit in (("starts", _PLACEHOLDER.match(core)), ("ends", _LAST.search(core))) if hit
    ]
    if edges and not auth:
        text = f"BODY {' and '.join(edges)} with a placeholder; put words around it"
        yield "error", "placeholder.edge", text


def _strip_edges(text: str) -> str:
    def edge(ch: str) -> bool:
        punct = unicodedata.category(ch).startswith("P") and ch not in "{}"
        return ch.isspace() or punct or ch in _EDGE_MARKS

    start, end = 0, len(text)
    while start < end and edge(text[start]):
        start += 1
    while end > start and edge(text[end - 1]):
        end -= 1
    return text[start:end]


def _check_placeholders(item: _Text) -> Iterator[_Problem]:
    numbers: list[int] = []
    for inner in _PLACEHOLDER.findall(item.text):
        if _NUMBER.fullmatch(inner):
            numbers.append(int(inner))
        else:
            text = f"{item.where}: {{{{{inner}}}}} is not a placeholder like {{{{1}}}}"
            yield "error", "placeholder.format", text
    rest = _PLACEHOLDER.sub("", item.text)
    if "{{" in rest or "}}" in rest:
        yield "error", "placeholder.format", f"{item.where}: unbalanced '{{{{' or '}}}}'"
    firsts = list(dict.fromkeys(numbers))
    if firsts != list(range(1, len(firsts) + 1)):
        found = ", ".join(f"{{{{{n}}}}}" for n in firsts)
        missing = next(k for k in range(1, len(firsts) + 2) if k not in firsts)
        why = f"{{{{{missing}}}}} missing" if missing <= max(firsts) else "out of order"
        text = f"{item.where}: placeholders {found} are not sequential from {{{{1}}}} ({why})"
        yield "error", "placeholder.sequence", text
    yield from _check_samples(item, len(firsts))


def _check_samples(item: _Text, count: int) -> Iterator[_Problem]:
    if count == 0:
        return
    if not item.samples:
        what = "no example" if item.samples is None else "an example that is not a list of values"
        yield "error", "sample.missing", f"{item.where}: {count} placeholder(s) but {what}"
        return
    for row in item.samples:
        if len(row) < count:
            text = f"{item.where}: example has {len(row)} value(s) for {count} placeholder(s)"
            yield "error", "sample.missing", text
        for n, value in enumerate(row[:count], start=1):
            if not isinstance(value, str) or not value.strip():
                text = f"{item.where}: sample for {{{{{n}}}}} is blank or not a string"
                yield "error", "sample.missing", text


def _check_sensitive(item: _Text) -> Iterator[_Problem]:
    asked: dict[str, None] = {}
    for sentence in _SENTENCE_END.split(item.text):
        if not _NEGATION.search(sentence):
            asked.update(
                (" ".join(m.group().lower().split()), None) for m in _SENSITIVE.finditer(sentence)
            )
    for phrase in asked:
        yield "error", "content.sensitive", f"{item.where} asks for sensitive data ({phrase!r})"


def _check_auth(parsed: _Parsed) -> Iterator[_Problem]:
    if not any(kind == "OTP" and otp in OTP_TYPES for kind, otp in parsed.buttons):
        text = "needs an OTP button (type OTP, otp_type COPY_CODE or ONE_TAP)"
        yield "error", "auth.otp-button", text
    for j, (kind, _) in enumerate(parsed.buttons, start=1):
        if kind == "URL":
            yield "error", "auth.url", f"button {j} is a URL button"
    for header_format in parsed.media:
        yield "error", "auth.media", f"{header_format} header; AUTHENTICATION allows no media"
    for item in parsed.texts:
        if _URL.search(item.text) and not item.where.endswith("url"):
            yield "error", "auth.url", f"{item.where} contains a URL"
        emoji = _EMOJI.search(item.text)
        if emoji:
            yield "error", "auth.emoji", f"{item.where} contains emoji U+{ord(emoji.group()):04X}"
        values = [v for row in item.samples or [] for v in row if isinstance(v, str)]
        for value in (v for v in values if len(v) > AUTH_MAX_PARAM):
            text = f"{item.where}: sample {value!r} is longer than {AUTH_MAX_PARAM} characters"
            yield "error", "auth.param-length", text


def _duplicate(
    parsed: _Parsed, seen: dict[tuple[str, str], str], source: str, name: str, language: str
) -> Iterator[_Problem]:
    body = parsed.bodies[0] if parsed.bodies else None
    if parsed.category == "AUTHENTICATION" or body is None or not body.strip():
        return
    key = (" ".join(body.casefold().split()), " ".join(parsed.footer.casefold().split()))
    if key not in seen:
        seen[key] = f"{source}:{name}/{language}"
        return
    what = "body and footer" if key[1] else "body"
    yield "error", "content.duplicate", f"{what} same as {seen[key]}"
