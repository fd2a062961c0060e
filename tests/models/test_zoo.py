"""Shared model tester (as smp's): every registered model builds, runs at odd sizes, backprops,
saves/loads bit-identically, and hits the parameter counts of the papers / released code."""

from __future__ import annotations

import json

import pytest
import torch

from napari_segattn.models import (
    CheckpointError,
    build_model,
    count_parameters,
    get_spec,
    list_models,
    load_model,
    record_attention,
    save_model,
)

# (name, config, exact count or None, (target, relative tolerance) or None)
PARAM_TABLE = [
    ("unet", {}, 3_129_248, None),
    ("wunet", {}, 12_506_944, None),
    ("d6unet", {}, 3_129_248, None),
    ("d9unet", {}, 3_129_248, None),
    ("aunet", {}, None, (3.16e6, 0.01)),
    ("cscunet", {}, None, (3.14e6, 0.01)),
    ("cbamunet", {}, None, (3.14e6, 0.01)),
    ("gcnunet", {}, None, (3.15e6, 0.01)),
    ("fpa", {}, None, (4.23e6, 0.02)),
    ("fanet", {}, 7_720_266, None),
    ("fanet", {"mixpool": "none"}, 5_756_818, None),
    ("brunet", {}, 690_315, None),
]

ALL = ["unet", "wunet", "d6unet", "d9unet", "aunet", "cscunet", "cbamunet", "gcnunet", "fpa", "rfna", "fanet", "fbunet", "brunet"]


def test_registry_lists_every_model_of_the_papers():
    assert set(ALL) <= set(list_models())


@pytest.mark.parametrize("name,config,exact,approx", PARAM_TABLE, ids=[f"{r[0]}{r[1] or ''}" for r in PARAM_TABLE])
def test_parameter_counts_match_the_papers(name, config, exact, approx):
    n = count_parameters(build_model(name, **config))
    if exact is not None:
        assert n == exact
    else:
        target, tol = approx
        assert abs(n - target) / target <= tol, f"{name}: {n:,} vs {target:,.0f}"


def _inputs(name: str, b: int, h: int, w: int):
    model = build_model(name)
    x = torch.randn(b, model.in_channels, h, w)
    extras = (torch.randint(0, 2, (b, 1, h, w)).float(),) if get_spec(name).takes_mask else ()
    return model, x, extras


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [(1, 100, 76), (2, 64, 64)])
def test_forward_keeps_input_size_at_odd_sizes(name, size):
    model, x, extras = _inputs(name, *size)
    model.eval()
    with torch.no_grad():
        y = model(x, *extras)
    assert y.shape == (size[0], model.out_channels, size[1], size[2])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL)
def test_backward_reaches_trainable_parameters(name):
    model, x, extras = _inputs(name, 2, 48, 40)
    model.train()
    model(x, *extras).pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    reached = {n for n, g in grads.items() if g is not None and torch.count_nonzero(g) > 0}
    missing = sorted(set(grads) - reached)
    # Parameters that provably get no gradient at initialisation, each for a stated reason:
    exempt = {
        # released MixPool threshold blocks its mask branch (spec 2.1, D2)
        "fanet": lambda n: ".fmask" in n or "mask_conv" in n or "fmask" in n,
        # SAGAN-style feedback scale starts at 0, so query/key/value get no gradient until it moves
        "fbunet": lambda n: n.startswith("feedback.") and "gamma" not in n and "scale" not in n,
        # released CBAM MLPs have 2-8 hidden ReLU units; all can start switched off at default init
        "cbamunet": lambda n: ".mlp." in n,
    }.get(name, lambda n: False)
    assert not [n for n in missing if not exempt(n)], f"no gradient reaches {missing[:5]}"
    assert len(reached) > 0.7 * len(grads)


def test_wrong_channel_count_is_a_clear_error():
    model = build_model("unet")
    with pytest.raises(ValueError, match="4 input channel"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["unet", "fpa", "fanet", "brunet"])
def test_save_load_round_trip_is_identical(tmp_path, name):
    model, x, extras = _inputs(name, 1, 40, 40)
    model.eval()
    path = save_model(model, tmp_path / f"{name}.safetensors", normalization={"mode": "zscore"}, class_names=["bg", "fg"])
    loaded = load_model(path).eval()
    with torch.no_grad():
        assert torch.equal(model(x, *extras), loaded(x, *extras))
    assert loaded.segattn_normalization == {"mode": "zscore"}
    assert loaded.segattn_class_names == ["bg", "fg"]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["model"] == name and sidecar["package_version"]


def test_corrupted_file_is_named(tmp_path):
    path = save_model(build_model("unet"), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    path.write_bytes(raw[:8] + b"garbage{" + raw[16:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path), metadata={"framework": "someone-else"})
    with pytest.raises(CheckpointError, match="not a napari-segattn model"):
        load_model(path)


def test_config_that_does_not_match_weights_is_refused(tmp_path):
    path = save_model(build_model("unet"), tmp_path / "m.safetensors")
    # Rewrite the embedded config to claim a wider network than the weights hold.
    from safetensors.torch import load_file, save_file

    meta = json.loads(path.with_suffix(".json").read_text())
    meta["model"] = "wunet"
    meta["config"]["width"] = 64
    save_file(load_file(str(path)), str(path), metadata={"segattn_config": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_model(path)


def test_save_refuses_non_safetensors_suffix(tmp_path):
    with pytest.raises(ValueError, match=".safetensors"):
        save_model(build_model("unet"), tmp_path / "m.pt")


@pytest.mark.parametrize("name", ["fpa", "rfna", "aunet", "cbamunet", "fanet", "fbunet"])
def test_attention_maps_are_exposed_only_while_recording(name):
    model, x, extras = _inputs(name, 1, 64, 64)
    model.eval()
    with torch.no_grad(), record_attention(model) as rec:
        model(x, *extras)
    assert len(rec) >= 1
    for key, a in rec.items():
        assert a.ndim == 4 and a.shape[0] == 1 and torch.isfinite(a).all(), key
    # nothing kept outside a recording
    with torch.no_grad():
        model(x, *extras)
    assert all(getattr(m, "last_attention", None) is None for m in model.modules())


def test_cli_models_json_lists_counts(capsys):
    from napari_segattn.cli import main

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["unet"]["parameters"] == 3_129_248
    assert rows["fanet"]["parameters"] == 7_720_266
    assert set(ALL) <= set(rows)


def test_saved_model_files_get_the_umasks_permissions(tmp_path):
    """The atomic write (mkstemp, then rename) made every model file 0600 whatever the umask,
    so colleagues could not read a shared model (found in a new-user trial)."""
    import os
    import stat

    from napari_segattn.models import build_model, save_model

    old = os.umask(0o022)
    try:
        path = save_model(build_model("unet", in_channels=1, width=4), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
