"""The gateway's CPU per request by stage, from a `--profile` run's collapsed py-spy stacks
(docs/performance.md keeps the table): each sample goes to the stage of its innermost frame
that a rule below matches, and a stage's share of the samples times the run's CPU µs per
request is its µs per request.

    python -m bench.stages bench/out/<run>/profile-gateway.txt 263
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# first match wins, tried from the innermost frame outwards
STAGES = [
    ("logging (request line, scrubber, write)", r"structlog/|gateway/logs\.py"),
    ("metrics", r"prometheus_client/|gateway/metrics\.py"),
    ("number parsing (phonenumbers)", r"phonenumbers/"),
    ("decision, client side (store, decider, batching, tail)", r"gateway/store/|gateway/policy/decider\.py|redis/|hiredis"),
    ("policy (auth, limit plan, lanes, pacing)", r"gateway/policy/|gateway/clients\.py"),
    ("body read + parse (messages, orjson)", r"gateway/messages\.py|gateway/bodies\.py"),
    ("forward (gateway/upstream + aiohttp client)", r"gateway/upstream\.py|aiohttp/client|aiohttp/connector|aiohttp/streams"),
    # the process's outermost frames (the loop running): time in uvloop itself, as the
    # bare proxy's own outer frames (bench/bare_proxy.py) count under OTHER
    ("event loop, asyncio, other", r"gateway/(server|cli|__main__)\.py|<frozen runpy>"),
    ("handlers, routing, middleware (gateway)", r"gateway/"),
    ("aiohttp server (protocol, request, response)", r"aiohttp/"),
]  # fmt: skip
OTHER = "event loop, asyncio, other"
_COMPILED = [(name, re.compile(rx)) for name, rx in STAGES]


def split(collapsed: Path) -> tuple[Counter[str], int]:
    stages: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        stage = OTHER
        for frame in reversed(stack.split(";")):
            hit = next((name for name, rx in _COMPILED if rx.search(frame)), None)
            if hit is not None:
                stage = hit
                break
        stages[stage] += n
    return stages, total


def table(collapsed: Path, cpu_us: float) -> str:
    stages, total = split(collapsed)
    rows = ["| stage | share | µs/request |", "| --- | --- | --- |"]
    for name, n in stages.most_common():
        rows.append(f"| {name} | {100 * n / total:.1f}% | {cpu_us * n / total:.0f} |")
    rows.append(f"| total ({total} samples) | 100% | {cpu_us:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), float(sys.argv[2])))
