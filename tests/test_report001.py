"""Report 001 reproduction pieces: the U-Net head pooling the last two encoder blocks, single-task and
8-class variants, the multiclass focal loss, the cascade's segmentation-only EfficientNet-B0 with Dice,
the denoiser applied to training inputs, the primary-data layout and the MMOTU configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg_core import losses as L
from medseg_core.models import build_model
from medseg_core.models.ultrasound import EffB0MultiTask, SegLogits, UNetMultiTask

CFG = "configs/reproduce"


def test_unet_head_pools_last_two_encoder_blocks():
    torch.manual_seed(0)
    m = UNetMultiTask(base=8, cls_pool="last_two").eval()
    x = torch.randn(2, 1, 64, 96)
    feats = m.encode(x)
    assert [f.shape[1] for f in feats[-2:]] == [64, 128]  # 8 base and 16 base
    pooled = m.pooled_features(feats)
    # 1x1 convs to 8 base (64) and 4 base (32): 96 features, as 512 + 256 = 768 at base 64
    assert pooled.shape == (2, 96)
    by_hand = torch.cat([m.pool_proj[0](feats[-1]).mean((2, 3)), m.pool_proj[1](feats[-2]).mean((2, 3))], 1)
    assert torch.allclose(pooled, by_hand, atol=1e-6)
    assert m.cls_head.head[0].in_features == 96 + 128  # + the clinical branch's 128
    # the paper variant pools 768 features; the bottleneck option (the shipped demo) pools 16 base
    paper = build_model("us_mtl_unet", "paper")
    assert paper.cls_head.head[0].in_features == 512 + 256 + 128
    assert UNetMultiTask(base=8).cls_head.head[0].in_features == 128 + 128


def test_shipped_unet_and_cascade_still_load():
    from medseg_core.checkpoints import load_model

    assert load_model("us_mtl_unet").module.cls_pool == "bottleneck"
    assert load_model("us_cascade").module.segmenter_kind == "unet"


def test_single_task_and_eight_class_outputs():
    x = torch.randn(2, 1, 64, 96)
    cls8 = EffB0MultiTask(n_classes=8, n_clinical=0, task="cls").eval()
    out = cls8(x)
    assert set(out) == {"cls"} and out["cls"].shape == (2, 8)
    assert not hasattr(cls8, "ups") and cls8.cls_head.clinical is None
    seg = UNetMultiTask(base=8, task="seg").eval()
    out = seg(x)
    assert set(out) == {"seg"} and out["seg"].shape == (2, 1, 64, 96)
    assert not hasattr(seg, "cls_head")
    with pytest.raises(ValueError):
        UNetMultiTask(base=8, task="both")


def test_multiclass_focal_loss_by_hand():
    # uniform logits over 8 classes: p_t = 1/8, loss = (7/8)^2 ln 8
    fl = L.MultiClassFocalLoss(gamma=2.0)
    assert float(fl(torch.zeros(3, 8), torch.tensor([0, 5, 7]))) == pytest.approx((7 / 8) ** 2 * math.log(8), rel=1e-6)
    # one sample, logits [2, 0, 0]: p_t = e^2 / (e^2 + 2)
    pt = math.exp(2) / (math.exp(2) + 2)
    assert float(fl(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))) == pytest.approx(
        -((1 - pt) ** 2) * math.log(pt), rel=1e-6
    )
    # gamma 0 is cross-entropy
    logits, y = torch.randn(5, 8), torch.randint(0, 8, (5,))
    assert float(L.MultiClassFocalLoss(0.0)(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    # cross-check with MONAI's FocalLoss (softmax, one-hot; it averages over N x C elements)
    from monai.losses import FocalLoss

    monai = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)(logits, y[:, None])
    assert float(L.MultiClassFocalLoss(2.0)(logits, y)) == pytest.approx(float(monai) * 8, rel=1e-5)


def test_multitask_loss_focal_and_single_task_terms():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:5] = 1
    seg, cls, y = torch.randn(2, 1, 8, 8), torch.zeros(2, 8), torch.tensor([1, 6])
    loss = L.MultiTaskLoss(cls_loss="focal", class_weights=None)
    dice = float(L.SoftDiceLoss()(seg, mask))
    focal = (7 / 8) ** 2 * math.log(8)
    assert float(loss({"seg": seg, "cls": cls}, mask, y)) == pytest.approx(0.3 * dice + focal, rel=1e-5)
    assert float(loss({"seg": seg}, mask, y)) == pytest.approx(0.3 * dice, rel=1e-5)
    assert float(loss({"cls": cls}, mask, y)) == pytest.approx(focal, rel=1e-5)


def test_cascade_segmenter_is_seg_only_effb0_with_dice():
    from medseg_core.train import cascade_seg_loss, load_config

    for name in ("001_dn_cascade", "001_dn_cascade_clinical"):
        cfg = load_config(f"{CFG}/{name}.yaml")
        m = build_model("us_cascade", cfg["variant"], **cfg["overrides"])
        assert isinstance(m.segmenter, SegLogits) and isinstance(m.segmenter.net, EffB0MultiTask)
        assert m.segmenter.net.task == "seg" and not hasattr(m.segmenter.net, "cls_head")
        assert isinstance(cascade_seg_loss(cfg), L.SoftDiceLoss)
        assert cfg["cascade"]["cls_select_by"] == "val_loss" and cfg["train"]["select_by"] == "val_loss"
        assert (m.classifier.head.clinical is None) == (name == "001_dn_cascade")
    logits = m.segmenter(torch.randn(1, 1, 64, 96))
    assert torch.is_tensor(logits) and logits.shape == (1, 1, 64, 96)
    # the shipped demo cascade keeps its compound loss
    assert isinstance(cascade_seg_loss(load_config("configs/demo/us_cascade.yaml")), L.CompoundLoss)


def test_mmotu_configs_have_no_clinical_inputs_and_eight_classes():
    from medseg_core.train import load_config

    names = [f"001_mmotu_{dn}{t}_{f}" for dn in ("", "dn_") for t in ("seg", "cls", "mtl") for f in ("unet", "effb0")]
    for name in names:
        cfg = load_config(f"{CFG}/{name}.yaml")
        assert cfg["overrides"]["n_clinical"] == 0 and cfg["overrides"]["n_classes"] == 8
        assert cfg["data"]["label_key"] == "class_id" and cfg["data"]["split"]["counts"] == [1000, 236, 233]
        assert cfg["optim"]["name"] == "sgd" and cfg["optim"]["momentum"] == 0.9
        assert cfg["loss"]["params"]["cls_loss"] == "focal"
        assert ("denoiser" in cfg) == ("_dn_" in name)
    m = build_model("us_mtl_effb0", "paper", **load_config(f"{CFG}/001_mmotu_mtl_effb0.yaml")["overrides"])
    assert m.cls_head.clinical is None and m.cls_head.head[-1].out_features == 8


@pytest.fixture(scope="module")
def us_data(tmp_path_factory):
    from medseg_core.data.make_synthetic import write_us

    root = tmp_path_factory.mktemp("us")
    write_us(root, 4, seed=5)
    return root


def test_primary_layout_and_class_ids(us_data):
    from medseg_core.data.datasets import mmotu, us_primary

    prim = us_primary(us_data)
    assert len(prim) == 4 and len({c.patient_id for c in prim}) == 2  # two images per patient
    mm = {c.case_id: c for c in mmotu(us_data)}
    for c in prim:
        assert c.extra["malignant"] == int(mm[c.case_id].extra["class_id"] == 7)
        assert set(c.extra) >= {"menopausal", "oncology_center"}


def test_denoiser_applied_to_training_inputs(us_data):
    """Probe: prepare_2d with ``denoiser`` feeds exactly the denoiser's output (then minmax), not the image."""
    from medseg_core.data.datasets import mmotu
    from medseg_core.denoise import apply_denoiser
    from medseg_core.models import get_spec
    from medseg_core.preprocessing import SliceResize, preprocess
    from medseg_core.train import DEFAULTS, _merge, prepare_2d

    cases = mmotu(us_data)[:2]
    cfg = _merge(DEFAULTS, {"model": "us_mtl_effb0", "data": {"adapter": "mmotu", "label_key": "class_id"}})
    spec = get_spec("us_mtl_effb0")
    plain = prepare_2d(cases, spec, cfg, (64, 96), True)
    den = prepare_2d(cases, spec, _merge(cfg, {"denoiser": "us_denoiser"}), (64, 96), True)
    assert den["label"].tolist() == [c.extra["class_id"] for c in cases]
    vol, _ = cases[0].load()
    cleaned = apply_denoiser(vol, "us_denoiser")
    assert cleaned.meta["annotation_removed"] == "us_denoiser"
    want = SliceResize(vol.shape[-2:], (64, 96)).forward(preprocess("minmax", cleaned.array))
    np.testing.assert_allclose(den["x"][0, 0], want[0], atol=1e-5)
    assert np.abs(den["x"][0] - plain["x"][0]).mean() > 1e-3
