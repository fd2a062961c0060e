"""Thin napari widgets over the GUI-free core: they read layers, call the core in workers,
and turn results into layers. No science lives here."""

import os

# Our workers compute beside the GUI thread, often on a machine doing other work. OpenMP's default
# (torch's intra-op threads) spins at every barrier, so with more runnable threads than cores a
# waiting thread burns the time slice the straggler, or the viewer, needed. Sleeping at barriers
# instead (scripts/measure_stalls.py, 2-core machine): whole-volume predict with two busy
# processes beside it 58.5 -> 12.8 s, quiet 5.2-5.9 -> 5.1-5.4 s; the first Step's longest stall
# quiet 340-465 -> 243-246 ms. It must be set before torch is first imported (the widgets import
# it later, in the warm-up thread); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from .batch_widget import BatchWidget
from .compare_widget import CompareWidget
from .inspect_widget import InspectWidget
from .model_widget import ModelWidget
from .refine_widget import PredictRefineWidget
from .train_widget import TrainWidget

__all__ = ["ModelWidget", "TrainWidget", "PredictRefineWidget", "InspectWidget", "CompareWidget", "BatchWidget"]
