"""Training augmentation and 3D patch sampling with MONAI dictionary transforms (issue 20 item 3).

:mod:`medseg_core.train` calls these; they replace the hand-written flips, affine grids and
"anywhere" crops it had. Every geometric transform moves the image and every label map of a sample
(``y``, MicroSegNet's ``non_expert``) with the same draw: bilinear for the image, nearest for the
labels, zeros outside, the same size (as the code they replace).

2D (:func:`augment_2d`, ``augment:`` keys), per slice, in this order:

* ``flip``: ``RandFlipd(spatial_axis=1, prob=0.5)`` (left-right, the last axis);
* ``vflip``: ``RandFlipd(spatial_axis=0, prob=0.5)`` (up-down);
* ``rotate_deg`` / ``translate``: ``RandAffined(prob=1)`` with a rotation uniform in
  +-``rotate_deg`` and a shift uniform in +-``translate`` x the image size per axis (pixels);
* ``intensity`` j (image only): ``RandScaleIntensityd(factors=j, prob=1)`` (x (1 + U(-j, j))) then
  ``RandStdShiftIntensityd(factors=j, prob=1)`` (+ U(-j, j) x the slice's standard deviation; the
  old code used the batch's).

3D patches (:func:`crop_sources`, :func:`sample_crops`; config ``crop:``, ``samples_per_volume``,
``roi``), the pipeline of MONAI's spleen tutorial and of report 003's public code (methods.md §3:
RandCropByPosNegLabel 96^3, pos 1, neg 1, 4 samples):

* ``SpatialPadd(roi, method="end")``: a volume smaller than the patch is zero-padded at the end;
* ``FgBgToIndicesd`` once per volume (MONAI's way of caching the candidate centres): foreground =
  label > 0; background = label == 0 **and** image > ``crop.image_threshold`` (default 0.0, the
  tutorial's ``image_key="image", image_threshold=0``: on the 0..1 CT window that leaves out air
  and everything below -57 HU, and the zero padding); ``image_threshold: null`` takes every
  label-0 voxel;
* ``RandCropByPosNegLabeld(pos=crop.pos, neg=crop.neg, num_samples=samples_per_volume)`` each
  epoch: a patch is centred on a foreground voxel with probability pos / (pos + neg), else on a
  background voxel, so a "negative" patch is centred on background (the old code took it anywhere,
  foreground included); MONAI moves a centre inward only as far as the patch must stay inside the
  volume. A volume with no foreground gives background patches only (MONAI warns). nnU-Net's
  sampler (a third of the patches forced onto foreground, the rest anywhere) is not used.

3D augmentation (:func:`augment_3d`, per patch; report 003 section III.B "random flipping,
rotation"): ``flip`` with ``flip_axes`` (z / y / x, default all; report 003's code flips MONAI
spatial axes [0, 1] of RAS arrays, i.e. x and y): ``RandFlipd(prob=0.5)`` per axis;
``rotate_deg``: ``RandRotated(range_x=range_y=range_z=rotate_deg, prob=1)``; ``rotate90``
(probability, or true for 0.5): ``RandRotate90d(max_k=3)`` in the plane of ``rotate90_axes``
(default [y, x]).

Seeds: every random transform draws from its own ``numpy.random.RandomState`` that
``Compose.set_random_state`` sets from a seed: a batch's seed is drawn from the training loop's
generator (seeded by seed, rank and epoch, :func:`seed_of`), the crops' seed is
``seed_of(seed, rank, epoch, SALT_CROP)``, so runs repeat exactly and a resumed epoch equals the
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from monai.transforms import Compose

#: salts of :func:`seed_of`, so crops, augmentation and torch's generator (dropout) of one epoch
#: draw independent streams
SALT_CROP, SALT_AUGMENT, SALT_TORCH = 1, 2, 3
_AXES_3D = {"z": 0, "y": 1, "x": 2}  # MONAI spatial axes of a (C, Z, Y, X) sample
DEFAULT_CROP: dict[str, Any] = {"pos": 1.0, "neg": 1.0, "image_threshold": 0.0}


def seed_of(*parts: int) -> int:
    """A 31-bit seed from integers (seed, rank, epoch, salt) via ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def _plain(t) -> torch.Tensor:
    """A MONAI MetaTensor (or array) as a plain tensor."""
    t = torch.as_tensor(t)
    return t.as_tensor() if hasattr(t, "as_tensor") else t


# ----------------------------------------------------------------------------- 2D
def compose_2d(a: dict, label_keys: Sequence[str], size: Sequence[int]) -> Compose | None:
    """The 2D pipeline of ``augment`` over keys ``image`` + ``label_keys`` for slices of ``size``
    (H, W) (None when it does nothing)."""
    from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityd, RandStdShiftIntensityd

    keys = ["image", *label_keys]
    modes = ["bilinear"] + ["nearest"] * len(label_keys)
    ts: list = []
    if a.get("flip"):
        ts.append(RandFlipd(keys, prob=0.5, spatial_axis=1))
    if a.get("vflip"):
        ts.append(RandFlipd(keys, prob=0.5, spatial_axis=0))
    deg, tr = float(a.get("rotate_deg") or 0), float(a.get("translate") or 0)
    if deg or tr:
        ts.append(
            RandAffined(
                keys,
                prob=1.0,
                rotate_range=(math.radians(deg),),
                translate_range=(tr * int(size[0]), tr * int(size[1])),
                mode=modes,
                padding_mode="zeros",
            )
        )
    j = float(a.get("intensity") or 0)
    if j:
        ts.append(RandScaleIntensityd("image", factors=j, prob=1.0))
        ts.append(RandStdShiftIntensityd("image", factors=j, prob=1.0))
    return Compose(ts) if ts else None


def augment_2d(
    x: torch.Tensor, ys: list[torch.Tensor], a: dict, gen: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`compose_2d` over a batch ``x`` ``(N, 1, H, W)`` and its label maps ``ys`` (each
    ``(N, C, H, W)``), one seed for the batch drawn from ``gen``; returns plain tensors of the
    input dtypes."""
    keys = [f"label{i}" for i in range(len(ys))]
    t = compose_2d(a, keys, x.shape[-2:])
    if t is None:
        return x, ys
    t.set_random_state(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    xs: list[torch.Tensor] = []
    outs: list[list[torch.Tensor]] = [[] for _ in ys]
    for i in range(x.shape[0]):
        d = t({"image": x[i], **{k: y[i] for k, y in zip(keys, ys, strict=True)}})
        xs.append(_plain(d["image"]))
        for o, k in zip(outs, keys, strict=True):
            o.append(_plain(d[k]))
    return torch.stack(xs).to(x.dtype), [torch.stack(o).to(y.dtype) for o, y in zip(outs, ys, strict=True)]


# ----------------------------------------------------------------------------- 3D
def compose_3d(a: dict) -> Compose | None:
    """The 3D augmentation of ``augment`` over keys ``image``, ``label`` (None when it does nothing)."""
    from monai.transforms import Compose, RandFlipd, RandRotate90d, RandRotated

    keys = ["image", "label"]
    ts: list[Any] = []
    if a.get("flip"):
        for name in a.get("flip_axes") or ("z", "y", "x"):
            ts.append(RandFlipd(keys, prob=0.5, spatial_axis=_AXES_3D[str(name)]))
    deg = float(a.get("rotate_deg") or 0)
    if deg:
        r = math.radians(deg)
        ts.append(
            RandRotated(
                keys,
                range_x=r,
                range_y=r,
                range_z=r,
                prob=1.0,
                keep_size=True,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
    r90 = a.get("rotate90")
    if r90:
        ax0, ax1 = (_AXES_3D[str(n)] for n in (a.get("rotate90_axes") or ("y", "x")))
        axes = (ax0, ax1)
        ts.append(RandRotate90d(keys, prob=0.5 if r90 is True else float(r90), max_k=3, spatial_axes=axes))
    return Compose(ts) if ts else None


def augment_3d(x: torch.Tensor, y: torch.Tensor, a: dict, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`compose_3d` over a batch ``(B, C, Z, Y, X)`` of patches and their labels, one seed for
    the batch drawn from ``gen``."""
    t = compose_3d(a)
    if t is None:
        return x, y
    t.set_random_state(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    xs, ys = [], []
    for i in range(x.shape[0]):
        d = t({"image": x[i], "label": y[i]})
        xs.append(_plain(d["image"]))
        ys.append(_plain(d["label"]))
    return torch.stack(xs).to(x.dtype), torch.stack(ys).to(y.dtype)


def crop_config(crop: dict | None) -> dict:
    """``crop:`` over :data:`DEFAULT_CROP` (pos, neg, image_threshold)."""
    out = {**DEFAULT_CROP, **(crop or {})}
    if float(out["pos"]) < 0 or float(out["neg"]) < 0 or float(out["pos"]) + float(out["neg"]) <= 0:
        from .io.errors import InputError

        raise InputError("crop.pos and crop.neg must be non-negative and not both zero.")
    return out


def crop_sources(
    vols: Sequence[tuple[np.ndarray, np.ndarray]], roi: Sequence[int], crop: dict | None = None
) -> list[dict]:
    """Each ``(image (1, Z, Y, X), label (1, Z, Y, X))`` zero-padded to at least ``roi`` and with its
    foreground / background centre indices (``FgBgToIndicesd``, see the module docstring), computed
    once; the sources :func:`sample_crops` draws from every epoch."""
    from monai.transforms import Compose, FgBgToIndicesd, SpatialPadd

    c = crop_config(crop)
    thr = c.get("image_threshold")
    t = Compose(
        [
            SpatialPadd(["image", "label"], spatial_size=tuple(int(r) for r in roi), method="end"),
            FgBgToIndicesd(
                "label", image_key=None if thr is None else "image", image_threshold=0.0 if thr is None else float(thr)
            ),
        ]
    )
    out = []
    for x, y in vols:
        d = t(
            {"image": torch.as_tensor(np.asarray(x, np.float32)), "label": torch.as_tensor(np.asarray(y, np.float32))}
        )
        d["roi"] = tuple(int(r) for r in roi)
        out.append(d)
    return out


def sample_crops(
    sources: list[dict], n_per_volume: int, seed: int, crop: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_volume`` patches of every source by ``RandCropByPosNegLabeld`` (pos / neg of ``crop``),
    seeded; returns stacked images and labels ``(N, 1, *roi)`` in source order."""
    from monai.transforms import RandCropByPosNegLabeld

    if not sources:
        raise ValueError("no training volumes to crop")
    c = crop_config(crop)
    t = RandCropByPosNegLabeld(
        ["image", "label"],
        label_key="label",
        spatial_size=sources[0]["roi"],
        pos=float(c["pos"]),
        neg=float(c["neg"]),
        num_samples=int(n_per_volume),
        fg_indices_key="label_fg_indices",
        bg_indices_key="label_bg_indices",
    )
    t.set_random_state(int(seed))
    xs, ys = [], []
    for s in sources:
        for p in t(s):
            xs.append(np.asarray(_plain(p["image"])))
            ys.append(np.asarray(_plain(p["label"])))
    return np.stack(xs), np.stack(ys)
