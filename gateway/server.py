"""Processes and signals: N workers on one port (SO_REUSEPORT) under a parent that restarts
a worker that dies with the config in force; SIGTERM: a shutdown delay with /readyz 503,
then drain; SIGHUP: reload in place, saying what changed.

Why not gunicorn's aiohttp worker: gunicorn's HUP replaces every worker (new processes, cold
Redis pools and compliance snapshots, the local fallback's state lost) where the gateway
reloads in place without dropping a request; its TERM closes the listener at once (no
readiness-first shutdown delay); and it brings a second config system. The supervisor below
is ~200 lines and does exactly what the contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import tempfile
import time
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway import logs
from gateway.config import Config, ConfigError

RESTART_BACKOFF_S = 1.0
EXIT_BIND = 3  # a worker that cannot listen exits with this; the parent then gives up
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# keys a SIGHUP cannot apply (the running process keeps the old value until a restart)
_RESTART_PREFIXES = ("server.", "redis.", "upstream.", "webhooks.secret_env", "admin.token_env")
_RELOADED_UPSTREAM = ("upstream.api_key_env", "upstream.api_key_file")


def serve(cfg: Config, config_path: str | None, environ: Mapping[str, str]) -> int:
    """Run the gateway until SIGTERM/SIGINT; the exit code."""
    early: list[int] = []
    for sig in _SIGNALS:  # until the event loop takes over: remember, never die of them
        signal.signal(sig, lambda signum, _: early.append(signum))
    api_key = config_mod.read_api_key(cfg, environ)  # refuse to start without it
    logs.configure(cfg.server.log_level)
    logs.redact(api_key, *(environ.get(v, "") for v in (cfg.admin.token_env,
                                                        cfg.webhooks.secret_env)))  # fmt: skip
    log = logs.get("gateway")
    for problem in config_mod.env_problems(cfg, environ):
        log.warning("config.unknown_override", message=problem)
    if not cfg.redis.url and cfg.redis.mode == "standalone":
        log.warning(
            "store.memory",
            message="no [redis] url: one process on the in-process "
            "store; limits are not shared with any other gateway",
        )
        if cfg.server.workers > 1:
            log.warning(
                "server.workers",
                message="the in-process store runs one worker",
                configured=cfg.server.workers,
            )
        workers = 1
    else:
        workers = cfg.server.workers
    if workers == 1:
        code = run_async(_worker_main(cfg, config_path, api_key, environ, early))
        return 1 if code == EXIT_BIND else code
    return Supervisor(cfg, config_path, api_key, environ, workers, early).run()


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (asyncio.run has no loop_factory in 3.11)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop


async def _worker_main(
    cfg: Config,
    config_path: str | None,
    api_key: str,
    environ: Mapping[str, str],
    early: list[int],
    reuse_port: bool = False,
) -> int:
    stop = asyncio.Event()
    interrupted = asyncio.Event()  # Ctrl-C: stop without the load balancer's delay
    hups: list[int] = []
    state: Any = None

    def on_hup() -> None:
        if state is None:
            hups.append(signal.SIGHUP)  # still starting: reload once it serves
        else:
            reload(state, config_path, environ)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_int() -> None:
        interrupted.set()
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_int)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    hups.extend(s for s in early if s == signal.SIGHUP)
    if signal.SIGINT in early:
        on_int()
    elif signal.SIGTERM in early:
        stop.set()

    from aiohttp import web

    from gateway import keyfile, protocol
    from gateway.app import build_app, metrics_app
    from gateway.front import FrontRunner
    from gateway.state import STATE

    app = build_app(cfg, api_key, environ)
    srv = cfg.server
    runner = FrontRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=srv.drain_s,
        keepalive_timeout=srv.idle_timeout_s,  # also bounds a slow request head
    )
    await runner.setup()
    protocol.install(runner)  # malformed requests: 8x8's error shape, quoting nothing
    runners: list[web.AppRunner] = [runner]
    sites = [(srv.port, web.TCPSite(runner, srv.host, srv.port, reuse_port=reuse_port,
                                    backlog=2048))]  # fmt: skip
    if srv.metrics_port:
        side = web.AppRunner(metrics_app(app[STATE]), access_log=None, handle_signals=False)
        await side.setup()
        runners.append(side)
        metrics = web.TCPSite(side, srv.host, srv.metrics_port, reuse_port=reuse_port)
        sites.append((srv.metrics_port, metrics))
    for port, site in sites:
        try:
            await site.start()
        except OSError as exc:
            logs.get("gateway").error(
                "server.bind_failed",
                host=srv.host,
                port=port,
                message=f"cannot listen on {srv.host}:{port}: {exc.strerror or exc}",
            )
            # nothing was served: exit now rather than wait on a half-started app's tasks
            # (the snapshot's first load, Redis pools) that a bind failure left behind
            logs.flush()
            os._exit(EXIT_BIND if reuse_port else 1)
    state = app[STATE]
    # everything alive now (modules, number metadata, config) lives as long as the
    # process: keep it out of the cyclic collector so full collections stay short
    gc.collect()
    gc.freeze()
    state.log.info("listening", host=srv.host, port=srv.port, store=state.store.kind)
    if hups:
        reload(state, config_path, environ)
    watcher = loop.create_task(
        keyfile.watch(lambda: state.config, environ, state.upstream.set_key, state.log)
    )
    await stop.wait()
    state.draining = True  # /readyz answers 503 from now on; requests are still served
    state.log.info("draining", shutdown_delay_s=srv.shutdown_delay_s, drain_s=srv.drain_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(interrupted.wait(), srv.shutdown_delay_s)
    watcher.cancel()
    state.log.info("listener.closing")
    for r in reversed(runners):  # stop accepting, finish accepted requests (drain_s)
        await r.cleanup()
    state.log.info("stopped")
    return 0


def reload(state: Any, config_path: str | None, environ: Mapping[str, str]) -> None:
    """SIGHUP: re-read the config (and key file); apply it only when it validates."""
    try:
        new = config_mod.load(config_path, environ)
        key = config_mod.read_api_key(new, environ)
    except ConfigError as exc:
        state.metrics.reloads.labels("refused").inc()
        state.log.error("reload.refused", problems=exc.problems)
        return
    changed = changed_keys(state.config, new)
    restart = [k for k in changed if needs_restart(k)]
    if restart:
        state.log.warning(
            "reload.needs_restart",
            keys=restart,
            message="changed in the file but kept until a restart",
        )
    state.apply(keep_fixed(state.config, new))
    state.upstream.set_key(key)
    state.metrics.reloads.labels("applied").inc()
    state.log.info("reload.applied", changed=[k for k in changed if not needs_restart(k)])


def changed_keys(old: Config, new: Config) -> list[str]:
    """Key paths whose values differ (never the values: some are token hashes)."""
    a, b = config_mod.flatten(old), config_mod.flatten(new)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def needs_restart(key: str) -> bool:
    return key.startswith(_RESTART_PREFIXES) and key not in _RELOADED_UPSTREAM


def keep_fixed(old: Config, new: Config) -> Config:
    """What a running process can apply of `new`; the rest stays as `old` had it."""
    upstream = replace(
        old.upstream,
        api_key_env=new.upstream.api_key_env,
        api_key_file=new.upstream.api_key_file,
    )
    return replace(
        new,
        server=old.server,
        redis=old.redis,
        upstream=upstream,
        webhooks=old.webhooks,
        admin=replace(new.admin, token_env=old.admin.token_env),
    )


class Supervisor:
    """The parent of N workers: forwards signals, restarts a worker that dies with the
    config in force (it re-reads the file on SIGHUP too), gives up on a port it cannot
    bind."""

    def __init__(
        self,
        cfg: Config,
        config_path: str | None,
        api_key: str,
        environ: Mapping[str, str],
        n: int,
        early: list[int],
    ) -> None:
        self.cfg = cfg  # the config in force: what a restarted worker runs
        self.api_key = api_key
        self.config_path = config_path
        self.environ = environ
        self.n = n
        self.pending = early  # signals to act on, appended by the handler
        self.children: dict[int, int] = {}  # pid → slot
        self.log = logs.get("gateway")

    def run(self) -> int:
        metrics_dir, made = self._metrics_dir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        self.log.info("supervisor", workers=self.n, metrics_dir=metrics_dir)
        for slot in range(self.n):
            self._spawn(slot)
        code = self._loop()
        for f in Path(metrics_dir).glob("*.db"):
            f.unlink(missing_ok=True)
        if made:
            os.rmdir(metrics_dir)
        self.log.info("supervisor.stopped", code=code)
        return code

    def _metrics_dir(self) -> tuple[str, bool]:
        configured = self.cfg.server.metrics_dir
        if not configured:
            return tempfile.mkdtemp(prefix="gateway-metrics-"), True
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for f in path.glob("*.db"):  # a previous run's counts must not be summed in
            f.unlink(missing_ok=True)
        return str(path), False

    def _spawn(self, slot: int) -> None:
        cfg, key = self.cfg, self.api_key
        pid = os.fork()
        if pid == 0:  # the worker: signals are remembered until its loop takes them
            early: list[int] = []
            for sig in _SIGNALS:
                signal.signal(sig, lambda signum, _: early.append(signum))
            code = 1
            try:
                with contextlib.suppress(ConfigError):  # a rotated key file
                    key = config_mod.read_api_key(cfg, self.environ)
                code = run_async(
                    _worker_main(cfg, self.config_path, key, self.environ, early, True)
                )
            finally:
                logs.flush()
                os._exit(code)
        self.children[pid] = slot

    def _reload(self) -> None:
        """The parent's copy of the config in force, for workers it will restart (the
        workers reload and log on their own)."""
        try:
            new = config_mod.load(self.config_path, self.environ)
            key = config_mod.read_api_key(new, self.environ)
        except ConfigError:
            return
        self.cfg, self.api_key = keep_fixed(self.cfg, new), key

    def _loop(self) -> int:
        stopping = False
        code = 0
        deadline = 0.0
        srv = self.cfg.server
        while self.children:
            while self.pending:
                signum = self.pending.pop(0)
                if signum == signal.SIGHUP:
                    self._reload()
                    self._signal_all(signal.SIGHUP)
                elif not stopping:
                    stopping = True
                    deadline = time.monotonic() + srv.shutdown_delay_s + srv.drain_s + 5
                    self._signal_all(signum)  # SIGINT (Ctrl-C) skips the shutdown delay
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if stopping and time.monotonic() > deadline:
                    self._signal_all(signal.SIGKILL)
                time.sleep(0.05)
                continue
            slot = self.children.pop(pid)
            _mark_dead(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code == EXIT_BIND and not stopping:
                self.log.error("supervisor.giving_up", port=srv.port, reason="bind failed")
                stopping, code = True, 1
                deadline = time.monotonic() + srv.drain_s + 5
                self._signal_all(signal.SIGTERM)
            elif not stopping:
                self.log.error("worker.died", worker=pid, status=exit_code)
                time.sleep(RESTART_BACKOFF_S)
                self._spawn(slot)
        return code

    def _signal_all(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _mark_dead(pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except Exception as exc:  # metrics bookkeeping must not stop the supervisor
        logs.get("gateway").warning("metrics.mark_dead_failed", error=str(exc))
