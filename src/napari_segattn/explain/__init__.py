"""Inspection: error maps, IG saliency (Attention Shift), attention maps, attention shift.

Everything returns plain numpy arrays plus a small dataclass, shared by the CLI and the GUI.
"""

from .attention_maps import AttentionMap, attention_maps
from .error_maps import ERROR_COLORS, ERROR_NAMES, FN, FP, TN, TP, ErrorMap, error_map
from .saliency import SaliencyMap, SaliencyProgress, coverage, iter_saliency, saliency, window_grid
from .shift import ShiftResult, attention_shift

__all__ = [
    "error_map",
    "ErrorMap",
    "ERROR_COLORS",
    "ERROR_NAMES",
    "TN",
    "TP",
    "FN",
    "FP",
    "saliency",
    "SaliencyMap",
    "SaliencyProgress",
    "iter_saliency",
    "window_grid",
    "coverage",
    "attention_maps",
    "AttentionMap",
    "attention_shift",
    "ShiftResult",
]
