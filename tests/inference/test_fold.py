"""BatchNorm folding for inference: same outputs, the user's model untouched, the cached copy
rebuilt when the weights change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_segattn.inference import predict
from napari_segattn.inference.fold import fold_batchnorm, folded_for_inference
from napari_segattn.models import build_model


def _randomise_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine terms
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name,kw,extra", [("fanet", dict(in_channels=3, out_channels=1), True),
                                           ("fbunet", dict(in_channels=1, out_channels=2), False)])
def test_folded_copy_computes_the_same_and_leaves_the_model_alone(name, kw, extra):
    torch.manual_seed(0)
    model = build_model(name, **kw).eval()
    _randomise_bn(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, kw["in_channels"], 64, 64)
    args = (x, (torch.rand(1, 1, 64, 64) > 0.5).float()) if extra else (x,)
    folded, n = fold_batchnorm(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n > 0 and sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == n_bn - n
    with torch.no_grad():
        torch.testing.assert_close(folded(*args), model(*args), rtol=1e-4, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn


def test_cached_copy_follows_the_weights():
    torch.manual_seed(0)
    model = build_model("fbunet", in_channels=1, out_channels=1).eval()
    a = folded_for_inference(model)
    assert a is not model and folded_for_inference(model) is a  # cached
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an in-place update, as an optimiser step does
    b = folded_for_inference(model)
    assert b is not a
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(b(x), model(x), rtol=1e-4, atol=1e-5)


def test_predict_runs_the_folded_copy_with_training_in_between():
    """predict after further training sees the new weights, not a stale folded copy."""
    torch.manual_seed(0)
    model = build_model("fbunet", in_channels=1, out_channels=1)
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    first = predict(model, img, device="cpu", amp=False).probabilities
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    loss = model(torch.from_numpy(img)[None, None]).mean()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        expect = torch.sigmoid(model(torch.from_numpy(img)[None, None]))[0].numpy()
    second = predict(model, img, device="cpu", amp=False).probabilities
    assert np.abs(second - first).max() > 1e-3
    np.testing.assert_allclose(second, expect, rtol=1e-4, atol=1e-5)


def test_cache_lets_models_go():
    """Neither a foldable nor an unfoldable model is kept alive by the cache."""
    import gc
    import weakref

    for name in ("fbunet", "unet"):
        model = build_model(name, in_channels=1, out_channels=1)
        net = folded_for_inference(model)
        assert (net is model) == (name == "unet")
        ref = weakref.ref(model)
        del model, net
        gc.collect()
        assert ref() is None
