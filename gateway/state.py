"""What a worker holds while it serves: config-derived tables, the store, the upstream.

One `State` per process, kept on the aiohttp app (`STATE`), never in a module global. A
SIGHUP swaps the config-derived parts in one assignment each; requests in flight keep the
objects they already read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.config import Config, Network, parse_networks, subaccount_key
from gateway.metrics import OTHER, Metrics
from gateway.policy.auth import Clients
from gateway.policy.decider import Decider
from gateway.policy.guard import SecretGuard
from gateway.policy.limits import LimitPlan
from gateway.policy.pacing import SlotClock
from gateway.store.base import Store
from gateway.store.refresh import config_accounts
from gateway.store.snapshot import Compliance
from gateway.upstream import Upstream


@dataclass(eq=False)
class State:
    config: Config
    store: Store
    decider: Decider
    upstream: Upstream
    metrics: Metrics
    log: Any
    secrets: dict[str, str]  # admin token, webhook secret (may be empty: endpoint refuses)
    plan: LimitPlan = field(init=False)
    clients: Clients = field(init=False)
    trusted: tuple[Network, ...] = field(init=False)
    guard: SecretGuard = field(init=False)
    metric_subs: frozenset[str] = field(init=False)  # subaccounts with their own series
    draining: bool = False
    slot_clock: SlotClock = field(default_factory=SlotClock)  # store time -> this host's
    snapshot: Compliance | None = None  # the local fallback's compliance data (Redis only)

    def __post_init__(self) -> None:
        self.apply(self.config)

    def apply(self, cfg: Config) -> None:
        """Install a (validated) config's tables."""
        self.config = cfg
        self.plan = LimitPlan(cfg)
        self.clients = Clients(cfg.clients)
        self.trusted = parse_networks(cfg.server.trusted_proxies)
        self.guard = SecretGuard(cfg.admin.auth_failures_per_minute)
        named = set(cfg.subaccounts) | {s for c in cfg.clients for s in c.subaccounts}
        self.metric_subs = frozenset(subaccount_key(s) for s in named if s != "*")
        if self.snapshot is not None:
            self.snapshot.want(config_accounts(cfg))

    def subaccount_label(self, subaccount: str | None) -> str:
        """A metric label: a configured subaccount's id, "other" for any other, "none" for
        requests without one (account-level paths). Never unbounded."""
        if not subaccount:
            return "none"
        key = subaccount_key(subaccount)
        return key if key in self.metric_subs else OTHER


STATE = web.AppKey("state", State)
#: what a request's log line will carry, filled in as the request goes (never message text)
LOG = web.RequestKey("log", dict[str, Any])
