"""Reproduction studies of the papers' claims on the shared real data (GUI-free).

``run_study(name, data, out, scale="reduced", seed=None)`` runs one study and writes CSV
tables, PNG figures and ``results.json`` under ``out``. Scales: ``smoke`` (CI), ``reduced``
(CPU minutes), ``full`` (the paper's configuration; needs a GPU). ``run_seeds`` repeats a
study over seeds and writes mean ± sd tables and claims (``experiments.seeds``). See
docs/reproduction.md.
"""

from __future__ import annotations

from pathlib import Path

from . import attention_shift, corrections, corrections_clicks, corrections_wm, fanet_ablation, fu_net, mistakes
from .common import SCALES
from .seeds import run_seeds, summarise

STUDIES = {m.NAME: m for m in (fanet_ablation, mistakes, attention_shift, fu_net, corrections, corrections_clicks, corrections_wm)}

__all__ = ["STUDIES", "SCALES", "run_study", "run_seeds", "summarise"]


def run_study(name: str, data: str | Path | None, out: str | Path, *, scale: str = "reduced",
              seed: int | None = None, epochs: int | None = None, log=print) -> dict:
    """Run study ``name`` (one of ``STUDIES``); returns its results dict (also in results.json).
    ``epochs`` overrides the scale's epoch count (recorded in results.json)."""
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; choose from {sorted(STUDIES)}")
    import time

    import torch

    from .common import write_json

    t0 = time.perf_counter()
    result = STUDIES[name].run(data, out, scale=scale, seed=seed, epochs=epochs, log=log)
    result["wall_seconds"] = time.perf_counter() - t0
    result["torch_threads"] = torch.get_num_threads()
    write_json(Path(out) / "results.json", result)
    return result
