"""Measure each registered model's inference memory per pixel (CPU, float32, one thread).

``python -m benchmarks.activation_memory [--sizes 256 512] [--models unet fanet ...]``

Each (model, size) runs ``predict`` once in a fresh process and reads its peak RSS
(``ru_maxrss``); the slope between two sizes is the per-pixel cost that
``inference.tiling.BYTES_PER_PIXEL`` holds (a process high-water mark cannot be reset, and
allocator reuse makes in-process deltas unreliable, hence one process per point).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from napari_segattn.inference import predict
from napari_segattn.models import build_model, get_spec
name, size = sys.argv[1], int(sys.argv[2])
m = build_model(name)
m.segattn_normalization = None
c = int(m.in_channels)
img = np.random.default_rng(0).random((c, size, size)).astype(np.float32)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict(m, img, channel_axis=0, device="cpu", tile=0)
print(json.dumps({"before_kib": r0, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(name: str, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(size)], capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    from napari_segattn.models import list_models

    p = argparse.ArgumentParser(prog="python -m benchmarks.activation_memory", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[256, 512])
    p.add_argument("--models", nargs="+", default=None)
    args = p.parse_args(argv)
    a, b = args.sizes
    table = {}
    for name in args.models or list_models():
        ra, rb = measure(name, a), measure(name, b)
        slope = (rb["peak_kib"] - ra["peak_kib"]) * 1024 / (b * b - a * a)
        table[name] = int(round(slope))
        print(f"{name:10s} {slope:8.0f} B/px  (peak {ra['peak_kib'] / 1024:.0f} MB at {a}², "
              f"{rb['peak_kib'] / 1024:.0f} MB at {b}²)", flush=True)
    print(json.dumps(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
