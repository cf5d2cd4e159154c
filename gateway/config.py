"""The configuration: TOML file + `GATEWAY_<SECTION>_<KEY>` overrides → frozen dataclasses.

Parsed once at start (and again on SIGHUP); nothing else reads files or the environment.
Every problem is reported as `key.path: reason`, all of them at once.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from gateway.configcheck import PRODUCTS, check

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """One or more `key.path: reason` problems."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 16_777_216  # decoded size (gzip too): a 10,000-message batch fits
    drain_s: float = 10.0
    shutdown_delay_s: float = 5.0  # SIGTERM: /readyz 503 this long before the listener closes
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    idle_timeout_s: float = 75.0  # idle keep-alive connections and unfinished request heads
    body_timeout_s: float = 10.0  # a request body must arrive within this
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RedisConfig:
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    url: str = ""
    sentinels: tuple[str, ...] = ()
    service_name: str = "mymaster"
    on_failure: Literal["local", "open", "closed"] = "local"
    local_divisor: int = 0
    timeout_ms: int = 50
    otp_on_failure: Literal["closed", "local"] = "closed"  # OTP sends while deciding locally
    snapshot_s: int = 300  # compliance snapshot reload period for the local fallback; 0 = none


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    api_key_env: str = "EIGHTX8_API_KEY"
    api_key_file: str = ""
    account_id: str = "acme"
    timeout_s: float = 10.0
    breaker_failures: int = 20  # failures in a row that open a product's circuit
    breaker_open_s: float = 5.0  # how long it stays open before one request probes it
    urls: Mapping[str, str] = field(
        default_factory=lambda: {p: f"https://{p}.8x8.com" for p in PRODUCTS}
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    subaccount_rps: int = 1800
    subaccount_burst: int = 36
    egress_ip_rps: int = 3000
    egress_ip_burst: int = 60
    egress_ip: str = "default"
    otp_per_recipient: int = 1
    otp_window_s: int = 60
    end_user_ip_per_minute: int = 10
    end_user_ipv6_prefix: int = 64  # IPv6 end users are counted per network of this length
    max_wait_ms: int = 100


@dataclass(frozen=True, slots=True)
class SubaccountConfig:
    account: str = ""  # "" = upstream.account_id
    rps: int = 0  # 0 = limits.subaccount_rps
    burst: int = 0  # 0 = derived from rps


@dataclass(frozen=True, slots=True)
class AccountConfig:
    whatsapp_channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TemplatesConfig:
    sync_s: int = 300
    # templates created through the gateway: lint first; enforce: 400 when Meta would
    # reject it, warn: log the findings and forward, off: forward unread
    lint_on_create: Literal["enforce", "warn", "off"] = "enforce"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    opt_in: Literal["enforce", "warn", "off"] = "enforce"
    unknown_template: Literal["reject", "allow"] = "reject"
    stop_keywords: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    start_keywords: tuple[str, ...] = ("START",)
    push_optouts: bool = False


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    secret_env: str = "GATEWAY_WEBHOOK_SECRET"  # noqa: S105 - a variable name


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token_env: str = "GATEWAY_ADMIN_TOKEN"  # noqa: S105 - a variable name
    auth_failures_per_minute: int = 10


@dataclass(frozen=True, slots=True)
class IdempotencyConfig:
    ttl_s: int = 86400  # how long a key's answer is kept (docs/idempotency.md)
    client_message_id: bool = False  # the body's clientMessageId is the key when no header
    max_answer_bytes: int = 65536  # a larger answer is kept as status and headers only


@dataclass(frozen=True, slots=True)
class ClientConfig:
    name: str = ""
    token_sha256: tuple[str, ...] = ()
    subaccounts: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()  # account-level 8x8 paths it may call; "*" = any
    allowed_cidrs: tuple[str, ...] = ()
    end_user_ip_from_xff: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    idempotency: IdempotencyConfig = field(default_factory=IdempotencyConfig)
    subaccounts: Mapping[str, SubaccountConfig] = field(default_factory=dict)
    accounts: Mapping[str, AccountConfig] = field(default_factory=dict)
    clients: tuple[ClientConfig, ...] = ()

    def subaccount(self, subaccount: str) -> SubaccountConfig | None:
        """The `[subaccounts.*]` entry of a subaccount id, matched case-insensitively (8x8's
        ids are; the loader keys the table by `subaccount_key`)."""
        return self.subaccounts.get(subaccount_key(subaccount))

    def account_of(self, subaccount: str) -> str:
        sub = self.subaccount(subaccount)
        return sub.account if sub and sub.account else self.upstream.account_id

    def subaccount_limit(self, subaccount: str) -> tuple[int, int]:
        """(rps, burst) in force for a subaccount."""
        lim = self.limits
        sub = self.subaccount(subaccount)
        if sub is None or (not sub.rps and not sub.burst):
            return lim.subaccount_rps, lim.subaccount_burst
        rps = sub.rps or lim.subaccount_rps
        burst = sub.burst or max(1, math.ceil(rps * lim.subaccount_burst / lim.subaccount_rps))
        return rps, burst


def subaccount_key(subaccount: str) -> str:
    """The form in which subaccount ids are compared: 8x8 does not tell case apart."""
    return subaccount.lower()


_SECTIONS = (
    "server",
    "redis",
    "upstream",
    "limits",
    "templates",
    "policy",
    "webhooks",
    "admin",
    "idempotency",
)


def load(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate. Raises ConfigError."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"config: cannot read {path}: {exc.strerror}"]) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"config: not valid TOML: {exc}"]) from exc
    problems: list[str] = []
    _apply_env(raw, env, problems)
    cfg = _build_config(raw, problems)
    if cfg is not None:
        problems.extend(check(cfg))
    if problems or cfg is None:
        raise ConfigError(problems)
    return cfg


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    hints = get_type_hints(Config)
    for name, value in env.items():
        if not name.startswith("GATEWAY_"):
            continue
        rest = name[len("GATEWAY_") :].lower()
        for section in _SECTIONS:
            if not rest.startswith(section + "_"):
                continue
            key = rest[len(section) + 1 :]
            section_hints = get_type_hints(hints[section])
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                break
            if section == "upstream" and key.startswith("urls_") and key[5:] in PRODUCTS:
                urls = table.setdefault("urls", {})
                if isinstance(urls, dict):
                    urls[key[5:]] = value
            elif key in section_hints:
                parsed = _parse_env_value(value, section_hints[key], f"{section}.{key}", problems)
                if parsed is not None:
                    table[key] = parsed
            break


def _parse_env_value(value: str, typ: Any, path: str, problems: list[str]) -> Any:
    base = _base_type(typ)
    try:
        if base is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return value.lower() in ("1", "true", "yes")
        if base is int:
            return int(value)
        if base is float:
            return float(value)
        if base is tuple:
            return [v.strip() for v in value.split(",") if v.strip()]
    except ValueError:
        env_name = "GATEWAY_" + path.replace(".", "_").upper()
        problems.append(f"{path}: {value!r} from {env_name} is not a valid {base.__name__}")
        return None
    return value


def _base_type(typ: Any) -> Any:
    origin = get_origin(typ)
    if origin is Literal:
        return str
    return origin or typ


def _build(cls: Any, table: Any, path: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a TOML table, type-checking each value."""
    if not isinstance(table, dict):
        problems.append(f"{path}: must be a table")
        return cls()
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            problems.append(f"{where}: unknown key")
            continue
        converted = _convert(value, hints[key], where, problems)
        if converted is not None:
            kwargs[key] = converted
    return cls(**kwargs)


def _convert(value: Any, typ: Any, path: str, problems: list[str]) -> Any:
    origin = get_origin(typ)
    if origin is Literal:
        allowed = get_args(typ)
        if value not in allowed:
            problems.append(f"{path}: {value!r} is not one of {', '.join(allowed)}")
            return None
        return value
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            problems.append(f"{path}: must be a list of strings")
            return None
        return tuple(items)
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ in (str, bool) and isinstance(value, typ):
        return value
    if typ in (int, float, str, bool):
        problems.append(f"{path}: {value!r} is not a valid {typ.__name__}")
        return None
    return value


def _build_config(raw: dict[str, Any], problems: list[str]) -> Config | None:
    hints = get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            table = dict(value) if isinstance(value, dict) else value
            urls = (
                table.pop("urls", None) if key == "upstream" and isinstance(table, dict) else None
            )
            section = _build(hints[key], table, key, problems)
            if urls is not None:
                section = replace(section, urls=_build_urls(urls, problems))
            kwargs[key] = section
        elif key in ("subaccounts", "accounts"):
            item_cls = SubaccountConfig if key == "subaccounts" else AccountConfig
            if not isinstance(value, dict):
                problems.append(f"{key}: must be a table of tables")
                continue
            table = {n: _build(item_cls, t, f"{key}.{n}", problems) for n, t in value.items()}
            if key == "subaccounts":
                table = _keyed_by_case(table, problems)
            kwargs[key] = table
        elif key == "clients":
            if not isinstance(value, list):
                problems.append("clients: must be an array of tables ([[clients]])")
                continue
            kwargs[key] = tuple(
                _build(ClientConfig, t, f"clients[{i}]", problems) for i, t in enumerate(value)
            )
        else:
            problems.append(f"{key}: unknown key")
    return Config(**kwargs)


def _keyed_by_case(table: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    keyed: dict[str, Any] = {}
    for name, entry in table.items():
        key = subaccount_key(name)
        if key in keyed:
            problems.append(f"subaccounts.{name}: the same subaccount as another entry")
        keyed[key] = entry
    return keyed


def _build_urls(urls: Any, problems: list[str]) -> dict[str, str]:
    merged = dict(UpstreamConfig().urls)
    if not isinstance(urls, dict):
        problems.append("upstream.urls: must be a table")
        return merged
    for product, url in urls.items():
        if product not in PRODUCTS:
            problems.append(f"upstream.urls.{product}: unknown key")
        elif not isinstance(url, str):
            problems.append(f"upstream.urls.{product}: must be a string")
        else:
            merged[product] = url.rstrip("/")
    return merged


def parse_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def read_api_key(cfg: Config, environ: Mapping[str, str]) -> str:
    """The 8x8 key from `upstream.api_key_file` (wins when set) or the variable it names."""
    up = cfg.upstream
    if up.api_key_file:
        try:
            key = Path(up.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [f"upstream.api_key_file: cannot read {up.api_key_file}: {exc.strerror}"]
            ) from exc
        if not key:
            raise ConfigError([f"upstream.api_key_file: {up.api_key_file} is empty"])
        return key
    key = environ.get(up.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            [f"upstream.api_key_env: the 8x8 API key variable {up.api_key_env} is not set"]
        )
    return str(key)
