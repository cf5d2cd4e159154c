"""The `gateway` command: check-config exit codes and messages, hash-token, and serve
refusing to start without the 8x8 key."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256("test")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEWAY_* override from the machine running the tests leaks into the config."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def clean_subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


# --- check-config --------------------------------------------------------------------------


def test_check_config_valid_file_prints_ok_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[server]\nport = 9000\n", encoding="utf-8")
    monkeypatch.setenv("EIGHTX8_API_KEY", "k")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("ok\n", "")


def test_check_config_fails_when_the_key_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[upstream]\napi_key_env = 'MY_8X8_KEY'\n", encoding="utf-8")
    monkeypatch.delenv("MY_8X8_KEY", raising=False)
    assert main(["check-config", "--config", str(path)]) == 1
    assert "upstream.api_key_env: " in capsys.readouterr().err


def test_check_config_fails_when_the_key_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(f"[upstream]\napi_key_file = '{tmp_path}/absent.key'\n", encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 1
    assert "upstream.api_key_file: " in capsys.readouterr().err


def test_check_config_fails_without_a_config_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EIGHTX8_API_KEY", "k")
    assert main(["check-config"]) == 1
    assert capsys.readouterr().err.startswith("config: no config file given")


def test_check_config_names_a_mistyped_override_and_suggests_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[admin]\ntoken_env = 'GATEWAY_OPS_TOKEN'\n", encoding="utf-8")
    monkeypatch.setenv("EIGHTX8_API_KEY", "k")
    monkeypatch.setenv("GATEWAY_REDIS_ULR", "redis://x")
    for allowed in ("GATEWAY_OPS_TOKEN", "GATEWAY_WEBHOOK_SECRET", "GATEWAY_CONFIG"):
        monkeypatch.setenv(allowed, str(path) if allowed == "GATEWAY_CONFIG" else "s")
    assert main(["check-config", "--config", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "GATEWAY_REDIS_ULR: this variable names no config key (did you mean GATEWAY_REDIS_URL?)"
    ]


def test_check_config_names_clients_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[[clients]]\nname = 'orders'\ntoken_sha256 = 'abc'\nsubaccounts = ['acme_main']\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("EIGHTX8_API_KEY", "k")
    assert main(["check-config", "--config", str(path)]) == 1
    assert capsys.readouterr().err.startswith("clients.orders.token_sha256: ")


def test_check_config_prints_each_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 70000\nbogus = 1\n", encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert "server.bogus: unknown key" in lines
    assert any(line.startswith("server.port: ") for line in lines)
    assert len(lines) == 2


def test_check_config_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check-config", "--config", str(path)]) == 1
    assert str(path) in capsys.readouterr().err


def test_check_config_reads_the_path_from_gateway_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nsubaccount_burst = 5000\n", encoding="utf-8")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert main(["check-config"]) == 1
    assert "limits.subaccount_burst: " in capsys.readouterr().err


def test_check_config_applies_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv("GATEWAY_SERVER_PORT", "not-a-port")
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("server.port: ")
    assert "GATEWAY_SERVER_PORT" in err


# --- hash-token ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"test", b"test\n", b"test\r\n"])
def test_hash_token_strips_one_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    feed_stdin(monkeypatch, data)
    assert main(["hash-token"]) == 0
    assert capsys.readouterr().out == TEST_HASH + "\n"


def test_hash_token_strips_only_one_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, b"test\n\n")
    assert main(["hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"test\n").hexdigest()


def test_hash_token_keeps_other_whitespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, b" test \n")
    assert main(["hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b" test ").hexdigest()


def test_hash_token_hashes_utf8_bytes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "tökén-✓"
    feed_stdin(monkeypatch, token.encode() + b"\n")
    assert main(["hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize("data", [b"", b"\n"])
def test_hash_token_refuses_an_empty_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    feed_stdin(monkeypatch, data)
    assert main(["hash-token"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "no token" in out.err


def test_hash_token_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-token"],
        input=b"test\n",
        capture_output=True,
        cwd=REPO_ROOT,
        env=clean_subprocess_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == TEST_HASH + "\n"


# --- serve ---------------------------------------------------------------------------------


def test_serve_without_the_key_variable_exits_1_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\n'
        '[upstream]\napi_key_env = "GW_UNIT_TEST_UNSET_KEY"\n',
        encoding="utf-8",
    )
    env = clean_subprocess_env()
    env.pop("GW_UNIT_TEST_UNSET_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert b"GW_UNIT_TEST_UNSET_KEY" in proc.stderr


def test_serve_with_an_invalid_config_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[server]\nbogus = 1\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True,
        cwd=REPO_ROOT,
        env=clean_subprocess_env(EIGHTX8_API_KEY="k"),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert b"server.bogus: unknown key" in proc.stderr


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
