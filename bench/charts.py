"""One PNG per scenario (matplotlib; bench/report.py selects the Agg backend first)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

TARGETS = ("gateway", "bare", "direct")
# the targets the figures are judged against (bench/report.py's summary table)
GATEWAY_RPS_TARGET = 3000
ADDED_P99_TARGET_MS = 2
GOODPUT_TARGET = 0.97
COLORS = {"gateway": "#1f77b4", "bare": "#ff7f0e", "direct": "#2ca02c"}


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    runs = s["runs"]
    med = s["figures"]["throughput_rps"]
    for i, t in enumerate(TARGETS):
        rates = [r["rate"] for r in runs[t]]
        ax.bar(i, med[t], color=COLORS[t])
        ax.plot([i] * len(rates), rates, "k.", ms=6)
        ax.text(i, med[t], f"{med[t]:.0f}", ha="center", va="bottom")
    ax.axhline(GATEWAY_RPS_TARGET, color="red", ls="--", lw=1,
               label=f"target: gateway >= {GATEWAY_RPS_TARGET}/s")  # fmt: skip
    ax.plot([-0.4, 0.4], [0.75 * med["bare"]] * 2, color="purple", ls=":",
            label="target: gateway >= 0.75 x bare")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xticks(range(3), ["gateway", "bare proxy", "direct"])
    ax.set_ylabel("requests/s (median; dots: rounds)")
    ax.set_title(f"1: max throughput, gateway/bare = {s['figures']['gateway_over_bare']:.2f}")
    _save(fig, path)


def latency(s: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    rates = list(s["rates"])
    for ax, q in zip(axes, ("p50", "p99", "p999"), strict=True):
        for t in TARGETS:
            ax.plot(
                rates,
                [s["rates"][r]["latency_ms"][t][q] for r in rates],
                "o-",
                color=COLORS[t],
                label=t,
            )
        if q == "p99" and "1000" in s["rates"]:
            bare = s["rates"]["1000"]["latency_ms"]["bare"]["p99"]
            ax.plot(["1000"], [bare + ADDED_P99_TARGET_MS], "r_", ms=22, mew=2,
                    label=f"target at 1000/s: bare + {ADDED_P99_TARGET_MS} ms")  # fmt: skip
            ax.legend(fontsize=7)
        ax.set_title(f"2: {q} latency")
        ax.set_xlabel("offered req/s")
        ax.set_yscale("log")
    axes[0].set_ylabel("ms (median of rounds)")
    axes[0].legend()
    _save(fig, path)


def accuracy(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    f = s["figures"]
    for i, rnd in enumerate(s["rounds"]):
        sec = rnd["forwarded_per_second"]
        ax.plot(range(len(sec)), sec, "o-", label=f"forwarded, round {i + 1}")
    first = s["rounds"][0]["client_per_second"]
    keys = sorted(first, key=int)
    ax.plot(
        [int(k) for k in keys],
        [first[k].get("429", 0) for k in keys],
        "x--",
        color="grey",
        label="refused 429 (round 1)",
    )
    ax.axhline(f["limit_rps"], color="red", ls="--", label=f"limit {f['limit_rps']}/s")
    ax.axhline(f["limit_rps"] * GOODPUT_TARGET, color="green", ls=":",
               label=f"goodput target {GOODPUT_TARGET:.0%} of the limit")  # fmt: skip
    _partial_last_second(ax)
    ax.set_xlabel("second (the last is partial: the run ends inside it)")
    ax.set_ylabel("requests per second")
    ax.set_title(
        f"3: offered {f['offered_rps']}/s, {f['workers']} workers, "
        f"goodput {f['goodput']:.3f}, upstream 429s {f['upstream_429']}"
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def otp(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    per = s["rounds"][0]["per_number"]
    ax.bar(range(len(per)), per)
    ax.axhline(1, color="red", ls="--", label="1 per number per window")
    ax.set_xlabel("number")
    ax.set_ylabel("Verify sends reaching 8x8")
    ax.set_title(f"4: {s['rounds'][0]['sends']} sends to {len(per)} numbers")
    ax.legend()
    _save(fig, path)


def scale(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    f = s["figures"]
    names = ["small", "big"]
    ax.bar(range(2), [f["throughput_rps"][n] for n in names], color=["#1f77b4", "#9467bd"])
    ax.set_xticks(
        range(2),
        ["1k opt-outs, 1 template", f"{f['optouts']:,} opt-outs, {f['templates']:,} templates"],
    )
    ax.set_ylabel("gateway requests/s (median)")
    small = f["throughput_rps"]["small"]
    ax.axhspan(0.95 * small, 1.05 * small, color="green", alpha=0.15,
               label="target: big within 0.95-1.05 x small")  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"5: compliance at scale, ratio {f['over_small_account']:.3f}")
    _save(fig, path)


def failure(s: dict[str, Any], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    sec = s["forwarded_per_second"]
    ax1.plot(range(len(sec)), sec, "o-", label="forwarded to 8x8")
    refused = s.get("upstream_429_per_second", [])
    ax1.plot(range(len(refused)), refused, "x--", color="purple", label="8x8's 429s")
    ax1.axhline(s["figures"]["limit_rps"], color="red", ls="--", label="limit")
    per = s["client_per_second"]
    keys = sorted(per, key=int)
    statuses = sorted({st for k in keys for st in per[k]})
    for st in statuses:
        ax2.plot(
            [int(k) for k in keys], [per[k].get(st, 0) for k in keys], "o-", label=f"status {st}"
        )
    for ax in (ax1, ax2):
        ev = s["events"]
        if "killed_s" in ev:
            ax.axvspan(ev["killed_s"], ev.get("restarted_s", len(sec)), color="grey", alpha=0.2)
        ax.legend(fontsize=8)
    ax1.set_ylabel("req/s at 8x8")
    ax2.set_ylabel("gateway answers/s")
    _partial_last_second(ax1)
    ax2.set_xlabel("second (grey: redis-server down; the last second is partial)")
    ax1.set_title("6: Redis killed at 1/3, restarted at 2/3 (on_failure = local)")
    _save(fig, path)


def memory(s: dict[str, Any], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    f = s["figures"]
    rss = f["rss_mb_per_worker"]
    ax1.bar(range(len(rss)), rss)
    ax1.axhline(120, color="red", ls="--", label="target 120 MB")
    ax1.set_xticks(range(len(rss)), [f"worker {i + 1}" for i in range(len(rss))])
    ax1.set_ylabel("RSS MB")
    ax1.legend()
    ax1.set_title("7: gateway worker RSS")
    kinds = f["keys_by_kind"]
    ax2.barh(list(kinds), list(kinds.values()))
    ax2.set_xscale("log")
    ax2.set_title(f"Redis keys ({f['redis_bytes_per_key']} B/key)")
    _save(fig, path)


def _partial_last_second(ax: Any) -> None:
    """Say on the plot that a run's last second is partial, so its low count is not read
    as a shortfall."""
    ax.annotate("last second partial", xy=(1.0, 0.02), xycoords="axes fraction",
                ha="right", fontsize=7, color="grey")  # fmt: skip


DRAWERS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "1": throughput,
    "2": latency,
    "3": accuracy,
    "4": otp,
    "5": scale,
    "6": failure,
    "7": memory,
}


def soak(result: dict[str, Any], path: Path) -> None:
    """The soak run: each worker's RSS and heap in use over time, the RSS bound (+10% over
    the warm-up's peak, from the warm-up's end), the injected faults marked, and the
    answers by status."""
    fig, (mem, answers) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    times = [t / 60 for t, _ in result["rss"]]
    workers = len(result["rss"][0][1]) if result["rss"] else 0
    for w in range(workers):
        mem.plot(times, [kb[w] / 1024 for _, kb in result["rss"]], label=f"worker {w + 1}")
    started = result.get("started_at", 0)
    for w, samples in enumerate(result.get("heap", [])):
        if samples and started:
            mem.plot([(x["time"] - started) / 60 for x in samples],
                     [x["heap_kb"] / 1024 for x in samples], color=f"C{w}", ls="--", lw=0.8,
                     label=f"worker {w + 1} heap in use")  # fmt: skip
    warm = result.get("warmup_s", 60) / 60
    for w, kb in enumerate(result.get("rss_kb_warm_peak", [])):
        mem.hlines(kb * 1.10 / 1024, warm, max(times, default=warm), color=f"C{w}", ls=":", lw=1)
    mem.axvline(warm, color="grey", ls="-.", lw=0.8)
    kinds: dict[str, str] = {}
    for at, label in result.get("events", []):
        name = label.split("|", 1)[-1]
        color = kinds.setdefault(name, f"C{2 + len(kinds) % 8}")
        mem.axvline(at / 60, color=color, lw=0.6, alpha=0.5)
    for name, color in kinds.items():
        mem.plot([], [], color=color, lw=2, label=name)
    mem.set_xlabel("minutes")
    mem.set_ylabel("MB: RSS, heap in use (dashed)")
    mem.set_title(
        f"soak: {result['sends']:,} sends, {result['faults']} faults, "
        f"RSS {result['rss_growth']:+.1%} of warm peak, refused-and-delivered "
        f"{result['refused_and_delivered']}"
    )
    mem.legend(fontsize=7, ncol=2, loc="lower right")
    statuses = sorted(result["statuses"].items(), key=lambda kv: -kv[1])
    answers.barh([k for k, _ in statuses], [n for _, n in statuses], color="#1f77b4")
    answers.invert_yaxis()
    answers.set_xscale("log")
    answers.set_xlabel("answers (log)")
    answers.set_title("answers by status and gatewayCode")
    _save(fig, path)


LANES_P99_TARGET_MS = 50


def lanes_fair(result: dict[str, Any], path: Path) -> None:
    """Fairness between two clients of one subaccount (bench/lanes_fair.py): each client's
    refused share and its waits, with fair_clients off and on."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    runs = result["runs"]
    kinds = ("flood", "steady", "otp")
    xs = range(len(runs))
    for i, kind in enumerate(kinds):
        vals = [r[kind]["refused_share"] for r in runs]
        right.bar([x + (i - 1) * 0.27 for x in xs], vals, width=0.27, label=kind)
    right.set_xticks(list(xs), [f"fair_clients {str(r['fair_clients']).lower()}" for r in runs])
    right.set_ylim(0, 1.0)
    right.set_ylabel("share of its sends refused")
    right.set_title(f"{result['rps']} rps subaccount: flood {result['flood']:g}x, "
                    f"steady {result['steady']:g}x")  # fmt: skip
    right.legend(fontsize=7)
    for run in runs:
        for kind, ls in (("flood", "--"), ("steady", "-")):
            waits = sorted(run[kind]["waits_ms"])
            n = len(waits)
            if not n:
                continue
            label = (f"{kind}, fair {str(run['fair_clients']).lower()}: "
                     f"p99 {run[kind]['wait_ms']['p99']:.0f} ms")  # fmt: skip
            left.step(waits, [(j + 1) / n for j in range(n)], where="post", ls=ls, label=label)
    left.set_xlabel("added wait of the sends that went (ms)")
    left.set_ylabel("fraction of the client's sends that went")
    left.set_title(f"MARKETING waits, max_wait {result['max_wait_ms']} ms")
    left.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def lanes(result: dict[str, Any], path: Path) -> None:
    """The lanes scenario (bench/lanes.py): OTP waits' distribution per reserved share,
    and what MARKETING still used of the capacity."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    runs = result["runs"]
    for run in runs:
        waits = sorted(run["otp_waits_ms"])
        n = len(waits)
        ys = [(i + 1) / n for i in range(n)]
        label = (f"share {run['reserved_share']}: p99 {run['otp_wait_ms']['p99']:.0f} ms, "
                 f"{run['otp_refused']} refused")  # fmt: skip
        left.step(waits, ys, where="post", label=label)
    left.axvline(LANES_P99_TARGET_MS, color="red", ls="--", lw=1, label="target: p99 < 50 ms")
    left.set_xlabel("OTP added wait (ms)")
    left.set_ylabel("fraction of OTP sends")
    left.set_title(f"OTP waits under a {result['flood']:g}x MARKETING flood")
    left.legend(fontsize=7, loc="lower right")
    xs = range(len(runs))
    mkt = [r["marketing_share_of_capacity"] for r in runs]
    used = [r["capacity_used"] for r in runs]
    right.bar([x - 0.2 for x in xs], mkt, width=0.4, label="MARKETING")
    right.bar([x + 0.2 for x in xs], used, width=0.4, label="all sends")
    right.set_xticks(list(xs), [f"share {r['reserved_share']}" for r in runs])
    right.set_ylim(0, 1.1)
    right.set_ylabel("share of the subaccount's sustained capacity")
    right.set_title(f"{result['rps']} rps subaccount, max_wait {result['max_wait_ms']} ms")
    right.legend(fontsize=7)
    _save(fig, path)
