"""What a run leaves behind: the table on the terminal, latest.json, latency.png, and the
generated part of RESULTS.md (between markers; the tuning log around it is written by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BEGIN = "<!-- bench:generated:begin -->"
END = "<!-- bench:generated:end -->"

GOALS = {
    "floor_ratio": 0.8,
    "half_rate_p50_ms": 40.0,
    "half_rate_p99_ms": 250.0,
    "lifecycle_rate": 30.0,
    "stadium_s": 15 * 60.0,
}


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, with the goals met or missed."""
    s = result["scenarios"]
    product = _get(s, "ramp", "product", "max_rate")
    floor = _get(s, "ramp", "floor", "max_rate")
    direct = _get(s, "ramp", "direct", "max_rate")
    half = _get(s, "ramp", "half_rate") or {}
    lifecycle_rate = _get(s, "lifecycle", "throughput", "max_flow_rate")
    stadium = s.get("stadium") or {}
    stadium_s = stadium.get("sell_out_s")
    scaled = stadium and stadium.get("tickets") != 60_000
    stadium_60k = stadium.get("projected_60000_s") if scaled else stadium_s
    h: dict[str, Any] = {
        "max_rate": {"product": product, "floor": floor, "direct": direct},
        "throughput_ratio": {
            "product_over_floor": _ratio(product, floor),
            "product_over_direct": _ratio(product, direct),
        },
        "half_rate": {
            "rate": half.get("rate"),
            **{
                f"{name}_{q}": _get(half, name, f"{q}_ms")
                for name in ("product", "floor", "direct")
                for q in ("p50", "p99")
            },
        },
        "latency_ratio": {
            f"product_over_{base}_{q}": _ratio(
                _get(half, "product", f"{q}_ms"), _get(half, base, f"{q}_ms")
            )
            for base in ("floor", "direct")
            for q in ("p50", "p99")
        },
        "lifecycle_rate": lifecycle_rate,
        "stadium": {
            "tickets": stadium.get("tickets"),
            "sell_out_s": stadium_s,
            "sell_out_60000_s": stadium_60k,
            "extrapolated": bool(scaled),
        },
    }
    ratio = h["throughput_ratio"]["product_over_floor"]
    h["goals"] = {
        "product/floor throughput >= 0.8": None if ratio is None else ratio >= GOALS["floor_ratio"],
        "p50 <= 40 ms at half max rate": None
        if h["half_rate"]["product_p50"] is None
        else h["half_rate"]["product_p50"] <= GOALS["half_rate_p50_ms"],
        "p99 <= 250 ms at half max rate": None
        if h["half_rate"]["product_p99"] is None
        else h["half_rate"]["product_p99"] <= GOALS["half_rate_p99_ms"],
        "place+pay >= 30 orders/s": None
        if lifecycle_rate is None
        else lifecycle_rate >= GOALS["lifecycle_rate"],
        "stadium sold out in <= 15 min": None
        if stadium_60k is None
        else stadium_60k <= GOALS["stadium_s"],
    }
    return h


def _verdict(value: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[value]


def markdown(result: dict[str, Any]) -> str:
    """The generated tables (also printed on the terminal)."""
    h = headline(result)
    s = result["scenarios"]
    meta = result["meta"]
    lines = [
        f"Run of {meta['date']} (commit {meta['commit']}), `{meta['command']}`, "
        f"{meta['cpus']} cores, {meta['mode']}.",
        "",
        "| Figure | Product | Floor (Temporal, no I/O) | No orchestration (1 SQL tx) "
        "| Product/floor | Product/no-orch. |",
        "|---|---|---|---|---|---|",
    ]
    mr, tr, hr, lr = h["max_rate"], h["throughput_ratio"], h["half_rate"], h["latency_ratio"]
    lines.append(
        f"| Max rate of POST /orders (p99 <= 500 ms, no errors, >= 95 % achieved) "
        f"| {_fmt(mr['product'], '/s')} | {_fmt(mr['floor'], '/s')} | {_fmt(mr['direct'], '/s')} "
        f"| {_fmt(tr['product_over_floor'])} | {_fmt(tr['product_over_direct'])} |"
    )
    for q in ("p50", "p99"):
        lines.append(
            f"| {q} at {_fmt(hr['rate'], '/s')} (half the product's max) "
            f"| {_fmt(hr[f'product_{q}'], ' ms')} | {_fmt(hr[f'floor_{q}'], ' ms')} "
            f"| {_fmt(hr[f'direct_{q}'], ' ms')} | {_fmt(lr[f'product_over_floor_{q}'])} "
            f"| {_fmt(lr[f'product_over_direct_{q}'])} |"
        )
    lines += ["", "| Goal | Measured | Verdict |", "|---|---|---|"]
    measured = {
        "product/floor throughput >= 0.8": _fmt(tr["product_over_floor"]),
        "p50 <= 40 ms at half max rate": _fmt(hr["product_p50"], " ms"),
        "p99 <= 250 ms at half max rate": _fmt(hr["product_p99"], " ms"),
        "place+pay >= 30 orders/s": _fmt(h["lifecycle_rate"], " orders/s"),
        "stadium sold out in <= 15 min": (
            _fmt(h["stadium"]["sell_out_60000_s"], " s")
            + (" (extrapolated)" if h["stadium"]["extrapolated"] else "")
        ),
    }
    for goal, verdict in h["goals"].items():
        lines.append(f"| {goal} | {measured[goal]} | {_verdict(verdict)} |")

    latency = s.get("latency")
    if latency:
        lines += ["", "Closed loop, POST /orders (each client sends when answered):", ""]
        lines += ["| Clients | Orders/s | p50 | p99 |", "|---|---|---|---|"]
        for clients in (1, 16):
            row = latency.get(f"clients_{clients}")
            if row:
                lines.append(
                    f"| {clients} | {_fmt(round(row['throughput'], 1))} "
                    f"| {_fmt(row['p50_ms'], ' ms')} | {_fmt(row['p99_ms'], ' ms')} |"
                )

    life = s.get("lifecycle")
    if life:
        mix = life.get("mix", {})
        lines += [
            "",
            f"Lifecycle: place+pay max {_fmt(_get(life, 'throughput', 'max_flow_rate'), '/s')}; "
            f"mix at {_fmt(mix.get('rate'), '/s')} (60 % paid, 20 % cancelled, 20 % left):",
            "",
            "| Measure | p50 | p99 |",
            "|---|---|---|",
            f"| POST /orders | {_fmt(mix.get('place_p50_ms'), ' ms')} "
            f"| {_fmt(mix.get('place_p99_ms'), ' ms')} |",
            f"| Payment -> Fulfilled | {_fmt(mix.get('payment_to_fulfilled_p50_ms'), ' ms')} "
            f"| {_fmt(mix.get('payment_to_fulfilled_p99_ms'), ' ms')} |",
            "| DELETE /orders/{n} (tickets back at once) "
            f"| {_fmt(mix.get('cancel_p50_ms'), ' ms')} "
            f"| {_fmt(mix.get('cancel_p99_ms'), ' ms')} |",
            f"| Hold end -> order Timed Out, holds released "
            f"| {_fmt(mix.get('hold_end_to_timed_out_p50_ms'), ' ms')} "
            f"| {_fmt(mix.get('hold_end_to_timed_out_p99_ms'), ' ms')} |",
            f"| Hold end -> tickets shown on sale again (probe) "
            f"| {_fmt(_get(mix, 'back_on_sale', 'hold_end_to_back_on_sale_ms'), ' ms')} | |",
        ]

    cont = s.get("contention")
    if cont:
        check = cont.get("check", {})
        lines += [
            "",
            f"Contention: {cont['buyers']} buyers at once for {cont['tickets']} tickets: "
            f"all held after {_fmt(cont.get('all_held_s'), ' s')}, sold out (paid) after "
            f"{_fmt(cont.get('sold_out_s'), ' s')}, every buyer answered after "
            f"{_fmt(cont.get('all_answered_s'), ' s')}; outcomes {cont.get('outcomes')}; "
            f"sold {check.get('sold')}/{check.get('capacity')}, oversold {check.get('oversold')}.",
        ]

    st = s.get("stadium")
    if st:
        check = st.get("check", {})
        lines += [
            "",
            f"Stadium: {_fmt(st['tickets'])} tickets in {st['sections']} sections, "
            f"{st['buyers']} buyers, orders of 1-4 paid at once: sold out in "
            f"{_fmt(st['sell_out_s'], ' s')} ({_fmt(st['orders_per_s'])} orders/s, "
            f"{_fmt(st['tickets_per_s'])} tickets/s); oversold {check.get('oversold')}, "
            f"every order final: {check.get('all_orders_final')}, orders "
            f"{check.get('orders_by_status')}, errors {st['errors']}.",
        ]
        if st["tickets"] != 60_000:
            lines.append(
                f"Scaled run: at the same pace 60,000 tickets take about "
                f"{_fmt(st.get('projected_60000_s'), ' s')}."
            )
        need = st["needed_for_10_min"]
        lines.append(
            f"A 10-minute sell-out of 60,000 needs {need['tickets_per_s']} tickets/s, "
            f"about {need['orders_per_s']} paid orders/s."
        )

    lines += ["", "CPU seconds by process, per scenario (peak RSS of worker and API):", ""]
    names = [
        "Temporal server",
        "worker",
        "API",
        "API (short holds)",
        "PostgreSQL",
        "load generator",
        "floor worker",
        "baseline app",
        "other processes",
    ]
    lines.append("| Scenario | s | " + " | ".join(names) + " | worker MiB | API MiB |")
    lines.append("|---" * (len(names) + 4) + "|")
    for label, part in _metered_parts(s):
        procs = part["processes"]
        cells = [_fmt(_get(procs, name, "cpu_seconds")) for name in names]
        api_peak = max(
            _get(procs, "API", "peak_rss_mib") or 0,
            _get(procs, "API (short holds)", "peak_rss_mib") or 0,
        )
        lines.append(
            f"| {label} | {_fmt(part.get('seconds'))} | "
            + " | ".join(cells)
            + f" | {_fmt(_get(procs, 'worker', 'peak_rss_mib'))} | {_fmt(api_peak)} |"
        )
    return "\n".join(lines)


def _metered_parts(s: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    parts: list[tuple[str, dict[str, Any]]] = []
    for clients in (1, 16):
        part = _get(s, "latency", f"clients_{clients}")
        if part:
            parts.append((f"closed loop {clients}", part))
    for name in ("product", "floor", "direct"):
        part = _get(s, "ramp", name)
        if part:
            parts.append((f"ramp {name}", part))
    for name in ("throughput", "mix"):
        part = _get(s, "lifecycle", name)
        if part:
            parts.append((f"lifecycle {name}", part))
    for name in ("contention", "stadium"):
        if s.get(name):
            parts.append((name, s[name]))
    return parts


def write(result: dict[str, Any], series: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["headline"] = headline(result)
    (out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(series, out / "latency.png", result)
    results_md = out / "RESULTS.md"
    generated = f"{BEGIN}\n{markdown(result)}\n{END}"
    if results_md.exists():
        text = results_md.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            results_md.write_text(head + generated + tail)
            return
    results_md.write_text(f"# Benchmark results\n\n{generated}\n\n## Tuning log\n")


def plot(series: dict[str, Any], path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(key.startswith("ramp_") for key in series):
        # A run without the ramp (the full-size stadium, say): its one panel alone.
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _stadium_panel(ax, series, result)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"product": "tab:blue", "floor": "tab:green", "direct": "tab:orange"}
    names = {
        "product": "product POST /orders",
        "floor": "floor (Temporal, no I/O)",
        "direct": "no orchestration (1 SQL tx)",
    }
    ax_lat, ax_rate, ax_time, ax_stadium = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    for name, color in colors.items():
        data = series.get(f"ramp_{name}")
        if not data:
            continue
        steps = data["steps"]
        rates = [step["offered_rate"] for step in steps]
        ax_lat.plot(rates, [step["p50_ms"] for step in steps], "o--", color=color, alpha=0.6)
        ax_lat.plot(rates, [step["p99_ms"] for step in steps], "o-", color=color, label=names[name])
        ax_rate.plot(rates, [step["achieved_rate"] for step in steps], "o-", color=color)
    ramped = any(key.startswith("ramp_") for key in series)
    if ramped:
        ax_lat.axhline(500, color="red", linewidth=0.8, linestyle=":")
    ax_lat.set(
        xscale="log",
        yscale="log",
        xlabel="offered rate (orders/s)",
        ylabel="latency (ms): p99 solid, p50 dashed",
        title="Rate ramp: latency from the intended send time",
    )
    if ax_lat.get_legend_handles_labels()[0]:
        ax_lat.legend(fontsize=8)
    top = max(
        [
            step["offered_rate"]
            for key in series
            if key.startswith("ramp_")
            for step in series[key]["steps"]
        ]
        or [1]
    )
    if ramped:
        ax_rate.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":")
    ax_rate.set(
        xscale="log",
        yscale="log",
        xlabel="offered rate (orders/s)",
        ylabel="achieved (orders/s)",
        title="Rate ramp: achieved vs offered",
    )

    product = series.get("ramp_product")
    if product and product["samples"]:
        offset = 0.0
        last_rate = None
        xs: list[float] = []
        ys: list[float] = []
        cs: list[float] = []
        step_seconds = result["scenarios"]["ramp"]["criteria"]["step_seconds"]
        for rate, at, latency in product["samples"]:
            if rate != last_rate:
                if last_rate is not None:
                    offset += step_seconds
                last_rate = rate
            xs.append(offset + at)
            ys.append(latency * 1000)
            cs.append(rate)
        points = ax_time.scatter(xs, ys, c=cs, s=3, cmap="viridis")
        fig.colorbar(points, ax=ax_time, label="offered rate (orders/s)")
        ax_time.set(
            yscale="log",
            xlabel="seconds into the product's ramp (steps back to back)",
            ylabel="latency (ms)",
            title="POST /orders, every request of the ramp",
        )
    _stadium_panel(ax_stadium, series, result)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _stadium_panel(ax: Any, series: dict[str, Any], result: dict[str, Any]) -> None:
    stadium = series.get("stadium")
    if stadium:
        xs = [t / 60 for t, _ in stadium]
        ys = [n for _, n in stadium]
        ax.plot(xs, ys, color="tab:purple")
        tickets = result["scenarios"]["stadium"]["tickets"]
        scale = tickets / 60_000
        for minutes, style in ((15, "--"), (10, ":")):
            ax.plot(
                [0, minutes * scale], [0, tickets], color="grey", linestyle=style, linewidth=0.8
            )
        ax.set(
            xlabel="minutes",
            ylabel="tickets sold and paid",
            title=f"Stadium: {tickets:,} tickets (grey: {'scaled ' if scale != 1 else ''}"
            "15- and 10-minute paces)",
        )
