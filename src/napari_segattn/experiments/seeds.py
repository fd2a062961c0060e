"""Repeat a study over several training seeds and summarise: mean ± sd of every table and of
the study's claims (signed differences, > 0 where the paper's claim holds). GUI-free.

One seed's ranking between models that differ by less than the seed-to-seed spread says
nothing; this module is how ``docs/reproduction.md`` puts error bars on every comparison.
Everything is recomputed from the per-seed folders on disk (``seed-N/results.json`` and the
CSVs), so a summary can be rebuilt without retraining (``summarise``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import common

__all__ = ["run_seeds", "summarise", "aggregate_rows", "seed_dir"]


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def run_seeds(name: str, data, out: str | Path, *, seeds: Sequence[int], scale: str = "reduced",
              epochs: int | None = None, reuse: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run study ``name`` once per seed into ``out/seed-N/`` and write the summary to ``out/``.

    With ``reuse`` a seed whose ``results.json`` exists at the same scale is not rerun (an
    interrupted sweep resumes; seeds can be run by separate processes and summarised once).
    """
    from . import STUDIES, run_study

    if not seeds:
        raise ValueError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seeds in {list(seeds)}")
    want = (scale, common.scale_params(STUDIES[name].SCALE, scale, epochs)["epochs"])
    for k, s in enumerate(seeds):
        done = seed_dir(out, s) / "results.json"
        if reuse and done.is_file():
            prev = json.loads(done.read_text())
            if (prev.get("scale"), prev.get("epochs")) != want:
                raise ValueError(f"{done} is a {prev.get('scale')!r} run of {prev.get('epochs')} epochs, not "
                                 f"{want[0]!r} with {want[1]}; use another output folder or --overwrite")
            log(f"=== {name}: seed {s} ({k + 1}/{len(seeds)}): reusing {done} ===")
            continue
        log(f"=== {name}: seed {s} ({k + 1}/{len(seeds)}) ===")
        run_study(name, data, seed_dir(out, s), scale=scale, seed=s, epochs=epochs, log=log)
    return summarise(name, out, seeds)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def aggregate_rows(tables: Sequence[list[dict]], keys: Sequence[str]) -> list[dict]:
    """Rows matched across seeds by their ``keys`` columns -> one row with the mean and sample
    sd (ddof 1) of every other numeric column; ``paper_*`` columns are copied (they do not vary).

    NaN cells (e.g. precision of an empty prediction) are left out of that cell's mean; an inf
    (HD95 of an empty mask) makes the mean inf, as in ``common.mean_rows``.
    """
    order: list[tuple] = []
    groups: dict[tuple, list[dict]] = {}
    for rows in tables:
        for r in rows:
            k = tuple(str(r[c]) for c in keys)
            if k not in groups:
                order.append(k)
                groups[k] = []
            groups[k].append(r)
    out = []
    for k in order:
        rows = groups[k]
        agg: dict = dict(zip(keys, k))
        agg["n_seeds"] = len(rows)
        cols = [c for c in rows[0] if c not in keys]
        for c in cols:
            if c.startswith("paper_"):
                agg[c] = rows[0][c]
                continue
            vals = np.array([common.as_float(r.get(c)) for r in rows])
            if np.isnan(vals).all():
                continue  # a text column (or empty everywhere)
            vals = vals[~np.isnan(vals)]
            agg[c] = float(vals.mean())
            agg[f"{c}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 and np.isfinite(vals).all() else float("nan")
        out.append(agg)
    return out


def _claims_summary(per_seed: dict[int, list[dict]]) -> list[dict]:
    rows: dict[str, dict] = {}
    for seed, claims in per_seed.items():
        for c in claims:
            r = rows.setdefault(c["claim"], {"claim": c["claim"], "statement": c["statement"],
                                             "paper": c.get("paper"), "values": {}})
            r["values"][seed] = c["value"]
    out = []
    for r in rows.values():
        v = np.array([common.as_float(x) for x in r["values"].values()])
        v = v[~np.isnan(v)]
        out.append({"claim": r["claim"], "statement": r["statement"],
                    "mean": float(v.mean()) if v.size else float("nan"),
                    "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                    "holds_in": f"{int((v > 0).sum())}/{v.size}",
                    "paper": r["paper"] if r["paper"] is not None else "",
                    **{f"seed_{s}": x for s, x in r["values"].items()}})
    return out


def summarise(name: str, out: str | Path, seeds: Sequence[int]) -> dict:
    """Aggregate the per-seed results of study ``name`` under ``out`` (see module docstring)."""
    from . import STUDIES

    study = STUDIES[name]
    out = Path(out)
    results = {}
    for s in seeds:
        path = seed_dir(out, s) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: seed {s} has not been run (or did not finish)")
        results[s] = json.loads(path.read_text())
    tables = {}
    for fname, keys in study.TABLES.items():
        rows = aggregate_rows([_read_csv(seed_dir(out, s) / fname) for s in seeds], keys)
        common.write_csv(out / f"summary_{fname}", rows)
        tables[fname] = rows
    claims = _claims_summary({s: study.claims(r) for s, r in results.items()})
    common.write_csv(out / "claims.csv", claims)
    _plot_claims(out / "claims.png", claims, title=f"{name}: claims over seeds {list(seeds)} (> 0: paper's claim holds)")
    summary = {"study": name, "scale": results[seeds[0]].get("scale"), "seeds": list(seeds),
               "wall_seconds": {s: r.get("wall_seconds") for s, r in results.items()},
               "claims": claims, "tables": {f"summary_{k}": v for k, v in tables.items()}}
    common.write_json(out / "summary.json", summary)
    return summary


def _plot_claims(path: Path, claims: list[dict], *, title: str) -> Path | None:
    axes = common.new_axes((6.5, 0.45 * len(claims) + 1.4))
    if axes is None:
        return None
    fig, ax = axes
    y = np.arange(len(claims))[::-1]
    means = [c["mean"] for c in claims]
    sds = [0.0 if math.isnan(c["sd"]) else c["sd"] for c in claims]
    ax.errorbar(means, y, xerr=sds, fmt="o", capsize=3)
    for c, yy in zip(claims, y):
        for k, v in c.items():
            if k.startswith("seed_") and np.isfinite(common.as_float(v)):
                ax.plot(common.as_float(v), yy, "x", color="grey", ms=4)
        if np.isfinite(common.as_float(c["paper"])):
            ax.plot(common.as_float(c["paper"]), yy, "D", color="tab:red", ms=4,
                    label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None)
    ax.axvline(0, color="k", lw=0.8)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)
    ax.set_yticks(y, [c["claim"] for c in claims], fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("signed difference (mean ± sd; x = single seeds)")
    return common.save_figure(fig, ax, path)
