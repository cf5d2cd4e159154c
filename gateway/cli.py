"""The `gateway` command: serve, demo, check-config, hash-token, lint-templates."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence

from gateway import config as config_mod
from gateway.config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG"))
    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG"))
    sub.add_parser("hash-token", help="SHA-256 of a client token read on stdin")
    p = sub.add_parser("lint-templates", help="check WhatsApp templates against 8x8's rules")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("demo", help="the 8x8 simulator and a gateway pointed at it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--sim-port", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "hash-token":
        return hash_token()
    if args.command == "lint-templates":
        from gateway import lint

        return lint.main(args.files, sys.stdout)
    if args.command == "demo":
        from gateway.demo import run

        return run(args.port, args.sim_port)
    if args.command == "check-config":
        return check_config(args.config)
    try:
        cfg = config_mod.load(args.config, os.environ)
        from gateway.server import serve

        return serve(cfg, args.config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1


def check_config(path: str | None) -> int:
    """Everything `serve` would refuse, and more: the file, the 8x8 key, stray overrides."""
    if not path:
        print("config: no config file given (--config PATH or GATEWAY_CONFIG)", file=sys.stderr)
        return 1
    try:
        cfg = config_mod.load(path, os.environ)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = config_mod.env_problems(cfg, os.environ)
        try:
            config_mod.read_api_key(cfg, os.environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print("ok")
    return 0


def hash_token() -> int:
    data = sys.stdin.buffer.read()
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        print("hash-token: no token on stdin", file=sys.stderr)
        return 1
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
