"""`--profile`: sample one gateway worker and one bare-proxy worker with py-spy while
scenario 1 runs, keep the collapsed stacks (profile-gateway.txt, profile-bare.txt:
flamegraph.pl / speedscope input) and summarise where each worker's CPU went: top
functions by own time and by inclusive time (py-spy only samples a busy worker)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found:
        return found
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "py-spy"],
        check=False,
        capture_output=True,
        timeout=300,
    )
    return shutil.which("py-spy", path=str(Path(sys.executable).parent))


class PySpy:
    def __init__(self, pid: int, out: Path, name: str = "gateway") -> None:
        self.pid = pid
        self.path = out / f"profile-{name}.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> PySpy:
        binary = py_spy()
        if binary is None:
            self.summary = {"error": "py-spy is not installed"}
            return self
        cmd = [
            binary,
            "record",
            "-f",
            "raw",
            "-r",
            "200",
            "-o",
            str(self.path),
            "-p",
            str(self.pid),
            "--nonblocking",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = b""
        if self.path.exists():
            self.summary = summarise(self.path.read_text())
            self.summary["file"] = self.path.name
        else:
            self.summary = {"error": err.decode(errors="replace")[-500:]}


def _frame(frame: str) -> str:
    """'handle (gateway/proxy.py:40)' → 'handle (gateway/proxy.py)' (lines merged)."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(collapsed: str, top: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in c.most_common(top)]

    wrappers = ("gateway/__main__.py", "gateway/cli.py", "gateway/server.py")
    mine = Counter(
        {k: v for k, v in incl.items() if not k.endswith(wrappers, 0, -1) and
         any(lib in k for lib in ("gateway/", "bench/", "aiohttp/", "redis/"))}
    )  # fmt: skip
    return {
        "samples": total,
        "own_pct": pct(own) if total else [],
        "inclusive_pct": pct(mine) if total else [],
    }
