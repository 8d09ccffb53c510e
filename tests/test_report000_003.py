"""Report 000 (RAovSeg preprocessing, geometry, Model 7's selection) and report 003 (3D augmentation)
as the reports describe them; hand-computed numbers throughout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medseg_core import preprocessing as pp
from medseg_core.io import Volume

ROOT = Path(__file__).resolve().parents[1]


def _vol(arr, spacing=(6.0, 0.7, 0.7)):
    aff = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    return Volume(np.asarray(arr, np.float32), spacing, aff, modality="MR")


# ----------------------------------------------------------------------------- percentile clip
def test_clip_slice_wise_differs_from_volume_wise_on_one_bright_slice():
    base = np.arange(16, dtype=np.float32).reshape(4, 4)  # 0 .. 15
    x = np.stack([base, base, base + 1000])  # slice 2 is bright
    # 0th / 100th percentiles = min / max, so the numbers are exact by hand
    vol = pp.percentile_clip(x, 0, 100, scope="volume")  # one range 0 .. 1015
    sl = pp.percentile_clip(x, 0, 100, scope="slice")  # a range per slice: 0..15, 0..15, 1000..1015
    assert vol[0, 0, 1] == pytest.approx(1 / 1015)
    assert sl[0, 0, 1] == pytest.approx(1 / 15)
    assert sl[2, 0, 1] == pytest.approx(1 / 15)  # the bright slice is rescaled on its own
    assert vol[2, 0, 0] == pytest.approx(1000 / 1015)
    # default 1 / 99 percentiles: per slice as numpy computes them
    lo, hi = np.percentile(x[1], [1, 99])
    sl = pp.percentile_clip(x, scope="slice")
    assert sl[1, 2, 2] == pytest.approx((x[1, 2, 2] - lo) / (hi - lo), rel=1e-5)


def test_raovseg_default_stays_volume_wise_for_old_cards():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (3, 16, 16)).astype(np.float32)
    x[2] += 500
    assert np.array_equal(pp.raovseg(x), pp.raovseg(x, clip_scope="volume"))
    assert not np.allclose(pp.raovseg(x), pp.raovseg(x, clip_scope="slice"))
    with pytest.raises(ValueError):
        pp.percentile_clip(x, scope="patient")


def test_sharp_variant_is_raovseg_plus_unsharp_with_its_params():
    rng = np.random.default_rng(1)
    x = rng.normal(100, 20, (2, 16, 16)).astype(np.float32)
    want = pp.unsharp(pp.raovseg(x, clip_scope="slice"), sigma_px=1.5, amount=0.5)
    got = pp.preprocess("raovseg_sharp", x, clip_scope="slice", sigma_px=1.5, amount=0.5)
    assert np.array_equal(got, want)


# ----------------------------------------------------------------------------- geometry
def test_resampling_gives_035_mm_and_the_expected_shape():
    v = _vol(np.ones((2, 100, 80)), spacing=(6.0, 0.7, 0.5))
    g = pp.plan_geometry(v, inplane_mm=0.35, crop="none")
    # 100 * 0.7 / 0.35 = 200 rows; 80 * 0.5 / 0.35 = 114.3 -> 114 columns
    assert g.resampled_shape == (200, 114)
    w = g.volume(v)
    assert w.shape == (2, 200, 114)
    assert w.spacing[1] == pytest.approx(0.35)
    assert w.spacing[2] == pytest.approx(80 * 0.5 / 114)  # 0.3509 mm: the nearest whole pixel count
    assert w.spacing[0] == 6.0


def test_crop_keeps_the_pelvis_box():
    a = np.zeros((3, 100, 100), np.float32)
    a[:, 20:60, 30:90] = 100.0  # the "pelvis": rows 20..59, columns 30..89
    v = _vol(a, spacing=(6.0, 0.35, 0.35))  # already on the 0.35 mm grid
    g = pp.plan_geometry(v, inplane_mm=0.35, crop="body", margin_mm=0.0, square=False)
    assert g.box == (20, 60, 30, 90)
    g = pp.plan_geometry(v, inplane_mm=0.35, crop="body", margin_mm=3.5, square=False)  # 3.5 mm = 10 px
    assert g.box == (10, 70, 20, 100)
    g = pp.plan_geometry(v, inplane_mm=0.35, crop="body", margin_mm=0.0, square=True)
    assert g.box == (10, 70, 30, 90)  # 40 rows widened to 60 about the centre
    out = g.forward(a)
    assert out.shape == (3, 60, 60) and out.sum() == a.sum()  # nothing of the pelvis is lost


def test_geometry_inverse_and_world_coordinates():
    rng = np.random.default_rng(2)
    a = rng.random((2, 64, 64)).astype(np.float32)
    a[:, :8] = 0
    m = np.zeros(a.shape, np.uint8)
    m[:, 30:40, 20:28] = 1
    v = _vol(a + 0.1 * (a > 0), spacing=(6.0, 0.7, 0.7))
    g = pp.plan_geometry(v)  # 0.35 mm: exactly twice as many pixels
    assert g.resampled_shape == (128, 128)
    back = g.inverse(g.forward(m, order=0), order=0) > 0.5
    assert np.array_equal(back, m > 0)
    w = g.volume(v)
    # a voxel of the new grid sits where the input grid puts it: new (z, y, x) <-> input index
    y0, _, x0, _ = g.box
    z, y, x = 1, 17, 23
    assert np.allclose(
        w.index_to_world(z, y, x), v.index_to_world(z, (y + y0 + 0.5) / 2 - 0.5, (x + x0 + 0.5) / 2 - 0.5)
    )


def test_predict_repeats_the_card_geometry_and_returns_the_input_grid():
    from medseg_core.checkpoints import LoadedModel
    from medseg_core.inference import PredictOptions, predict
    from medseg_core.models import build_model, get_spec

    a = np.zeros((2, 64, 64), np.float32)
    a[:, 16:48, 12:52] = 50.0 + np.random.default_rng(3).random((2, 32, 40)) * 10
    v = _vol(a)
    spec = replace(get_spec("ovary_unet"), geometry={"inplane_mm": 0.35, "crop": "body", "margin_mm": 0.0})
    torch.manual_seed(0)
    lm = LoadedModel(spec, build_model("ovary_unet", "demo").eval(), {}, "cpu", (32, 32))
    p = predict(lm, v, PredictOptions(postprocessing=()))
    assert p.probability.shape == v.shape
    # outside the pelvis box (rows 0..15 at most, once the square box is placed) nothing was predicted
    g = pp.plan_geometry(v, **spec.geometry)
    y0 = max(g.box[0], 0) // 2  # the box on the input grid (0.7 mm = 2 px of 0.35 mm)
    assert y0 >= 10 and float(p.probability[:, : y0 - 1].max()) == 0.0
    assert float(p.probability[:, 20:40, 20:40].min()) > 0.0


def test_card_records_geometry_and_old_cards_have_none():
    from medseg_core import cards
    from medseg_core.models import get_spec

    spec = get_spec("ovary_attention_unet")
    geo = {"inplane_mm": 0.35, "crop": "body", "margin_mm": 10.0}
    card = cards.new_card("x", cards.recipe_from_spec(spec, "demo", geometry=geo))
    assert cards.spec_from_card(card).geometry == geo
    old = cards.new_card("y", cards.recipe_from_spec(spec, "demo"))
    old["recipe"].pop("geometry")
    assert cards.spec_from_card(old).geometry == {}


# ----------------------------------------------------------------------------- Model 7's selection
class _Case:
    def __init__(self, vol, mask, pid):
        self.vol, self.mask, self.patient_id, self.case_id, self.extra = vol, mask, pid, pid, {}

    def load(self):
        return self.vol, {"ovary": self.mask}


def _m7_cfg(select_on):
    from medseg_core.train import DEFAULTS, _merge

    cfg = _merge(
        DEFAULTS,
        {
            "model": "ovary_attention_unet",
            "preprocessing": "none",
            "side_masking_train": "oracle",
            "data": {"positive_slices_only": True},
            "train": {"select_on": select_on},
        },
    )
    return cfg


def test_model7_is_selected_on_original_validation_images():
    from medseg_core.models import get_spec
    from medseg_core.train import prepare_2d

    a = np.ones((1, 32, 32), np.float32)
    m = np.zeros((1, 32, 32), np.uint8)
    m[0, 10:14, 4:8] = 1  # one ovary on one side of the image
    case = _Case(_vol(a), m, "p0")
    spec = get_spec("ovary_attention_unet")
    val = prepare_2d([case], spec, _m7_cfg("original"), (32, 32), training=False)["x"]
    tr = prepare_2d([case], spec, _m7_cfg("original"), (32, 32), training=True)["x"]
    val_masked = prepare_2d([case], spec, _m7_cfg("masked"), (32, 32), training=False)["x"]
    assert val.sum() == 32 * 32  # original images: nothing zeroed
    assert tr.sum() == 32 * 16  # training images: the other half is zero
    assert val_masked.sum() == 32 * 16


# ----------------------------------------------------------------------------- report 003 augmentation
def test_3d_flips_and_rotations_keep_image_and_label_aligned():
    from medseg_core.train import augment_3d

    y = torch.zeros(4, 1, 24, 24, 24)
    y[:, :, 6:14, 5:19, 8:12] = 1  # an asymmetric block
    x = y * 10.0
    gen = torch.Generator().manual_seed(0)
    xa, ya = augment_3d(x.clone(), y.clone(), {"flip": True, "flip_axes": ["x", "y"], "rotate_deg": 15}, gen)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0}  # the label stays a label (nearest)
    moved = 0
    for i in range(4):
        img = xa[i, 0] > 5  # bilinear image thresholded half-way
        lab = ya[i, 0] > 0
        dice = 2 * (img & lab).sum() / (img.sum() + lab.sum())
        assert dice > 0.9, dice
        moved += int(not torch.equal(ya[i], y[i]))
    assert moved == 4  # every sample was rotated (uniform angles are never all zero)
    # flips alone: exact, and only about the named axes
    gen = torch.Generator().manual_seed(1)
    xf, yf = augment_3d(x.clone(), y.clone(), {"flip": True, "flip_axes": ["x"], "rotate_deg": 0}, gen)
    assert torch.equal(xf, yf * 10.0)
    for i in range(4):
        assert torch.equal(yf[i], y[i]) or torch.equal(yf[i], y[i].flip(-1))


# ----------------------------------------------------------------------------- configs and rows
def test_configs_say_what_the_reports_say():
    from medseg_core.train import load_config

    for name in ("unet3d", "vnet3d", "unetr3d"):
        c = load_config(ROOT / f"configs/reproduce/003_{name}.yaml")
        assert c["data"]["split"]["counts"] == [28, 8, 5]
        assert c["augment"]["flip"] is True and c["augment"]["rotate_deg"] == 15
        assert c["optim"]["scheduler"] == {"name": "step", "step_size": 10, "gamma": 0.5}
        assert 0.1 in [v for v in c["overrides"].values() if not isinstance(v, list)] + sum(
            [v for v in c["overrides"].values() if isinstance(v, list)], []
        )
    m7 = load_config(ROOT / "configs/reproduce/000_m7.yaml")
    assert m7["side_masking_train"] == "oracle" and m7["train"]["select_on"] == "original"
    for k in ("m3", "m4", "m5", "m7", "tl5"):
        c = load_config(ROOT / f"configs/reproduce/000_{k}.yaml")
        assert c["preprocessing"] == "raovseg_sharp" and c["preprocessing_params"]["clip_scope"] == "slice"
        assert c["geometry"]["inplane_mm"] == 0.35 and c["geometry"]["crop"] == "body"
    assert load_config(ROOT / "configs/reproduce/000_tl5.yaml")["encoder_weights"] is None


def test_rows_hold_every_number_of_the_tables():
    t0 = yaml.safe_load((ROOT / "configs/reproduce/rows/000.yaml").read_text())
    table1 = {(r["config"], r.get("options", {}).get("side_masking", "none")): r["value"] for r in t0["rows"]}
    assert len(t0["rows"]) == 14
    assert table1[("000_tl5", "none")] == 0.365 and table1[("000_tl5", "oracle")] == 0.420
    assert table1[("000_m7", "oracle")] == 0.354
    t3 = yaml.safe_load((ROOT / "configs/reproduce/rows/003.yaml").read_text())
    assert len(t3["rows"]) == 18
    got = {(r["config"], r["metric"]): r["value"] for r in t3["rows"]}
    assert got[("003_unetr3d", "hd95_mm")] == 4.673 and got[("003_vnet3d", "dice")] == 0.215


def test_models_page_words_for_encoder_weights():
    from medseg_core.review import RANDOM_INIT, pretrained_words

    assert pretrained_words({"pretrained": {"encoder": "random init"}}) == RANDOM_INIT
    w = pretrained_words(
        {
            "pretrained": {
                "encoder": "resnet34.safetensors",
                "sha256": "ab" * 32,
                "tensors_loaded": 180,
                "encoder_tensors": 180,
            }
        }
    )
    assert "resnet34.safetensors" in w and "abababababab" in w and "180 of 180" in w
    assert pretrained_words({}).startswith("not recorded")
