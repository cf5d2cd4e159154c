"""`gateway.config.load`: defaults, types, env overrides, every `key.path: reason` check,
derived subaccount limits, account mapping and reading the 8x8 key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load, read_api_key

Write = Callable[[str], Path]

HASH_A = hashlib.sha256(b"token-a").hexdigest()
HASH_B = hashlib.sha256(b"token-b").hexdigest()

CLIENT = f"""
[[clients]]
name = "orders"
token_sha256 = "{HASH_A}"
subaccounts = ["acme_main"]
"""


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """`write(toml_text)` → path of a config file holding it."""

    def _write(text: str) -> Path:
        path = tmp_path / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def problems_of(path: Path | None, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, environ or {})
    return info.value.problems


# --- defaults and a full file --------------------------------------------------------------


def test_no_file_gives_the_documented_defaults() -> None:
    cfg = load(None, {})
    assert cfg == Config()
    assert (cfg.server.port, cfg.server.workers, cfg.server.max_body_bytes) == (8080, 1, 16_777_216)
    assert cfg.redis.url == ""
    assert cfg.redis.on_failure == "local"
    assert cfg.upstream.api_key_env == "EIGHTX8_API_KEY"
    assert cfg.upstream.urls["sms"] == "https://sms.8x8.com"
    assert (cfg.limits.subaccount_rps, cfg.limits.subaccount_burst) == (1800, 36)
    assert cfg.policy.stop_keywords == ("STOP", "UNSUBSCRIBE")
    assert cfg.clients == ()


def test_full_example_file_loads(write: Write) -> None:
    path = write(
        f"""
[server]
port = 9000
trusted_proxies = ["10.0.0.0/8"]
drain_s = 3
[redis]
url = "redis://127.0.0.1:6379/0"
[upstream]
account_id = "acme"
[upstream.urls]
sms = "https://sms.example.test/"
[limits]
subaccount_rps = 1800
subaccount_burst = 36
[subaccounts.acme_marketing]
account = "acme_mk"
rps = 200
[accounts.acme]
whatsapp_channels = ["chan1"]
[policy]
stop_keywords = ["STOP"]
[[clients]]
name = "orders"
token_sha256 = ["{HASH_A}", "{HASH_B}"]
subaccounts = ["acme_main", "*"]
allowed_cidrs = ["192.0.2.0/24"]
end_user_ip_from_xff = true
"""
    )
    cfg = load(path, {})
    assert cfg.server.port == 9000
    assert cfg.server.trusted_proxies == ("10.0.0.0/8",)
    assert cfg.server.drain_s == 3.0
    assert isinstance(cfg.server.drain_s, float)
    assert cfg.upstream.urls["sms"] == "https://sms.example.test"  # trailing slash dropped
    assert cfg.upstream.urls["chatapps"] == "https://chatapps.8x8.com"  # others keep defaults
    assert cfg.subaccounts["acme_marketing"].rps == 200
    assert cfg.accounts["acme"].whatsapp_channels == ("chan1",)
    assert cfg.policy.stop_keywords == ("STOP",)
    client = cfg.clients[0]
    assert client.token_sha256 == (HASH_A, HASH_B)
    assert client.subaccounts == ("acme_main", "*")
    assert client.end_user_ip_from_xff is True


def test_config_is_frozen() -> None:
    cfg = load(None, {})
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]


def test_single_token_hash_string_becomes_a_tuple(write: Write) -> None:
    cfg = load(write(CLIENT), {})
    assert cfg.clients[0].token_sha256 == (HASH_A,)


# --- file-level errors ---------------------------------------------------------------------


def test_missing_file_is_a_problem_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    [problem] = problems_of(path)
    assert problem.startswith("config: cannot read")
    assert str(path) in problem


def test_invalid_toml_is_a_problem(write: Write) -> None:
    [problem] = problems_of(write("[server\nport = 1"))
    assert problem.startswith("config: not valid TOML")


# --- unknown keys and types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1", "bogus: unknown key"),
        ("[server]\nbogus = 1", "server.bogus: unknown key"),
        ("[upstream.urls]\nfax = 'https://fax.8x8.com'", "upstream.urls.fax: unknown key"),
        ("[subaccounts.acme_main]\nbogus = 1", "subaccounts.acme_main.bogus: unknown key"),
        ("[accounts.acme]\nbogus = 1", "accounts.acme.bogus: unknown key"),
        (CLIENT + "bogus = 1", "clients.orders.bogus: unknown key"),
        (
            "[limits]\nsubacount_rps = 1",
            "limits.subacount_rps: unknown key (did you mean subaccount_rps?)",
        ),
    ],
)
def test_unknown_keys_are_errors(write: Write, text: str, expected: str) -> None:
    assert expected in problems_of(write(text))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[server]\nport = '8080'", "server.port"),
        ("[server]\nport = 80.5", "server.port"),
        ("[server]\nport = true", "server.port"),
        ("[server]\nhost = 1", "server.host"),
        ("[policy]\npush_optouts = 'yes'", "policy.push_optouts"),
        ("[policy]\nstop_keywords = [1, 2]", "policy.stop_keywords"),
        ("[policy]\nopt_in = 'maybe'", "policy.opt_in"),
        ("[redis]\nmode = 'ring'", "redis.mode"),
        ("server = 1", "server"),
        ("subaccounts = 1", "subaccounts"),
        ("clients = 1", "clients"),
        ("[upstream]\nurls = 1", "upstream.urls"),
        ("[upstream.urls]\nsms = 1", "upstream.urls.sms"),
    ],
)
def test_wrong_types_are_reported_at_their_key(write: Write, text: str, path: str) -> None:
    problems = problems_of(write(text))
    assert any(p.startswith(f"{path}: ") for p in problems), problems


def test_every_problem_is_reported_at_once(write: Write) -> None:
    problems = problems_of(write("[server]\nport = 70000\nworkers = 0\n[redis]\ntimeout_ms = 0"))
    assert {p.split(":")[0] for p in problems} == {
        "server.port",
        "server.workers",
        "redis.timeout_ms",
    }


# --- range and cross-field checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[server]\nport = -1", "server.port"),
        ("[server]\nworkers = 257", "server.workers"),
        ("[server]\nmax_body_bytes = 0", "server.max_body_bytes"),
        ("[server]\ndrain_s = -1", "server.drain_s"),
        ("[server]\ntrusted_proxies = ['not-a-net']", "server.trusted_proxies"),
        ("[redis]\nurl = 'http://x'", "redis.url"),
        ("[redis]\nmode = 'sentinel'", "redis.sentinels"),
        ("[redis]\nsentinels = ['hostonly']", "redis.sentinels"),
        ("[redis]\nlocal_divisor = -1", "redis.local_divisor"),
        ("[upstream]\napi_key_env = ''", "upstream.api_key_env"),
        ("[upstream]\naccount_id = 'has space'", "upstream.account_id"),
        ("[upstream]\ntimeout_s = 0", "upstream.timeout_s"),
        ("[upstream.urls]\nsms = 'ftp://sms.8x8.com'", "upstream.urls.sms"),
        ("[upstream.urls]\nsms = 'https://sms.8x8.com/?a=1'", "upstream.urls.sms"),
        ("[limits]\nsubaccount_rps = 0", "limits.subaccount_rps"),
        ("[limits]\negress_ip_burst = -1", "limits.egress_ip_burst"),
        ("[limits]\negress_ip = 'has space'", "limits.egress_ip"),
        ("[limits]\notp_window_s = 0", "limits.otp_window_s"),
        ("[limits]\nmax_wait_ms = -1", "limits.max_wait_ms"),
        ("[templates]\nsync_s = -1", "templates.sync_s"),
        ("[admin]\nauth_failures_per_minute = 0", "admin.auth_failures_per_minute"),
        ("[policy]\nstop_keywords = ['STOP', ' ']", "policy.stop_keywords"),
        ("[policy]\nstart_keywords = ['stop']", "policy.start_keywords"),
        ("[subaccounts.ab]\nrps = 10", "subaccounts.ab"),
        ("[subaccounts.acme_main]\naccount = 'a b'", "subaccounts.acme_main.account"),
        ("[subaccounts.acme_main]\nrps = -1", "subaccounts.acme_main.rps"),
    ],
)
def test_out_of_range_values_are_reported_at_their_key(write: Write, text: str, path: str) -> None:
    problems = problems_of(write(text))
    assert any(p.startswith(f"{path}: ") for p in problems), problems


def test_zero_drain_and_zero_max_wait_are_allowed(write: Write) -> None:
    cfg = load(write("[server]\ndrain_s = 0\n[limits]\nmax_wait_ms = 0"), {})
    assert (cfg.server.drain_s, cfg.limits.max_wait_ms) == (0.0, 0)


@pytest.mark.parametrize("name", ["subaccount", "egress_ip"])
@pytest.mark.parametrize("burst", [100, 101])
def test_burst_not_below_rps_is_refused(write: Write, name: str, burst: int) -> None:
    problems = problems_of(write(f"[limits]\n{name}_rps = 100\n{name}_burst = {burst}"))
    assert f"limits.{name}_burst: {burst} must be below {name}_rps (100)" in problems


def test_burst_just_below_rps_is_accepted(write: Write) -> None:
    cfg = load(write("[limits]\nsubaccount_rps = 100\nsubaccount_burst = 99"), {})
    assert cfg.limits.subaccount_burst == 99


def test_subaccount_burst_not_below_its_rps_is_refused(write: Write) -> None:
    problems = problems_of(write("[subaccounts.acme_main]\nrps = 10\nburst = 10"))
    assert "subaccounts.acme_main.burst: 10 must be below its rps (10)" in problems


def test_subaccount_burst_alone_checked_against_the_default_rps(write: Write) -> None:
    problems = problems_of(write("[subaccounts.acme_main]\nburst = 1800"))
    assert "subaccounts.acme_main.burst: 1800 must be below its rps (1800)" in problems


def test_zero_default_rps_with_a_subaccount_rps_is_a_config_error(write: Write) -> None:
    problems = problems_of(write("[limits]\nsubaccount_rps = 0\n[subaccounts.acme_main]\nrps = 10"))
    assert any(p.startswith("limits.subaccount_rps: ") for p in problems)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[[clients]]\nsubaccounts = ['acme_main']\ntoken_sha256 = '" + HASH_A + "'", "name"),
        ("[[clients]]\nname = 'x'\nsubaccounts = ['acme_main']", "token_sha256"),
        (
            "[[clients]]\nname = 'x'\nsubaccounts = ['acme_main']\ntoken_sha256 = '"
            + HASH_A.upper()
            + "'",
            "token_sha256",
        ),
        (
            "[[clients]]\nname = 'x'\nsubaccounts = ['acme_main']\ntoken_sha256 = 'abc'",
            "token_sha256",
        ),
        ("[[clients]]\nname = 'x'\ntoken_sha256 = '" + HASH_A + "'", "subaccounts"),
        (CLIENT.replace('["acme_main"]', '["a"]'), "subaccounts"),
        (CLIENT + "allowed_cidrs = ['10.0.0.300/8']", "allowed_cidrs"),
    ],
)
def test_client_problems_name_the_client_by_name(write: Write, text: str, path: str) -> None:
    problems = problems_of(write(text))
    named = "clients[0]" if path == "name" else "clients.x"  # no name: its position
    named = "clients.orders" if "orders" in text else named
    assert any(p.startswith(f"{named}.{path}: ") for p in problems), problems


def test_the_same_hash_on_two_clients_is_refused(write: Write) -> None:
    problems = problems_of(write(CLIENT + CLIENT.replace("orders", "billing")))
    assert any(p.startswith("clients.billing.token_sha256: ") and "another" in p for p in problems)


def test_star_is_a_valid_client_subaccount(write: Write) -> None:
    cfg = load(write(CLIENT.replace('["acme_main"]', '["*"]')), {})
    assert cfg.clients[0].subaccounts == ("*",)


# --- environment overrides -----------------------------------------------------------------


def test_env_overrides_the_file(write: Write) -> None:
    path = write("[server]\nport = 9000\n[redis]\nurl = 'redis://file:6379/0'")
    cfg = load(
        path,
        {
            "GATEWAY_SERVER_PORT": "9100",
            "GATEWAY_REDIS_URL": "redis://env:6379/1",
        },
    )
    assert cfg.server.port == 9100
    assert cfg.redis.url == "redis://env:6379/1"


@pytest.mark.parametrize(
    ("name", "value", "section", "key", "expected"),
    [
        ("GATEWAY_SERVER_DRAIN_S", "2.5", "server", "drain_s", 2.5),
        ("GATEWAY_POLICY_PUSH_OPTOUTS", "true", "policy", "push_optouts", True),
        ("GATEWAY_POLICY_PUSH_OPTOUTS", "0", "policy", "push_optouts", False),
        ("GATEWAY_POLICY_OPT_IN", "warn", "policy", "opt_in", "warn"),
        (
            "GATEWAY_SERVER_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.0.0/16",
            "server",
            "trusted_proxies",
            ("10.0.0.0/8", "192.168.0.0/16"),
        ),
        ("GATEWAY_LIMITS_EGRESS_IP", "edge-1", "limits", "egress_ip", "edge-1"),
    ],
)
def test_env_values_are_converted_to_the_key_type(
    name: str, value: str, section: str, key: str, expected: object
) -> None:
    cfg = load(None, {name: value})
    assert getattr(getattr(cfg, section), key) == expected


def test_env_overrides_one_upstream_url() -> None:
    cfg = load(None, {"GATEWAY_UPSTREAM_URLS_SMS": "http://127.0.0.1:9999/sms/"})
    assert cfg.upstream.urls["sms"] == "http://127.0.0.1:9999/sms"
    assert cfg.upstream.urls["verify"] == "https://verify.8x8.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_SERVER_PORT", "eighty"),
        ("GATEWAY_POLICY_PUSH_OPTOUTS", "perhaps"),
        ("GATEWAY_SERVER_DRAIN_S", "soon"),
    ],
)
def test_bad_env_value_names_the_key_and_the_variable(name: str, value: str) -> None:
    [problem] = problems_of(None, {name: value})
    key = name.removeprefix("GATEWAY_").lower().replace("_", ".", 1)
    assert problem.startswith(f"{key}: ")
    assert name in problem


def test_env_literal_outside_its_choices_is_a_problem() -> None:
    problems = problems_of(None, {"GATEWAY_REDIS_ON_FAILURE": "sometimes"})
    assert any(p.startswith("redis.on_failure: ") for p in problems)


def test_env_override_is_validated_like_the_file() -> None:
    problems = problems_of(None, {"GATEWAY_LIMITS_SUBACCOUNT_BURST": "1800"})
    assert any(p.startswith("limits.subaccount_burst: ") for p in problems)


@pytest.mark.parametrize(
    "name",
    [
        "GATEWAY_ADMIN_TOKEN",
        "GATEWAY_WEBHOOK_SECRET",
        "GATEWAY_CONFIG",
        "GATEWAY_SERVER_NOT_A_KEY",
        "GATEWAY_UPSTREAM_URLS_FAX",
        "EIGHTX8_API_KEY",
    ],
)
def test_variables_naming_no_key_are_ignored(name: str) -> None:
    assert load(None, {name: "x y z"}) == Config()


# --- derived values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "expected"),
    [
        ("rps = 200", (200, 4)),  # 200 * 36 / 1800 = 4
        ("rps = 201", (201, 5)),  # 4.02 rounds up
        ("rps = 10", (10, 1)),  # 0.2 rounds up to 1
        ("rps = 200\nburst = 7", (200, 7)),
        ("burst = 7", (1800, 7)),
        ("account = 'acme2'", (1800, 36)),
    ],
)
def test_subaccount_limit(write: Write, sub: str, expected: tuple[int, int]) -> None:
    cfg = load(write(f"[subaccounts.acme_main]\n{sub}"), {})
    assert cfg.subaccount_limit("acme_main") == expected


def test_subaccount_limit_derives_from_configured_defaults(write: Write) -> None:
    text = "[limits]\nsubaccount_rps = 100\nsubaccount_burst = 3\n[subaccounts.acme_main]\nrps = 50"
    cfg = load(write(text), {})
    assert cfg.subaccount_limit("acme_main") == (50, 2)  # ceil(50 * 3 / 100) = ceil(1.5)
    assert cfg.subaccount_limit("unlisted") == (100, 3)


def test_account_of(write: Write) -> None:
    text = (
        "[upstream]\naccount_id = 'acme'\n"
        "[subaccounts.acme_other]\naccount = 'other'\n"
        "[subaccounts.acme_main]\nrps = 10"
    )
    cfg = load(write(text), {})
    assert cfg.account_of("acme_other") == "other"
    assert cfg.account_of("acme_main") == "acme"
    assert cfg.account_of("unlisted") == "acme"


# --- the 8x8 key ---------------------------------------------------------------------------


def test_api_key_from_the_named_variable() -> None:
    cfg = load(None, {"GATEWAY_UPSTREAM_API_KEY_ENV": "MY_KEY"})
    assert read_api_key(cfg, {"MY_KEY": " k-123\n"}) == "k-123"


@pytest.mark.parametrize("value", [None, "", "  \n"])
def test_missing_api_key_names_the_variable(value: str | None) -> None:
    cfg = load(None, {"GATEWAY_UPSTREAM_API_KEY_ENV": "MY_KEY"})
    env = {} if value is None else {"MY_KEY": value}
    with pytest.raises(ConfigError) as info:
        read_api_key(cfg, env)
    [problem] = info.value.problems
    assert problem.startswith("upstream.api_key_env: ")
    assert "MY_KEY" in problem


def test_api_key_file_wins_over_the_variable(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n", encoding="utf-8")
    cfg = load(None, {"GATEWAY_UPSTREAM_API_KEY_FILE": str(key_file)})
    assert read_api_key(cfg, {"EIGHTX8_API_KEY": "from-env"}) == "from-file"


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_unreadable_or_empty_key_file_names_the_file(tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content, encoding="utf-8")
    cfg = load(None, {"GATEWAY_UPSTREAM_API_KEY_FILE": str(key_file)})
    with pytest.raises(ConfigError) as info:
        read_api_key(cfg, {"EIGHTX8_API_KEY": "from-env"})
    [problem] = info.value.problems
    assert problem.startswith("upstream.api_key_file: ")
    assert str(key_file) in problem
    assert "from-env" not in problem


def test_version_2_keys_have_their_documented_defaults() -> None:
    cfg = load(None, {})
    assert (cfg.server.shutdown_delay_s, cfg.server.log_level) == (5.0, "info")
    assert (cfg.redis.otp_on_failure, cfg.limits.end_user_ipv6_prefix) == ("closed", 64)
    assert cfg.clients == ()


def test_subaccount_entries_match_whatever_the_case(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[subaccounts.Acme_Main]\naccount = "acme-sg"\nrps = 100\n')
    cfg = load(path, {})
    assert cfg.account_of("ACME_MAIN") == cfg.account_of("acme_main") == "acme-sg"
    assert cfg.subaccount_limit("aCmE_mAiN")[0] == 100


def test_two_subaccount_entries_differing_in_case_are_one_too_many(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text("[subaccounts.acme_main]\nrps = 100\n[subaccounts.ACME_MAIN]\nrps = 200\n")
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert any("the same subaccount as another entry" in p for p in err.value.problems)


def test_end_user_ipv6_prefix_is_a_prefix_length() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {"GATEWAY_LIMITS_END_USER_IPV6_PREFIX": "129"})
    assert err.value.problems == ["limits.end_user_ipv6_prefix: must be 1..128, got 129"]


# --- reload diffs and stray overrides ------------------------------------------------------


def test_a_reload_diff_names_keys_never_values_and_which_need_a_restart() -> None:
    from dataclasses import replace

    from gateway.config import ClientConfig, Config, LimitsConfig, ServerConfig, UpstreamConfig
    from gateway.server import changed_keys, keep_fixed, needs_restart

    old = Config(clients=(ClientConfig(name="orders", token_sha256=(HASH_A,)),))
    new = replace(
        old,
        server=ServerConfig(port=9000),
        limits=LimitsConfig(subaccount_rps=900, subaccount_burst=18),
        upstream=UpstreamConfig(api_key_file="/run/key", timeout_s=3),
        clients=(ClientConfig(name="orders", token_sha256=(HASH_A, HASH_B)),),
    )
    changed = changed_keys(old, new)
    assert changed == [
        "clients.orders.token_sha256",
        "limits.subaccount_burst",
        "limits.subaccount_rps",
        "server.port",
        "upstream.api_key_file",
        "upstream.timeout_s",
    ]
    assert [k for k in changed if needs_restart(k)] == ["server.port", "upstream.timeout_s"]
    kept = keep_fixed(old, new)
    assert kept.server.port == 8080 and kept.upstream.timeout_s == 10
    assert kept.upstream.api_key_file == "/run/key" and kept.limits.subaccount_rps == 900


def test_stray_gateway_variables_are_named_with_the_nearest_key() -> None:
    from gateway.config import Config, env_problems

    env = {
        "GATEWAY_SERVER_PORT": "1",
        "GATEWAY_UPSTREAM_URLS_SMS": "https://x",
        "GATEWAY_ADMIN_TOKEN": "s",
        "GATEWAY_CONFIG": "/etc/gateway.toml",
        "GATEWAY_LIMITS_SUBACOUNT_RPS": "5",
        "GATEWAY_NOTHING_LIKE_IT": "x",
        "HOME": "/root",
    }
    assert env_problems(Config(), env) == [
        "GATEWAY_LIMITS_SUBACOUNT_RPS: this variable names no config key "
        "(did you mean GATEWAY_LIMITS_SUBACCOUNT_RPS?)",
        "GATEWAY_NOTHING_LIKE_IT: this variable names no config key",
    ]
