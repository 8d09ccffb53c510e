"""Issue 20 item 3: training on MONAI components. Foreground/background 3D patches
(RandCropByPosNegLabeld), image and label maps moved together by the dictionary transforms, seeded
runs that repeat, and train() as a short sequence of named steps."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from medseg_core import train as T
from medseg_core import train_transforms as TT


# ----------------------------------------------------------------------------- 3D patches
def _organ_at_one_end(gap: int = 8):
    """(1, 16, 16, 64): the organ fills x < 12; air (image 0) for 12 <= x < 12 + gap; tissue
    (image 1) beyond. A patch of 8^3 centred on tissue reaches x >= 12 + gap - 4."""
    img = np.ones((1, 16, 16, 64), np.float32)
    lab = np.zeros_like(img)
    lab[..., :12] = 1
    img[..., 12 : 12 + gap] = 0.0
    return img, lab


def test_negative_crops_hold_no_foreground_and_positive_crops_are_centred_on_it():
    img, lab = _organ_at_one_end()
    src = TT.crop_sources([(img, lab)], (8, 8, 8), {"pos": 1, "neg": 1, "image_threshold": 0.0})
    xs, ys = TT.sample_crops(src, 40, seed=3, crop={"pos": 1, "neg": 1})
    assert xs.shape == ys.shape == (40, 1, 8, 8, 8)
    centre = ys[:, 0, 4, 4, 4]  # MONAI crops [c - 4, c + 4): index 4 is the chosen centre
    pos, neg = centre == 1, centre == 0
    assert pos.sum() >= 10 and neg.sum() >= 10  # both kinds, pos:neg 1:1
    assert (ys[neg].reshape(neg.sum(), -1).sum(1) == 0).all()  # negatives: background only
    assert (xs[neg][:, 0, 4, 4, 4] > 0).all()  # centred on tissue (image > image_threshold 0)
    assert (ys[pos].reshape(pos.sum(), -1).sum(1) > 0).all()
    # without the image threshold every label-0 voxel is a candidate: some centres land in the air
    src = TT.crop_sources([(img, lab)], (8, 8, 8), {"image_threshold": None})
    xs, ys = TT.sample_crops(src, 40, seed=3)
    neg = ys[:, 0, 4, 4, 4] == 0
    assert (xs[neg][:, 0, 4, 4, 4] == 0).any()
    assert (ys[neg][:, 0, 4, 4, 4] == 0).all()  # ... but still never on the organ


def test_positive_share_follows_pos_neg_and_centres_follow_the_label():
    """A ball in a 32^3 volume (more than half a patch from every border, so MONAI never moves a
    centre): every patch centre is on the ball (positive) or off it (negative), and the positive
    share over 400 patches is pos / (pos + neg) = 0.75 within 4 binomial standard deviations."""
    zz, yy, xx = np.mgrid[:32, :32, :32]
    lab = (((zz - 16) ** 2 + (yy - 15) ** 2 + (xx - 17) ** 2) <= 25).astype(np.float32)[None]
    img = np.full_like(lab, 0.5)
    crop = {"pos": 3, "neg": 1, "image_threshold": 0.0}
    xs, ys = TT.sample_crops(TT.crop_sources([(img, lab)], (8, 8, 8), crop), 400, seed=0, crop=crop)
    share = float((ys[:, 0, 4, 4, 4] == 1).mean())
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 400), share
    # the same seed repeats the same patches; another seed gives others
    again = TT.sample_crops(TT.crop_sources([(img, lab)], (8, 8, 8), crop), 400, seed=0, crop=crop)[1]
    other = TT.sample_crops(TT.crop_sources([(img, lab)], (8, 8, 8), crop), 400, seed=1, crop=crop)[1]
    assert np.array_equal(ys, again) and not np.array_equal(ys, other)


def test_small_volumes_are_zero_padded_at_the_end():
    img = np.ones((1, 5, 6, 7), np.float32)
    lab = np.zeros_like(img)
    lab[0, 2, 3, 3] = 1
    xs, ys = TT.sample_crops(TT.crop_sources([(img, lab)], (8, 8, 8)), 4, seed=0)
    assert xs.shape == (4, 1, 8, 8, 8)
    assert xs[:, 0, :5, :6, :7].min() == 1 and xs[:, 0, 5:].max() == 0 and ys.sum() == 4  # the voxel in every one


# ----------------------------------------------------------------------------- alignment
def _centroid(a: torch.Tensor) -> torch.Tensor:
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in a.shape], indexing="ij"))
    return (idx * a).reshape(len(a.shape), -1).sum(1) / a.sum()


def test_2d_marker_moves_with_every_label_map():
    x = torch.zeros(6, 1, 48, 48)
    x[:, :, 14:19, 29:34] = 1.0  # an off-centre 5 x 5 marker
    y = torch.cat([x, torch.zeros_like(x)], 1)  # label channel 0 = the marker, channel 1 empty
    ne = x.clone()
    a = {"flip": True, "vflip": True, "rotate_deg": 30, "translate": 0.1, "intensity": 0.0}
    xa, (ya, na) = T.augment_2d(x, [y, ne], a, torch.Generator().manual_seed(0))
    assert xa.shape == x.shape and ya.shape == y.shape and type(xa) is torch.Tensor
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0} and ya[:, 1].sum() == 0
    moved = 0
    for i in range(6):
        ci, cl = _centroid(xa[i, 0]), _centroid(ya[i, 0])
        assert torch.allclose(ci, cl, atol=0.5), (ci, cl)
        assert torch.equal(na[i], ya[i, :1])  # non_expert moved exactly as y
        moved += int(not torch.allclose(cl, _centroid(x[i, 0]), atol=0.5))
    assert moved == 6  # rotation/translation never all zero
    # flips alone are exact and only left-right
    xf, (yf,) = T.augment_2d(x, [y], {"flip": True}, torch.Generator().manual_seed(1))
    assert torch.equal(xf, yf[:, :1])
    flipped = [torch.equal(xf[i], x[i].flip(-1)) for i in range(6)]
    assert all(f or torch.equal(xf[i], x[i]) for i, f in enumerate(flipped)) and 0 < sum(flipped) < 6


def test_2d_intensity_jitter_is_scale_then_std_shift():
    """RandScaleIntensityd then RandStdShiftIntensityd with factors j: x (1 + s) + t std(x (1 + s)),
    s, t in [-j, j]; the labels untouched."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16) + 1.0
    y = (torch.rand(4, 1, 16, 16) > 0.5).float()
    xa, (ya,) = T.augment_2d(x, [y], {"intensity": 0.2}, g)
    assert torch.equal(ya, y)
    for i in range(4):
        a, b = x[i].flatten(), xa[i].flatten()
        k = torch.linalg.lstsq(torch.stack([a, torch.ones_like(a)], 1), b[:, None]).solution[:, 0]
        scale, shift = float(k[0]), float(k[1])
        assert abs(scale - 1) <= 0.2 + 1e-4
        assert abs(shift) <= 0.2 * float((x[i] * scale).std(unbiased=False)) + 1e-4


def test_3d_marker_moves_with_the_label():
    x = torch.zeros(4, 1, 24, 24, 24)
    x[:, :, 6:11, 13:18, 8:13] = 1.0
    y = x.clone()
    a = {"flip": True, "flip_axes": ["z", "y", "x"], "rotate_deg": 20, "rotate90": 1.0}
    xa, ya = T.augment_3d(x * 10, y, a, torch.Generator().manual_seed(2))
    for i in range(4):
        assert torch.allclose(_centroid(xa[i, 0]), _centroid(ya[i, 0]), atol=0.5)
        assert not torch.allclose(_centroid(ya[i, 0]), _centroid(y[i, 0]), atol=0.5)
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- reproducible runs
def _cfg(tmp, data_root, out, seed=0, epochs=1):
    raw = {
        "model": "ovary_unet",
        "overrides": {"base": 4},
        "input_size": [32, 32],
        "name": "tiny",
        "data": {
            "adapter": "ut_endomri_d2",
            "root": str(data_root),
            "synthetic": {"kind": "pelvic", "n": 4, "seed": 5},
            "split": {"fractions": [0.5, 0.25, 0.25], "seed": 0},
            "positive_slices_only": True,
        },
        "loss": {"name": "focal_tversky"},
        "augment": {"flip": True, "vflip": True, "rotate_deg": 15, "translate": 0.05, "intensity": 0.1},
        "train": {
            "epochs": epochs,
            "batch_size": 4,
            "patience": 5,
            "select_by": "val_dice",
            "seed": seed,
            "max_steps_per_epoch": 2,
        },
        "out": str(tmp / out),
        "evaluate_test": False,
    }
    return T._merge(T.DEFAULTS, raw)


def _weights(path):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if k.startswith("model.") or "." in k}


@pytest.fixture(scope="module")
def pelvic4(tmp_path_factory):
    return tmp_path_factory.mktemp("pelvic4")


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_repeats_the_epoch(tmp_path, pelvic4):
    """Two 2-epoch runs with one seed end with identical weights; another seed does not; a run
    stopped after epoch 1 and resumed ends where the uninterrupted one did (order, crops and
    augmentation are seeded per epoch; ovary_unet has no dropout)."""
    T.train(_cfg(tmp_path, pelvic4, "a", epochs=2))
    T.train(_cfg(tmp_path, pelvic4, "b", epochs=2))
    T.train(_cfg(tmp_path, pelvic4, "c", seed=1, epochs=2))
    a, b, c = (_weights(tmp_path / k / "tiny_last.safetensors") for k in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k in c)
    T.train(_cfg(tmp_path, pelvic4, "r", epochs=1))
    T.train(_cfg(tmp_path, pelvic4, "r", epochs=2), resume=str(tmp_path / "r" / "tiny_last.safetensors"))
    r = _weights(tmp_path / "r" / "tiny_last.safetensors")
    assert all(torch.equal(a[k], r[k]) for k in a if k.startswith("model."))


def test_3d_epoch_samples_repeat_per_seed_rank_and_epoch():
    img, lab = _organ_at_one_end()
    src = TT.crop_sources([(img, lab)], (8, 8, 8))
    s = [TT.seed_of(0, r, e, TT.SALT_CROP) for r, e in ((0, 0), (0, 0), (0, 1), (1, 0))]
    ys = [TT.sample_crops(src, 6, k)[1] for k in s]
    assert s[0] == s[1] and len(set(s[1:])) == 3
    assert np.array_equal(ys[0], ys[1])
    g = [torch.Generator().manual_seed(k) for k in (5, 5)]
    x = torch.from_numpy(TT.sample_crops(src, 6, s[0])[0])
    a = {"flip": True, "rotate_deg": 15}
    assert torch.equal(
        T.augment_3d(x, torch.from_numpy(ys[0]), a, g[0])[1], T.augment_3d(x, torch.from_numpy(ys[0]), a, g[1])[1]
    )


# ----------------------------------------------------------------------------- structure
def test_train_is_a_short_sequence_of_typed_steps():
    src = inspect.getsource(T.train)
    assert len(src.splitlines()) < 60
    for step in (
        "setup_run",
        "split_data",
        "build_training_model",
        "prepare_data",
        "plan_stages",
        "build_stage",
        "resume_stage",
        "run_stage",
        "run_epoch",
        "validate_epoch",
        "select_best",
        "write_card",
    ):
        assert callable(getattr(T, step)), step
        assert (
            step in inspect.getsource(T.train)
            or step in inspect.getsource(T.run_stage)
            or step in inspect.getsource(T.run_epoch)
        ), step
    for cls in (T.RunSetup, T.TrainingData, T.TrainingModel, T.StagePlan, T.Stage, T.Best, T.StageState):
        assert dataclasses.is_dataclass(cls)
    assert "locals()" not in inspect.getsource(T)


def test_select_best_keeps_the_rule_of_better():
    """select_best on the shipped cascade classifier's log (AUC, val loss): epoch 8 is kept (ties
    go to the lower loss), its weights and metrics are the ones held."""
    net = torch.nn.Linear(1, 1)
    best, d = T.Best(), T.Dist()
    log = [
        (0.21, 0.92),
        (0.40, 1.46),
        (1.0, 2.33),
        (0.5, 6.44),
        (1.0, 0.129),
        (0.0, 9.11),
        (1.0, 0.0164),
        (1.0, 0.0093),
    ]
    kept = []
    for epoch, (auc, loss) in enumerate(log):
        with torch.no_grad():
            net.weight.fill_(epoch)
        if T.select_best(best, {"val_auc": auc, "val_loss": loss}, "val_auc", epoch, net, d):
            kept.append(epoch + 1)
    assert kept == [1, 2, 3, 5, 7, 8]
    assert best.metrics["best_epoch"] == 8 and best.score == 1.0 and best.loss == 0.0093
    assert float(best.state["weight"]) == 7.0
    assert not T.select_best(best, {}, "val_auc", 8, net, d)  # an unvalidated epoch never wins
    assert T.select_best(best, {"val_loss": 9.0}, "last", 9, net, d)  # select_by last: every validated epoch
