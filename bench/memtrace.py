"""The soak run's memory probe inside each gateway worker (bench/soak.py starts the gateway
with `bench/memtrace_site` on PYTHONPATH; its `sitecustomize` calls `install()`).

In every forked worker a daemon thread appends, every GW_MEMTRACE_PROBE_S (10 s), one JSON
line to GW_MEMTRACE_DIR/<pid>.jsonl: the time, RSS, and the heap in use — pymalloc's
allocated blocks (sys._debugmallocstats) plus glibc's in-use bytes (mallinfo2) — and the
pymalloc arenas that hold them. RSS counts pages the allocators keep after a peak (a 10,000
message batch); the heap in use counts only what is live, so a leak shows there and
fragmentation does not. A probe takes ~10 ms of the GIL.

With GW_MEMTRACE_EVERY_S (`python -m bench.soak --memtrace S`) it also writes a full
report every S seconds to <pid>-<seconds>.txt: tracemalloc's growth by line since the first
report (when the soak sets PYTHONTRACEMALLOC: GW_MEMTRACE_TRACEMALLOC=1), object counts by
type, pending asyncio tasks by coroutine, and every container under the worker's `State`
(found through `_worker_main`'s frame) longer than BIG. GW_MEMTRACE_TRIM=1 calls
malloc_trim(0) after each report, to tell glibc's free lists from live memory.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
from pathlib import Path
from typing import Any

BIG = 200  # a container this long is reported


def install() -> None:
    out = os.environ.get("GW_MEMTRACE_DIR")
    if out:
        probe = float(os.environ.get("GW_MEMTRACE_PROBE_S", "10"))
        every = float(os.environ.get("GW_MEMTRACE_EVERY_S", "0"))
        os.register_at_fork(after_in_child=lambda: _start(Path(out), probe, every))


def _start(out: Path, probe: float, every: float) -> None:
    args = (out, probe, every)
    threading.Thread(target=_run, args=args, daemon=True, name="memtrace").start()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_kb": m.arena // 1024, "mmap_kb": m.hblkhd // 1024,
            "in_use_kb": m.uordblks // 1024, "free_kb": m.fordblks // 1024}  # fmt: skip


def _run(out: Path, probe: float, every: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pid, started = os.getpid(), time.monotonic()
    first: dict[str, tuple[int, int]] | None = None
    first_types: collections.Counter[str] = collections.Counter()
    n = 0
    next_report = every
    while True:
        n += 1
        time.sleep(max(0.0, started + n * probe - time.monotonic()))
        with (out / f"{pid}.jsonl").open("a") as f:
            f.write(json.dumps(sample()) + "\n")
        if not every or n * probe < next_report:
            continue
        next_report += every
        t0 = time.monotonic()
        try:
            text, snap, types = _report(first, first_types)
        except Exception:  # a tracing failure must not touch the worker
            text, snap, types = traceback.format_exc(), None, first_types
        if first is None and snap is not None:
            first, first_types = snap, types
        took = time.monotonic() - t0
        (out / f"{pid}-{int(n * probe):05d}.txt").write_text(f"took_s {took:.2f}\n" + text)


def sample() -> dict[str, Any]:
    """One probe: RSS, and the heap in use (pymalloc's blocks + glibc's in-use bytes, in its
    heap and in its own mmaps)."""
    py, libc = _pymalloc(), _mallinfo()
    return {"time": time.time(), "rss_kb": _rss_kb(),
            "heap_kb": py.get("kb_blocks", 0) + libc.get("in_use_kb", 0) + libc.get("mmap_kb", 0),
            "pymalloc_kb": py.get("kb_blocks", 0), "arenas": py.get("arenas", 0),
            "malloc_in_use_kb": libc.get("in_use_kb", 0),
            "malloc_heap_kb": libc.get("heap_kb", 0)}  # fmt: skip


def _by_line() -> dict[str, tuple[int, int]]:
    """tracemalloc's live memory by line: (bytes, blocks); the snapshot itself is dropped
    at once (holding it would be most of what grows)."""
    snap = tracemalloc.take_snapshot()
    return {str(s.traceback[0]): (s.size, s.count) for s in snap.statistics("lineno")}


def _report(
    first: dict[str, tuple[int, int]] | None, first_types: collections.Counter[str]
) -> tuple[str, dict[str, tuple[int, int]] | None, collections.Counter[str]]:
    lines = [f"rss_kb {_rss_kb()}", f"malloc {_mallinfo()}",
             f"pymalloc_blocks {sys.getallocatedblocks()}", f"gc_counts {gc.get_count()}",
             f"gc_stats {[(s['collections'], s['collected']) for s in gc.get_stats()]}"]  # fmt: skip
    lines.append(f"pymalloc {_pymalloc()}")
    snap = None
    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory()
        lines.append(f"traced_kb {cur // 1024} peak_kb {peak // 1024}")
        snap = _by_line()
        if first is not None:
            lines.append("\n== tracemalloc growth since first report by line")
            diff = {k: (v[0] - first.get(k, (0, 0))[0], v[1] - first.get(k, (0, 0))[1], *v)
                    for k, v in snap.items()}  # fmt: skip
            for k, (dsize, dcount, size, count) in sorted(
                diff.items(), key=lambda kv: -abs(kv[1][0])
            )[:30]:
                lines.append(f"{dsize / 1024:+9.1f} KiB {dcount:+7d} "
                             f"(now {size / 1024:8.1f} KiB {count:7d})  {k}")  # fmt: skip
    objects = gc.get_objects()
    types = collections.Counter(type(o).__qualname__ for o in objects)
    lines.append(f"\n== gc objects {len(objects)} (frozen {gc.get_freeze_count()}) by type")
    grown = sorted(types, key=lambda t: types[t] - first_types.get(t, 0), reverse=True)
    lines.extend(f"{types[t] - first_types.get(t, 0):+8d}  {types[t]:8d}  {t}" for t in grown[:25])
    del objects
    tasks = list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
    by_coro = collections.Counter(_coro_name(t) for t in tasks)
    lines.append(f"\n== asyncio tasks {len(tasks)} (done {sum(t.done() for t in tasks)})")
    lines.extend(f"{k:6d}  {name}" for name, k in by_coro.most_common(15))
    state = _state(tasks)
    lines.append("\n== containers under State (path : type len)")
    lines.extend(_containers(state) if state is not None else ["State not found"])
    lines.extend(_caches())
    if os.environ.get("GW_MEMTRACE_TRIM"):  # is the growth live memory, or malloc's free lists?
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        lines.append(f"\nafter malloc_trim(0): rss_kb {_rss_kb()} malloc {_mallinfo()}")
    return "\n".join(lines) + "\n", snap, types


def _coro_name(task: Any) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__name__)


def _state(tasks: list[Any]) -> Any:
    for task in tasks:
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and coro.cr_code.co_name == "_worker_main":
            return frame.f_locals.get("state")
    return None


def _ours(o: Any) -> bool:
    mod = getattr(type(o), "__module__", "")
    return isinstance(mod, str) and mod.startswith("gateway")


def _containers(root: Any) -> list[str]:
    """Walk the gateway's own objects from `root` (and dicts/lists/sets/tuples up to two
    levels below one); every container of BIG items or more, by the path that reached it."""
    seen: set[int] = set()
    found: dict[str, int] = {}
    stack: list[tuple[Any, str, int]] = [(root, "state", 0)]
    while stack:
        o, path, depth = stack.pop()
        if id(o) in seen or isinstance(o, str | bytes | int | float | type):
            continue
        seen.add(id(o))
        if _ours(o):
            depth = 0
            attrs = dict(getattr(o, "__dict__", {}) or {})
            for slot in getattr(type(o), "__slots__", ()):
                if isinstance(slot, str) and hasattr(o, slot):
                    attrs[slot] = getattr(o, slot)
            children = [(v, f"{path}.{k}") for k, v in attrs.items()]
        elif depth >= 3:
            continue
        else:
            try:
                size = len(o)
            except Exception:
                size = -1
            if size >= BIG:
                found[f"{path} : {type(o).__name__}"] = size
            if isinstance(o, dict):
                # its values only (a sample of a long one): the keys are numbers and such
                items = list(o.values())[:50] if size >= BIG else list(o.values())
                children = [(v, f"{path}[]") for v in items]
            elif isinstance(o, list | tuple | set | frozenset | collections.deque):
                children = [(v, f"{path}[]") for v in list(o)[:50]]
            else:
                children = [(v, f"{path}/{type(v).__name__}") for v in gc.get_referents(o)]
        for v, p in children:
            stack.append((v, p, depth + 1))
    found["(objects walked)"] = len(seen)
    return [f"{n:9d}  {k}" for k, n in sorted(found.items(), key=lambda kv: -kv[1])]


def _caches() -> list[str]:
    out = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("gateway"):
            for attr, v in list(vars(mod).items()):
                info = getattr(v, "cache_info", None)
                if callable(info) and not isinstance(v, type):
                    try:
                        out.append(f"{info().currsize:9d}  lru_cache {name}.{attr}")
                    except Exception as exc:
                        out.append(f"lru_cache {name}.{attr}: {exc!r}")
    return out


def _pymalloc() -> dict[str, int]:
    """sys._debugmallocstats()'s totals (it writes to fd 2: borrowed for the call; the
    gateway logs to stdout)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    wanted = {"# arenas allocated total": "arenas_total", "# arenas reclaimed": "reclaimed",
              "# arenas highwater mark": "arenas_hwm", "# arenas allocated current": "arenas",
              "bytes in allocated blocks": "kb_blocks", "bytes in available blocks": "kb_free",
              "unused pools": "kb_unused_pools"}  # fmt: skip
    out = {}
    for line in text.splitlines():
        for needle, name in wanted.items():
            if needle in line and "=" in line:
                value = int(line.rsplit("=", 1)[1].replace(",", "").strip())
                out[name] = value // 1024 if name.startswith("kb") else value
    return out


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
