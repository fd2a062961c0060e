"""Tiled inference with the whole slice's SE and InstanceNorm statistics agrees with whole-slice
inference (per-window statistics do not: both layers pool over their whole input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segattn.inference import predict
from napari_segattn.inference.global_squeeze import _owned, squeeze_layers, stat_layers
from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.registry import _REGISTRY, register_model


def test_owned_parts_cover_each_pixel_once():
    starts, window, size = [0, 40, 80, 104], 48, 152
    own = _owned(starts, window, size)
    covered = np.zeros(size, int)
    for s, (lo, hi) in own.items():
        assert s <= lo < hi <= s + window  # inside its own window
        covered[lo:hi] += 1
    assert (covered == 1).all()


def test_slice_squeeze_makes_tiled_fanet_agree_with_whole():
    """The shipped demo FANet on a 256² crop of the nuclei sample, 128² windows: per-window
    squeezes give Dice ~0.99 against whole-slice inference, the slice's squeeze >= 0.999."""
    import tifffile

    from napari_segattn.models import load_model
    from napari_segattn.widgets.demo import demo_checkpoint_path

    model = load_model(str(demo_checkpoint_path())).eval()
    img = tifffile.imread(demo_checkpoint_path().parent / "dsb2018_nuclei.tif")[128:384, 128:384]
    kw = dict(channel_axis=-1 if img.ndim == 3 else None, device="cpu")
    whole = predict(model, img, tile=0, **kw)
    per_window = predict(model, img, tile=128, overlap=0.5, **kw)
    sliced = predict(model, img, tile=128, overlap=0.5, squeeze="slice", **kw)
    err = lambda p: float(np.abs(p.probabilities - whole.probabilities).max())  # noqa: E731
    dice = lambda p: 2 * (p.labels & whole.labels).sum() / (p.labels.sum() + whole.labels.sum())  # noqa: E731
    assert dice(per_window) < 0.999 and err(per_window) > 0.1  # the problem is real at this size
    assert dice(sliced) >= 0.999 and err(sliced) < 0.25 * err(per_window)
    assert all(layer.fixed_squeeze is None for layer in squeeze_layers(model))  # left as found


def test_unknown_squeeze_mode_is_refused():
    from napari_segattn.inference import InputError
    from napari_segattn.models import build_model

    model = build_model("fanet", in_channels=1, out_channels=1, width=4).eval()
    with pytest.raises(InputError, match="squeeze must be"):
        predict(model, np.zeros((64, 64), np.float32), device="cpu", tile=32, mask="full", squeeze="global")


# -- InstanceNorm (the PAM U-Nets) ---------------------------------------------------------------

class LocalInstanceNorm(SegmentationModel):
    """conv3x3 -> InstanceNorm(affine) -> ReLU -> conv3x3 -> InstanceNorm(plain) -> ReLU -> 1x1:
    receptive field 5, so with the slice's statistics every window's centre is exact and tiled
    must equal whole up to the blending of window borders."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(in_channels, 6, 3, padding=1, bias=False)
        self.na = torch.nn.InstanceNorm2d(6, affine=True)
        self.b = torch.nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.nb = torch.nn.InstanceNorm2d(6)
        self.head = torch.nn.Conv2d(6, out_channels, 1)
        with torch.no_grad():
            for conv in (self.a, self.b, self.head):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            self.na.weight.copy_(1 + torch.rand(6, generator=g))
            self.na.bias.copy_(torch.randn(6, generator=g))

    def _forward(self, x):
        return 0.5 * self.head(torch.relu(self.nb(self.b(torch.relu(self.na(self.a(x)))))))


if "_local_in" not in _REGISTRY:
    register_model("_local_in", summary="test stand-in", paper="-")(LocalInstanceNorm)


def _local_in(out_channels=1):
    m = LocalInstanceNorm(1, out_channels)
    m.segattn_config = {"name": "_local_in", "config": {"in_channels": 1, "out_channels": out_channels}}
    m.segattn_normalization = None
    return m.eval()


def _image(shape, seed=0):
    """Smooth blobs with a brightness ramp, so windows see clearly other statistics than the slice."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 3.0)
    ramp = np.linspace(0, 1, shape[-1])
    return ((x - x.min()) / (x.max() - x.min()) + ramp).astype(np.float32)


def _max_err(a, b) -> float:
    return float(np.abs(a.probabilities - b.probabilities).max())


@pytest.mark.parametrize("out_channels", [1, 3])
def test_slice_statistics_make_tiled_instance_norm_agree_with_whole(out_channels):
    """Per-window InstanceNorm statistics are far off (max |dp| > 0.05); the slice's make tiled
    equal whole-image inference (< 1e-3), binary and multi-class; the layers are left as found."""
    model = _local_in(out_channels)
    img = _image((96, 120))
    kw = dict(device="cpu", amp=False)
    whole = predict(model, img, tile=0, **kw)
    per_window = predict(model, img, tile=48, overlap=0.5, **kw)
    sliced = predict(model, img, tile=48, overlap=0.5, squeeze="slice", **kw)
    assert _max_err(per_window, whole) > 0.05
    assert _max_err(sliced, whole) < 1e-3
    assert all("forward" not in layer.__dict__ for layer in stat_layers(model))


def test_volume_slices_get_their_own_statistics():
    """A 3D stack is tiled slice by slice: each slice's windows use that slice's statistics
    (two slices of different contrast), as whole-slice inference normalises each slice."""
    model = _local_in()
    vol = np.stack([_image((96, 120), 0), 2 * _image((96, 120), 1) - 1])
    kw = dict(device="cpu", amp=False, slice_axis=0)
    whole = predict(model, vol, tile=0, **kw)
    sliced = predict(model, vol, tile=48, overlap=0.5, squeeze="slice", **kw)
    assert _max_err(sliced, whole) < 1e-3


def _whole_inputs(model, img) -> dict:
    """Each stat layer's input of the whole-image forward: per-channel mean and biased variance."""
    seen = {}

    def grab(mod, args):
        if mod not in seen:
            x = args[0].double()
            seen[mod] = (x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False))

    hooks = [layer.register_forward_pre_hook(grab) for layer in stat_layers(model)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(img)[None, None])
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("name,hw,window", [("unet", (96, 120), (64, 64)), ("fpa", (96, 120), (48, 64)),
                                            ("unet", (92, 116), (92, 60))])
def test_first_instance_norms_equal_those_of_the_whole_image(name, hw, window):
    """The slice-wide statistics of the first InstanceNorms (receptive field inside the owned
    parts) equal mean/var of that layer's input in the whole-image forward. 92x116 is padded to
    96x120 by the model, and so are its last windows (60 -> 64): the stride padding counts as
    in the whole image."""
    from napari_segattn.inference.global_squeeze import slice_stats
    from napari_segattn.inference.tiling import make_grid
    from napari_segattn.models import build_model

    torch.manual_seed(0)
    extra = {"dilation": 2} if name == "fpa" else {}
    model = build_model(name, in_channels=1, out_channels=1, width=4, **extra).eval()
    img = _image(hw)
    img = (img - img.mean()) / img.std()
    ref = _whole_inputs(model, img)
    grid = make_grid(hw, window, 0.5)
    order, stats = slice_stats(model, lambda sy, sx: img[None, sy, sx], None, grid, model.stride)
    assert len(order) == len(stat_layers(model)) and len(order) > 10
    for layer, stat in list(zip(order, stats))[:2]:
        mean, var = ref[layer]
        np.testing.assert_allclose(stat[0].double(), mean, atol=1e-5 * float(var.sqrt().mean()))
        np.testing.assert_allclose(stat[1].double(), var, rtol=1e-4)


def test_tiled_unet_with_slice_statistics_is_closer_to_whole():
    """The random-weight PAM unet: the slice's statistics bring tiled nearer to whole than the
    windows' own. Not to 1e-3: its receptive field (~100 px) exceeds the windows' overlap and
    it upsamples with align_corners=True, which no statistic can undo (docs/large-images.md)."""
    from napari_segattn.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=1, width=4).eval()
    model.segattn_normalization = {"mode": "zscore", "per": "image"}
    img = _image((96, 120))
    kw = dict(device="cpu", amp=False)
    whole = predict(model, img, tile=0, **kw)
    per_window = predict(model, img, tile=64, overlap=0.75, **kw)
    sliced = predict(model, img, tile=64, overlap=0.75, squeeze="slice", **kw)
    assert _max_err(sliced, whole) < 0.8 * _max_err(per_window, whole)


def test_cancel_stops_the_measurement():
    from napari_segattn.inference import Cancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # after a few window batches of the first pass

    with pytest.raises(Cancelled):
        predict(_local_in(), _image((96, 120)), device="cpu", tile=32, overlap=0.5, squeeze="slice",
                batch_size=2, cancel=cancel)


def test_a_model_without_statistics_runs_no_extra_pass(standin):
    """MeanThreshold has no SE or InstanceNorm layer: squeeze='slice' runs the same forwards."""
    model = standin()
    counts = {}
    for mode in ("window", "slice"):
        n = []
        h = model.register_forward_pre_hook(lambda mod, args: n.append(1))
        try:
            predict(model, _image((96, 120)), device="cpu", tile=32, overlap=0.5, squeeze=mode)
        finally:
            h.remove()
        counts[mode] = len(n)
    assert counts["slice"] == counts["window"] > 0


def test_instance_norm_with_running_statistics_is_left_alone():
    """In eval an InstanceNorm2d(track_running_stats=True) uses its running statistics: no window
    dependence, nothing to measure."""
    net = torch.nn.Sequential(torch.nn.InstanceNorm2d(3, track_running_stats=True), torch.nn.InstanceNorm2d(3))
    assert stat_layers(net) == [net[1]]


def test_progress_counts_the_statistics_passes():
    """The measurement is the larger part of a squeeze='slice' run (one partial pass of the
    windows per layer): progress covers it as windows, stage "statistics", then the windows
    themselves, steadily up to the total, for each slice of a volume."""
    model = _local_in()
    vol = np.stack([_image((96, 120), 0), _image((96, 120), 1)])
    events = []
    pred = predict(model, vol, device="cpu", amp=False, slice_axis=0, tile=48, overlap=0.5, squeeze="slice",
                   batch_size=2, progress=events.append)
    n_layers, windows = len(stat_layers(model)), pred.info["windows"] // 2
    assert n_layers >= 2 and windows > 1
    assert {e.total for e in events} == {2 * windows * (1 + n_layers)}
    done = [e.done for e in events]
    assert done == sorted(done) and done[0] == 0 and done[-1] == events[0].total
    stages = [e.stage for e in events[1:]]
    # per slice: the statistics passes first, then its windows
    assert stages.count("statistics") == 2 * n_layers * -(-windows // 2)
    first_window = stages.index("windows")
    assert set(stages[:first_window]) == {"statistics"} and "statistics" in stages[first_window:]
    assert pred.info["statistics_passes"] == 2 * n_layers * windows


# -- the PAM paper's baselines' global poolings (scSE, CBAM, GC) ------------------------------

class LocalAttention(SegmentationModel):
    """conv3x3 -> one baseline attention block -> ReLU -> 1x1: the block's global pooling is the
    only non-local part, so with the slice's statistic tiled must equal whole."""

    stride = 1

    def __init__(self, block: str = "cbam", in_channels: int = 1, out_channels: int = 1) -> None:
        from napari_segattn.models.pam.baselines import CBAM, ConcurrentSCSE, GlobalContext

        super().__init__(in_channels, out_channels)
        g = torch.Generator().manual_seed(1)
        self.a = torch.nn.Conv2d(in_channels, 16, 3, padding=1)
        self.block = {"scse": ConcurrentSCSE, "cbam": CBAM, "gc": GlobalContext}[block](16, 4)
        self.head = torch.nn.Conv2d(16, out_channels, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if p.ndim > 1 else 0.5))
            if block == "cbam":  # unsaturated channel attention, so its descriptors matter
                for p in self.block.parameters():
                    p.mul_(0.2)

    def _forward(self, x):
        return 0.1 * self.head(torch.relu(self.block(self.a(x))))


if "_local_attention" not in _REGISTRY:
    register_model("_local_attention", summary="test stand-in", paper="-")(LocalAttention)


@pytest.mark.parametrize("block", ["scse", "cbam", "gc"])
def test_baseline_attention_pooling_uses_the_slice(block):
    """scSE's channel mean, CBAM's mean and maximum and GCNet's softmax-weighted context pool
    over the whole input: per window they differ (max |dp| 0.006-0.18); with the slice's
    statistic tiled equals whole (< 1e-3, 20x closer at least; what is left is the windows' zero
    padding under their small border weights), and the block is left as found."""
    model = LocalAttention(block)
    model.segattn_config = {"name": "_local_attention", "config": {"block": block}}
    model.segattn_normalization = None
    model.eval()
    img = _image((96, 120))
    img[60:70, 100:110] += 3.0  # a bright spot only some windows see: CBAM's maximum, GC's softmax
    kw = dict(device="cpu", amp=False)
    whole = predict(model, img, tile=0, **kw)
    per_window = predict(model, img, tile=48, overlap=0.5, **kw)
    sliced = predict(model, img, tile=48, overlap=0.5, squeeze="slice", **kw)
    assert stat_layers(model) == [model.block]
    assert _max_err(per_window, whole) > 5e-3
    assert _max_err(sliced, whole) < min(1e-3, _max_err(per_window, whole) / 20)
    assert model.block.fixed_pool is None


def test_baseline_unets_measure_their_attention_blocks():
    """In the registry's cscunet, cbamunet and gcnunet every attention block is measured, after
    the InstanceNorms before it in call order."""
    from napari_segattn.inference.global_squeeze import slice_stats
    from napari_segattn.inference.tiling import make_grid
    from napari_segattn.models import build_model
    from napari_segattn.models.pam.baselines import CBAM, ConcurrentSCSE, GlobalContext

    img = _image((64, 64))
    for name, kind in (("cscunet", ConcurrentSCSE), ("cbamunet", CBAM), ("gcnunet", GlobalContext)):
        torch.manual_seed(0)
        model = build_model(name, in_channels=1, out_channels=1, width=4).eval()
        blocks = [m for m in model.modules() if isinstance(m, kind)]
        order, stats = slice_stats(model, lambda sy, sx: img[None, sy, sx], None, make_grid((64, 64), (32, 32), 0.5),
                                   model.stride)
        assert blocks and set(blocks) <= set(order), name
        for layer, stat in zip(order, stats):
            if isinstance(layer, kind):
                assert stat.shape == ((2, layer_channels(layer)) if kind is CBAM else (layer_channels(layer),))
                assert torch.isfinite(stat).all()


def layer_channels(block) -> int:
    return next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
