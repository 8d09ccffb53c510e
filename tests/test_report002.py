"""Report 002 (GI tract MRI, UW-Madison): its Dice loss term and Dice metric, the weighted sampler,
dropping unlabelled slices, the stratified split, training phases with encoder freezing, the
augmentation pipeline, the from-scratch CNN family, and a two-phase training run end to end."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from medseg_core import losses as L
from medseg_core import metrics as M
from medseg_core import train_features as TF
from medseg_core.data import datasets as D


# ----------------------------------------------------------------------------- loss
def _hand_tensors():
    """2 samples x 2 channels x 2 x 2 pixels, logits 0 (p = 0.5 everywhere); channel 0 has one
    positive pixel (sample 0), channel 1 none."""
    logits = torch.zeros(2, 2, 2, 2)
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0, 0] = 1
    return logits, target


def test_report002_dice_loss_is_smp_multilabel_not_per_sample():
    """The report's Dice term is smp's DiceLoss(mode='multilabel'): per channel over the whole batch,
    channels with no reference pixel set to 0. By hand: channel 0: I = 0.5, sum p + sum g = 8 x 0.5 + 1
    = 5, score 2 x 0.5 / 5 = 0.2, loss 0.8; channel 1: masked to 0; mean 0.4. The per-sample term
    (smooth 1e-5) gives (1 - 1/3 + 1 + 1 + 1) / 4 = 0.9167 on the same tensors."""
    from segmentation_models_pytorch.losses import DiceLoss

    logits, target = _hand_tensors()
    smp_value = float(DiceLoss(mode="multilabel")(logits, target))
    ours = float(L.SmpMultilabelDiceLoss()(logits, target))
    assert smp_value == pytest.approx(0.4, abs=1e-6)
    assert ours == pytest.approx(smp_value, abs=1e-7)
    per_sample = float(L.SoftDiceLoss()(logits, target))
    assert per_sample == pytest.approx((1 - (1 + 1e-5) / (3 + 1e-5) + 3 * (1 - 1e-5 / (2 + 1e-5))) / 4, abs=1e-6)
    assert per_sample == pytest.approx(0.9167, abs=1e-4)
    # the compound loss with the report's term: 0.4 x 0.4 + 0.6 x BCE(logit 0) = 0.16 + 0.6 ln 2
    comp = float(L.CompoundLoss(0.4, 0.6, dice="report002")(logits, target))
    assert comp == pytest.approx(0.16 + 0.6 * math.log(2), abs=1e-6)
    assert float(L.CompoundLoss(0.4, 0.6)(logits, target)) == pytest.approx(
        0.4 * per_sample + 0.6 * math.log(2), abs=1e-6
    )


def test_report002_dice_loss_matches_numpy_on_random_tensors():
    """On random multilabel tensors (one channel empty in the whole batch) the report's term equals a
    numpy computation of smp's formula and differs from the per-sample soft Dice."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, generator=g) * 2
    target = (torch.rand(4, 3, 16, 16, generator=g) > 0.7).float()
    target[:, 2] = 0  # organ absent from every slice of the batch
    target[1, 0] = 0  # and from one slice only
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    t = target.numpy().astype(np.float64)
    inter = (p * t).sum(axis=(0, 2, 3))
    den = p.sum(axis=(0, 2, 3)) + t.sum(axis=(0, 2, 3))
    loss_c = (1 - 2 * inter / np.maximum(den, 1e-7)) * (t.sum(axis=(0, 2, 3)) > 0)
    expected = loss_c.mean()
    ours = float(L.LOSSES["compound"](dice="report002").dice(logits, target))
    assert ours == pytest.approx(expected, rel=1e-5)
    assert abs(ours - float(L.SoftDiceLoss()(logits, target))) > 0.1
    with pytest.raises(ValueError):
        L.CompoundLoss(dice="nonsense")


# ----------------------------------------------------------------------------- metric
def test_dice_report002_by_hand():
    """Channel 0: prediction {(0,0), (1,0)} vs reference {(0,0), (0,1)}: (2 x 1 + 0.001) / (4 + 0.001);
    channel 1 both empty: 1; a false positive on an empty reference: 0.001 / 1.001."""
    probs = np.zeros((2, 2, 2, 2), np.float32)
    ref = np.zeros((2, 2, 2, 2), np.float32)
    probs[0, 0] = [[0.9, 0.2], [0.6, 0.5]]  # 0.5 is not > 0.5
    ref[0, 0] = [[1, 1], [0, 0]]
    probs[1, 1, 0, 0] = 0.7  # slice 1: one false-positive pixel in channel 1
    d = M.dice_report002(probs, ref, reduction="none")
    assert d.shape == (2, 2)
    assert d[0, 0] == pytest.approx(2.001 / 4.001)
    assert d[0, 1] == 1.0 and d[1, 0] == 1.0
    assert d[1, 1] == pytest.approx(0.001 / 1.001)
    assert M.dice_report002(probs, ref) == pytest.approx((2.001 / 4.001 + 2 + 0.001 / 1.001) / 4)
    assert math.isnan(M.dice(probs[0, 1] > 0.5, ref[0, 1]))  # medseg's own Dice: both empty is undefined
    # tensors and one (C, H, W) slice work too
    assert M.dice_report002(torch.from_numpy(probs[0]), torch.from_numpy(ref[0])) == pytest.approx(
        (2.001 / 4.001 + 1) / 2
    )


# ----------------------------------------------------------------------------- sampler
def test_organ_combination_weights_by_hand():
    y = np.zeros((5, 3, 4, 4), np.uint8)
    y[0, 0, 0, 0] = 1  # large bowel only       -> code 1
    y[1, 0, 1, 1] = 1  # large bowel only       -> 1
    y[2, 0, 0, 0] = y[2, 2, 3, 3] = 1  # large bowel + stomach  -> 1 + 4 = 5
    y[3, 0, 2, 2] = 1  # large bowel only       -> 1
    y[4, 1, 0, 0] = 1  # small bowel only       -> 2
    codes = TF.organ_combination_codes(y)
    assert codes.tolist() == [1, 1, 5, 1, 2]
    w = TF.organ_combination_weights(codes)
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1 / 3, 1.0])
    order = TF.sampler_order(w, seed=0, num_samples=30000)
    share = np.bincount(codes[order], minlength=6)[[1, 2, 5]] / len(order)
    assert share == pytest.approx([1 / 3] * 3, abs=0.015)  # each combination drawn equally often
    assert len(TF.sampler_order(w, seed=0)) == 5
    assert TF.epoch_order({"train": {"sampler": "uniform"}}, {"y": y}, 0, 0) is None


# ----------------------------------------------------------------------------- data
def _gi_dataset(tmp_path, n=8, blank=(2,)):
    """A synthetic UW-Madison dataset with the slices in ``blank`` made unlabelled."""
    from medseg_core.data.make_synthetic import write_gi

    root = tmp_path / "gi"
    root.mkdir()
    write_gi(root, n, seed=3)
    rows = list(csv.DictReader(open(root / "train.csv")))
    ids = sorted({r["id"] for r in rows})
    for r in rows:
        if ids.index(r["id"]) in blank:
            r["segmentation"] = ""
    with open(root / "train.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["id", "class", "segmentation"])
        wr.writeheader()
        wr.writerows(rows)
    return root, ids


def test_drop_unlabelled_and_organ_combination(tmp_path):
    root, ids = _gi_dataset(tmp_path, n=8, blank=(2, 5))
    cases = D.uw_madison_gi(root)
    assert len(cases) == 8
    kept = D.drop_unlabelled(cases)
    assert len(kept) == 6 and {c.case_id for c in cases} - {c.case_id for c in kept} == {ids[2], ids[5]}
    for c in cases:  # the RLE-derived combination agrees with the decoded masks
        _, masks = c.load()
        assert c.extra["organ_combination"] == "_".join(k for k in D.GI_CLASSES if masks[k].any())
    from medseg_core.train import load_cases

    cfg = {
        "data": {
            "adapter": "uw_madison_gi",
            "root": str(root),
            "synthetic": None,
            "drop_unlabelled": True,
            "max_cases": None,
        }
    }
    assert len(load_cases(cfg)) == 6


def test_stratified_split_keeps_each_stratum_share():
    cases = [
        D.Case(f"s{i}", "p1", None, extra={"organ_combination": k})
        for i, k in enumerate(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    ]
    sp = D.stratified_split(cases, (0.8, 0.1, 0.1), seed=1)
    for part, want in (("train", (40, 24, 16)), ("val", (5, 3, 2)), ("test", (5, 3, 2))):
        got = tuple(sum(c.extra["organ_combination"] == k for c in sp[part]) for k in "abc")
        assert got == want, part
    ids = [c.case_id for part in sp.values() for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases)  # a partition
    assert D.stratified_split(cases, (0.8, 0.1, 0.1), seed=1) == sp  # seeded
    assert D.stratified_split(cases, (0.8, 0.1, 0.1), seed=2)["val"] != sp["val"]
    from medseg_core.train import split_cases

    cfg = {"data": {"split": {"fractions": [0.8, 0.1, 0.1], "stratify": "organ_combination", "seed": 1}}}
    assert split_cases(cases, cfg) == sp
    small = D.stratified_split(cases[:4], (0.8, 0.1, 0.1))  # a smoke run's few slices: every part non-empty
    assert [len(small[k]) for k in ("train", "val", "test")] == [2, 1, 1]


# ----------------------------------------------------------------------------- freezing
def _unetpp_demo():
    from medseg_core.models import build_model

    torch.manual_seed(0)
    return build_model("gi_unetpp_effb3", "demo")


def _step(model, phase):
    trainable = TF.apply_freeze(model, phase)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=1e-2, momentum=0.9)
    model.train()
    x = torch.randn(2, 1, 64, 64)
    y = (torch.rand(2, 3, 64, 64) > 0.5).float()
    loss = L.CompoundLoss(dice="report002")(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    return trainable, changed


def test_freeze_encoder_then_unfreeze_last_conv():
    model = _unetpp_demo()
    name, conv = TF.encoder_last_conv(model)
    assert name == "encoder._blocks.25._project_conv" and conv.out_channels == 384
    trainable, changed = _step(model, {"freeze": "encoder"})
    assert not any(k.startswith("encoder.") for k in trainable)
    assert not any(k.startswith("encoder.") for k in changed)  # the encoder's weights did not move
    assert any(k.startswith("decoder.") for k in changed)
    trainable, changed = _step(model, {"freeze": "encoder", "unfreeze": "encoder_last"})
    assert [k for k in trainable if k.startswith("encoder.")] == ["encoder._blocks.25._project_conv.weight"]
    assert {k for k in changed if k.startswith("encoder.")} == {"encoder._blocks.25._project_conv.weight"}
    # the conv listed last, _conv_head, is not on smp's encoder path: unfreezing it changes nothing
    _, changed = _step(model, {"freeze": "encoder", "unfreeze": "encoder._conv_head"})
    assert not any(k.startswith("encoder.") for k in changed)
    assert model.encoder._conv_head.weight.grad is None


def test_phases_of_merges_optim():
    cfg = {
        "optim": {"name": "rmsprop", "lr": 5e-5, "momentum": 0.9, "scheduler": {"name": "cosine"}},
        "train": {
            "phases": [
                {"epochs": 10, "freeze": "encoder"},
                {"name": "last", "epochs": 5, "optim": {"lr": 1e-6, "scheduler": {"name": "step"}}},
            ]
        },
    }
    ph = TF.phases_of(cfg)
    assert [p["name"] for p in ph] == ["phase1", "last"] and [p["epochs"] for p in ph] == [10, 5]
    assert [p["epochs"] for p in TF.phases_of({**cfg, "train": {**cfg["train"], "epochs": 1}})] == [1, 1]
    assert ph[0]["optim"]["lr"] == 5e-5 and ph[0]["optim"]["scheduler"] is None
    assert ph[1]["optim"] == {"name": "rmsprop", "lr": 1e-6, "momentum": 0.9, "scheduler": {"name": "step"}}


# ----------------------------------------------------------------------------- augmentation
def test_report002_augmentation_keeps_image_and_masks_aligned():
    img = np.zeros((1, 96, 96), np.float32)
    masks = np.zeros((3, 96, 96), np.float32)
    img[0, 20:50, 30:70] = 1.0
    masks[0, 20:50, 30:70] = 1
    masks[2, 60:80, 10:30] = 1
    img[0, 60:80, 10:30] = 1.0
    a = {**TF.REPORT002_AUGMENT, "noise_blur": {}}  # no intensity change: image == union of masks 0 and 2
    moved = 0
    for seed in range(12):
        for force in (
            {"shift_scale_rotate": {**a["shift_scale_rotate"], "p": 1.0}},
            {"distort": {**a["distort"], "p": 1.0}},
        ):
            xi, mi = TF.augment_one(img, masks, {**a, **force}, seed)
            assert xi.shape == img.shape and mi.shape == masks.shape
            union = np.maximum(mi[0], mi[2]) > 0.5
            assert ((xi[0] > 0.5) != union).mean() < 0.01  # same geometry for image and masks
            moved += not np.array_equal(mi, masks)
    assert moved >= 20  # and the transforms did move things
    xh, mh = TF.augment_one(img, masks, {"flip_mode": "horizontal", "flip_p": 1.0}, 0)
    assert np.array_equal(xh, img[:, :, ::-1]) and np.array_equal(mh, masks[:, :, ::-1])
    xb, mb = TF.augment_one(
        img,
        masks,
        {"noise_blur": {**TF.REPORT002_AUGMENT["noise_blur"], "p": 1.0, "noise_weight": 1.0, "blur_weight": 0.0}},
        0,
    )
    sd = float((xb - img).std())
    assert 0.01 / 255 < sd < 0.07 / 255  # variance 1e-4..4e-3 on the 0..255 scale
    assert np.array_equal(mb, masks)
    x, ys = TF.augment_report002(
        torch.from_numpy(np.stack([img, img])),
        [torch.from_numpy(np.stack([masks, masks]))],
        a,
        torch.Generator().manual_seed(0),
    )
    assert x.shape == (2, 1, 96, 96) and ys[0].shape == (2, 3, 96, 96)


# ----------------------------------------------------------------------------- models
def test_gi_scratch_family_shapes_and_the_reported_parameter_count():
    from medseg_core.models import build_model, get_spec, list_models
    from medseg_core.models.gi_scratch import VERSIONS, GIScratchCNN

    final = GIScratchCNN("final", in_channels=3)
    assert sum(p.numel() for p in final.parameters()) == 25_436_486  # report 002 section 3.1.4
    sizes = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: sizes.append((o.shape[1], o.shape[2])))
        for m in final.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    final.eval()
    with torch.no_grad():
        out = final(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 3, 224, 224)
    # the table's conv outputs: stem, 2 per encoder block, 2 per decoder block, the output layer
    table = (
        [(64, 224)] * 3
        + [(64, 112)] * 2
        + [(128, 56)] * 2
        + [(128, 28)] * 2
        + [(256, 14)] * 2
        + [(256, 7)] * 2
        + [(512, 4)] * 2
        + [(512, 2)] * 2
        + [(512, 2)] * 4
        + [(256, 7)] * 4
        + [(128, 28)] * 4
        + [(64, 112)] * 4
        + [(3, 224)]
    )
    assert sizes == table
    for v in VERSIONS:
        name = f"gi_scratch_{v}"
        assert name in list_models("gi") and get_spec(name).input_size == (224, 224)
        m = build_model(name, "demo").eval()
        with torch.no_grad():
            assert m(torch.randn(2, 1, 224, 224)).shape == (2, 3, 224, 224)
            assert m(torch.randn(1, 1, 128, 160)).shape == (1, 3, 128, 160)  # other sizes: resized at the joins


# ----------------------------------------------------------------------------- end to end
def test_two_phase_training_run(tmp_path):
    """The UNet++ config's recipe, tiny: two phases of one epoch (encoder frozen, then its last conv
    unfrozen), weighted sampler, report002 augmentation and loss, unlabelled slices dropped, stratified
    split recorded per case in the card."""
    from medseg_core.models import build_model
    from medseg_core.train import load_config, train

    root, ids = _gi_dataset(tmp_path, n=10, blank=(4,))
    cfg = load_config(
        "configs/reproduce/002_unetpp_effb3.yaml",
        [
            f"data.root={root}",
            "variant=demo",
            "input_size=[64,64]",
            "train.batch_size=2",
            "train.max_steps_per_epoch=2",
            "train.epochs=1",
            f"out={tmp_path / 'run'}",
            "evaluate_test=false",
        ],
    )
    torch.manual_seed(int(cfg["train"]["seed"]))
    init = build_model("gi_unetpp_effb3", "demo").encoder.state_dict()
    res = train(cfg)
    stages = [h["stage"] for h in res["history"]]
    assert stages == ["decoder", "encoder_last"]
    assert res["history"][1]["lr"] == pytest.approx(1e-6)
    assert "val_dice_report002" in res["history"][0]
    import json

    card = json.loads((tmp_path / "run" / "002_unetpp_effb3.json").read_text())
    sc = card["split_cases"]
    assert sum(len(v) for v in sc.values()) == 9 and ids[4] not in sum(sc.values(), [])
    assert card["epochs_run"] == 2
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "run" / "002_unetpp_effb3.safetensors"))
    enc = {k[len("encoder.") :]: v for k, v in w.items() if k.startswith("encoder.")}
    moved = [
        k
        for k, v in enc.items()
        if k in init
        and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        and not torch.equal(v.float(), init[k].float())
    ]
    assert set(moved) <= {"_blocks.25._project_conv.weight"}
