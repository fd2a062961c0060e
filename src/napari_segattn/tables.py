"""Write lists of row dicts as CSV (the CLI's and the experiments' tables)."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["write_csv"]


def write_csv(path, rows: list[dict], float_format: str | None = None) -> Path:
    """Columns are the union of the rows' keys in first-seen order; floats optionally formatted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (format(v, float_format) if float_format and isinstance(v, float) else v) for k, v in r.items()})
    return path
