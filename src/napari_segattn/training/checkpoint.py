"""Resume state without pickle: tensors in safetensors, everything else in JSON.

A resume checkpoint is a directory ``last/`` holding ``model.safetensors`` (our model format),
``training_state.safetensors`` (optimiser moments, mask-store arrays) and
``training_state.json`` (epoch, scheduler, scaler, best score, config). The directory is
written as ``last.tmp/`` and swapped in by renames, so a crash or an OOM while writing never
leaves a half-written ``last/``: either the previous one or the new one is complete.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["flatten_optimizer", "unflatten_optimizer", "write_state_dir", "find_state_dir", "read_state", "jsonable"]

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def jsonable(obj: Any) -> Any:
    """Scheduler/scaler state as JSON (Counters become lists of their keys)."""
    if isinstance(obj, Counter):
        return sorted(int(k) for k in obj.elements())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj


def flatten_optimizer(sd: dict[str, Any], prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        meta = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}/{pid}/{k}"] = v.detach().cpu().contiguous().clone()
                meta[k] = {"tensor": True}
            else:
                meta[k] = {"value": jsonable(v)}
        state_meta[str(pid)] = meta
    return tensors, {"state": state_meta, "param_groups": jsonable(sd["param_groups"])}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optimizer") -> dict[str, Any]:
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {
            k: tensors[f"{prefix}/{pid}/{k}"] if e.get("tensor") else e["value"] for k, e in entries.items()
        }
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def write_state_dir(out_dir: Path, write_files: Callable[[Path], None], name: str = "last") -> Path:
    """Write a checkpoint directory atomically (temp dir + renames)."""
    out_dir = Path(out_dir)
    final, tmp, old = out_dir / name, out_dir / f"{name}.tmp", out_dir / f"{name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write_files(tmp)
    except Exception as exc:  # a full disk (OSError, SafetensorError, our CheckpointError): say what is kept
        shutil.rmtree(tmp, ignore_errors=True)
        from ..models.io import CheckpointError

        kept = f"the previous {final} is intact" if final.exists() or old.exists() else "no resume checkpoint yet"
        reason = str(exc).removesuffix("; nothing was written")  # that was about the temporary copy
        raise CheckpointError(f"cannot write the resume checkpoint {final}: {reason}; {kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def find_state_dir(out_dir: Path, name: str = "last") -> Path | None:
    """The complete resume directory, also after a crash between the two renames."""
    for cand in (Path(out_dir) / name, Path(out_dir) / f"{name}.old"):
        if (cand / STATE_JSON).exists() and (cand / STATE_TENSORS).exists() and (cand / "model.safetensors").exists():
            return cand
    return None


def save_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path / STATE_TENSORS))
    (path / STATE_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    return load_file(str(path / STATE_TENSORS)), json.loads((path / STATE_JSON).read_text())
