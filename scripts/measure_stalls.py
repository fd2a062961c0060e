"""Longest viewer stall while the widgets work, with the real models at the sizes users run.

A 10 ms QTimer ticks in napari's event loop; the gap between ticks is how long the GUI thread
was blocked. Phases (each through the widgets' own buttons): the one-off warm-up imports after
docking (idle viewer, widgets/warmup.py); load the demo FANet; Predict and
5 refinement Steps on the DSB nuclei sample (512x512); one training epoch of the demo-sized
FANet on that sample (256x256 tiles); whole-volume predict of the MNI152 sample (91 slices) with
a U-Net; an IG saliency preview + full map. ``--load N`` starts N busy-looping processes first
(a loaded machine). Run under a display (``xvfb-run -a``):

    xvfb-run -a .venv/bin/python scripts/measure_stalls.py [--load 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

os.environ.setdefault("QT_API", "pyqt6")


def _burn() -> None:
    while True:
        pass


class StallSampler:
    """``--why``: a thread samples the GUI thread's stack every 10 ms while it has not ticked for
    100 ms; ``report`` tells what it was doing in the phase's longest stall (the innermost
    Python frames of each sample, counted)."""

    def __init__(self, meter) -> None:
        import threading

        import gc

        self.meter, self.main, self.samples = meter, threading.main_thread().ident, []
        self.stop = threading.Event()
        self.collections, self._gc_start = [], 0.0  # full collections (they hold the GIL)
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._loop, daemon=True).start()

    def _on_gc(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.collections.append((self._gc_start, time.perf_counter()))

    def _loop(self) -> None:
        import sys
        import traceback

        while not self.stop.wait(0.01):
            now = time.perf_counter()
            if now - self.meter._last > 0.1:
                frame = sys._current_frames().get(self.main)
                if frame is not None:
                    inner = traceback.extract_stack(frame)[-4:]
                    self.samples.append((now, " < ".join(f"{f.filename.split('site-packages/')[-1]}:{f.name}"
                                                         for f in reversed(inner))))

    def report(self, gap_end: float, gap_ms: float, n: int = 8) -> list[tuple[str, int]]:
        import collections

        t0 = gap_end - gap_ms / 1000
        inside = collections.Counter(stack for t, stack in self.samples if t0 <= t <= gap_end)
        self.samples.clear()
        gc_ms = sum(max(0.0, min(b, gap_end) - max(a, t0)) for a, b in self.collections) * 1000
        self.collections.clear()
        return [(f"full garbage collections: {gc_ms:.0f} ms of this stall", 1), *inside.most_common(n)]


class Meter:
    def __init__(self, app) -> None:
        from qtpy.QtCore import QTimer

        self.app, self.gaps, self.ends, self._last = app, [], [], time.perf_counter()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self.ends.append(now)
        self._last = now

    def run(self, start, busy, timeout=900.0) -> dict:
        """Call ``start()``, pump the event loop until ``busy()`` is false; stall statistics."""
        import numpy as np

        from qtpy.QtCore import QTimer

        self.gaps, self.ends, self._last = [], [], time.perf_counter()
        self.timer.start(10)
        while not self.gaps:  # ticking: from here every gap counts
            self.app.processEvents()
            time.sleep(0.002)
        self.gaps, self.ends = [], []
        t0 = time.perf_counter()
        # inside the event loop, as a click runs: its own synchronous part is a gap like any other
        started: list = []
        QTimer.singleShot(0, lambda: (start(), started.append(True)))
        while not started:
            self.app.processEvents()
            time.sleep(0.001)
        while True:
            self.app.processEvents()
            if not busy() or time.perf_counter() - t0 > timeout:
                break
            time.sleep(0.002)
        for _ in range(20):  # the last results reach the layers
            self.app.processEvents()
            time.sleep(0.005)
        self.timer.stop()
        g = np.array(self.gaps or [0.0]) * 1000
        return {"seconds": round(time.perf_counter() - t0, 1), "longest_ms": round(float(g.max()), 1),
                "p99_ms": round(float(np.percentile(g, 99)), 1), "gaps_over_100ms": int((g > 100).sum()),
                "ticks": int(g.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes to start first")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip", nargs="*", default=[], help="phases to skip")
    ap.add_argument("--why", action="store_true", help="print what the GUI thread did in each phase's stalls")
    args = ap.parse_args()
    burners = [mp.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_segattn.widgets.demo import demo_checkpoint_path
    from napari_segattn.widgets.state import get_state

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.open_sample("napari-segattn", "dsb2018_nuclei")
    docked = {name: viewer.window.add_plugin_dock_widget("napari-segattn", name, tabify=True)[1]
              for name in ("Model", "Train", "Predict and refine", "Inspect")}
    state = get_state(viewer)
    meter = Meter(app)
    if args.why:
        sampler = StallSampler(meter)
        run = meter.run

        def traced(start, busy):
            res = run(start, busy)
            worst = max(range(len(meter.gaps)), key=meter.gaps.__getitem__, default=None)
            res["stalled_in"] = [] if worst is None else sampler.report(meter.ends[worst], 1000 * meter.gaps[worst])
            return res

        meter.run = traced
    busy = lambda: state.busy  # noqa: E731
    out = {"load_processes": args.load, "cpus": os.cpu_count()}
    model, refine, inspect, train = (docked[k] for k in ("Model", "Predict and refine", "Inspect", "Train"))
    from napari_segattn.widgets.warmup import warm_up_done

    # the one-off imports after docking (widgets/warmup.py), while a user reads the widgets
    out["warm-up after docking (idle viewer)"] = meter.run(lambda: None, lambda: not warm_up_done())
    def load_demo():
        model.ckpt.value = str(demo_checkpoint_path())
        model.load_button.clicked.emit()  # the button loads in a worker, as a user clicks it

    out["load demo model"] = meter.run(load_demo, lambda: state.loaded is None or state.busy)
    out["predict 512x512 (demo FANet)"] = meter.run(lambda: refine.predict_button.clicked.emit(), busy)
    steps = [meter.run(lambda: refine.step_button.clicked.emit(), busy) for _ in range(5)]
    out["refinement Step (worst of 5)"] = max(steps, key=lambda r: r["longest_ms"])
    # the first Step creates its result layers (napari's per-layer cost); the later ones update them
    out["later Steps (worst of 4, layers updated)"] = max(steps[1:], key=lambda r: r["longest_ms"])
    # the floor under a first Step: napari alone adding layers of the Step's sizes (no plugin
    # code), each in its own event-loop turn as the widgets do (widgets/layers.prepare_layers)
    added = [meter.run(lambda: viewer.add_labels(np.zeros((3, 512, 512), np.uint8), name=f"floor labels {k}"),
                       lambda: False) for k in range(2)]
    added += [meter.run(lambda: viewer.add_image(np.zeros((3, 512, 512), np.float32), name=f"floor image {k}",
                                                 colormap="magma", opacity=0.4), lambda: False) for k in range(2)]
    out["napari alone: add one 3x512x512 layer (worst of 4)"] = max(added, key=lambda r: r["longest_ms"])
    for name in [l.name for l in viewer.layers if l.name.startswith("floor ")]:
        viewer.layers.remove(name)
    if "saliency" not in args.skip:
        out["IG saliency preview + full"] = meter.run(lambda: inspect.saliency_button.clicked.emit(), busy)
    if "train" not in args.skip:
        train.epochs.value = 1
        train.tile.value = 256
        train.out_dir.value = "/tmp/segattn-stall-run"
        import shutil

        shutil.rmtree("/tmp/segattn-stall-run", ignore_errors=True)
        out["train 1 epoch (demo FANet, 256 tiles)"] = meter.run(lambda: train.train_button.clicked.emit(), busy)
    if "volume" not in args.skip:
        viewer.layers.clear()
        viewer.open_sample("napari-segattn", "mni152_brain")
        model.arch.value = "unet"
        model.arch_options.value = '{"in_channels": 1, "out_channels": 3}'
        out["build unet"] = meter.run(lambda: model.build_button.clicked.emit(), busy)
        refine.scope.value = "whole volume"
        out["predict whole MNI volume (unet)"] = meter.run(lambda: refine.predict_button.clicked.emit(), busy)
    for k, v in out.items():
        why = v.pop("stalled_in", None) if isinstance(v, dict) else None
        print(f"{k:40s} {v}")
        for frame, count in why or []:
            print(f"      {count:4d} x 10 ms  {frame}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    for b in burners:
        b.terminate()
    if args.why:
        sampler.stop.set()
    viewer.close()


if __name__ == "__main__":
    main()
