"""Timing, memory and agreement helpers shared by the benchmark rows.

Timings are wall-clock medians after one warm-up call; on CUDA every timed call ends with
``torch.cuda.synchronize()`` so that queued kernels are counted. Peak RSS comes from
``resource.getrusage`` (the process high-water mark, so ``run.py`` gives every row its own
process); peak GPU memory from ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["timed", "peak_rss_mb", "gpu_peak_mb", "reset_gpu_peak", "dice", "variant", "sync"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, *, repeat: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls after ``warmup`` untimed ones, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
        sync(device)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice agreement of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def variant(name: str, seconds: float | None, reference_s: float | None, **extra: Any) -> dict:
    """One measured line of a row; ``ratio`` = reference time / this time (> 1 is faster)."""
    ratio = None if not seconds or not reference_s else reference_s / seconds
    return {"name": name, "seconds": seconds, "ratio": ratio, **extra}
