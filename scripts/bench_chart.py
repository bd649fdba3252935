#!/usr/bin/env python3
"""Turns criterion's results into the tables of docs/PERFORMANCE.md and docs/benchmarks.svg.

Reads target/criterion/**/new/{benchmark,estimates}.json (the median of each benchmark) and
target/bench-data/scale.json, prints the markdown tables on stdout, and writes the chart.
Standard library only.

    python3 scripts/bench_chart.py [--criterion target/criterion] [--svg docs/benchmarks.svg]
"""

import argparse
import json
import math
import pathlib
import sys

BACKENDS = ["memory", "redb", "dir", "sqlite-full", "sqlite-normal"]
COLORS = {
    "memory": "#9aa5b1",
    "redb": "#d9480f",
    "dir": "#2b8a3e",
    "sqlite-full": "#1c7ed6",
    "sqlite-normal": "#74c0fc",
}
OPS = [
    ("get", "200B"),
    ("get", "4096B"),
    ("set", "200B"),
    ("set", "4096B"),
    ("has_domain", "200B"),
    ("remove_domain", "200B"),
]
OP_LABELS = {
    "get": "get",
    "set": "durable set",
    "has_domain": "has_domain",
    "remove_domain": "remove_domain (1,000 keys)",
}


def load(root):
    """Maps (group, function, parameter) to the median in nanoseconds."""
    results = {}
    for estimates in root.glob("**/new/estimates.json"):
        meta = json.loads((estimates.parent / "benchmark.json").read_text())
        median = json.loads(estimates.read_text())["median"]["point_estimate"]
        function = meta.get("function_id") or meta.get("value_str")
        parameter = meta.get("value_str") if meta.get("function_id") else None
        results[(meta["group_id"], function, parameter)] = median
    return results


def us(ns):
    return f"{ns / 1000:.2f}" if ns < 10_000_000 else f"{ns / 1000:.0f}"


def size_label(parameter):
    return "4 KiB" if parameter == "4096B" else "200 B"


def archive_table(results):
    head = "| operation | value | " + " | ".join(BACKENDS) + " | SQLite FULL ÷ redb | dir ÷ redb |"
    lines = [head, "|" + "---|" * (len(BACKENDS) + 4)]
    for group, parameter in OPS + [("has_domain", "4096B"), ("remove_domain", "4096B")]:
        cells = [results.get((group, b, parameter)) for b in BACKENDS]
        if all(c is None for c in cells):
            continue
        redb = results.get((group, "redb", parameter))
        ratio = lambda other: f"{other / redb:.1f}×" if other and redb else "–"
        lines.append(
            f"| {OP_LABELS[group]} | {size_label(parameter)} | "
            + " | ".join(us(c) if c is not None else "–" for c in cells)
            + f" | {ratio(results.get((group, 'sqlite-full', parameter)))}"
            + f" | {ratio(results.get((group, 'dir', parameter)))} |"
        )
    return "\n".join(lines)


def concurrent_table(results):
    backends = ["redb", "sqlite-full", "sqlite-full-immediate", "dir"]
    writers = sorted(
        {int(p) for (g, _, p) in results if g == "concurrent_set" and p is not None}
    )
    if not writers:
        return ""
    lines = [
        "| writers | " + " | ".join(f"{b} sets/s | {b} × 1 writer" for b in backends) + " |",
        "|---|" + "---|---|" * len(backends),
    ]
    for n in writers:
        row = [str(n)]
        for b in backends:
            ns = results.get(("concurrent_set", b, str(n)))
            one = results.get(("concurrent_set", b, "1"))
            row.append(f"{1e9 / ns:,.0f}" if ns else "–")
            row.append(f"{one / ns:.1f}×" if ns and one else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def batch_table(results):
    """The batch_set group: one commit of n sets, and the ceiling it puts on n writers."""
    sizes = sorted({int(p) for (g, _, p) in results if g == "batch_set" and p is not None})
    one = results.get(("batch_set", "redb", "1"))
    if not sizes or not one:
        return ""
    lines = [
        "| sets in one commit | µs per commit | µs per set | ceiling for as many writers (n × one ÷ commit) |",
        "|---|---|---|---|",
    ]
    for n in sizes:
        ns = results.get(("batch_set", "redb", str(n)))
        if ns:
            lines.append(f"| {n} | {us(ns)} | {us(ns / n)} | {n * one / ns:.1f}× |")
    return "\n".join(lines)


def disk_table(results):
    """The disk_sync group, and the ceiling it sets on the 32-writer ratio."""
    t = lambda layout, pages: results.get(("disk_sync", layout, str(pages)))
    if t("scattered", 7) is None:
        return ""
    lines = [
        "| pages written, then one `sync_data` | scattered µs | side by side µs |",
        "|---|---|---|",
    ]
    for pages, label in [(7, "7 (a commit of one set)"), (39, "39 (a commit of 32 sets)")]:
        cells = [t(layout, pages) for layout in ["scattered", "contiguous"]]
        lines.append(f"| {label} | " + " | ".join(us(c) if c else "–" for c in cells) + " |")
    one, batch = t("scattered", 7), t("scattered", 39)
    if one and batch:
        lines.append(
            f"\nDisk ceiling for 32 writers over one: 32 × {us(one)} ÷ {us(batch)} = "
            f"{32 * one / batch:.1f}×."
        )
    return "\n".join(lines)


def sessions_table(results):
    lines = ["| operation | memory | redb | dir |", "|---|---|---|---|"]
    for group, label in [("session_load", "start + load"), ("session_save", "save")]:
        cells = [results.get((group, b, None)) or results.get((group, b, b)) for b in ["memory", "redb", "dir"]]
        if all(c is None for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(us(c) if c else "–" for c in cells) + " |")
    return "\n".join(lines)


def scale_table(results, scale_json):
    lines = ["| sessions stored | get µs | durable set µs | file size |", "|---|---|---|---|"]
    scale = json.loads(scale_json.read_text()) if scale_json.exists() else {}
    files = scale.get("file_bytes", {})
    for count in ["1000", "100000", "1000000"]:
        get = results.get(("scale_get", count, None)) or results.get(("scale_get", None, count))
        set_ = results.get(("scale_set", count, None)) or results.get(("scale_set", None, count))
        size = files.get(count)
        lines.append(
            f"| {int(count):,} | {us(get) if get else '–'} | {us(set_) if set_ else '–'} | "
            + (f"{size / 2**20:.0f} MiB" if size else "–")
            + " |"
        )
    sweep = [v for (g, _, _), v in results.items() if g == "scale_sweep"]
    extra = []
    if sweep:
        extra.append(f"Sweep of 1,000 expired sessions among 1,000,000: {sweep[0] / 1e6:.0f} ms.")
    if scale.get("peak_rss_kib"):
        extra.append(f"Peak RSS of the scale bench process: {scale['peak_rss_kib'] / 1024:.0f} MiB.")
    return "\n".join(lines) + ("\n\n" + " ".join(extra) if extra else "")


def svg(results):
    """Grouped horizontal bars, one group per operation, log-scaled µs per op."""
    rows = [(g, p) for g, p in OPS if any((g, b, p) in results for b in BACKENDS)]
    bar, gap, left, width, top = 14, 18, 230, 520, 50
    height = top + len(rows) * (len(BACKENDS) * bar + gap) + 60
    values = [results[(g, b, p)] / 1000 for g, p in rows for b in BACKENDS if (g, b, p) in results]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    x = lambda v: left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 150}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="20" font-size="15" font-weight="bold">µs per operation '
        "(log scale, lower is better)</text>",
    ]
    decade = lo
    while decade <= hi:
        out.append(
            f'<line x1="{x(decade):.1f}" y1="{top - 10}" x2="{x(decade):.1f}" '
            f'y2="{height - 50}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x(decade):.1f}" y="{height - 35}" text-anchor="middle">{decade:g}</text>'
        )
        decade *= 10
    y = top
    for group, parameter in rows:
        out.append(
            f'<text x="{left - 10}" y="{y + len(BACKENDS) * bar / 2 + 4}" text-anchor="end">'
            f"{OP_LABELS[group]}, {size_label(parameter)}</text>"
        )
        for b in BACKENDS:
            ns = results.get((group, b, parameter))
            if ns is not None:
                v = ns / 1000
                out.append(
                    f'<rect x="{left}" y="{y}" width="{max(x(v) - left, 1):.1f}" '
                    f'height="{bar - 2}" fill="{COLORS[b]}"/>'
                )
                out.append(f'<text x="{x(v) + 4:.1f}" y="{y + bar - 4}">{v:.3g}</text>')
            y += bar
        y += gap
    lx = left
    for b in BACKENDS:
        out.append(f'<rect x="{lx}" y="{height - 22}" width="12" height="12" fill="{COLORS[b]}"/>')
        out.append(f'<text x="{lx + 16}" y="{height - 12}">{b}</text>')
        lx += 110
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", default="target/criterion", type=pathlib.Path)
    parser.add_argument("--scale", default="target/bench-data/scale.json", type=pathlib.Path)
    parser.add_argument("--svg", default="docs/benchmarks.svg", type=pathlib.Path)
    args = parser.parse_args()
    results = load(args.criterion)
    if not results:
        sys.exit(f"no criterion results under {args.criterion}; run cargo bench first")
    print("### Archive operations (µs per op, median)\n")
    print(archive_table(results))
    print("\n### Concurrent durable sets (200 B values)\n")
    print(concurrent_table(results))
    print("\n### One commit of a batch of sets (redb, 200 B, scattered sessions)\n")
    print(batch_table(results))
    print("\n### Disk sync (µs per sync, median)\n")
    print(disk_table(results))
    print("\n### Sessions (µs per op, median)\n")
    print(sessions_table(results))
    print("\n### Scale (RedbArchive, 200 B session state)\n")
    print(scale_table(results, args.scale))
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg(results))
    print(f"\n(wrote {args.svg})", file=sys.stderr)


if __name__ == "__main__":
    main()
