"""``segattn models``: a header, and counts from a meta-device build equal to a real build."""

from __future__ import annotations

import time

from napari_segattn.cli import main
from napari_segattn.cli.models_cmd import model_table
from napari_segattn.models import build_model, count_parameters


def test_models_lists_with_a_header_and_real_counts(capsys):
    t0 = time.perf_counter()
    rows = model_table()
    seconds = time.perf_counter() - t0
    by_name = {r["name"]: r for r in rows}
    for name in ("unet", "fanet", "brunet"):
        assert by_name[name]["parameters"] == count_parameters(build_model(name))
    assert seconds < 2.0  # built on the meta device: no weights allocated or initialised
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "parameters", "summary"]
    assert len(out) == len(rows) + 1
