#!/usr/bin/env python3
"""Turns one criterion run of the benches into the README's table and chart.

Usage (from the repository root, after `cargo bench --bench sampling --bench chain --bench moshi`):

    python3 scripts/bench_report.py [--criterion target/criterion] [--svg docs/bench-speedup.svg]

Reads every `new/benchmark.json` and `new/estimates.json` under the criterion directory (median
times), prints Markdown tables of times, ratios to the vectorised read floor measured in the
same group, and speed-ups over candle's `LogitsProcessor`, and writes an SVG bar chart of the
native engine's speed-up over candle per strategy and vocabulary size. Standard library only.
"""

import argparse
import glob
import json
import math
import os
from collections import defaultdict

STRATEGIES = ["argmax", "all", "top_k_50", "top_p_0.9", "top_k_50_top_p_0.9", "gumbel"]
VOCABS = ["2048", "32000", "128256", "262144"]
COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"]


def load(root):
    """{group: {id: median seconds}}, ids being `function/value` as criterion names them."""
    out = defaultdict(dict)
    for path in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        here = os.path.dirname(path)
        with open(path) as f:
            bench = json.load(f)
        with open(os.path.join(here, "estimates.json")) as f:
            est = json.load(f)
        ident = bench["function_id"] or ""
        if bench.get("value_str"):
            ident = f"{ident}/{bench['value_str']}" if ident else bench["value_str"]
        out[bench["group_id"]][ident] = est["median"]["point_estimate"] * 1e-9
    return out


def us(t):
    return f"{t * 1e6:.3g}" if t < 1e-5 else f"{t * 1e6:.1f}"


def sampling_table(data, prefix="sampling"):
    rows = ["| vocab | floor µs (scalar read) | strategy | native µs | × floor | candle µs | speed-up | native+penalty µs |",
            "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for vocab in VOCABS:
        g = data.get(f"{prefix}/{vocab}", {})
        floor = g.get("read_pass/vectorised")
        scalar = g.get("read_pass/max")
        if not floor:
            continue
        for s in STRATEGIES:
            native, candle = g.get(f"{s}/native"), g.get(f"{s}/candle")
            pen = g.get(f"{s}/native+penalty")
            if not native or not candle:
                continue
            rows.append(f"| {vocab} | {us(floor)} ({us(scalar)}) | `{s}` | {us(native)} | {native / floor:.1f} | {us(candle)} | {candle / native:.0f}× | {us(pen) if pen else ''} |")
    return "\n".join(rows)


def chain_table(data):
    rows = ["| vocab | floor µs | contender | µs | × floor |", "|---:|---:|---|---:|---:|"]
    for vocab in VOCABS:
        g = data.get(f"chain/{vocab}", {})
        floor = g.get("read_pass/vectorised")
        if not floor:
            continue
        for name, t in sorted(g.items(), key=lambda kv: kv[1]):
            if name.startswith("read_pass"):
                continue
            rows.append(f"| {vocab} | {us(floor)} | `{name}` | {us(t)} | {t / floor:.1f} |")
    return "\n".join(rows)


def moshi_table(data):
    rows = ["| configuration | floor (µs) | candle (µs) | native (µs) | × floor | speed-up | native+penalty (µs) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for group, label, fid in [("moshi-text/32000", "text `TopK { k: 25, T: 0.8 }` @ 32000", "top_k_25"),
                              ("moshi-audio/2048", "audio `TopK { k: 250, T: 0.8 }` @ 2048", "top_k_250"),
                              ("moshi-depformer-step/8x2048", "depformer step, 8 × audio @ 2048", "top_k_250")]:
        g = data.get(group, {})
        native, candle, pen = g.get(f"{fid}/native"), g.get(f"{fid}/candle"), g.get(f"{fid}/native+penalty")
        if not native or not candle:
            continue
        floor = g.get("read_pass/vectorised") or data.get("moshi-audio/2048", {}).get("read_pass/vectorised")
        ratio = f"{native / floor:.1f}" if floor and "depformer" not in group else f"{native / (8 * floor):.1f} (per codebook)" if floor else ""
        rows.append(f"| {label} | {us(floor) if floor else ''} | {us(candle)} | {us(native)} | {ratio} | {candle / native:.1f}× | {us(pen) if pen else ''} |")
    return "\n".join(rows)


def svg_chart(data, path):
    """Grouped bars: speed-up of `native` over `candle`, log scale, per strategy and vocabulary."""
    bars = []  # (strategy, vocab index, speed-up)
    for s in STRATEGIES:
        for i, vocab in enumerate(VOCABS):
            g = data.get(f"sampling/{vocab}", {})
            n, c = g.get(f"{s}/native"), g.get(f"{s}/candle")
            if n and c:
                bars.append((s, i, c / n))
    for label, group, fid in [("moshi text", "moshi-text/32000", "top_k_25"), ("moshi audio", "moshi-audio/2048", "top_k_250")]:
        g = data.get(group, {})
        n, c = g.get(f"{fid}/native"), g.get(f"{fid}/candle")
        if n and c:
            bars.append((label, 1 if "text" in label else 0, c / n))
    if not bars:
        return
    labels = []
    for s, _, _ in bars:
        if s not in labels:
            labels.append(s)
    top = 10 ** math.ceil(math.log10(max(b[2] for b in bars)))
    W, H, left, bottom, topm = 920, 420, 60, 70, 40
    plot_w, plot_h = W - left - 20, H - bottom - topm
    slot = plot_w / len(labels)
    bw = slot / (len(VOCABS) + 1)

    def y(v):
        return topm + plot_h * (1 - math.log10(max(v, 1)) / math.log10(top))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="15">NativeSampler speed-up over candle\'s LogitsProcessor (log scale)</text>']
    d = 1
    while d <= top:
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(d):.1f}" y2="{y(d):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(d) + 4:.1f}" text-anchor="end">{d}×</text>')
        d *= 10
    for s, i, v in bars:
        x = left + labels.index(s) * slot + bw / 2 + i * bw
        out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw * 0.9:.1f}" height="{topm + plot_h - y(v):.1f}" fill="{COLOURS[i]}"><title>{s} @ {VOCABS[i]}: {v:.1f}×</title></rect>')
        out.append(f'<text x="{x + bw * 0.45:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="9">{v:.0f}</text>')
    for j, s in enumerate(labels):
        out.append(f'<text x="{left + (j + 0.5) * slot:.1f}" y="{topm + plot_h + 18}" text-anchor="middle">{s}</text>')
    for i, vocab in enumerate(VOCABS):
        x = left + i * 130
        out.append(f'<rect x="{x}" y="{H - 28}" width="12" height="12" fill="{COLOURS[i]}"/><text x="{x + 16}" y="{H - 18}">{vocab} tokens</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", default="target/criterion")
    ap.add_argument("--svg", default="docs/bench-speedup.svg")
    args = ap.parse_args()
    data = load(args.criterion)
    if not data:
        raise SystemExit(f"no criterion results under {args.criterion}")
    print("### Strategies (Zipf logits)\n")
    print(sampling_table(data))
    flat = sampling_table(data, "sampling-flat")
    if flat.count("\n") > 1:
        print("\n### Strategies (flat logits)\n")
        print(flat)
    print("\n### Chains\n")
    print(chain_table(data))
    print("\n### Moshi's samplers\n")
    print(moshi_table(data))
    svg_chart(data, args.svg)
    print(f"\n(chart written to {args.svg})")


if __name__ == "__main__":
    main()
