"""The gateway as a better citizen where it sees 8x8 traffic pass (issue 12).

Two operations that callers make through the proxy teach the gateway something:

- a WhatsApp template created through it (chat apps `POST /api/v1/accounts/{acct}/
  channels/{channel}/templates`) is first checked by the template linter (gateway/lint.py).
  `templates.lint_on_create`: `enforce` answers 400 `request.invalid` with the `findings`
  and sends nothing when any finding is an error (Meta would reject it); `warn` logs the
  findings and forwards; `off` forwards unread. On 8x8's 2xx the template enters the
  registry with the status 8x8 answered (its `status`), else PENDING, and the category
  asked for; the registry's newer records are never overwritten.
- a number added to 8x8's blacklist through it (Contacts `POST /api/v1/accounts/{acct}/
  contacts/blacklist/{msisdn}`) is also opted out in the gateway on 8x8's 2xx, at once
  (8x8 syncs its blacklist only hourly), and that person's scheduled sends are cancelled.

The proxy calls `check` before forwarding and `after` once 8x8 has answered; both read
only the product, method and 8x8 path (as forwarded, percent-encoded), so they do not
depend on how the proxy routes. Neither lets a failure of its own change 8x8's answer.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from gateway import lint, scheduled, templatesync
from gateway.errors import GatewayError, error_response, now_rfc3339
from gateway.messages import normalise
from gateway.state import STATE
from gateway.upstream import Answer
from gateway.webhooks import ACCOUNT, record_optout

_SEGMENT = r"[^/?#]+"
TEMPLATES = re.compile(rf"/api/v1/accounts/(?P<account>{_SEGMENT})/channels/{_SEGMENT}/templates")
BLACKLIST = re.compile(
    rf"/api/v1/accounts/(?P<account>{_SEGMENT})/contacts/blacklist/(?P<msisdn>{_SEGMENT})"
)
PENDING = "PENDING"
_MAX_FINDINGS = 50
LINT_MAX_BYTES = 1 << 20  # a template is a few KB; larger bodies are not linted on the loop


def _account(match: re.Match[str]) -> str | None:
    account = unquote(match["account"])
    return account if ACCOUNT.fullmatch(account) else None


def template_create(method: str, product: str, path: str) -> str | None:
    """The account of a template-create call, else None."""
    if method != "POST" or product != "chatapps":
        return None
    m = TEMPLATES.fullmatch(path.partition("?")[0])
    return _account(m) if m else None


def blacklist_add(method: str, product: str, path: str) -> tuple[str, str] | None:
    """(account, raw number) of a blacklist add, else None."""
    if method != "POST" or product != "contacts":
        return None
    m = BLACKLIST.fullmatch(path.partition("?")[0])
    account = _account(m) if m else None
    return None if m is None or account is None else (account, unquote(m["msisdn"]))


def watches(method: str, product: str, path: str) -> bool:
    """Whether 8x8's answer to this call teaches the gateway something (`after` reads it)."""
    return (
        template_create(method, product, path) is not None
        or blacklist_add(method, product, path) is not None
    )


def lint_findings(body: bytes) -> list[lint.Finding]:
    """The linter's findings for a create-template body (8x8's shape is Meta's)."""
    if len(body) > LINT_MAX_BYTES:
        text = f"body over {LINT_MAX_BYTES} bytes is no template"
        return [lint.Finding("request", "-", "-", "error", "template.invalid", text)]
    try:
        template: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [lint.Finding("request", "-", "-", "error", "file.invalid", "body is not JSON")]
    if not isinstance(template, dict):
        text = "body is not a template object"
        return [lint.Finding("request", "-", "-", "error", "template.invalid", text)]
    return lint.lint_templates([("request", template)])


def check(
    app: web.Application, method: str, product: str, path: str, body: bytes
) -> web.Response | None:
    """Before forwarding: the 400 that refuses a template Meta would reject, else None."""
    state = app[STATE]
    mode = state.config.templates.lint_on_create
    account = template_create(method, product, path)
    if account is None or mode == "off":
        return None
    findings = lint_findings(body)
    errors = [f for f in findings if f.severity == "error"]
    if findings:
        state.log.info(
            "citizen.template_lint", account=account, mode=mode, errors=len(errors),
            rules=sorted({f.rule for f in findings}),
        )  # fmt: skip
    if mode != "enforce" or not errors:
        return None
    listed = [{"severity": f.severity, "rule": f.rule, "text": f.text} for f in findings]
    return error_response(
        "request.invalid",
        f"the template would be rejected: {errors[0].rule}: {errors[0].text}",
        field="body",
        findings=listed[:_MAX_FINDINGS],
    )


async def after(
    app: web.Application,
    method: str,
    product: str,
    path: str,
    body: bytes | None,
    answer: Answer,
) -> None:
    """After 8x8 answered: a created template enters the registry, a blacklisted number is
    opted out. Only on a 2xx; never raises (a failure is logged, 8x8's answer stands)."""
    if not 200 <= answer.status < 300:
        return
    state = app[STATE]
    try:
        account = template_create(method, product, path)
        if account is not None:
            await register_template(app, account, body or b"", answer)
            return
        found = blacklist_add(method, product, path)
        if found is not None:
            await opt_out_blacklisted(app, *found)
    except Exception as exc:
        state.log.warning("citizen.after_failed", error=type(exc).__name__)


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _word(value: Any) -> str | None:
    return value.strip().upper() if isinstance(value, str) and value.strip() else None


async def register_template(app: web.Application, account: str, body: bytes, answer: Answer) -> str:
    """Store a template 8x8 accepted: "stored", "stale" or "unreadable"."""
    state = app[STATE]
    asked, told = _json(body), _json(answer.body)
    if not isinstance(asked, dict):
        return "unreadable"
    name, language = asked.get("name"), asked.get("language")
    if not (isinstance(name, str) and name.strip() and isinstance(language, str)):
        return "unreadable"
    if not language.strip() or ":" in language:
        return "unreadable"
    status = (_word(told.get("status")) if isinstance(told, dict) else None) or PENDING
    category = _word(asked.get("category"))
    name, language = name.strip(), language.strip()
    effect = await templatesync.merge_put(
        state.store, app[templatesync.LOCK], account, name, language, now_rfc3339(),
        status=status, category=category,
    )  # fmt: skip
    if effect == "stored" and state.snapshot is not None:
        state.snapshot.merge_template(account, f"{name}:{language}", status, category)
    state.log.info("citizen.template_registered", account=account, template=name, effect=effect)
    return effect


async def opt_out_blacklisted(app: web.Application, account: str, raw: str) -> bool:
    """Opt out a number 8x8 blacklisted; False when it is not a number the gateway reads."""
    state = app[STATE]
    try:
        msisdn = normalise(raw, None, "msisdn")
    except GatewayError:
        state.log.warning("citizen.blacklist_unreadable", account=account)
        return False
    await record_optout(state, account, [msisdn], True, None)
    scheduled.cancel_for(app, account, [msisdn])
    state.log.info("citizen.blacklisted", account=account, msisdn=msisdn)
    return True
