"""``segattn models``: the registry with parameter counts for each default config."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def model_table() -> list[dict]:
    from ..models import build_model, count_parameters, get_spec, list_models

    import torch

    rows = []
    for name in list_models():
        spec = get_spec(name)
        with torch.device("meta"):  # shapes only: no weight memory, no init (28 s -> < 2 s for the zoo)
            model = build_model(name)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model),
                "config": spec.defaults,
                "summary": spec.summary,
                "paper": spec.paper,
                "takes_mask": spec.takes_mask,
                "reverse_labels": spec.reverse_labels,
            }
        )
    return rows


def run(args) -> int:
    rows = model_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'parameters':>12}  summary  [default config]")
    for r in rows:
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        print(f"{r['name']:<{width}}  {r['parameters']:>12,}  {r['summary']}  [{cfg}]")
    return 0
