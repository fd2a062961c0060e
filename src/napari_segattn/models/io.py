"""Save/load models as safetensors weights + JSON config (never pickle for our own files).

The JSON config is stored twice: inside the safetensors header metadata (so one file is
self-contained and a GUI can show it before loading weights) and as a readable ``.json``
sidecar. Loading reads the embedded copy and falls back to the sidecar.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .registry import build_model, get_spec, model_config

__all__ = ["CheckpointError", "save_model", "load_model", "read_checkpoint_config", "FORMAT"]

FORMAT = "napari-segattn/model-v1"
_META_KEY = "segattn_config"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the reason in words."""


def _package_version() -> str:
    from .. import __version__

    return __version__


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    normalization: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model files end in .safetensors, got {path.name!r}")
    cfg = model_config(model)
    payload = {
        "format": FORMAT,
        "model": cfg["name"],
        "config": cfg["config"],
        "normalization": normalization if normalization is not None else getattr(model, "segattn_normalization", None),
        "class_names": class_names if class_names is not None else getattr(model, "segattn_class_names", None),
        "package_version": _package_version(),
        **(extra or {}),
    }
    text = json.dumps(payload, indent=2, sort_keys=True)
    # safetensors refuses shared storage; clone to contiguous independent tensors
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={_META_KEY: text}))
    _atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config of a checkpoint, without loading weights; raises CheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file (corrupted or not a model file): {exc}"
        ) from None
    text = meta.get(_META_KEY)
    if text is None and sidecar_path(path).exists():
        text = sidecar_path(path).read_text()
    if text is None:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a napari-segattn model: it has no "
            f"'{_META_KEY}' metadata and no {sidecar_path(path).name} beside it "
            f"(metadata keys found: {sorted(meta) or 'none'})"
        )
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name}: its config is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name}: unknown config format {payload.get('format') if isinstance(payload, dict) else payload!r}; "
            f"expected {FORMAT!r}"
        )
    return payload


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model recorded in the checkpoint and load its weights (strictly)."""
    from safetensors.torch import load_file

    payload = read_checkpoint_config(path)
    name = payload.get("model")
    try:
        get_spec(name)
    except KeyError as exc:
        raise CheckpointError(f"{Path(path).name}: {exc.args[0]}") from None
    try:
        model = build_model(name, **payload.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(path).name}: its config cannot build {name!r}: {exc}") from None
    state = load_file(str(path), device=str(map_location))
    _check_state_matches(Path(path).name, name, model, state)
    model.load_state_dict(state, strict=True)
    model.segattn_normalization = payload.get("normalization")
    model.segattn_class_names = payload.get("class_names")
    model.segattn_checkpoint = payload
    return model.to(map_location)


def _check_state_matches(fname: str, name: str, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es) (e.g. {wrong[:3]})")
        raise CheckpointError(
            f"{fname}: the weights do not match the config ({name!r}): " + "; ".join(parts)
        )
