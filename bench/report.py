"""
The benchmark's report: a Markdown table of medians and ratios
(securenet ÷ peer, taken from runs made side by side), the targets marked
met or missed, bench/results/*.json and one PNG plot per measure.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.peers import label

#: Column order of the main table.
COLUMNS = ["securenet", "securenet-early", "securenet-amp", "twisted-tls", "amp-tls", "asyncio", "uvloop", "nginx", "foolscap"]

#: The securenet series of each measure (the numerator of its ratios).
OURS = {"rpc_c_1": "securenet-amp", "rpc_c_32": "securenet-amp", "rpc_py_1": "securenet-amp", "rpc_py_32": "securenet-amp"}

SERIES_ORDER = ["conn_full", "conn_resumed", "rr_1", "rr_32", "rpc_c_1", "rpc_c_32", "rpc_py_1", "rpc_py_32", "bulk"]


def _values(samples: list[dict[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for s in samples:
        v = s.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and not s.get("error") and v > 0 else None)
    return out


def median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def paired_ratios(a: list[float | None], b: list[float | None]) -> list[float]:
    """a_i ÷ b_i for each repetition i where both exist (runs made side by side)."""
    return [x / y for x, y in zip(a, b, strict=False) if x is not None and y]


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100 or digits == 0 and abs(v) >= 10:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def series_table(results: dict[str, Any], unavailable: dict[str, str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Rows of the main table, and per series the medians and ratios (for JSON)."""
    keys = [k for k in SERIES_ORDER if k in results]
    keys += sorted((k for k in results if k.startswith("growth_conns_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    keys += sorted((k for k in results if k.startswith("growth_size_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    present = [c for c in COLUMNS if any(c in results[k]["samples"] for k in keys) or c in unavailable]
    header = "| measure | unit | " + " | ".join(label(c) for c in present) + " |"
    lines = [header, "|" + "---|" * (len(present) + 2)]
    summary: dict[str, dict[str, Any]] = {}
    for key in keys:
        r = results[key]
        ours = OURS.get(key, "securenet")
        value = r.get("value", "rate")
        mine = _values(r["samples"].get(ours, []), value)
        cells, info = [], {}
        for c in present:
            if c not in r["samples"]:
                cells.append("n/a" if c not in unavailable else "unavailable")
                continue
            vals = _values(r["samples"][c], value)
            m = median(vals)
            info[c] = {"median": m, "values": vals}
            if c == ours:
                cells.append(f"**{fmt(m)}**")
                continue
            ratios = paired_ratios(mine, vals)
            ratio = median(list(ratios)) if ratios else None
            info[c]["ratio"] = ratio
            cells.append(f"{fmt(m)} ({ratio:.2f}×)" if ratio is not None else fmt(m))
        summary[key] = info
        lines.append(f"| {r['title']} | {r['unit']} | " + " | ".join(cells) + " |")
    return lines, summary


def cpu_table(results: dict[str, Any]) -> list[str]:
    """Server CPU per operation: what a latency-bound throughput ratio hides."""
    keys = [k for k in SERIES_ORDER if k in results]
    present = [c for c in COLUMNS if any(c in results[k]["samples"] for k in keys)]
    lines = ["| measure | " + " | ".join(label(c) for c in present) + " |", "|---|" + "---|" * len(present)]
    for key in keys:
        r = results[key]
        ours = OURS.get(key, "securenet")
        mine = _values(r["samples"].get(ours, []), "server_cpu_us_per_op")
        if not any(mine):
            continue
        cells = []
        for c in present:
            vals = _values(r["samples"].get(c, []), "server_cpu_us_per_op")
            m = median(vals)
            if c == ours or m is None:
                cells.append(f"**{fmt(m)}**" if c == ours else ("–" if c not in r["samples"] else fmt(m)))
                continue
            ratios = paired_ratios(mine, vals)
            cells.append(f"{fmt(m)} ({median(list(ratios)):.2f}×)" if ratios else fmt(m))
        lines.append(f"| {r['title']} | " + " | ".join(cells) + " |")
    return lines


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.run import TARGETS

    out = []
    for tid, what, key, ours, peer, op, bound in TARGETS:
        v: dict[str, Any] = {"id": tid, "what": what, "value": None, "spread": None, "met": None, "note": ""}
        # "cpu<=": the ratio of server CPU per operation, not of rates.
        target = f"{op.removeprefix('cpu')} {bound:.3g}" if op != "within" else f"{bound[0]}–{bound[1]}"
        if key == "login_cpu" and bound < 1:
            target = f"<= 1/{round(1 / bound)}"
        v["target"] = target
        r = results.get(key)
        try:
            if r is None:
                v["note"] = "not measured"
            elif key == "storm":
                s = r["samples"]["securenet"][0]
                v["value"] = s.get(ours)
                v["note"] = (
                    f"timer lag p99 {fmt(s.get('timer_lag_p99_ms'))} ms; idle p99 {fmt(s.get('idle_p99_ms'))} ms; "
                    f"{s.get('storm', {}).get('ok', 0)} logins"
                )
            elif key == "failtime":
                s = r["samples"]["securenet"][0]
                v["value"] = s.get("ratio")
                v["note"] = (
                    f"median {fmt(s.get('median_unknown_ms'))} ms vs {fmt(s.get('median_wrong_ms'))} ms "
                    f"({len(s.get('unknown_ms', []))} tries each)"
                )
            elif key == "memory":
                mine = {x["count"]: x.get("kib_per_conn") for x in r["samples"].get(ours, [])}
                theirs = {x["count"]: x.get("kib_per_conn") for x in r["samples"].get(peer, [])}
                common = [n for n in sorted(mine) if mine[n] and theirs.get(n)]
                if common:
                    n = common[-1]
                    v["value"] = mine[n] / theirs[n]
                    v["note"] = f"{fmt(mine[n], 1)} vs {fmt(theirs[n], 1)} KiB per connection at {n} connections"
            elif key == "login_cpu":
                a = _values(r["samples"].get(ours, []), r["value"])
                b = _values(r["samples"].get(peer, []), r["value"])
                ratios = paired_ratios(a, b)
                v["value"] = median(list(ratios))
                v["spread"] = (min(ratios), max(ratios)) if ratios else None
                v["note"] = f"{fmt(median(a))} ms vs {fmt(median(b))} ms CPU per login"
            else:
                their_key = key
                their_name = peer
                if ":" in peer:
                    their_name, their_key = peer.split(":")
                value = "server_cpu_us_per_op" if op == "cpu<=" else r.get("value", "rate")
                a = _values(r["samples"].get(ours, []), value)
                other = results.get(their_key)
                b = _values(other["samples"].get(their_name, []), value) if other else []
                ratios = paired_ratios(a, b)
                v["value"] = median(list(ratios))
                v["spread"] = (min(ratios), max(ratios)) if ratios else None
                unit = "µs CPU per operation" if op == "cpu<=" else r["unit"]
                v["note"] = f"{fmt(median(a))} vs {fmt(median(b))} {unit}"
        except (KeyError, IndexError, TypeError, ZeroDivisionError) as e:
            v["note"] = f"could not evaluate: {e}"
        x = v["value"]
        if x is not None:
            if op == ">=":
                v["met"] = x >= bound
            elif op in ("<=", "cpu<="):
                v["met"] = x <= bound
            else:
                v["met"] = bound[0] <= x <= bound[1]
        out.append(v)
    return out


def verdict_table(vs: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | target | met? | spread over repeats | detail |", "|---|---|---|---|---|---|"]
    for v in vs:
        met = {True: "**met**", False: "**MISSED**", None: "not measured"}[v["met"]]
        spread = f"{v['spread'][0]:.2f}–{v['spread'][1]:.2f}" if v.get("spread") else ""
        value = f"{v['value']:.3g}" if isinstance(v["value"], (int, float)) else "–"
        lines.append(f"| {v['what']} | {value} | {v['target']} | {met} | {spread} | {v['note']} |")
    return lines


def extra_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    mem = results.get("memory")
    if mem:
        counts = sorted({x["count"] for xs in mem["samples"].values() for x in xs})
        names = list(mem["samples"])
        lines += [
            "",
            "Memory per idle authenticated connection (server RSS delta ÷ connections, KiB):",
            "",
            "| connections | " + " | ".join(label(n) for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for n in counts:
            cells = []
            for name in names:
                x = next((x for x in mem["samples"][name] if x["count"] == n), {})
                cells.append(fmt(x.get("kib_per_conn"), 1) if x.get("kib_per_conn") else (x.get("error", "–")[:40]))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    cpu = results.get("login_cpu")
    if cpu:
        lines += [
            "",
            "Server CPU per successful login (one connection each, TLS handshake included):",
            "",
            "| mechanism | ms CPU per login | logins/s (2 clients) |",
            "|---|---|---|",
        ]
        for mech, xs in cpu["samples"].items():
            lines.append(
                f"| {mech} | {fmt(median(_values(xs, 'server_cpu_ms_per_login')))} | {fmt(median(_values(xs, 'rate')))} |"
            )
    storm = results.get("storm")
    if storm:
        s = storm["samples"]["securenet"][0]
        lines += [
            "",
            f"Login storm: {s['storm'].get('ok', 0)} PLAIN logins in {fmt(s['storm'].get('seconds'))} s; "
            f"echo probe every 10 ms: p50 {fmt(s['probe_p50_ms'])} ms, p99 {fmt(s['probe_p99_ms'])} ms, max "
            f"{fmt(s['probe_max_ms'])} ms "
            f"(idle p99 {fmt(s['idle_p99_ms'])} ms); reactor timer lag p99 {fmt(s.get('timer_lag_p99_ms'))} ms, max "
            f"{fmt(s.get('timer_lag_max_ms'))} ms.",
        ]
    cal = results.get("calibration")
    if cal:
        lines += [
            "",
            "Load generator calibration (nginx, server-authenticated TLS, same run):",
            "",
            "| measure | wrk | tlsload | tlsload, resumed sessions |",
            "|---|---|---|---|",
        ]
        for key, x in cal["samples"].items():
            lines.append(f"| {key} | {fmt(x['wrk'])} | {fmt(x['tlsload'])} | {fmt(x.get('tlsload_resumed'))} |")
    return lines


def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def bars(name: str, title: str, keys: list[tuple[str, str]], ylabel: str, log: bool = False) -> None:
        keys = [(k, t) for k, t in keys if k in results]
        if not keys:
            return
        peers = [c for c in COLUMNS if any(c in results[k]["samples"] for k, _ in keys)]
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(peers) * max(1, len(keys)) / 2), 4.2))
        width = 0.8 / len(keys)
        for i, (k, t) in enumerate(keys):
            r = results[k]
            meds, lo, hi = [], [], []
            for p in peers:
                vals = [v for v in _values(r["samples"].get(p, []), r.get("value", "rate")) if v is not None]
                m = statistics.median(vals) if vals else 0.0
                meds.append(m)
                lo.append(m - min(vals) if vals else 0)
                hi.append(max(vals) - m if vals else 0)
            xs = [j + i * width for j in range(len(peers))]
            ax.bar(xs, meds, width, yerr=[lo, hi], label=t, capsize=3)
        ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(peers))])
        ax.set_xticklabels([label(p) for p in peers], rotation=15, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(f"{name}.png")

    bars(
        "connections",
        "New connections/s (medians, min–max over repeats)",
        [("conn_full", "full handshake"), ("conn_resumed", "resumed")],
        "connections/s",
    )
    bars(
        "request_response",
        "Requests/s on one connection (64 B)",
        [("rr_1", "1 in flight"), ("rr_32", "32 in flight")],
        "requests/s",
    )
    bars(
        "rpc",
        "RPC calls/s",
        [
            ("rpc_c_1", "C client, 1"),
            ("rpc_c_32", "C client, 32"),
            ("rpc_py_1", "Python client, 1"),
            ("rpc_py_32", "Python client, 32"),
        ],
        "calls/s",
    )
    bars("bulk", "Bulk transfer over one connection", [("bulk", "1 MiB responses")], "MB/s")

    def lines_plot(name: str, title: str, prefix: str, xlabel: str, ylabel: str) -> None:
        keys = sorted((k for k in results if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
        if not keys:
            return
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        peers = [c for c in COLUMNS if any(c in results[k]["samples"] for k in keys)]
        for p in peers:
            xs, ys = [], []
            for k in keys:
                m = median(_values(results[k]["samples"].get(p, []), results[k].get("value", "rate")))
                if m is not None:
                    xs.append(int(k.rsplit("_", 1)[1]))
                    ys.append(m)
            ax.plot(xs, ys, marker="o", label=label(p))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(f"{name}.png")

    lines_plot(
        "growth_connections", "Requests/s vs connection count (1 in flight each)", "growth_conns_", "connections", "requests/s"
    )
    lines_plot("growth_size", "Throughput vs response size (1 connection)", "growth_size_", "response bytes", "MB/s")

    mem = results.get("memory")
    if mem:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for p, xs in mem["samples"].items():
            pts = sorted((x["count"], x["kib_per_conn"]) for x in xs if x.get("kib_per_conn"))
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=label(p))
        ax.set_xscale("log")
        ax.set_xlabel("idle authenticated connections")
        ax.set_ylabel("KiB per connection (server RSS delta)")
        ax.set_title("Memory per idle connection")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)
        written.append("memory.png")

    cpu, storm = results.get("login_cpu"), results.get("storm")
    if cpu or storm:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        if cpu:
            mechs = list(cpu["samples"])
            vals = [median(_values(cpu["samples"][m], "server_cpu_ms_per_login")) or 0 for m in mechs]
            axes[0].bar(mechs, vals, color=["tab:green", "tab:blue", "tab:red"][: len(mechs)])
            axes[0].set_yscale("log")
            axes[0].set_ylabel("server CPU ms per login")
            axes[0].set_title("Login cost (handshake included)")
        if storm:
            s = storm["samples"]["securenet"][0]
            names = ["idle p99", "storm p50", "storm p99", "storm max", "timer lag p99"]
            vals = [
                s.get("idle_p99_ms") or 0,
                s.get("probe_p50_ms") or 0,
                s.get("probe_p99_ms") or 0,
                s.get("probe_max_ms") or 0,
                s.get("timer_lag_p99_ms") or 0,
            ]
            axes[1].bar(names, vals, color="tab:orange")
            axes[1].axhline(50, color="red", linestyle="--", label="target p99 50 ms")
            axes[1].set_ylabel("ms")
            axes[1].set_title("Echo latency during a PLAIN login storm")
            axes[1].tick_params(axis="x", labelsize=8)
            axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "logins.png", dpi=110)
        plt.close(fig)
        written.append("logins.png")
    return written


def report(
    results: dict[str, Any], unavailable: dict[str, str], machine: dict[str, Any], failures: list[str], out: Path, mode: str
) -> list[dict[str, Any]]:
    lines, summary = series_table(results, unavailable)
    vs = verdicts(results)
    text = [
        f"## securenet benchmark ({mode} run, {machine.get('date')})",
        "",
        f"Machine: {machine.get('nproc')} × {machine.get('cpu')}; Python {machine.get('python')}, Twisted "
        f"{machine.get('twisted')}, "
        f"pyOpenSSL {machine.get('pyopenssl')} ({machine.get('openssl_pyopenssl')}), stdlib ssl {machine.get('openssl_stdlib')}, "
        f"nginx {machine.get('nginx')}, uvloop {machine.get('uvloop')}, Foolscap {machine.get('foolscap')}.",
        "",
        "Medians; in parentheses securenet ÷ that peer (the median of per-repeat ratios, runs side by side).",
        "",
        *lines,
        "",
        "Server CPU per operation (µs; in parentheses securenet ÷ peer, above 1 means securenet costs more). "
        "Throughput with one request in flight is partly latency-bound, and the Python RPC clients cost as much as the "
        "servers: these columns show what the server itself spends.",
        "",
        *cpu_table(results),
        "",
        "Targets:",
        "",
        *verdict_table(vs),
        *extra_tables(results),
    ]
    if unavailable:
        text += ["", "Peers unavailable:", ""] + [f"* {label(k)}: {v}" for k, v in unavailable.items()]
    if failures:
        text += ["", "Measures that failed:", ""] + [f"* {f}" for f in failures]
    markdown = "\n".join(text) + "\n"
    print(markdown)
    out.mkdir(parents=True, exist_ok=True)
    for key, r in results.items():
        (out / f"{key}.json").write_text(json.dumps({"machine": machine, "mode": mode, **r}, indent=1, default=str))
    try:
        pngs = plots(results, out)
    except Exception as e:  # the table matters more than the plots
        pngs = []
        print(f"plots failed: {type(e).__name__}: {e}")
    (out / "table.md").write_text(markdown)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "mode": mode,
                "series": summary,
                "targets": vs,
                "unavailable": unavailable,
                "failures": failures,
                "plots": pngs,
            },
            indent=1,
            default=str,
        )
    )
    return vs
