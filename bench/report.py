"""The report: report.json, one PNG per scenario (matplotlib, Agg), and the summary table
with each figure next to issue 5's target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

TARGET_LABEL = {"gateway": "gateway", "bare": "bare proxy", "direct": "direct to simulator"}


def write_json(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) for every scenario that ran."""
    s = report["scenarios"]
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, target: str, met: bool | None) -> None:
        rows.append((name, value, target, "-" if met is None else ("yes" if met else "NO")))

    if "1" in s:
        f = s["1"]["figures"]
        rps = f["throughput_rps"]
        row(
            "1 throughput gateway / bare / direct (req/s)",
            f"{rps['gateway']:.0f} / {rps['bare']:.0f} / {rps['direct']:.0f}",
            ">= 3000 gw",
            rps["gateway"] >= 3000,
        )
        row(
            "1 gateway / bare throughput",
            f"{f['gateway_over_bare']:.3f}",
            ">= 0.75",
            f["gateway_over_bare"] >= 0.75,
        )
        cpu = f["cpu_us_per_request"]
        row(
            "1 CPU µs/request gateway / bare", f"{cpu['gateway']:.0f} / {cpu['bare']:.0f}", "", None
        )
    if "2" in s:
        f = s["2"]["figures"]
        added = f["added_p99_ms"]
        row(
            "2 added p99 at 500 / 1000 / 2000 req/s (ms)",
            " / ".join(f"{added.get(str(r), 0):.2f}" for r in (500, 1000, 2000)),
            "<= 2 at 1000",
            added.get("1000", 99) <= 2.0,
        )
    if "3" in s:
        f = s["3"]["figures"]
        row(
            "3 max forwarded in any 1 s window / limit",
            f"{f['max_window']} / {f['limit_rps']}",
            "<= limit",
            f["max_window"] <= f["limit_rps"],
        )
        row("3 goodput (of the limit)", f"{f['goodput']:.3f}", ">= 0.97", f["goodput"] >= 0.97)
        row("3 upstream 429s", str(f["upstream_429"]), "0", f["upstream_429"] == 0)
        row("3 refused / shaped (per round)", f"{f['refused']:.0f} / {f['shaped']:.0f}", "", None)
    if "4" in s:
        f = s["4"]["figures"]
        row(
            "4 OTP storm: reached 8x8 / numbers",
            f"{f['reached_simulator']:.0f} / {f['numbers']}",
            "1 per number",
            f["exactly_one_each"],
        )
    if "5" in s:
        f = s["5"]["figures"]
        row(
            "5 throughput 1M opt-outs / small account (alternating)",
            f"{f['over_small_account']:.3f}",
            "0.95-1.05",
            abs(f["over_small_account"] - 1) <= 0.05,
        )
        if f.get("over_scenario_1") is not None:
            row(
                "5 throughput / scenario 1's gateway (other minutes)",
                f"{f['over_scenario_1']:.3f}",
                "",
                None,
            )
    if "6" in s:
        f = s["6"]["figures"]
        fw = f["forwarded_rps"]
        row(
            "6 forwarded/s before / outage / after",
            f"{fw['before']:.0f} / {fw['outage']:.0f} / {fw['after']:.0f}",
            "",
            None,
        )
        row(
            "6 max window / upstream 429s / fallback batches",
            f"{f['max_window']} / {f['upstream_429']} / {f['fallback_batches']:.0f}",
            "",
            None,
        )
    if "7" in s:
        f = s["7"]["figures"]
        row(
            "7 RSS per gateway worker (MB)",
            ", ".join(f"{x:.0f}" for x in f["rss_mb_per_worker"]),
            "<= 120",
            f["rss_mb_max"] <= 120,
        )
        row("7 Redis bytes per tracked key", f"{f['redis_bytes_per_key']}", "", None)
        row(
            "7 keys without TTL (not opt-out/consent/template)",
            str(f["ttl_violations"]["count"]),
            "0",
            f["ttl_violations"]["count"] == 0,
        )
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("figure", "value", "target", "met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(report: dict[str, Any], rows: list[tuple[str, str, str, str]]) -> str:
    """The README's Performance section: the table, the command, the machine, the plots."""
    meta = report["meta"]
    m = meta["machine"]
    lines = ["| figure | value | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        f"Command: `{meta['command']}` ({meta['elapsed_s']} s; closed loop: "
        f"{meta['closed_loop_generator']}, open loop: {meta['open_loop_generator']}).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['redis'].split(' sha=')[0]}; load generator, simulator, "
        "Redis and both proxies on the same box.",
        "",
        *[f"![{name}]({name})" for name in meta.get("plots", [])],
    ]
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from bench import charts

    made = []
    for key, draw in charts.DRAWERS.items():
        if key in report["scenarios"]:
            path = out / f"scenario{key}.png"
            draw(report["scenarios"][key], path)
            made.append(path.name)
    return made
