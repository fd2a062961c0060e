"""The napari session sets OpenMP to sleep at barriers before torch loads (widgets/__init__):
spinning threads starved the viewer and each other on a busy machine (whole-volume predict with
two busy processes beside it 58.5 s spinning, 12.8 s sleeping)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui

_PROBE = ("import os, sys; import napari_segattn.widgets; "
          "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def _policy_after_import(**env) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    return out[-2], out[-1]


def test_the_widgets_set_passive_waiting_before_torch_loads():
    policy, torch_loaded = _policy_after_import()
    assert policy == "PASSIVE" and torch_loaded == "False"  # torch would read it at its own import


def test_a_users_own_policy_is_kept():
    assert _policy_after_import(OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"
