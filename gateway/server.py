"""Processes and signals: N workers on one port (SO_REUSEPORT), drain on SIGTERM, reload on
SIGHUP, and a parent that restarts a worker that dies."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import tempfile
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway import logs
from gateway.config import Config, ConfigError

RESTART_BACKOFF_S = 1.0


def serve(cfg: Config, config_path: str | None, environ: Mapping[str, str]) -> int:
    """Run the gateway until SIGTERM/SIGINT; the exit code."""
    api_key = config_mod.read_api_key(cfg, environ)  # refuse to start without it
    logs.configure()
    log = logs.get("gateway")
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
        return run_async(_worker_main(cfg, config_path, api_key, environ))
    return _supervise(cfg, config_path, api_key, environ, workers)


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
    reuse_port: bool = False,
) -> int:
    from aiohttp import web

    from gateway.app import build_app
    from gateway.state import STATE

    app = build_app(cfg, api_key, environ)
    state = app[STATE]
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=cfg.server.drain_s,
        keepalive_timeout=cfg.server.idle_timeout_s,  # also bounds a slow request head
    )
    await runner.setup()
    site = web.TCPSite(
        runner, cfg.server.host, cfg.server.port, reuse_port=reuse_port, backlog=2048
    )
    await site.start()
    # everything alive now (modules, number metadata, config) lives as long as the
    # process: keep it out of the cyclic collector so full collections stay short
    gc.collect()
    gc.freeze()
    state.log.info(
        "listening",
        host=cfg.server.host,
        port=cfg.server.port,
        pid=os.getpid(),
        store=state.store.kind,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(state, config_path, environ))
    await stop.wait()
    state.draining = True
    state.log.info("draining", pid=os.getpid(), drain_s=cfg.server.drain_s)
    await runner.cleanup()  # stop accepting, finish accepted requests, then close
    state.log.info("stopped", pid=os.getpid())
    return 0


def reload(state: Any, config_path: str | None, environ: Mapping[str, str]) -> None:
    """SIGHUP: re-read the config (and key file); apply it only when it validates."""
    try:
        new = config_mod.load(config_path, environ)
        key = config_mod.read_api_key(new, environ)
    except ConfigError as exc:
        state.log.error("reload.refused", problems=exc.problems)
        return
    state.apply(_keep_fixed(state.config, new))
    state.upstream.set_key(key)
    state.log.info("reload.applied", pid=os.getpid())


def _keep_fixed(old: Config, new: Config) -> Config:
    """Sections that need a restart ([server], [redis], [upstream] but the key) stay."""
    from dataclasses import replace

    return replace(new, server=old.server, redis=old.redis, upstream=old.upstream)


def _supervise(
    cfg: Config, config_path: str | None, api_key: str, environ: Mapping[str, str], n: int
) -> int:
    log = logs.get("gateway")
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: dict[int, int] = {}  # pid → slot
    stopping = False
    pending: list[int] = []  # signals to act on, set by handlers

    def on_signal(signum: int, _: object) -> None:
        pending.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = run_async(_worker_main(cfg, config_path, api_key, environ, True))
            finally:
                logs.flush()
                os._exit(code)
        children[pid] = slot

    for slot in range(n):
        spawn(slot)
    log.info("supervisor", workers=n, pid=os.getpid())
    deadline = 0.0
    while children:
        while pending:
            signum = pending.pop(0)
            if signum == signal.SIGHUP:
                for pid in children:
                    os.kill(pid, signal.SIGHUP)
            elif not stopping:
                stopping = True
                deadline = time.monotonic() + cfg.server.drain_s + 5
                for pid in children:
                    os.kill(pid, signal.SIGTERM)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and time.monotonic() > deadline:
                for child in children:
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.05)
            continue
        slot = children.pop(pid)
        _mark_dead(pid)
        if not stopping:
            log.error("worker.died", pid=pid, status=os.waitstatus_to_exitcode(status))
            time.sleep(RESTART_BACKOFF_S)
            spawn(slot)
    for f in Path(metrics_dir).glob("*.db"):
        f.unlink(missing_ok=True)
    os.rmdir(metrics_dir)
    return 0


def _mark_dead(pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except Exception as exc:  # metrics bookkeeping must not stop the supervisor
        logs.get("gateway").warning("metrics.mark_dead_failed", error=str(exc))
