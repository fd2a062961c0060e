"""Paying Attention to Mistakes (Mou et al., BMVC 2020): FPA, RFNA, their backbone, ablations and baselines.

Importing this package registers ``unet``, ``wunet``, ``d6unet``, ``d9unet``, ``aunet``,
``cscunet``, ``cbamunet``, ``gcnunet``, ``fpa`` and ``rfna``.
"""

from .backbone import PAMUNet
from .baselines import CBAM, AttentionGate, ConcurrentSCSE, GlobalContext
from .mistakes import FalsePositiveAttention, ReleasedFalseNegativeAttention, ReverseFalseNegativeAttention
from . import nets  # noqa: F401  (registers the models)

__all__ = [
    "PAMUNet",
    "FalsePositiveAttention",
    "ReverseFalseNegativeAttention",
    "ReleasedFalseNegativeAttention",
    "AttentionGate",
    "ConcurrentSCSE",
    "CBAM",
    "GlobalContext",
]
