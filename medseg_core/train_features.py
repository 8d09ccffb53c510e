"""Training features report 002 needs, kept out of :mod:`medseg_core.train` (which calls them):

* ``train.sampler: organ_combination`` -- :func:`organ_combination_weights`, :func:`sampler_order`:
  report 002 section 2.3's ``WeightedRandomSampler``, each training slice weighted 1 / (number of
  training slices with its organ combination), its code verbatim in the report
  (``class_weight = 1. / class_sample_count``); drawn with replacement, one epoch = as many draws as
  training slices (torch's ``WeightedRandomSampler(weights, len(weights))``).
* ``train.phases`` -- :func:`phases_of`, :func:`apply_freeze`, :func:`encoder_last_conv`: training
  in phases one after another, each with its epochs, optimiser (+ scheduler) and what is frozen
  (report 002 section 3.2: 10 epochs with the encoder frozen, then 5 with the encoder's last
  convolution unfrozen).
* ``augment.name: report002`` -- :func:`augment_report002`: section 2.3's albumentations pipeline
  rebuilt from MONAI dict transforms, scipy and scikit-image (albumentations is not a dependency).

The data-side features (``data.drop_unlabelled``, ``data.split.stratify``) live in
:mod:`medseg_core.data.datasets` (:func:`~medseg_core.data.datasets.drop_unlabelled`,
:func:`~medseg_core.data.datasets.stratified_split`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from .io.errors import InputError


# ----------------------------------------------------------------------------- weighted sampler
def organ_combination_codes(y: np.ndarray) -> np.ndarray:
    """One integer per slice of ``y`` ``(N, C, H, W)``: the bit mask of its non-empty channels
    (bit c set when organ c is present), i.e. the report's ``organ`` column
    (``stomach_small_bowel_large_bowel`` ...) as a number."""
    present = np.asarray(y).reshape(len(y), np.asarray(y).shape[1], -1).any(-1)
    return (present * (1 << np.arange(present.shape[1]))).sum(1).astype(np.int64)


def organ_combination_weights(codes: ArrayLike) -> np.ndarray:
    """Report 002 section 2.3: weight of a slice = 1 / (count of slices with the same combination)."""
    codes = np.asarray(codes)
    classes, counts = np.unique(codes, return_counts=True)
    per_class = 1.0 / counts
    return per_class[np.searchsorted(classes, codes)].astype(np.float64)


def sampler_order(weights: ArrayLike, seed: int, num_samples: int | None = None) -> np.ndarray:
    """Indices of one epoch drawn by ``torch.utils.data.WeightedRandomSampler`` (with replacement,
    ``num_samples`` = number of weights unless given), seeded."""
    from torch.utils.data import WeightedRandomSampler

    w = torch.as_tensor(np.asarray(weights, np.float64))
    n = int(num_samples or len(w))
    s = WeightedRandomSampler(w.tolist(), n, replacement=True, generator=torch.Generator().manual_seed(int(seed)))
    return np.fromiter(iter(s), dtype=np.int64, count=n)


def epoch_order(cfg: dict, arrays: dict, seed: int, epoch: int) -> np.ndarray | None:
    """The epoch's sample order when ``train.sampler`` asks for one (None: the default shuffle)."""
    name = (cfg.get("train") or {}).get("sampler") or "none"
    if name in ("none", "shuffle", "uniform"):
        return None
    if name != "organ_combination":
        raise InputError(f"The config asks for sampler '{name}'; medseg knows uniform and organ_combination.")
    w = organ_combination_weights(organ_combination_codes(arrays["y"]))
    return sampler_order(w, seed + epoch)


# ----------------------------------------------------------------------------- phases and freezing
def phases_of(cfg: dict) -> list[dict]:
    """``train.phases`` normalised: each phase gets a ``name`` (``phase1`` ...), ``epochs`` and
    ``optim`` (the phase's keys over the config's ``optim``, so a phase states only what changes;
    ``scheduler`` is the phase's own, none when it gives none). ``train.epochs`` caps every phase's
    epochs (a smoke run's ``train.epochs=1`` runs one epoch of each phase; a config sets it to the
    phases' sum). Empty list: no phases."""
    phases = (cfg.get("train") or {}).get("phases") or []
    cap = (cfg.get("train") or {}).get("epochs")
    out = []
    for i, ph in enumerate(phases):
        if "epochs" not in ph:
            raise InputError(f"train.phases[{i}] gives no 'epochs'.")
        optim = {**(cfg.get("optim") or {}), "scheduler": None, **(ph.get("optim") or {})}
        epochs = int(ph["epochs"]) if cap is None else min(int(ph["epochs"]), int(cap))
        out.append(
            {
                "name": ph.get("name") or f"phase{i + 1}",
                "epochs": epochs,
                "optim": optim,
                "freeze": ph.get("freeze"),
                "unfreeze": ph.get("unfreeze"),
                "index": i,
            }
        )
    return out


def encoder_last_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The last convolution the encoder actually **runs** (name relative to the model, module).

    Found by a forward pass of a small input with hooks on every ``Conv2d`` of ``model.encoder``, so
    a convolution that exists but is never called is skipped. For smp's EfficientNet-B3 this is
    ``encoder._blocks.25._project_conv`` (the 1 x 1 projection of the last MBConv block, 384
    channels): the module listed last, ``encoder._conv_head`` (1 x 1, 384 -> 1536, kept from the
    ImageNet classifier), is not on smp's encoder path (``EfficientNetEncoder.forward`` stops after
    the blocks), gets no gradient, and unfreezing it would change nothing. Report 002 section 3.2's
    "the last convolutional layer of the encoder" is read as the former; ``unfreeze:
    encoder._conv_head`` names the latter explicitly.
    """
    enc = getattr(model, "encoder", None)
    if enc is None:
        raise InputError("unfreeze: encoder_last needs a model with an 'encoder' (an smp model).")
    names: dict[nn.Conv2d, str] = {m: n for n, m in enc.named_modules() if isinstance(m, nn.Conv2d)}
    if not names:
        raise InputError("The model's encoder has no Conv2d.")
    called: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: called.append(mod)) for m in names]
    first = next(iter(names))
    was = enc.training
    try:
        enc.eval()
        with torch.no_grad():
            enc(torch.zeros(1, first.in_channels, 64, 64, device=next(enc.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        enc.train(was)
    last = called[-1]
    return f"encoder.{next(n for m, n in names.items() if m is last)}", last


def apply_freeze(model: nn.Module, phase: dict) -> list[str]:
    """Set ``requires_grad`` for a phase: everything trainable, then ``freeze`` (``encoder``, or a
    module path) off, then ``unfreeze`` (``encoder_last``: :func:`encoder_last_conv`; or a module
    path such as ``encoder._conv_head``) on again. Only the named convolution's own weights are
    unfrozen, not the BatchNorm after it. Frozen BatchNorm layers keep updating their running
    statistics in train mode, as a plain PyTorch ``requires_grad = False`` freeze does (the report
    says nothing more). Returns the names of the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(True)

    def module(path: str) -> nn.Module:
        try:
            return model.get_submodule(path)
        except AttributeError:
            raise InputError(f"The phase names module '{path}', which the model does not have.") from None

    for key, flag in (("freeze", False), ("unfreeze", True)):
        what = phase.get(key)
        for item in [what] if isinstance(what, str) else list(what or []):
            if key == "unfreeze" and item == "encoder_last":
                mod = encoder_last_conv(model)[1]
            else:
                mod = module(item)
            for p in mod.parameters():
                p.requires_grad_(flag)
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- augmentation
#: report 002 section 2.3 (final CNN, UNet++) with albumentations' defaults where the report sets none
REPORT002_AUGMENT: dict[str, Any] = {
    "name": "report002",
    "shift_scale_rotate": {"shift": 0.03, "scale": 0.1, "rotate_deg": 20.0, "p": 0.85},
    "distort": {
        "p": 0.2,
        "elastic": {"alpha": 1.0, "sigma": 50.0, "alpha_affine": 10.0, "weight": 0.5},
        "grid": {"num_steps": 5, "distort_limit": 0.1, "weight": 0.5},
    },
    "noise_blur": {
        "p": 0.5,
        "noise_var": [0.0001, 0.004],
        "noise_scale": 255.0,
        "noise_weight": 0.7,
        "blur_limit": 3,
        "blur_weight": 0.3,
    },
    "flip_mode": "any",
    "flip_p": 0.5,
}


def _elastic(
    img: np.ndarray, masks: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float, alpha_affine: float
) -> tuple[np.ndarray, np.ndarray]:
    """albumentations 1.x ``ElasticTransform(alpha, sigma, alpha_affine)`` on ``(1, H, W)`` /
    ``(C, H, W)``: a random affine moving three points (centre +- a third of the shorter side) by
    up to ``alpha_affine`` pixels (scikit-image ``AffineTransform`` estimated from them), then a
    displacement field ``alpha * gaussian_filter(U(-1, 1), sigma)`` per axis; zeros outside
    (``border_mode=BORDER_CONSTANT, value=0`` as the report sets). Bilinear image, nearest masks."""
    from scipy import ndimage
    from skimage.transform import AffineTransform

    h, w = img.shape[-2:]
    c = np.array([w // 2, h // 2], np.float64)
    sq = min(h, w) // 3
    src = np.array([c + sq, [c[0] + sq, c[1] - sq], c - sq])
    dst = src + rng.uniform(-alpha_affine, alpha_affine, size=src.shape)
    if hasattr(AffineTransform, "from_estimate"):  # scikit-image >= 0.26
        tf = AffineTransform.from_estimate(src, dst)
    else:
        tf = AffineTransform()
        tf.estimate(src, dst)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # output pixel (x, y) takes the input at inverse(x, y), then the elastic offset
    inv = tf.inverse(np.stack([xx.ravel(), yy.ravel()], 1))
    sx, sy = inv[:, 0].reshape(h, w), inv[:, 1].reshape(h, w)
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    coords = np.stack([sy + dy, sx + dx])
    out_i = np.stack([ndimage.map_coordinates(ch, coords, order=1, mode="constant", cval=0.0) for ch in img])
    out_m = np.stack([ndimage.map_coordinates(ch, coords, order=0, mode="constant", cval=0.0) for ch in masks])
    return out_i.astype(img.dtype), out_m.astype(masks.dtype)


def _one_of(rng: np.random.Generator, weights) -> int:
    w = np.asarray(weights, np.float64)
    return int(rng.choice(len(w), p=w / w.sum()))


def augment_one(img: np.ndarray, masks: np.ndarray, a: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Report 002's training augmentation on one slice ``img`` ``(1, H, W)`` (CLAHE output, 0..1)
    and its masks ``(C, H, W)``, in the report's order (section 2.3):

    1. ShiftScaleRotate(shift_limit 0.03, scale_limit 0.1 = albumentations' default, rotate_limit
       20, zeros outside, p 0.85): MONAI ``RandAffined`` (translation in pixels = 0.03 x size,
       rotation +-20 degrees, scale 1 +- 0.1), bilinear image / nearest masks with the same draw;
    2. OneOf(p 0.2) of ElasticTransform(alpha 1, sigma 50, alpha_affine 10) (:func:`_elastic`) and
       GridDistortion(num_steps 5, distort_limit 0.1) (MONAI ``RandGridDistortiond``, 5 cells),
       chosen 50/50 as their p 0.5 / 0.5 weigh them;
    3. OneOf(p 0.5) of GaussNoise(var_limit (0.0001, 0.004), p 0.7) and Blur(blur_limit 3, p 0.3):
       the variance is in the units of the image albumentations saw, uint8 0..255 (A.CLAHE accepts
       uint8 only), hence the standard deviation in medseg's 0..1 units is sqrt(var) /
       ``noise_scale`` (255); blur is a 3 x 3 box filter (``scipy.ndimage.uniform_filter``, mirror
       border = OpenCV's default reflect-101);
    4. Flip(p 0.5): horizontal, vertical or both, one of three at random (``flip_mode: any``; the
       first three from-scratch CNNs used HorizontalFlip: ``flip_mode: horizontal``).

    Every geometric step moves the image and the masks with the same parameters. Sections absent
    from ``a`` (or ``p`` 0) are skipped.
    """
    from monai.transforms import RandAffined, RandGridDistortiond
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.asarray(img, np.float32)
    masks = np.asarray(masks, np.float32)
    h, w = img.shape[-2:]
    ssr = a.get("shift_scale_rotate") or {}
    if ssr and rng.random() < float(ssr.get("p", 0.0)):
        t = RandAffined(
            keys=["image", "label"],
            prob=1.0,
            rotate_range=math.radians(float(ssr.get("rotate_deg", 0))),
            translate_range=(float(ssr.get("shift", 0)) * h, float(ssr.get("shift", 0)) * w),
            scale_range=(float(ssr.get("scale", 0)),) * 2,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        )
        t.set_random_state(int(rng.integers(2**31)))
        d = t({"image": torch.from_numpy(img), "label": torch.from_numpy(masks)})
        img, masks = np.asarray(d["image"]), np.asarray(d["label"])
    dist = a.get("distort") or {}
    if dist and rng.random() < float(dist.get("p", 0.0)):
        el, gr = dist.get("elastic") or {}, dist.get("grid") or {}
        weights = [float(el.get("weight", 0.5)) if el else 0.0, float(gr.get("weight", 0.5)) if gr else 0.0]
        if _one_of(rng, weights) == 0:
            img, masks = _elastic(
                img,
                masks,
                rng,
                float(el.get("alpha", 1.0)),
                float(el.get("sigma", 50.0)),
                float(el.get("alpha_affine", 10.0)),
            )
        else:
            lim = float(gr.get("distort_limit", 0.1))
            grid = RandGridDistortiond(
                keys=["image", "label"],
                num_cells=int(gr.get("num_steps", 5)),
                prob=1.0,
                distort_limit=(-lim, lim),
                mode=("bilinear", "nearest"),  # type: ignore[arg-type]  # one per key (MONAI's ensure_tuple_rep)
                padding_mode="zeros",
            )
            grid.set_random_state(int(rng.integers(2**31)))
            dg = grid({"image": torch.from_numpy(img), "label": torch.from_numpy(masks)})
            img, masks = np.asarray(dg["image"]), np.asarray(dg["label"])
    nb = a.get("noise_blur") or {}
    if nb and rng.random() < float(nb.get("p", 0.0)):
        if _one_of(rng, [float(nb.get("noise_weight", 0.7)), float(nb.get("blur_weight", 0.3))]) == 0:
            lo, hi = (float(v) for v in nb.get("noise_var", (0.0001, 0.004)))
            sd = math.sqrt(rng.uniform(lo, hi)) / float(nb.get("noise_scale", 1.0))
            img = img + rng.normal(0.0, sd, img.shape).astype(np.float32)
        else:
            k = int(nb.get("blur_limit", 3))
            img = np.stack([ndimage.uniform_filter(ch, size=k, mode="mirror") for ch in img])
    mode = a.get("flip_mode", "none")
    if mode != "none" and rng.random() < float(a.get("flip_p", 0.5)):
        by_mode: dict[str, list[tuple[int, ...]]] = {
            "horizontal": [(-1,)],
            "vertical": [(-2,)],
            "any": [(-1,), (-2,), (-2, -1)],
        }
        axes = by_mode[mode]
        ax = axes[int(rng.integers(len(axes)))]
        img, masks = np.flip(img, ax), np.flip(masks, ax)
    return np.ascontiguousarray(img, np.float32), (np.ascontiguousarray(masks) > 0.5).astype(np.float32)


def augment_report002(
    x: torch.Tensor, ys: list[torch.Tensor], a: dict, gen: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`augment_one` over a batch ``x`` ``(N, 1, H, W)`` and its mask tensors ``ys`` (each
    ``(N, C, H, W)``; all moved together), one seed per slice drawn from ``gen``. The signature of
    :func:`medseg_core.train.augment_2d`."""
    seeds = torch.randint(0, 2**31 - 1, (x.shape[0],), generator=gen).tolist()
    sizes = [y.shape[1] for y in ys]
    xs, yss = [], []
    for i, s in enumerate(seeds):
        m = np.concatenate([y[i].numpy() for y in ys], 0)
        xi, mi = augment_one(x[i].numpy(), m, a, int(s))
        xs.append(xi)
        yss.append(mi)
    xo = torch.from_numpy(np.stack(xs)).to(x.dtype)
    mo = torch.from_numpy(np.stack(yss))
    out, k = [], 0
    for n, y in zip(sizes, ys, strict=True):
        out.append(mo[:, k : k + n].to(y.dtype))
        k += n
    return xo, out


def augment_fn(a: dict) -> Callable[..., tuple]:
    """The batch augmentation ``augment.name`` asks for: report 002's pipeline, or medseg's
    :func:`~medseg_core.train.augment_2d` (the default)."""
    if (a or {}).get("name") == "report002":
        return augment_report002
    from .train import augment_2d

    return augment_2d
