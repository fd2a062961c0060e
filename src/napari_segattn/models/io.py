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
        raise CheckpointError(f"model files end in .safetensors, got {path.name!r}")
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
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={_META_KEY: text}))
        _atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(text + "\n"))
    except Exception as exc:  # OSError, or safetensors' own SafetensorError for a full disk
        raise CheckpointError(_write_failure(path, exc, state, existed)) from None
    return path


def _write_failure(path: Path, exc: Exception, state: dict[str, torch.Tensor], existed: bool) -> str:
    """One sentence: where, why, how much space it needs, and that nothing was half-replaced
    (the write goes to a temporary file renamed into place, so the old file is untouched)."""
    import shutil

    need = sum(t.numel() * t.element_size() for t in state.values())
    where = next((p for p in [path.parent, *path.parent.parents] if p.exists()), path.parent)
    try:
        free = f", {shutil.disk_usage(where).free / 2**20:.1f} MiB free on {where}"
    except OSError:
        free = ""
    kept = f"the previous {path.name} is intact" if existed else "nothing was written"
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"cannot write {path}: {reason} (it needs about {need / 2**20:.1f} MiB{free}); {kept}"


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` can only
    be read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; a model file gets the permissions any new file would get
        os.chmod(tmp, 0o666 & ~_umask())
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
    """Rebuild the model recorded in the checkpoint and load its weights (strictly).

    Before any weight is allocated, the config is checked (model name, options, normalisation)
    and the architecture is built on torch's ``meta`` device: its tensor shapes are compared
    with the file's header and its size with the free memory, so an absurd config is refused
    in words instead of a ``DefaultCPUAllocator`` error. Non-finite weights are refused by name.
    """
    from safetensors.torch import load_file

    from ..devices import resolve_device

    device = resolve_device(map_location)  # DeviceError in words ("banana" was a SafetensorError)
    payload = read_checkpoint_config(path)
    fname = Path(path).name
    name = payload.get("model")
    try:
        get_spec(name)
    except KeyError as exc:
        raise CheckpointError(f"{fname}: {exc.args[0]}") from None
    config = payload.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{fname}: its config must be a JSON object of model options, got {config!r}")
    _check_normalization(fname, payload.get("normalization"))
    try:
        with torch.device("meta"):
            skeleton = build_model(name, **config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{fname}: its config cannot build {name!r}: {exc}") from None
    _check_state_matches(fname, name, skeleton, _file_shapes(path))
    _check_memory(fname, name, config, skeleton)
    model = build_model(name, **config)
    state = load_file(str(path), device="cpu")
    _check_finite(fname, state)
    model.load_state_dict(state, strict=True)
    model.segattn_normalization = payload.get("normalization")
    model.segattn_class_names = payload.get("class_names")
    model.segattn_checkpoint = payload
    return model.to(device)


def _file_shapes(path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors header (no data read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _check_normalization(fname: str, norm) -> None:
    if norm is None:
        return
    from ..data import DataError, Normalization

    try:
        Normalization.from_dict(norm)
    except (DataError, TypeError) as exc:
        raise CheckpointError(f"{fname}: its normalisation {norm!r} is not usable: {exc}") from None


def _check_memory(fname: str, name: str, config: dict, skeleton: nn.Module) -> None:
    """Refuse a model whose weights alone exceed the free memory (estimate from the meta build)."""
    need = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
    try:
        import psutil

        free = psutil.virtual_memory().available
    except Exception:  # psutil missing or no memory info: skip the estimate
        return
    if need > free:
        raise CheckpointError(
            f"{fname}: its config {name!r} {config} needs {need / 2**30:.1f} GiB for the weights alone but "
            f"{free / 2**30:.1f} GiB are free; the config is wrong or the model is too large for this machine"
        )


def _check_finite(fname: str, state: dict[str, torch.Tensor]) -> None:
    """NaN/inf weights (a diverged run) gave an all-zero mask and exit 0; refuse them by name."""
    bad = []
    for k, v in state.items():
        if v.is_floating_point():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()})")
    if bad:
        raise CheckpointError(
            f"{fname}: {len(bad)} tensor(s) hold NaN/inf weights, e.g. {', '.join(bad[:3])}; the training "
            "diverged or the file is damaged: use an earlier checkpoint (e.g. the run's model.safetensors "
            "rather than last/) or retrain with a smaller --lr"
        )


def _check_state_matches(fname: str, name: str, model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [
        f"{k}: file {shapes[k]} vs model {expected[k]}"
        for k in sorted(set(expected) & set(shapes))
        if tuple(shapes[k]) != expected[k]
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
