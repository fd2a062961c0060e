"""The smallest input each registered model takes: ``size_problem`` states it, and it is exactly
the rule the network obeys (a forward pass runs iff ``size_problem`` is None)."""

from __future__ import annotations

import pytest
import torch

from napari_segattn.models import build_model, get_spec, list_models

SIZES = (1, 2, 8, 9, 17, 32, 33, 40)
EXTRA = {"rfna": [{"upsample": 4}, {"upsample": 2}, {"variant": "released"}]}


def _configs():
    for name in list_models():
        if name.startswith("_"):
            continue
        base = {k: v for k, v in get_spec(name).defaults.items()}
        base["in_channels"] = 1
        if "width" in base or name in ("fanet",):
            base["width"] = 4
        for extra in [{}] + EXTRA.get(name, []):
            yield pytest.param(name, {**base, **extra}, id=f"{name}-{extra}" if extra else name)


@pytest.mark.parametrize("name, cfg", list(_configs()))
def test_size_problem_is_the_models_rule(name, cfg):
    torch.set_num_threads(1)
    m = build_model(name, **cfg).eval()
    takes_mask = get_spec(name).takes_mask
    for h in SIZES:
        for w in SIZES:
            args = [torch.rand(1, 1, h, w)] + ([torch.zeros(1, 1, h, w)] if takes_mask else [])
            problem = m.size_problem(h, w)
            if problem is None:
                with torch.no_grad():
                    assert m(*args).shape[-2:] == (h, w), (name, h, w)
            else:
                assert f"{h}x{w}" in problem and repr(name) in problem
                with pytest.raises(ValueError, match="too small|at least"):
                    m(*args)
    # and with the check off, what it refuses really fails (the rule is not over-cautious)
    for h, w in [(s, s) for s in SIZES]:
        if m.size_problem(h, w) is not None and h > 0:
            args = [torch.rand(1, 1, h, w)] + ([torch.zeros(1, 1, h, w)] if takes_mask else [])
            with pytest.raises((ValueError, RuntimeError)):
                with torch.no_grad():
                    m._forward(*[torch.nn.functional.pad(a, (0, (-w) % m.stride, 0, (-h) % m.stride),
                                                         mode="replicate") for a in args])


def test_zero_size_refused_by_every_model():
    for name in ("unet", "fanet", "brunet"):
        m = build_model(name, **{**get_spec(name).defaults, "in_channels": 1})
        assert "0x64" in m.size_problem(0, 64)
