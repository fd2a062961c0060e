"""Print docs/reproduction.md's tables (mean ± sd over seeds, claims) from experiments-results/.

Run after `segattn experiment NAME --seeds ...`:
    .venv/bin/python scripts/reproduction_tables.py [experiments-results]
so the docs are pasted from the CSVs the runs wrote, never retyped.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def pm(row: dict, col: str, digits: int = 3) -> str:
    m, sd = _f(row.get(col)), _f(row.get(f"{col}_sd"))
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"


def table(path: Path, keys: list[str], cols: list[str], paper: list[str] = (), digits: int = 3) -> str:
    rows = list(csv.DictReader(open(path)))
    head = keys + cols + [f"paper {p}" for p in paper]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|" * (len(cols) + len(paper))]
    for r in rows:
        cells = [r[k] for k in keys] + [pm(r, c, digits) for c in cols]
        cells += [r.get(f"paper_{p}", "") or "" for p in paper]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def claims(path: Path) -> str:
    rows = list(csv.DictReader(open(path)))
    seeds = [k for k in rows[0] if k.startswith("seed_")]
    out = ["| claim (> 0: paper's claim holds) | mean ± sd | holds in | " + " | ".join(seeds) + " | paper |",
           "|---|---:|---:|" + "---:|" * len(seeds) + "---:|"]
    for r in rows:
        paper = f"{_f(r['paper']):+.4f}" if r["paper"] else "–"
        out.append(f"| {r['claim']} | {_f(r['mean']):+.4f} ± {_f(r['sd']):.4f} | {r['holds_in']} | "
                   + " | ".join(f"{_f(r[s]):+.4f}" for s in seeds) + f" | {paper} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Print docs/reproduction.md's tables from `segattn experiment --seeds` "
                                             "summaries.")
    ap.add_argument("folder", nargs="?", default="experiments-results",
                    help="a folder of study folders (fanet-ablation/, mistakes/, ...) or one study's --out folder "
                         "(default: experiments-results)")
    root = Path(ap.parse_args(argv).folder)
    if (root / "summary.json").is_file():  # one study's folder, whatever its name
        study = json.loads((root / "summary.json").read_text())["study"]
        folders = {study: root}
    else:
        folders = {name: root / name for name in ("fanet-ablation", "mistakes", "attention-shift", "fu-net",
                                                  "corrections")}
    specs = {
        "fanet-ablation": [("summary_table.csv", ["row"], ["dice", "iou", "recall", "precision"],
                            ["dice", "iou", "recall", "precision"])],
        "mistakes": [("summary_table.csv", ["model"], ["dice", "iou", "hd95", "pooled_fp_rate", "pooled_fn_rate"],
                      ["iou", "hd95", "fn_rate"])],
        "attention-shift": [("summary_dice_vs_alpha.csv", ["alpha"], ["dice_GM", "dice_WM", "saliency_relative_gap"], []),
                            ("summary_attention_shift_summary.csv", ["alpha", "explained"],
                             ["mass_background", "mass_GM", "mass_WM", "centroid_shift_px"], [])],
        "fu-net": [("summary_table.csv", ["n_train", "method"], ["dice_GM", "dice_WM"], [])],
        "corrections": [("summary_table.csv", ["dataset", "method"],
                         ["dice_0", "dice_10", "gain", "gain_outside_paint", "noc90", "noc95"], [])],
    }
    found = 0
    for name, d in folders.items():
        tables = specs["corrections" if name.startswith("corrections") else name]  # -clicks, -wm: same tables
        if not (d / "summary.json").is_file():
            print(f"## {name}: no summary.json in {d}\n")
            continue
        found += 1
        s = json.loads((d / "summary.json").read_text())
        walls = [w for w in s["wall_seconds"].values() if w is not None]
        print(f"## {name} ({s['scale']}, seeds {s['seeds']}, {min(walls):.0f}–{max(walls):.0f} s per seed)\n")
        for fname, keys, cols, paper in tables:
            print(table(d / fname, keys, cols, paper) + "\n")
        print(claims(d / "claims.csv") + "\n")
    if not found:
        print(f"no study summaries under {root}; run `segattn experiment NAME --seeds ...` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
