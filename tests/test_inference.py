"""predict(), uncertainty and checkpoint loading."""

from __future__ import annotations

import gzip
import itertools
import pickle
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medseg_core import metrics as M
from medseg_core import uncertainty as U
from medseg_core.checkpoints import CheckpointError, LoadedModel, load_model, save_checkpoint
from medseg_core.inference import PredictOptions, predict
from medseg_core.io import InputError, Volume, load_volume
from medseg_core.models import build_model, get_spec, list_models

torch.set_num_threads(2)


def vol(shape, spacing=(1.0, 1.0, 1.0), modality="MR", seed=0):
    rng = np.random.default_rng(seed)
    sz, sy, sx = spacing
    return Volume(rng.random(shape).astype(np.float32) * 100, spacing, np.diag([sx, sy, sz, 1.0]), modality=modality)


TINY = {  # name -> (overrides, model input size, volume shape, spacing, modality)
    "unet3d": ({}, (32, 32, 32), (20, 40, 36), (2.0, 1.5, 1.5), "CT"),
    "vnet3d": ({}, (32, 32, 32), (16, 32, 32), (2.0, 1.5, 1.5), "CT"),
    "unetr3d": ({"img_size": (32, 32, 32)}, (32, 32, 32), (16, 32, 32), (2.0, 1.5, 1.5), "CT"),
    "ovary_unet": ({}, (64, 64), (3, 50, 40), (6.0, 0.7, 0.7), "MR"),
    "ovary_attention_unet": ({}, (64, 64), (3, 50, 40), (6.0, 0.7, 0.7), "MR"),
    "ovary_tl5": ({}, (64, 64), (3, 50, 40), (6.0, 0.7, 0.7), "MR"),
    "ovary_slice_classifier": ({}, (64, 64), (3, 50, 40), (6.0, 0.7, 0.7), "MR"),
    "us_mtl_effb0": ({}, (64, 96), (1, 60, 80), (1.0, 0.2, 0.2), "US"),
    "us_mtl_unet": ({}, (64, 96), (1, 60, 80), (1.0, 0.2, 0.2), "US"),
    "us_cascade": ({"crop_size": 64}, (64, 96), (1, 60, 80), (1.0, 0.2, 0.2), "US"),
    "us_denoiser": ({}, (64, 96), (1, 60, 80), (1.0, 0.2, 0.2), "US"),
    "gi_unetpp_effb3": ({}, (64, 64), (2, 70, 70), (1.0, 1.5, 1.5), "MR"),
    "prostate_microus": ({}, (64, 64), (2, 50, 50), (1.0, 0.03, 0.03), "US"),
    "prostate_transunet": ({}, (64, 64), (2, 50, 50), (1.0, 0.03, 0.03), "US"),
    **{
        f"gi_scratch_{v}": (
            {},
            (64, 64) if v in ("simple", "bn_dropout") else (128, 128),
            (2, 70, 70),
            (1.0, 1.5, 1.5),
            "MR",
        )
        for v in ("simple", "bn_dropout", "residual", "final")
    },
}
CLIN = PredictOptions(menopausal=1, oncology_center=0)


def tiny(name, seed=0):
    over, size, *_ = TINY[name]
    torch.manual_seed(seed)
    return LoadedModel(get_spec(name), build_model(name, "demo", **over).eval(), {}, "cpu", size)


def test_every_model_has_a_tiny_case():
    assert set(TINY) == set(list_models())


@pytest.mark.parametrize("name", sorted(TINY))
def test_predict_every_model_on_input_grid(name):
    _, _, shape, spacing, mod = TINY[name]
    v = vol(shape, spacing, mod)
    calls = []
    p = predict(tiny(name), v, CLIN, progress=lambda f, m: calls.append(f))
    spec = get_spec(name)
    assert calls[-1] == 1.0 and all(b >= a for a, b in itertools.pairwise(calls))
    assert p.shape == v.shape and np.array_equal(p.affine, v.affine)
    for label, prob in p.probabilities.items():
        assert prob.shape == v.shape and prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
        assert p.masks[label].shape == v.shape and p.masks[label].dtype == np.uint8
    if spec.task == "segmentation":
        assert list(p.probabilities) == list(spec.labels)
    if spec.task == "segmentation+classification":
        assert p.class_probabilities.shape == (2,) and abs(p.class_probabilities.sum() - 1) < 1e-5
        assert isinstance(p.malignant, bool)
    if spec.task == "classification":
        assert p.slice_probabilities.shape == (shape[0],)
    if spec.task == "restoration":
        assert p.restored.shape == v.shape
    assert p.timings["total_s"] > 0 and "model_s" in p.timings


# ------------------------------------------------------------------ alignment
class Threshold2D(nn.Module):
    """Exact probe: logit = 40 (x - 0.5) on min-max scaled input."""

    def forward(self, x):
        return 40 * (x - 0.5)


class Threshold3D(nn.Module):
    def forward(self, x):
        fg = 40 * (x - 0.5)
        return torch.cat([-fg, fg], 1)


def nifti_volume(data_xyz, affine):
    return load_volume(gzip.compress(nib.Nifti1Image(data_xyz, affine).to_bytes()), filename="case.nii.gz")


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([0.7, 0.9, 5.0, 1.0]),  # anisotropic RAS
        np.array([[-0.7, 0, 0, 20], [0, 0.9, 0, -3], [0, 0, -5, 7], [0, 0, 0, 1.0]]),  # flipped x and z
        np.array([[0, 0.8, 0, 0], [-1.1, 0, 0, 0], [0, 0, 4, 0], [0, 0, 0, 1.0]]),  # axes permuted
    ],
)
def test_2d_prediction_aligns_with_input(affine):
    data = np.zeros((45, 38, 6), np.float32)
    data[10:22, 5:30, 1:4] = 100.0  # bright block, off-centre
    data[30:40, 20:25, 2:6] = 100.0
    v = nifti_volume(data, affine)
    lm = LoadedModel(get_spec("ovary_unet"), Threshold2D(), {}, "cpu", (64, 64))
    p = predict(lm, v, PredictOptions(preprocessing="minmax"))
    truth = (v.array > 50).astype(np.uint8)
    assert p.mask.shape == v.shape
    assert M.dice(p.mask, truth) > 0.97
    # same world position: centroids agree within half a voxel
    c_pred = v.index_to_world(*np.argwhere(p.mask).mean(0))
    c_true = v.index_to_world(*np.argwhere(truth).mean(0))
    assert np.abs(c_pred - c_true).max() < 0.5 * max(v.spacing)


def test_3d_prediction_resampled_back_onto_input_grid():
    data = np.zeros((60, 50, 24), np.float32)
    data[8:30, 10:40, 5:15] = 300.0
    aff = np.array([[-0.8, 0, 0, 10], [0, 1.0, 0, 0], [0, 0, 3.0, -20], [0, 0, 0, 1.0]])
    v = nifti_volume(data, aff)
    v.modality = "CT"
    lm = LoadedModel(get_spec("unet3d"), Threshold3D(), {}, "cpu", (32, 32, 32))
    p = predict(lm, v, PredictOptions(preprocessing="minmax", postprocessing=()))
    truth = (v.array > 150).astype(np.uint8)
    assert p.mask.shape == v.shape
    assert M.dice(p.mask, truth) > 0.93
    c_pred = v.index_to_world(*np.argwhere(p.mask).mean(0))
    c_true = v.index_to_world(*np.argwhere(truth).mean(0))
    assert np.abs(c_pred - c_true).max() < 1.0


# ------------------------------------------------------------------ uncertainty
def test_mc_prefix_equals_naive_full_passes():
    m = build_model("ovary_unet", "demo").eval()
    x = torch.randn(2, 1, 32, 32)
    a = U.mc_samples_prefix(m, x, 5, seed=3)
    b = U.mc_samples_naive(lambda t: torch.sigmoid(m(t)), m, x, 5, seed=3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (a.std(0) > 0).any()  # dropout really is on: samples differ
    assert m.training is False and all(not d.training for d in U.dropout_layers(m))


def test_mc_mode_keeps_batchnorm_in_eval():
    m = build_model("ovary_unet", "demo")
    with U.mc_dropout_mode(m):
        bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
        assert bns and not any(b.training for b in bns)
        assert all(d.training for d in U.dropout_layers(m))


def test_mc_dropout_predict_maps_and_determinism():
    v = vol((3, 50, 40), (6.0, 0.7, 0.7))
    lm = tiny("ovary_unet")
    o = PredictOptions(mc_samples=6, seed=11)
    p1, p2 = predict(lm, v, o), predict(lm, v, o)
    np.testing.assert_array_equal(p1.uncertainty_maps["entropy"], p2.uncertainty_maps["entropy"])
    u = p1.uncertainty_maps
    assert p1.uncertainty_method == "mc_dropout"
    assert 0 <= u["mean"].min() and u["mean"].max() <= 1
    assert (u["mutual_information"] >= 0).all() and (u["mutual_information"] <= u["entropy"] + 1e-6).all()
    assert u["entropy"].max() <= U.LN2 + 1e-6 and u["variance"].max() > 0
    np.testing.assert_allclose(p1.probability, u["mean"], atol=1e-5)
    p3 = predict(lm, v, replace(o, seed=12))
    assert not np.array_equal(p3.uncertainty_maps["variance"], u["variance"])
    assert len(p1.uncertainty_scores["per_slice"]) == 3


def test_mc_refused_without_dropout():
    v = vol((2, 70, 70), (1.0, 1.5, 1.5))
    with pytest.raises(InputError) as e:
        predict(tiny("gi_unetpp_effb3"), v, PredictOptions(mc_samples=5))
    assert "no dropout" in str(e.value)


def test_mc_3d_full_passes_and_tta():
    _, _, shape, spacing, mod = TINY["unet3d"]
    v = vol(shape, spacing, mod)
    p = predict(tiny("unet3d"), v, PredictOptions(mc_samples=3))
    assert p.uncertainty_maps["variance"].max() > 0 and p.uncertainty_maps["entropy"].shape == v.shape
    q = predict(tiny("unet3d"), v, PredictOptions(tta=True))
    assert q.uncertainty_method == "tta" and q.uncertainty_maps["entropy"].shape == v.shape
    r = predict(tiny("ovary_tl5"), vol((2, 50, 40), (6, 0.7, 0.7)), PredictOptions(tta=True))
    assert r.uncertainty_method == "tta" and (r.uncertainty_maps["mutual_information"] >= 0).all()


def test_summarise_by_hand():
    s = np.array([[0.2], [0.8]], np.float32)
    u = U.summarise(s)
    assert u["mean"][0] == pytest.approx(0.5) and u["entropy"][0] == pytest.approx(np.log(2), rel=1e-5)
    h = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8))
    assert u["mutual_information"][0] == pytest.approx(np.log(2) - h, rel=1e-4)
    assert u["variance"][0] == pytest.approx(0.09, rel=1e-5)


# ------------------------------------------------------------------ contract errors
def test_contract_errors_are_clear():
    with pytest.raises(InputError, match="expects CT"):
        predict(tiny("unet3d"), vol((20, 40, 36), modality="MR"))
    with pytest.raises(InputError, match="3D volume"):
        predict(tiny("unet3d"), vol((1, 40, 36), modality="CT"))
    with pytest.raises(InputError, match="clinical"):
        predict(tiny("us_mtl_effb0"), vol((1, 60, 80), modality="US"))
    with pytest.raises(InputError, match="ground-truth"):
        predict(tiny("ovary_unet"), vol((3, 50, 40)), PredictOptions(side_masking="oracle"))


def test_memory_budget_refuses_huge_volume(monkeypatch):
    monkeypatch.setenv("MEDSEG_PREDICT_MEMORY_GB", "0.001")
    with pytest.raises(InputError, match="GB"):
        predict(tiny("ovary_unet"), vol((30, 256, 256)))


# ------------------------------------------------------------------ side masking in predict
def test_two_pass_returns_per_side_masks_and_confidence():
    data = np.zeros((3, 40, 60), np.float32)
    data[:, 10:20, 5:15] = 100  # patient left (low x in RAS)
    data[:, 10:20, 45:55] = 100  # patient right
    v = Volume(data, (6, 1, 1), np.eye(4), modality="MR")
    lm = LoadedModel(get_spec("ovary_unet"), Threshold2D(), {}, "cpu", (64, 64))
    p = predict(lm, v, PredictOptions(preprocessing="minmax", side_masking="two_pass"))
    L, R = p.sides["left"].mask, p.sides["right"].mask
    assert L[:, :, :30].sum() > 0 and L[:, :, 30:].sum() == 0
    assert R[:, :, 30:].sum() > 0 and R[:, :, :30].sum() == 0
    assert p.sides["left"].confidence > 0.9
    single = predict(lm, v, PredictOptions(preprocessing="minmax", side_masking="right"))
    assert single.mask[:, :, :30].sum() == 0 and single.mask[:, :, 30:].sum() > 0
    ref = np.zeros(v.shape, np.uint8)
    ref[:, 12, 8] = 1
    oracle = predict(lm, v, PredictOptions(preprocessing="minmax", side_masking="oracle"), reference=ref)
    assert oracle.mask[:, :, 30:].sum() == 0 and oracle.side_info["sides"] == ["left"] * 3


def test_postprocessing_reports_removed():
    data = np.zeros((2, 40, 40), np.float32)
    data[:, 5:20, 5:20] = 100
    data[:, 30:33, 30:33] = 100
    v = Volume(data, (6, 1, 1), np.eye(4), modality="MR")
    lm = LoadedModel(get_spec("ovary_unet"), Threshold2D(), {}, "cpu", (40, 40))
    p = predict(lm, v, PredictOptions(preprocessing="minmax", postprocessing=("largest_2d",)))
    assert p.removed["ovary"][:, 30:33, 30:33].all() and p.mask[:, 30:33, 30:33].sum() == 0
    assert p.masks_before_postprocessing["ovary"][:, 30:33, 30:33].all()


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_tamper(tmp_path):
    m = build_model("ovary_unet", "demo").eval()
    save_checkpoint(m, "ovary_unet", {"variant": "demo", "overrides": {}, "input_size": [64, 64]}, tmp_path, fp16=False)
    lm = load_model("ovary_unet", directory=tmp_path)
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(lm.module(x), m(x))
    assert lm.size == (64, 64)
    from medseg_core.checkpoints import checkpoint_status

    assert checkpoint_status("ovary_unet", tmp_path) == "ok"
    raw = bytearray((tmp_path / "ovary_unet.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / "ovary_unet.safetensors").write_bytes(bytes(raw))
    assert "SHA-256" in checkpoint_status("ovary_unet", tmp_path)  # the memoised status sees it too
    with pytest.raises(CheckpointError) as e:
        load_model("ovary_unet", directory=tmp_path)
    assert "ovary_unet.safetensors" in str(e.value) and "SHA-256" in str(e.value)


def test_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model("vnet3d", directory=tmp_path)
    assert "vnet3d.safetensors" in str(e.value)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    _Evil.marker = marker
    (tmp_path / "ovary_unet.pt").write_bytes(pickle.dumps(_Evil()))
    m = build_model("ovary_unet", "demo")
    save_checkpoint(m, "ovary_unet", {"variant": "demo"}, tmp_path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model("ovary_unet", directory=tmp_path)
    assert not marker.exists()


def test_fp16_storage_keeps_out_of_range_tensors_in_float32(tmp_path):
    """Batch-norm variances of HU inputs can exceed float16's range: those stay float32 on disk."""
    import torch
    from safetensors.torch import load_file

    from medseg_core.checkpoints import save_checkpoint

    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    m[1].running_var.fill_(1.2e5)
    save_checkpoint(m, "bn", {"model": "unet3d"}, directory=tmp_path, fp16=True)
    state = load_file(str(tmp_path / "bn.safetensors"))
    assert state["0.weight"].dtype == torch.float16
    assert state["1.running_var"].dtype == torch.float32 and float(state["1.running_var"].max()) == 1.2e5
