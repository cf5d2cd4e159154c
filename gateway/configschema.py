"""The configuration's shape: frozen dataclasses, their defaults and `ConfigError`.

`config` (reading TOML and the environment) and `configcheck` (validation) both build on
this module; neither imports the other's internals, so there is no import circle.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

PRODUCTS = ("chatapps", "sms", "verify", "contacts")

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
    metrics_dir: str = ""  # several workers: their metric files ("" = a new temp dir)
    metrics_port: int = 0  # /metrics on its own port (0: on `port`, beside the proxy)


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
    # docs/lanes.md: the part of each subaccount and egress-IP bucket kept for OTP,
    # AUTHENTICATION and UTILITY sends; rules that only count; default send deadlines
    reserved_share: float = 0.2
    shadow: tuple[str, ...] = ()
    deadline_ms: int = 0  # bulk sends (plain, MARKETING, ...): 0 = none
    priority_deadline_ms: int = 0  # OTP, AUTHENTICATION, UTILITY sends: 0 = none
    fair_clients: bool = True  # clients of one subaccount share its bulk queue fairly


@dataclass(frozen=True, slots=True)
class SubaccountConfig:
    account: str = ""  # "" = upstream.account_id
    rps: int = 0  # 0 = limits.subaccount_rps
    burst: int = 0  # 0 = derived from rps
    whatsapp_senders: tuple[str, ...] = ()  # its WhatsApp business numbers (E.164)


@dataclass(frozen=True, slots=True)
class WhatsAppConfig:
    """WhatsApp's own limits (docs/whatsapp.md; INTERFACE.md "WhatsApp's own limits")."""

    sender_mps: int = 80  # sends from one sender number in any one-second window
    pair_interval_s: float = 6.0  # one send per sender and recipient per interval...
    pair_burst: int = 45  # ...after this many at once
    marketing_hold_h: float = 24.0  # MARKETING held after a 131049/1024 receipt
    undeliverable_hold_h: float = 168.0  # WhatsApp held after a 131026/1018 receipt
    us_marketing: Literal["refuse", "allow"] = "refuse"
    quality_red: Literal["refuse", "warn", "off"] = "refuse"


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    """A WhatsApp business portfolio: its messaging tier, shared by its subaccounts."""

    tier: int | str = 2000  # unique recipients per moving 24 h, or "unlimited"
    subaccounts: tuple[str, ...] = ()

    def tier_value(self) -> int:
        """The tier as the decision takes it: 0 = unlimited."""
        return 0 if isinstance(self.tier, str) else self.tier


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
class CaptchaConfig:
    verify_url: str = ""  # the provider's siteverify (reCAPTCHA, hCaptcha, Turnstile)
    secret_env: str = "GATEWAY_CAPTCHA_SECRET"  # noqa: S105 - a variable name
    on_failure: Literal["closed", "open"] = "closed"  # provider down: 503, or decide without
    timeout_s: float = 1.5  # the provider's answer must arrive within this
    token_ttl_s: int = 300  # a used token is remembered this long (providers' token life)


@dataclass(frozen=True, slots=True)
class PiiConfig:
    retain_days: float = 0.0  # 0 = off; then 8x8's PII removal for each SMS forwarded
    deletes_per_s: float = 10.0  # PII removal calls per second, per gateway host


@dataclass(frozen=True, slots=True)
class OtpShieldConfig:
    """The OTP pumping shield (gateway/shield.py, docs/otp-shield.md)."""

    mode: Literal["shadow", "enforce", "off"] = "shadow"  # shadow: count, log, refuse nothing
    countries: tuple[str, ...] = ()  # ISO regions OTPs may go to; empty: any
    safe_list: tuple[str, ...] = ()  # E.164 numbers or prefixes ("+4479") never judged
    prefix_digits: int = 6  # a prefix: the country code and this many digits after it
    window_s: int = 600  # sliding window of the sends and validations per prefix
    min_sends: int = 10  # sends in the window before a prefix is judged
    min_conversion: float = 0.3  # validated / sent under this: quarantine
    quarantine_s: tuple[int, ...] = (900, 7200, 43200)  # the ladder; past it, until released
    ladder_reset_s: int = 86400  # a prefix's ladder step is forgotten this long after a hold


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
    public_form: bool = False  # every send needs X-Captcha-Token (gateway/captcha.py)
    deadline_ms: int = 0  # its sends' deadlines (docs/lanes.md); 0 = limits.deadline_ms
    priority_deadline_ms: int = 0  # 0 = limits.priority_deadline_ms


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
    captcha: CaptchaConfig = field(default_factory=CaptchaConfig)
    idempotency: IdempotencyConfig = field(default_factory=IdempotencyConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    otp_shield: OtpShieldConfig = field(default_factory=OtpShieldConfig)
    whatsapp: WhatsAppConfig = field(default_factory=WhatsAppConfig)
    subaccounts: Mapping[str, SubaccountConfig] = field(default_factory=dict)
    portfolios: Mapping[str, PortfolioConfig] = field(default_factory=dict)
    accounts: Mapping[str, AccountConfig] = field(default_factory=dict)
    clients: tuple[ClientConfig, ...] = ()

    def subaccount(self, subaccount: str) -> SubaccountConfig | None:
        """The `[subaccounts.*]` entry of a subaccount id, matched case-insensitively (8x8's
        ids are; the loader keys the table by `subaccount_key`)."""
        return self.subaccounts.get(subaccount_key(subaccount))

    def account_of(self, subaccount: str) -> str:
        sub = self.subaccount(subaccount)
        return sub.account if sub and sub.account else self.upstream.account_id

    def portfolio_of(self, subaccount: str) -> str | None:
        """The portfolio a subaccount's WhatsApp sends count against, if any."""
        wanted = subaccount_key(subaccount)
        for name, portfolio in self.portfolios.items():
            if any(subaccount_key(s) == wanted for s in portfolio.subaccounts):
                return name
        return None

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


SECTIONS = (
    "server", "redis", "upstream", "limits", "templates", "policy", "webhooks", "admin",
    "captcha", "pii", "idempotency", "otp_shield", "whatsapp",
)  # fmt: skip
#: sections whose changes a SIGHUP applies; the others need a restart (the key file is
#: re-read on its own)
RELOADABLE = (
    "limits", "templates", "policy", "admin", "subaccounts", "accounts", "clients", "whatsapp",
    "portfolios",
    "otp_shield",  # the shield reads its section at each send
)  # fmt: skip
