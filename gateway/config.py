"""The configuration: TOML file + `GATEWAY_<SECTION>_<KEY>` overrides → frozen dataclasses.

Parsed once at start (and again on SIGHUP); nothing else reads files or the environment.
Every problem is reported as `key.path: reason`, all of them at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from gateway.configcheck import check
from gateway.configschema import (
    PRODUCTS,
    SECTIONS,
    AccountConfig,
    AdminConfig,
    CaptchaConfig,
    ClientConfig,
    Config,
    ConfigError,
    IdempotencyConfig,
    LimitsConfig,
    Network,
    OtpShieldConfig,
    PiiConfig,
    PolicyConfig,
    PortfolioConfig,
    RedisConfig,
    ServerConfig,
    SubaccountConfig,
    TemplatesConfig,
    UpstreamConfig,
    WebhooksConfig,
    WhatsAppConfig,
    subaccount_key,
)

__all__ = [
    "PRODUCTS",
    "AccountConfig",
    "AdminConfig",
    "CaptchaConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "IdempotencyConfig",
    "LimitsConfig",
    "Network",
    "OtpShieldConfig",
    "PiiConfig",
    "PolicyConfig",
    "PortfolioConfig",
    "RedisConfig",
    "ServerConfig",
    "SubaccountConfig",
    "TemplatesConfig",
    "UpstreamConfig",
    "WebhooksConfig",
    "WhatsAppConfig",
    "load",
    "parse_networks",
    "read_api_key",
    "subaccount_key",
]


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
        for section in SECTIONS:
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
            problems.append(f"{where}: unknown key{did_you_mean(key, names)}")
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
        if key in SECTIONS:
            table = dict(value) if isinstance(value, dict) else value
            urls = (
                table.pop("urls", None) if key == "upstream" and isinstance(table, dict) else None
            )
            section = _build(hints[key], table, key, problems)
            if urls is not None:
                section = replace(section, urls=_build_urls(urls, problems))
            kwargs[key] = section
        elif key in ("subaccounts", "accounts", "portfolios"):
            item_cls = _TABLES[key]
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
                _build(ClientConfig, t, client_path(t, i, value), problems)
                for i, t in enumerate(value)
            )
        else:
            problems.append(f"{key}: unknown key{did_you_mean(key, _TOP_LEVEL)}")
    return Config(**kwargs)


_TOP_LEVEL = (*SECTIONS, "subaccounts", "accounts", "portfolios", "clients")
_TABLES: dict[str, Any] = {
    "subaccounts": SubaccountConfig, "accounts": AccountConfig, "portfolios": PortfolioConfig,
}  # fmt: skip


def client_path(table: Any, index: int, tables: list[Any]) -> str:
    """How problems name a `[[clients]]` entry: by its `name` (`clients.orders`) when it has
    a unique one, else by position (`clients[2]`)."""
    name = table.get("name") if isinstance(table, dict) else None
    names = [t.get("name") for t in tables if isinstance(t, dict)]
    if isinstance(name, str) and name and names.count(name) == 1:
        return f"clients.{name}"
    return f"clients[{index}]"


def did_you_mean(key: str, known: Any) -> str:
    """` (did you mean X?)` for the nearest known key, or nothing when none is near."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    return f" (did you mean {match[0]}?)" if match else ""


def env_problems(cfg: Config, environ: Mapping[str, str]) -> list[str]:
    """`GATEWAY_*` variables that name no config key (a typo of an override is ignored by
    `load`; `check-config` reports it). The secrets' own variables are allowed."""
    known = set(_override_names())
    allowed = {
        "GATEWAY_CONFIG",
        cfg.admin.token_env,
        cfg.webhooks.secret_env,
        cfg.captcha.secret_env,
        cfg.upstream.api_key_env,
    }
    problems = []
    for name in sorted(environ):
        if name.startswith("GATEWAY_") and name not in known and name not in allowed:
            hint = did_you_mean(name, known | allowed)
            problems.append(f"{name}: this variable names no config key{hint}")
    return problems


def _override_names() -> list[str]:
    hints = get_type_hints(Config)
    names: list[str] = []
    for section in SECTIONS:
        for f in fields(hints[section]):
            if f.name == "urls":
                names.extend(f"GATEWAY_UPSTREAM_URLS_{p.upper()}" for p in PRODUCTS)
            else:
                names.append(f"GATEWAY_{section}_{f.name}".upper())
    return names


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """`{"limits.subaccount_rps": 1800, ...}`: every leaf of a config, for reload diffs."""
    out: dict[str, Any] = {}
    if is_dataclass(cfg) and not isinstance(cfg, type):
        for f in fields(cfg):
            out.update(flatten(getattr(cfg, f.name), f"{prefix}{f.name}."))
    elif isinstance(cfg, Mapping):
        for k, v in cfg.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(cfg, tuple) and cfg and is_dataclass(cfg[0]):
        for item in cfg:
            out.update(flatten(item, f"{prefix}{getattr(item, 'name', '')}."))
    else:
        out[prefix.rstrip(".")] = cfg
    return out


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
            problems.append(
                f"upstream.urls.{product}: unknown key{did_you_mean(product, PRODUCTS)}"
            )
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
