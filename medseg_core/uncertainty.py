"""Uncertainty from Monte-Carlo dropout and test-time augmentation, on **probabilities**.

MC dropout (:func:`mc_dropout_mode`): dropout layers in train mode, batch-norm (and everything
else) in eval mode, N stochastic samples of the probability map. Models whose dropout sits only
in the decoder (``spec.mc_prefix``: they have ``encode``/``decode``) run the encoder **once** per
input and only the decoder N times (:func:`mc_samples_prefix`); with the same seed this equals N
naive full passes (:func:`mc_samples_naive`), which the tests check. Where each registry model's
dropout sits is in ``ModelSpec.dropout``.

:func:`summarise` turns samples into the mean probability, predictive entropy, variance and mutual
information (the epistemic part: entropy of the mean minus mean entropy; 0 <= MI <= entropy).
Entropies are in nats; for a binary map the maximum is ln 2 = 0.693.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .io.errors import InputError

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
LN2 = float(np.log(2.0))


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DROPOUT) and m.p > 0]


def has_dropout(model: nn.Module) -> bool:
    return bool(dropout_layers(model))


def require_dropout(model: nn.Module, name: str = "this model") -> None:
    if not has_dropout(model):
        raise InputError(
            f"MC-dropout uncertainty is not available for {name}: it has no dropout layer, so all samples would be "
            "identical. Use test-time augmentation instead."
        )


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Dropout layers in train mode, everything else (batch-norm above all) in eval mode."""
    was = model.training
    model.eval()
    layers = dropout_layers(model)
    for m in layers:
        m.train()
    try:
        yield model
    finally:
        for m in layers:
            m.eval()
        model.train(was)


def _seed(seed: int, i: int) -> None:
    torch.manual_seed(int(seed) * 100003 + i)


def mc_samples_naive(
    forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor, n: int, seed: int = 0
) -> torch.Tensor:
    """N full stochastic passes (what report 003 did). Returns (n, ...) of ``forward``'s output."""
    out = []
    with torch.inference_mode(), mc_dropout_mode(model):
        for i in range(n):
            _seed(seed, i)
            out.append(forward(x))
    return torch.stack(out)


def mc_samples_prefix(
    model: nn.Module, x: torch.Tensor, n: int, seed: int = 0, head: Callable[[object], torch.Tensor] | None = None
) -> torch.Tensor:
    """N samples computing ``model.encode`` once and ``model.decode`` N times.

    ``head(state) -> probabilities`` defaults to ``sigmoid(model.decode(state))``.
    """
    # encode / decode are the registry models' own methods (nn.Module's typing does not know them)
    encode = cast(Callable[[torch.Tensor], object], model.encode)
    head = head or (lambda s: torch.sigmoid(cast(Callable[[object], torch.Tensor], model.decode)(s)))
    with torch.inference_mode(), mc_dropout_mode(model):
        state = encode(x)
        out = []
        for i in range(n):
            _seed(seed, i)
            out.append(head(state))
    return torch.stack(out)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return (-(p * np.log(p) + (1 - p) * np.log(1 - p))).astype(np.float32)


def summarise(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Samples (n, ...) of foreground probabilities -> mean, entropy, variance, mutual information."""
    s = np.asarray(samples, np.float32)
    mean = s.mean(0)
    ent = binary_entropy(mean)
    exp_ent = binary_entropy(s).mean(0)
    mi = np.clip(ent - exp_ent, 0.0, None).astype(np.float32)
    return {
        "mean": mean.astype(np.float32),
        "entropy": ent,
        "variance": s.var(0).astype(np.float32),
        "mutual_information": np.minimum(mi, ent),
    }


# ----------------------------------------------------------------------------- TTA
def flip_axes(dims: int) -> list[tuple[int, ...]]:
    """Flip combinations for test-time augmentation: identity and each spatial axis (2D: also both)."""
    if dims == 2:
        return [(), (-1,), (-2,), (-2, -1)]
    return [(), (-1,), (-2,), (-3,)]


def tta_samples(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dims: int) -> torch.Tensor:
    """Probabilities under each flip, flipped back: (n_aug, ...)."""
    out = []
    with torch.inference_mode():
        for ax in flip_axes(dims):
            xf = torch.flip(x, ax) if ax else x
            y = forward(xf)
            out.append(torch.flip(y, ax) if ax else y)
    return torch.stack(out)


# ----------------------------------------------------------------------------- scores
def uncertainty_scores(entropy: np.ndarray, mask: np.ndarray, band_px: int = 2) -> dict:
    """Per-slice and per-case uncertainty for ranking: mean entropy over the predicted mask plus a
    ``band_px`` in-plane band around it (where boundary doubt lives). Slices with no prediction
    score the mean entropy of the slice (so a missed structure with high entropy still ranks).
    Values in nats (max ln 2)."""
    e = np.asarray(entropy, np.float32)
    m = np.asarray(mask) > 0
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    region = ndimage.binary_dilation(m, st, iterations=band_px) if m.any() else m
    per_slice = []
    for z in range(e.shape[0]):
        r = region[z]
        per_slice.append(float(e[z][r].mean()) if r.any() else float(e[z].mean()))
    case = float(e[region].mean()) if region.any() else float(e.mean())
    return {"per_slice": per_slice, "case": case, "band_px": band_px}
