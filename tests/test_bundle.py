"""MONAI bundle import (medseg_core.bundle): a bundle in the published layout becomes a safetensors
checkpoint with a medseg.card/2 card that runs the network exactly as MONAI does; everything medseg
cannot reproduce, and anything that would run code, is refused with a sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_readable

from medseg_core.bundle import import_bundle, network_from_config
from medseg_core.checkpoints import CheckpointError, load_model
from medseg_core.data.synthetic import abdominal_ct
from medseg_core.inference import predict
from medseg_core.preprocessing import ct_window

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]

# spleen_ct_segmentation's configs (model zoo), the parts medseg reads, with the rest kept as published
SPLEEN_NET = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
    "norm": "batch",
}
SPLEEN_META = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.5.9",
    "name": "Spleen CT segmentation",
    "task": "Decathlon spleen segmentation",
    "description": "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
    "authors": "MONAI team",
    "data_source": "Task09_Spleen.tar from http://medicaldecathlon.com/",
    "intended_use": "This is an example, not to be used for diagnostic purposes",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [96, 96, 96],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [96, 96, 96],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "spleen"},
            }
        },
    },
}


def inference_config(
    net=SPLEEN_NET,
    pixdim=(1.5, 1.5, 2.0),
    window=(-57, 164, 0, 1),
    roi=(96, 96, 96),
    sw_batch_size=4,
    overlap=0.5,
    mode=None,
    extra_pre=(),
):
    a_min, a_max, b_min, b_max = window
    inferer = {
        "_target_": "SlidingWindowInferer",
        "roi_size": list(roi),
        "sw_batch_size": sw_batch_size,
        "overlap": overlap,
    }
    if mode:
        inferer["mode"] = mode
    return json.loads(
        json.dumps(
            {  # a fresh copy: tests change it
                "imports": ["$import glob", "$import os"],
                "bundle_root": ".",
                "output_dir": "$@bundle_root + '/eval'",
                "dataset_dir": "/workspace/data/Task09_Spleen",
                "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
                "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
                "network_def": net,
                "network": "$@network_def.to(@device)",
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "LoadImaged", "keys": "image"},
                        {"_target_": "EnsureChannelFirstd", "keys": "image"},
                        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                        {"_target_": "Spacingd", "keys": "image", "pixdim": list(pixdim), "mode": "bilinear"},
                        {
                            "_target_": "ScaleIntensityRanged",
                            "keys": "image",
                            "a_min": a_min,
                            "a_max": a_max,
                            "b_min": b_min,
                            "b_max": b_max,
                            "clip": True,
                        },
                        *extra_pre,
                        {"_target_": "EnsureTyped", "keys": "image"},
                    ],
                },
                "inferer": inferer,
                "postprocessing": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                        {
                            "_target_": "Invertd",
                            "keys": "pred",
                            "transform": "@preprocessing",
                            "orig_keys": "image",
                            "nearest_interp": False,
                            "to_tensor": True,
                        },
                        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                        {
                            "_target_": "SaveImaged",
                            "keys": "pred",
                            "output_dir": "@output_dir",
                            "output_postfix": "seg",
                        },
                    ],
                },
                "checkpointloader": {
                    "_target_": "CheckpointLoader",
                    "load_path": "$@bundle_root + '/models/model.pt'",
                    "load_dict": {"model": "@network"},
                },
                "run": ["$@evaluator.run()"],
            }
        )
    )


def spleen_net(seed=0, channels=(16, 32, 64, 128, 256)):
    """A real MONAI UNet with small random weights and non-trivial batch-norm statistics."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=channels,
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def write_bundle(folder: Path, weights=None, config=None, meta=None, fmt="json") -> Path:
    """A bundle folder in the published layout; ``weights``: a module (its state dict is saved with
    torch.save), any other object (saved as it is) or None (no models/model.pt)."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta or SPLEEN_META, indent=4))
    config = config or inference_config()
    if fmt == "yaml":
        import yaml

        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    if weights is not None:
        torch.save(
            weights.state_dict() if isinstance(weights, torch.nn.Module) else weights, folder / "models" / "model.pt"
        )
    return folder


@pytest.fixture(scope="module")
def spleen(tmp_path_factory):
    """(reference MONAI net, imported checkpoint path) for the spleen bundle."""
    tmp = tmp_path_factory.mktemp("spleen")
    net = spleen_net()
    bundle = write_bundle(tmp / "spleen_ct_segmentation", net)
    return net, import_bundle(bundle, tmp / "out")


def refused(bundle, out, *words) -> str:
    with pytest.raises(CheckpointError) as e:
        import_bundle(bundle, out)
    msg = str(e.value)
    assert_readable(msg)
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    assert not list(Path(out).glob("*")) if Path(out).exists() else True  # nothing written
    return msg


# ----------------------------------------------------------------------------- the recipe
def test_spleen_bundle_becomes_a_card_recipe(spleen):
    _, path = spleen
    assert path.name == "spleen_ct_segmentation.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    r = card["recipe"]
    assert card["schema"] == "medseg.card/2"
    assert r["target_spacing"] == [2.0, 1.5, 1.5]  # pixdim (x, y, z) = (1.5, 1.5, 2.0) reversed
    assert r["input_size"] == [96, 96, 96]
    assert r["preprocessing"] == {
        "name": "ct_window",
        "params": {"lo_hu": -57.0, "hi_hu": 164.0, "out_lo": 0.0, "out_hi": 1.0},
    }
    assert r["labels"] == ["spleen"]
    assert r["activation"] == "softmax" and r["threshold"] == 0.5
    assert r["sw_batch_size"] == 4 and r["sw_overlap"] == 0.5
    assert r["modalities"] == ["CT"] and r["dims"] == "3d" and r["mode"] == "sliding_window"
    assert r["postprocessing"] == []  # the bundle keeps every component (argmax only)
    arch = r["architecture"]
    assert arch["builder"] == "unet3d"
    assert arch["kwargs"]["norm"] == "batch" and arch["kwargs"]["channels"] == [16, 32, 64, 128, 256]
    assert arch["kwargs"]["act"] == "PRELU"  # MONAI's default, written out
    assert arch["kwargs"]["axis_order"] == "xyz"
    assert card["envelope"] is None  # the bundle does not describe its training images
    td = card["training_data"]
    assert td["source"] == "MONAI bundle" and td["bundle"] == "spleen_ct_segmentation" and td["version"] == "0.5.9"
    assert card["bundle"]["task"] == "Decathlon spleen segmentation"
    assert "Imported MONAI bundle" in card["notes"]
    assert "synthetic" not in card["notice"] and "MONAI bundle" in card["notice"]
    assert card["storage"] == "float32"


def test_loaded_network_is_monais(spleen):
    from monai.networks.nets import UNet

    ref, path = spleen
    lm = load_model(path)
    assert type(lm.module) is UNet
    got, want = lm.module.state_dict(), ref.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # the same image: MONAI's (x, y, z) tensor, and medseg's (z, y, x) one (non-cubic, so a mix-up shows)
    x = torch.randn(1, 1, 32, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = ref(x)
        ours = lm.module(x.permute(0, 1, 4, 3, 2).contiguous()).permute(0, 1, 4, 3, 2)
    torch.testing.assert_close(ours, expected)


def test_monai_ras_arrays_are_medseg_arrays_transposed(tmp_path):
    """Why axis_order is "xyz": MONAI's Orientationd(RAS) array is medseg's canonical array with its
    axes reversed (a file stored with permuted and flipped axes, read by both)."""
    import nibabel as nib
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation

    from medseg_core.io import load_volume

    data = np.random.default_rng(0).random((20, 24, 12)).astype(np.float32)
    aff = np.array([[0, -1.5, 0, 10], [-0.8, 0, 0, 20], [0, 0, 2.5, -5], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "x.nii.gz")
    monai_xyz = np.asarray(
        Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS")])(
            str(tmp_path / "x.nii.gz")
        )[0]
    )
    vol = load_volume(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(monai_xyz, vol.array.transpose(2, 1, 0))
    assert vol.spacing == pytest.approx((2.5, 0.8, 1.5))  # pixdim (x, y, z) = (1.5, 0.8, 2.5) reversed


def test_predict_equals_monai_inference(tmp_path):
    """The bundle's own pipeline in MONAI (Orientationd, Spacingd, ScaleIntensityRanged, sliding
    window, softmax) and medseg's predict of the imported checkpoint give the same spleen probability
    on a CT stored at the model's spacing (one window, so no resampling or blending difference)."""
    import nibabel as nib
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation, ScaleIntensityRange, Spacing

    from medseg_core.io import load_volume

    net = spleen_net(3)
    roi_xyz = (48, 64, 32)
    bundle = write_bundle(tmp_path / "b", net, inference_config(roi=roi_xyz, mode="gaussian"))
    lm = load_model(import_bundle(bundle, tmp_path / "out"))
    assert list(lm.size) == [32, 64, 48]
    ct = abdominal_ct(1, shape=(32, 64, 48), spacing=(2.0, 1.5, 1.5)).volume
    nib.save(nib.Nifti1Image(ct.array.transpose(2, 1, 0), ct.affine), tmp_path / "ct.nii.gz")
    pipeline = Compose(
        [
            LoadImage(image_only=True),
            EnsureChannelFirst(),
            Orientation(axcodes="RAS"),
            Spacing(pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
            ScaleIntensityRange(a_min=-57, a_max=164, b_min=0, b_max=1, clip=True),
        ]
    )
    img = pipeline(str(tmp_path / "ct.nii.gz"))
    assert tuple(img.shape[1:]) == roi_xyz
    with torch.inference_mode():
        logits = SlidingWindowInferer(roi_size=roi_xyz, sw_batch_size=4, overlap=0.5, mode="gaussian")(
            torch.as_tensor(np.asarray(img))[None], net
        )
    monai_p = torch.softmax(logits, 1)[0, 1].numpy()  # (x, y, z)
    pred = predict(lm, load_volume(tmp_path / "ct.nii.gz", modality="CT"))
    np.testing.assert_allclose(pred.probabilities["spleen"], monai_p.transpose(2, 1, 0), atol=1e-4)
    assert float(monai_p.std()) > 1e-3  # a map with structure, not a constant


def test_predict_runs_the_bundles_preprocessing(tmp_path, spleen):
    """Probe, not label: the same weights under another window give another map, and a window of
    -100..200 HU gives exactly what a 0..1 window gives on the image pre-windowed to -100..200."""
    ref, path = spleen
    lm_a = load_model(path)
    paths = {}
    for key, window in (("b", (-100, 200, 0, 1)), ("c", (0, 1, 0, 1))):
        bundle = write_bundle(tmp_path / f"bundle_{key}", ref, inference_config(window=window))
        paths[key] = import_bundle(bundle, tmp_path / "out")
    lm_b, lm_c = load_model(paths["b"]), load_model(paths["c"])
    assert lm_b.spec.preprocessing_params == {"lo_hu": -100.0, "hi_hu": 200.0, "out_lo": 0.0, "out_hi": 1.0}
    vol = abdominal_ct(0, shape=(24, 64, 64), spacing=(2.5, 1.5, 1.5)).volume
    pa = predict(lm_a, vol).probabilities["spleen"]
    pb = predict(lm_b, vol).probabilities["spleen"]
    assert pa.shape == vol.shape and np.isfinite(pa).all()
    assert float(np.abs(pa - pb).max()) > 1e-3
    pre = type(vol)(ct_window(vol.array, -100, 200, 0, 1), vol.spacing, vol.affine, modality="CT")
    pc = predict(lm_c, pre).probabilities["spleen"]
    np.testing.assert_allclose(pb, pc, atol=1e-6)


# ----------------------------------------------------------------------------- UNETR / VNet
def test_unetr_yaml_bundle_round_trip(tmp_path):
    """A UNETR bundle (YAML config, MONAI < 1.3's pos_embed, a non-cubic window) imports and runs."""
    from monai.networks.nets import UNETR

    torch.manual_seed(0)
    ref = UNETR(
        in_channels=1,
        out_channels=2,
        img_size=(32, 32, 48),
        feature_size=8,
        hidden_size=48,
        mlp_dim=96,
        num_heads=4,
        proj_type="perceptron",
        norm_name="instance",
    ).eval()
    net_def = {
        "_target_": "monai.networks.nets.UNETR",
        "in_channels": 1,
        "out_channels": 2,
        "img_size": "@roi",
        "feature_size": 8,
        "hidden_size": 48,
        "mlp_dim": 96,
        "num_heads": 4,
        "pos_embed": "perceptron",
        "norm_name": "instance",
    }
    cfg = inference_config(net=net_def, roi=(32, 32, 48), sw_batch_size=2, overlap=0.25)
    cfg["roi"] = [32, 32, 48]
    cfg["inferer"]["roi_size"] = "@roi"
    meta = json.loads(json.dumps(SPLEEN_META))
    meta["name"] = "Spleen UNETR"
    bundle = write_bundle(
        tmp_path / "spleen_unetr",
        {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}},
        cfg,
        meta,
        fmt="yaml",
    )
    path = import_bundle(bundle, tmp_path / "out", name="unetr_test")
    card = json.loads(path.with_suffix(".json").read_text())
    r = card["recipe"]
    assert r["architecture"]["builder"] == "unetr3d"
    assert r["architecture"]["kwargs"]["proj_type"] == "perceptron"
    assert r["input_size"] == [48, 32, 32] and card["bundle"]["config"] == "configs/inference.yaml"
    lm = load_model(path)
    assert type(lm.module) is UNETR
    x = torch.randn(1, 1, 32, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(lm.module(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2), ref(x))
    vol = abdominal_ct(2, shape=(20, 40, 40), spacing=(2.5, 1.5, 1.5)).volume
    p = predict(lm, vol)
    assert p.probabilities["spleen"].shape == vol.shape and np.isfinite(p.probabilities["spleen"]).all()


def test_vnet_network_def_maps_onto_monais_vnet():
    """VNet's kwargs (built without weights: MONAI's VNet is 45.6 M parameters, fixed width 16)."""
    from monai.networks.nets import VNet

    from medseg_core.models import build_model

    cfg = {
        "network_def": {
            "_target_": "VNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "dropout_prob": 0.2,
            "bias": True,
        }
    }
    cls, builder, kw = network_from_config(cfg)
    assert (cls, builder) == ("VNet", "vnet3d")
    assert kw["width"] == 16 and kw["dropout_prob_down"] == 0.2 and kw["bias"] is True
    assert kw["act"] == ["elu", {"inplace": True}] and kw["axis_order"] == "xyz" and "dropout_prob" not in kw
    ours = build_model("vnet3d", **kw)
    ref = VNet(spatial_dims=3, in_channels=1, out_channels=2, dropout_prob_down=0.2, bias=True)
    assert type(ours) is VNet and str(ours) == str(ref)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


# ----------------------------------------------------------------------------- refusals
class _Marker:
    """A pickle that runs a shell command when unpickled (what weights_only exists to stop)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def no_code_loading(monkeypatch):
    """Fail the test if anything loads TorchScript or unpickles without weights_only."""
    real = torch.load

    def guarded_load(*a, **k):
        assert k.get("weights_only") is True, "torch.load without weights_only=True"
        return real(*a, **k)

    def forbidden(*a, **k):
        raise AssertionError("TorchScript was loaded")

    monkeypatch.setattr(torch, "load", guarded_load)
    monkeypatch.setattr(torch.jit, "load", forbidden)


@pytest.mark.parametrize("where", ["model.ts", "model.pt"])
def test_torchscript_is_refused_unopened(tmp_path, monkeypatch, where):
    bundle = write_bundle(tmp_path / "b")
    torch.jit.script(torch.nn.Conv3d(1, 2, 3)).save(str(bundle / "models" / where))

    def forbidden(*a, **k):
        raise AssertionError("the TorchScript file was opened by a loader")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.jit, "load", forbidden)
    refused(bundle, tmp_path / "out", "TorchScript")


def test_model_ts_beside_a_state_dict_is_ignored(tmp_path, no_code_loading):
    """Published bundles ship models/model.ts too: the state dict is used and the program never opened."""
    net = spleen_net(channels=(4, 8, 16, 32, 64))
    cfg = inference_config(net={**SPLEEN_NET, "channels": [4, 8, 16, 32, 64]})
    bundle = write_bundle(tmp_path / "b", net, cfg)
    torch.jit.script(torch.nn.Conv3d(1, 2, 3)).save(str(bundle / "models" / "model.ts"))
    assert import_bundle(bundle, tmp_path / "out").exists()


def test_pickle_that_runs_code_is_refused(tmp_path, no_code_loading):
    marker = tmp_path / "pwned"
    bundle = write_bundle(tmp_path / "b", {"model": {"w": torch.zeros(1)}, "x": _Marker(marker)})
    refused(bundle, tmp_path / "out", "models/model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("target", ["SegResNet", "monai.networks.nets.SwinUNETR", "scripts.my_net.UNet"])
def test_other_networks_are_refused(tmp_path, target):
    net_def = {"_target_": target, "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    bundle = write_bundle(tmp_path / "b", spleen_net(channels=(4, 8, 16, 32, 64)), inference_config(net=net_def))
    msg = refused(bundle, tmp_path / "out", "UNet, UNETR and VNet")
    assert target in msg


def test_weights_that_do_not_fit_are_refused(tmp_path):
    small = spleen_net(channels=(8, 16, 32, 64, 128))  # the config says 16..256
    refused(write_bundle(tmp_path / "b", small), tmp_path / "out", "do not fit")


def test_missing_files_are_refused(tmp_path):
    refused(tmp_path / "nowhere", tmp_path / "out", "No MONAI bundle folder")
    b = write_bundle(tmp_path / "no_weights")
    refused(b, tmp_path / "out", "models/model.pt")
    (b / "configs" / "inference.json").unlink()
    refused(b, tmp_path / "out", "inference.json")
    (b / "configs" / "metadata.json").unlink()
    refused(b, tmp_path / "out", "metadata.json")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c["network_def"].update(channels="$[16, 32, 64, 128, 256]"), "Python expression"),
        (lambda c: c["network_def"].update(spatial_dims=2), "3D"),
        (
            lambda c: c["preprocessing"]["transforms"].insert(4, {"_target_": "NormalizeIntensityd", "keys": "image"}),
            "NormalizeIntensityd",
        ),
        (lambda c: c["preprocessing"]["transforms"][3].update(pixdim=[1.5, 1.5, -1]), "pixdim"),
        (lambda c: c["preprocessing"]["transforms"][2].update(axcodes="LPS"), "RAS"),
        (lambda c: c["preprocessing"]["transforms"][4].update(clip=False), "clip"),
        (lambda c: c["network_def"].update(out_channels=3), "output channels"),
        (lambda c: c.update(inferer={"_target_": "SimpleInferer"}), "sliding window"),
    ],
)
def test_what_medseg_cannot_reproduce_is_refused(tmp_path, change, words):
    cfg = inference_config()
    change(cfg)
    refused(write_bundle(tmp_path / "b", spleen_net(channels=(4, 8, 16, 32, 64)), cfg), tmp_path / "out", words)


def test_existing_checkpoint_is_not_replaced(tmp_path):
    net = spleen_net(channels=(4, 8, 16, 32, 64))
    bundle = write_bundle(tmp_path / "b", net, inference_config(net={**SPLEEN_NET, "channels": [4, 8, 16, 32, 64]}))
    from safetensors.torch import load_file

    first = import_bundle(bundle, tmp_path / "out")
    before = load_file(str(first))
    with pytest.raises(CheckpointError, match="exists already"):
        import_bundle(bundle, tmp_path / "out")
    after = load_file(str(import_bundle(bundle, tmp_path / "out", overwrite=True)))
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


# ----------------------------------------------------------------------------- the command
def test_command_imports_a_bundle(tmp_path, capsys):
    from medseg_core.checkpoints import main

    net = spleen_net(channels=(4, 8, 16, 32, 64))
    bundle = write_bundle(tmp_path / "b", net, inference_config(net={**SPLEEN_NET, "channels": [4, 8, 16, 32, 64]}))
    assert main(["import-bundle", str(bundle), "--out", str(tmp_path / "out"), "--name", "tiny_spleen"]) == 0
    assert (tmp_path / "out" / "tiny_spleen.safetensors").exists() and (tmp_path / "out" / "tiny_spleen.json").exists()
    assert "tiny_spleen.safetensors" in capsys.readouterr().out
    assert main(["import-bundle", str(bundle), "--out", str(tmp_path / "out"), "--name", "../x"]) == 2
    err = capsys.readouterr().err.strip()
    assert_readable(err) and "\n" not in err


def test_command_on_a_bad_folder_exits_2_with_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "medseg_core.checkpoints", "import-bundle", str(tmp_path / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert_readable(lines[0])
    assert "No MONAI bundle folder" in lines[0]
