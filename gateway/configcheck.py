"""Range and cross-field checks of a built config, each problem as `key.path: reason`."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import phonenumbers

from gateway.configschema import PRODUCTS, Config
from gateway.policy.lanes import RULE_NAMES

__all__ = ["PRODUCTS", "check"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SUBACCOUNT = re.compile(r"^[A-Za-z0-9\-._&]{3,50}$")  # 8x8's subAccountId pattern
_NAME = re.compile(r"^[A-Za-z0-9\-._:]{1,64}$")


def check(cfg: Config) -> list[str]:
    problems: list[str] = []
    _check_server(cfg, problems)
    _check_redis(cfg, problems)
    _check_upstream(cfg, problems)
    _check_limits(cfg, problems)
    _check_subaccounts(cfg, problems)
    _check_whatsapp(cfg, problems)
    _check_clients(cfg, problems)
    _check_privacy(cfg, problems)
    _check_otp_shield(cfg, problems)
    if cfg.templates.sync_s < 0:
        problems.append("templates.sync_s: must be 0 (never) or more")
    _positive(problems, "idempotency.ttl_s", cfg.idempotency.ttl_s)
    _positive(problems, "idempotency.max_answer_bytes", cfg.idempotency.max_answer_bytes, zero=True)
    if cfg.admin.auth_failures_per_minute < 1:
        problems.append("admin.auth_failures_per_minute: must be at least 1")
    for key in ("stop_keywords", "start_keywords"):
        words = getattr(cfg.policy, key)
        if any(not w.strip() for w in words):
            problems.append(f"policy.{key}: keywords must not be blank")
    clash = {w.upper() for w in cfg.policy.stop_keywords} & {
        w.upper() for w in cfg.policy.start_keywords
    }
    if clash:
        problems.append(f"policy.start_keywords: {sorted(clash)} also in stop_keywords")
    return problems


def _positive(problems: list[str], path: str, value: float, *, zero: bool = False) -> None:
    if value < 0 or (value == 0 and not zero):
        problems.append(f"{path}: must be {'0 or more' if zero else 'above 0'}, got {value}")


def _check_server(cfg: Config, problems: list[str]) -> None:
    s = cfg.server
    if not 0 <= s.port <= 65535:
        problems.append(f"server.port: {s.port} is not a TCP port")
    if s.metrics_port and not (0 < s.metrics_port <= 65535 and s.metrics_port != s.port):
        problems.append(f"server.metrics_port: {s.metrics_port} is not a free TCP port")
    if not 1 <= s.workers <= 256:
        problems.append(f"server.workers: must be 1..256, got {s.workers}")
    _positive(problems, "server.max_body_bytes", s.max_body_bytes)
    _positive(problems, "server.drain_s", s.drain_s, zero=True)
    _positive(problems, "server.shutdown_delay_s", s.shutdown_delay_s, zero=True)
    _positive(problems, "server.idle_timeout_s", s.idle_timeout_s)
    _positive(problems, "server.body_timeout_s", s.body_timeout_s)
    _check_cidrs(problems, "server.trusted_proxies", s.trusted_proxies)


def _check_cidrs(problems: list[str], path: str, cidrs: tuple[str, ...]) -> None:
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f"{path}: {cidr!r} is not an IP network")


def _check_redis(cfg: Config, problems: list[str]) -> None:
    r = cfg.redis
    if r.url and urlsplit(r.url).scheme not in ("redis", "rediss", "unix"):
        problems.append(f"redis.url: {r.url!r} must start with redis://, rediss:// or unix://")
    if r.mode == "sentinel" and not r.sentinels:
        problems.append("redis.sentinels: mode = sentinel needs at least one host:port")
    for hostport in r.sentinels:
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"redis.sentinels: {hostport!r} is not host:port")
    _positive(problems, "redis.local_divisor", r.local_divisor, zero=True)
    _positive(problems, "redis.timeout_ms", r.timeout_ms)
    _positive(problems, "redis.snapshot_s", r.snapshot_s, zero=True)


def _check_upstream(cfg: Config, problems: list[str]) -> None:
    u = cfg.upstream
    if not u.api_key_env and not u.api_key_file:
        problems.append("upstream.api_key_env: set it or upstream.api_key_file")
    if not _NAME.match(u.account_id):
        problems.append(f"upstream.account_id: {u.account_id!r} is not an account id")
    _positive(problems, "upstream.timeout_s", u.timeout_s)
    _positive(problems, "upstream.breaker_failures", u.breaker_failures)
    _positive(problems, "upstream.breaker_open_s", u.breaker_open_s, zero=True)
    for product, url in u.urls.items():
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"upstream.urls.{product}: {url!r} is not an http(s) URL")
        elif parts.query or parts.fragment:
            problems.append(f"upstream.urls.{product}: must not have a query or fragment")


def _check_limits(cfg: Config, problems: list[str]) -> None:
    lim = cfg.limits
    for name in ("subaccount", "egress_ip"):
        rps, burst = getattr(lim, f"{name}_rps"), getattr(lim, f"{name}_burst")
        _positive(problems, f"limits.{name}_rps", rps)
        _positive(problems, f"limits.{name}_burst", burst)
        if 0 < rps <= burst:
            problems.append(f"limits.{name}_burst: {burst} must be below {name}_rps ({rps})")
    if not _NAME.match(lim.egress_ip):
        problems.append(f"limits.egress_ip: {lim.egress_ip!r} is not a bucket name")
    _positive(problems, "limits.otp_per_recipient", lim.otp_per_recipient)
    _positive(problems, "limits.otp_window_s", lim.otp_window_s)
    _positive(problems, "limits.end_user_ip_per_minute", lim.end_user_ip_per_minute)
    _positive(problems, "limits.max_wait_ms", lim.max_wait_ms, zero=True)
    _check_lanes(cfg, problems)
    if not 1 <= lim.end_user_ipv6_prefix <= 128:
        problems.append(
            f"limits.end_user_ipv6_prefix: must be 1..128, got {lim.end_user_ipv6_prefix}"
        )


def _check_lanes(cfg: Config, problems: list[str]) -> None:
    lim = cfg.limits
    if not 0 <= lim.reserved_share < 1:
        problems.append(f"limits.reserved_share: must be at least 0 and below 1, got "
                        f"{lim.reserved_share}")  # fmt: skip
    for name in lim.shadow:
        if name not in RULE_NAMES:
            problems.append(f"limits.shadow: {name!r} is not one of {', '.join(RULE_NAMES)}")
    _positive(problems, "limits.deadline_ms", lim.deadline_ms, zero=True)
    _positive(problems, "limits.priority_deadline_ms", lim.priority_deadline_ms, zero=True)
    for client in cfg.clients:
        for key in ("deadline_ms", "priority_deadline_ms"):
            _positive(problems, f"clients.{client.name}.{key}", getattr(client, key), zero=True)


def _check_subaccounts(cfg: Config, problems: list[str]) -> None:
    for name, sub in cfg.subaccounts.items():
        path = f"subaccounts.{name}"
        if not _SUBACCOUNT.match(name):
            problems.append(f"{path}: {name!r} is not an 8x8 subAccountId")
        if sub.account and not _NAME.match(sub.account):
            problems.append(f"{path}.account: {sub.account!r} is not an account id")
        _positive(problems, f"{path}.rps", sub.rps, zero=True)
        _positive(problems, f"{path}.burst", sub.burst, zero=True)
        if (sub.rps or sub.burst) and cfg.limits.subaccount_rps > 0:
            rps, burst = cfg.subaccount_limit(name)
            if burst >= rps:
                problems.append(f"{path}.burst: {burst} must be below its rps ({rps})")


_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _check_whatsapp(cfg: Config, problems: list[str]) -> None:
    wa = cfg.whatsapp
    _positive(problems, "whatsapp.sender_mps", wa.sender_mps)
    _positive(problems, "whatsapp.pair_burst", wa.pair_burst)
    for key in ("pair_interval_s", "marketing_hold_h", "undeliverable_hold_h"):
        if getattr(wa, key) <= 0:
            problems.append(f"whatsapp.{key}: must be more than 0")
    for name, sub in cfg.subaccounts.items():
        for number in sub.whatsapp_senders:
            if not _E164.match(number):
                problems.append(f"subaccounts.{name}.whatsapp_senders: {number!r} is not E.164")
    owner: dict[str, str] = {}
    for name, portfolio in cfg.portfolios.items():
        path = f"portfolios.{name}"
        if not _NAME.match(name):
            problems.append(f"{path}: {name!r} is not a portfolio name")
        tier: object = portfolio.tier
        good = tier == "unlimited" or (type(tier) is int and tier >= 1)
        if not good:
            problems.append(f'{path}.tier: must be a positive integer or "unlimited"')
        accounts = {cfg.account_of(s).lower() for s in portfolio.subaccounts}
        if len(accounts) > 1:  # its ZSET lives under one account's hash tag (docs/whatsapp.md)
            problems.append(f"{path}.subaccounts: all must belong to one 8x8 account")
        for member in portfolio.subaccounts:
            key = member.lower()
            if key in owner:
                problems.append(f"{path}.subaccounts: {member!r} is in {owner[key]!r} too")
            owner[key] = name


def _check_clients(cfg: Config, problems: list[str]) -> None:
    seen: set[str] = set()
    names = [c.name for c in cfg.clients]
    for i, client in enumerate(cfg.clients):
        unique = client.name and names.count(client.name) == 1
        path = f"clients.{client.name}" if unique else f"clients[{i}]"
        if client.name and not unique:
            problems.append(f"{path}.name: {client.name!r} is the name of another client too")
        if not client.name:
            problems.append(f"{path}.name: required")
        if not client.token_sha256:
            problems.append(f"{path}.token_sha256: required (from `gateway hash-token`)")
        for digest in client.token_sha256:
            if not _HEX64.match(digest):
                problems.append(f"{path}.token_sha256: {digest[:12]!r}... is not 64 lowercase hex")
            elif digest in seen:
                problems.append(f"{path}.token_sha256: the same hash is used by another client")
            seen.add(digest)
        if not client.subaccounts and not client.accounts:
            problems.append(f"{path}.subaccounts: list the subaccounts (or accounts) it may use")
        for account in client.accounts:
            if account != "*" and not _NAME.match(account):
                problems.append(f"{path}.accounts: {account!r} is not an account id")
        for sub in client.subaccounts:
            if sub != "*" and not _SUBACCOUNT.match(sub):
                problems.append(f"{path}.subaccounts: {sub!r} is not an 8x8 subAccountId")
        _check_cidrs(problems, f"{path}.allowed_cidrs", client.allowed_cidrs)


def _check_privacy(cfg: Config, problems: list[str]) -> None:
    """[captcha] (needed once a client has public_form) and [pii]."""
    c = cfg.captcha
    parts = urlsplit(c.verify_url)
    if c.verify_url and (parts.scheme not in ("http", "https") or not parts.hostname):
        problems.append(f"captcha.verify_url: {c.verify_url!r} is not an http(s) URL")
    forms = [client.name for client in cfg.clients if client.public_form]
    if forms and not c.verify_url:
        problems.append(f"captcha.verify_url: required, clients.{forms[0]} has public_form")
    if forms and not c.secret_env:
        problems.append("captcha.secret_env: required when a client has public_form")
    _positive(problems, "captcha.timeout_s", c.timeout_s)
    _positive(problems, "captcha.token_ttl_s", c.token_ttl_s)
    _positive(problems, "pii.retain_days", cfg.pii.retain_days, zero=True)
    _positive(problems, "pii.deletes_per_s", cfg.pii.deletes_per_s)


_E164_PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")


def _check_otp_shield(cfg: Config, problems: list[str]) -> None:
    s = cfg.otp_shield
    for region in s.countries:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            problems.append(f"otp_shield.countries: {region!r} is not an ISO region (e.g. GB)")
    for entry in s.safe_list:
        if not _E164_PREFIX.match(entry):
            problems.append(f"otp_shield.safe_list: {entry!r} is not an E.164 number or prefix")
    if not 1 <= s.prefix_digits <= 12:
        problems.append(f"otp_shield.prefix_digits: must be 1..12, got {s.prefix_digits}")
    _positive(problems, "otp_shield.window_s", s.window_s)
    _positive(problems, "otp_shield.min_sends", s.min_sends)
    if not 0 <= s.min_conversion <= 1:
        problems.append(f"otp_shield.min_conversion: must be 0..1, got {s.min_conversion}")
    if any(hold <= 0 for hold in s.quarantine_s):
        problems.append("otp_shield.quarantine_s: every hold must be above 0 seconds")
    _positive(problems, "otp_shield.ladder_reset_s", s.ladder_reset_s, zero=True)
