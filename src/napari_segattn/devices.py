"""Pick a torch device by name: ``auto`` | ``cuda`` | ``cuda:N`` | ``mps`` | ``cpu``."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "available_devices", "DeviceError"]


class DeviceError(RuntimeError, ValueError):
    """The requested device does not exist here (a user error: message says what to use)."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but this torch build sees no CUDA GPU "
                               f"(torch {torch.__version__}); use 'cpu' or install a CUDA build of torch")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("device 'mps' requested but Apple MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}; use auto, cuda, cuda:N, mps or cpu")


def available_devices() -> list[tuple[str, str]]:
    """``[(label, device_name), ...]`` for a device picker: auto, each GPU by name, MPS, CPU."""
    out = [("auto", "auto")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append(("mps (Apple GPU)", "mps"))
    out.append(("cpu", "cpu"))
    return out
