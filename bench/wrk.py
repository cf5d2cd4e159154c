"""Closed-loop max throughput with wrk (C, epoll) when it is installed or installable.

The same pre-encoded requests as the Python generator go into a Lua table; `request()`
hands them out in turn and fills the slot, so wrk sends exactly the bench's workload.
wrk costs a few µs of CPU per request against ~20 µs for the Python client, and on a
2-core box every µs the generator spends is taken from the system under test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench.workload import Template

_SLOT_CODE = {"": 0, "ip": 1, "num": 2}  # 3: rand:N:W

_LUA = r"""
local n, i, counter = #reqs, 0, SLOT_BASE
math.randomseed(SLOT_BASE)
request = function()
  i = i + 1
  if i > n then i = 1 end
  local r = reqs[i]
  if r[3] == 0 then return r[1] end
  if r[3] == 3 then
    return r[1] .. string.format(r[5], math.random(0, r[4] - 1)) .. r[2]
  end
  counter = counter + 1
  if r[3] == 1 then
    return r[1] .. string.format("%04x:%04x", math.floor(counter / 65536) % 65536,
                                 counter % 65536) .. r[2]
  end
  return r[1] .. string.format("%09d", counter % 1000000000) .. r[2]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def ensure_wrk() -> str | None:
    """wrk's path; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found or not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "wrk"],
        ["sh", "-c", "apt-get update -qq && apt-get install -y -qq wrk"],
    ):
        try:
            subprocess.run(cmd, env=env, timeout=300, check=True, capture_output=True)
        except (subprocess.SubprocessError, OSError):
            continue
        if shutil.which("wrk"):
            return shutil.which("wrk")
    return None


def _lua_string(raw: bytes) -> str:
    text = raw.decode("latin-1")
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
    return f'"{out}"'


def write_script(path: Path, templates: list[Template], slot_base: int) -> None:
    lines = ["reqs = {"]
    for t in templates:
        if t.slot.startswith("rand:"):
            _, below, width = t.slot.split(":")
            extra = f'3, {int(below)}, "%0{int(width)}d"'
        else:
            extra = str(_SLOT_CODE[t.slot])
        lines.append(f"{{{_lua_string(t.pre)}, {_lua_string(t.post)}, {extra}}},")
    lines.append("}")
    lines.append(_LUA.replace("SLOT_BASE", str(int(slot_base))))
    path.write_text("\n".join(lines), encoding="latin-1")


def run(
    binary: str,
    url: str,
    templates: list[Template],
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    workdir: Path,
    slot_base: int = 0,
) -> dict[str, Any]:
    """A warm-up run, then the measured run; the summary in loadgen.summarize's shape."""
    script = workdir / "wrk.lua"
    write_script(script, templates, slot_base)
    threads = "1"  # one generator thread leaves the most CPU to the system under test
    if warmup_s > 0:
        _wrk(binary, url, script, threads, connections, warmup_s)
    # the warm-up used slots from slot_base; the measured run must not repeat them
    write_script(script, templates, slot_base + 5_000_000)
    usage0 = os.times()
    got, text = _wrk(binary, url, script, threads, connections, duration_s)
    usage1 = os.times()
    cpu = (usage1.children_user - usage0.children_user) + (
        usage1.children_system - usage0.children_system
    )
    if got is None:
        raise RuntimeError(f"wrk printed no summary:\n{text[-2000:]}")
    n = int(got["requests"])
    elapsed = got["duration_us"] / 1e6
    bad = int(got["status"])
    errors = int(got["connect"] + got["read"] + got["write"] + got["timeout"])
    return {
        "requests": n,
        "elapsed_s": round(elapsed, 3),
        "rate": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "ok": n - bad,
        "by_status": {"2xx": n - bad, "non-2xx": bad},
        "errors": errors,
        "latency_ms": {k: round(got[k] / 1000, 3) for k in ("p50", "p90", "p99", "p999", "max")},
        "per_second": {},
        "loadgen": "wrk",
        "loadgen_cpu_s": round(cpu, 3),
        "loadgen_cpu_us_per_request": round(cpu / n * 1e6, 1) if n else 0.0,
    }


def _wrk(
    binary: str, url: str, script: Path, threads: str, connections: int, duration_s: float
) -> tuple[dict[str, Any] | None, str]:
    cmd = [
        binary,
        "-t",
        threads,
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    found = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    return (orjson.loads(found.group(1)) if found else None), proc.stdout + proc.stderr
