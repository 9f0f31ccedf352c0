#!/usr/bin/python3
"""A bar chart of a grid benchmark run: wall seconds (median) per variant,
one panel per grid preset, from `dgrid-bench grid`'s JSON lines.

    /usr/bin/python3 bench/plot_bench.py bench/results/latest.jsonl bench/results/latest.png

Grey is the raw-forward limit, blue this project's pair and in-process
engine, orange the baselines.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_bars(path: str) -> Dict[str, List[Tuple[str, float]]]:
    """grid -> [(variant, wall_s)] in file order; other lines are skipped."""
    bars: Dict[str, List[Tuple[str, float]]] = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and {"variant", "grid", "wall_s"} <= r.keys():
                bars.setdefault(r["grid"], []).append((r["variant"], float(r["wall_s"])))
    return bars


def colour(variant: str) -> str:
    if variant == "limit":
        return "#8c8c8c"
    if variant.startswith("pair_") or variant == "inprocess":
        return "#296bbf"
    return "#e68c33"


def main(argv: List[str]) -> int:
    if len(argv) != 3:
        print("usage: plot_bench.py IN.jsonl OUT.png", file=sys.stderr)
        return 2
    bars = read_bars(argv[1])
    if not bars:
        print(f"plot_bench: no grid benchmark lines in {argv[1]}", file=sys.stderr)
        return 1
    heights = [0.4 * len(rows) + 0.8 for rows in bars.values()]
    fig, axes = plt.subplots(len(bars), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, constrained_layout=True)
    for ax, (grid, rows) in zip(axes[:, 0], bars.items()):
        names = [v for v, _ in rows]
        walls = [w for _, w in rows]
        ax.barh(names, walls, color=[colour(v) for v in names])
        ax.invert_yaxis()  # file order, top down
        ax.bar_label(ax.containers[0], labels=[f"{w:.3f} s" for w in walls], padding=4)
        ax.set_xlim(0, max(walls) * 1.2)
        ax.set_title(f'grid "{grid}": wall seconds (median), lower is better', loc="left")
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(argv[2], dpi=100)
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
