"""attention_maps(): recorded maps, channel mean, resized to (and aligned with) the image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_segattn.explain import attention_maps
from napari_segattn.models import record_attention


def test_maps_are_channel_mean_resized(standin):
    model = standin("unet", out_channels=3)
    img = np.random.default_rng(0).normal(size=(32, 40)).astype(np.float32)
    maps = attention_maps(model, img)
    assert [(m.name, m.kind) for m in maps] == [("gate", "gate")]
    m = maps[0]
    assert m.map.shape == (32, 40) and m.map.dtype == np.float32 and m.native_shape == (6, 4, 5)
    # independent: record by hand, channel mean, bilinear resize
    with torch.no_grad(), record_attention(model) as rec:
        model(torch.from_numpy(img)[None, None])
    ref = F.interpolate(rec["gate"].mean(1, keepdim=True), size=(32, 40), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(m.map, ref[0, 0].numpy(), atol=1e-6)
    assert 0 < m.map.min() and m.map.max() < 1  # a sigmoid gate


def test_padded_input_is_cropped_not_squeezed(standin):
    """30 x 30 is padded to 32 x 32 inside the model; the map is resized to 32 and cropped."""
    model = standin("unet", out_channels=3)
    img = np.random.default_rng(1).normal(size=(30, 30)).astype(np.float32)
    m = attention_maps(model, img)[0]
    assert m.map.shape == (30, 30) and m.native_shape == (6, 4, 4)
    with torch.no_grad(), record_attention(model) as rec:
        model(torch.from_numpy(img)[None, None])
    ref = F.interpolate(rec["gate"].mean(1, keepdim=True), size=(32, 32), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(m.map, ref[0, 0, :30, :30].numpy(), atol=1e-6)


def test_model_without_attention_gives_empty_list(standin):
    assert attention_maps(standin("pixel"), np.zeros((8, 8), np.float32)) == []
