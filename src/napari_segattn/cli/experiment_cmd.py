"""``segattn experiment NAME --data PATH [--full] [--out DIR] [--seed N | --seeds N ...]``: reproduce
a paper claim (with ``--seeds``: once per seed, then mean ± sd tables and claims).

NAME: fanet-ablation | mistakes | attention-shift | fu-net | corrections | corrections-clicks | corrections-wm. Default is the CPU-sized
``reduced`` scale; ``--full`` is the paper's configuration (GPU); ``--smoke`` a seconds-long
check of the pipeline. Writes CSV tables, PNG figures and results.json (docs/reproduction.md).
"""

from __future__ import annotations

from pathlib import Path

from . import CLIError
from .argtypes import POSITIVE_INT

NAMES = ("fanet-ablation", "mistakes", "attention-shift", "fu-net", "corrections", "corrections-clicks", "corrections-wm")


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="reproduce a paper's claim on the shared real data (tables + figures)")
    p.add_argument("name", choices=NAMES)
    p.add_argument("--data", default=None, help="shared data root holding isbi2012_em/ and mni152/ (default: "
                                                "$SEGATTN_SHARED_DATA, else shared/data next to the source checkout)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's scale (full resolution and epochs; GPU)")
    size.add_argument("--smoke", action="store_true", help="a tiny 1-epoch run that checks the pipeline")
    p.add_argument("--out", default=None, help="output folder (default: experiments-results/NAME)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=None, help="training seed (default: the recipe's)")
    seed.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                      help="run once per seed into OUT/seed-N/ (finished seeds are reused), then write "
                           "mean ± sd tables (summary_*.csv), claims.csv/.png and summary.json to OUT")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="override the scale's epoch count (e.g. --full --epochs 1 to check the paper-sized pipeline)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results (also finished seeds)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import DataError
    from ..experiments import run_seeds, run_study

    scale = "full" if args.full else "smoke" if args.smoke else "reduced"
    out = Path(args.out) if args.out else Path("experiments-results") / args.name
    if args.seeds:
        try:
            summary = run_seeds(args.name, args.data, out, seeds=args.seeds, scale=scale, epochs=args.epochs,
                                reuse=not args.overwrite,
                                log=lambda s: print(s, flush=True))
        except (DataError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        for c in summary["claims"]:
            spread = "(one seed)" if c["sd"] != c["sd"] else f"± {c['sd']:.4f}"  # NaN sd: a single seed
            print(f"  {c['claim']:<32} {c['mean']:+.4f} {spread}  holds in {c['holds_in']} seeds")
        print(f"{args.name} ({scale}) seeds {args.seeds}: summary in {out}")
        return 0
    if (out / "results.json").exists() and not args.overwrite:
        raise CLIError(f"{out / 'results.json'} exists; pass --overwrite or another --out")
    try:
        result = run_study(args.name, args.data, out, scale=scale, seed=args.seed, epochs=args.epochs,
                           log=lambda s: print(s, flush=True))
    except (DataError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"{args.name} ({scale}) finished in {result['wall_seconds']:.0f} s; results in {out}")
    return 0
