"""Run the benchmark rows and print each as ratios against its in-process reference.

``python -m benchmarks.run [--quick] [--only NAME ...] [--json OUT] [--device auto|cpu|cuda] [--compile]
[--threads N] [--config JSON]``

Every row runs in its own Python process (``--in-process`` turns that off) so that its peak
RSS (``resource.getrusage``, a process high-water mark) belongs to that row alone. Ratios
compare two paths timed in the same process; absolute seconds are printed as context only
(labelled as CPU timings unless the device is CUDA).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROWS = {
    "saliency": "benchmarks.saliency_row",
    "fanet_step": "benchmarks.fanet_row",
    "volume": "benchmarks.volume_row",
    "train_step": "benchmarks.train_row",
    "rle": "benchmarks.rle_row",
    "tiling": "benchmarks.tiling_row",
}


def run_row(name: str, quick: bool, device: str = "cpu", options: dict | None = None) -> dict:
    """Run one row in this process; adds device, wall time and peak memory to its result."""
    import torch

    from napari_segattn.devices import resolve_device

    from ._common import peak_rss_mb

    dev = resolve_device(device)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    result = importlib.import_module(ROWS[name]).run(quick, dev, options or {})
    result.update(name=name, quick=quick, device=str(dev), wall_s=time.perf_counter() - t0,
                  peak_rss_mb=peak_rss_mb(), rss_before_row_mb=rss0, torch=torch.__version__,
                  threads=torch.get_num_threads())
    return result


def _run_child(name: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        cmd = [sys.executable, "-m", "benchmarks.run", "--in-process", "--only", name, "--json", out,
               "--device", args.device, "--quiet"]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--compile"] if args.compile else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--config", json.dumps(args.config)] if args.config else []
        proc = subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if proc.returncode != 0:
            return {"name": name, "error": f"row process exited with status {proc.returncode}"}
        with open(out) as f:
            return json.load(f)["rows"][0]


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_row(r: dict) -> str:
    if "error" in r:
        return f"== {r['name']}: ERROR {r['error']}"
    cpu = not str(r.get("device", "cpu")).startswith("cuda")
    label = " (CPU timing, for context)" if cpu else ""
    lines = [f"== {r['name']}: {r['what']}", f"   reference: {r['reference']}"]
    if r.get("reference_s") is not None:
        lines[-1] += f"  {_fmt_s(r['reference_s'])}{label}"
    for v in r["variants"]:
        extra = {k: v[k] for k in v if k not in ("name", "seconds", "ratio")}
        ratio = f"{v['ratio']:.2f}x" if v.get("ratio") else (f"{v['bytes_ratio']:.1f}x smaller" if "bytes_ratio" in v else "")
        ex = ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in extra.items())
        t = f"  {_fmt_s(v['seconds'])}{label}" if v.get("seconds") is not None else ""
        lines.append(f"   {v['name']}: {ratio}{t}  [{ex}]")
    gpu = r.get("gpu_peak_mb")
    lines.append(f"   peak RSS {r['peak_rss_mb']:.0f} MB (before row {r['rss_before_row_mb']:.0f} MB), peak GPU "
                 f"{'-' if gpu is None else f'{gpu:.0f} MB'}, device {r['device']}, {r['threads']} threads, "
                 f"row wall {r['wall_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (make bench; ~2 min on 2 CPU cores)")
    p.add_argument("--only", nargs="+", choices=sorted(ROWS), metavar="NAME", help=f"rows: {', '.join(ROWS)}")
    p.add_argument("--json", metavar="OUT", help="write all results as JSON")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    p.add_argument("--compile", action="store_true", help="add a torch.compile variant (compile time reported)")
    p.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                   help='override row sizes, e.g. \'{"volume": {"slices": 32}}\' (keys as in each row\'s FULL/QUICK)')
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every row (default: torch's choice)")
    p.add_argument("--in-process", action="store_true", help="run rows in this process (peak RSS is cumulative)")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = args.only or list(ROWS)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = {"compile": args.compile, **args.config}
    t0 = time.perf_counter()
    results = []
    for name in names:
        r = run_row(name, args.quick, args.device, options) if args.in_process else _run_child(name, args)
        results.append(r)
        if not args.quiet:
            print(format_row(r), flush=True)
    meta = {"command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "total_s": time.perf_counter() - t0,
            # other processes on the machine distort CPU timings: say how busy it was
            "loadavg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if not args.quiet:
        print(f"total {meta['total_s']:.1f} s on {meta['cpus']} CPUs (1-min load average after: "
              f"{meta['loadavg_1min_after']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": results}, f, indent=1)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
