"""Uncertainty from Monte-Carlo dropout and test-time augmentation, on **probabilities**.

MC dropout (:func:`mc_dropout_mode`): dropout layers in train mode, batch-norm (and everything
else) in eval mode, N stochastic samples of the probability map. Models whose dropout sits only
in the decoder (``spec.mc_prefix``: they have ``encode``/``decode``) run the encoder **once** per
input and only the decoder N times; with the same seed this equals N naive full passes, which the
tests check. Where each registry model's dropout sits is in ``ModelSpec.dropout``.

:func:`mc_samples` is the one sampler: ``predict`` calls it for every 2D batch, for the two-pass
side masking and for every 3D sliding-window batch, and the equality tests call it too, so the code
that runs is the code that is tested. Its ``batched`` mode decodes the N samples in one decoder call
(the encoder state repeated N times along the batch axis): N different dropout masks from the same
distribution, but drawn in another order, so not equal to the naive passes sample for sample. The
sample-for-sample mode stays the default: a reviewer who re-runs a case gets the same maps as the
cohort run and the published numbers, and two runs differ only when the seed does.
:func:`tta_samples` is the one test-time augmentation loop (flips), for tensors and model outputs.

:func:`summarise` turns samples into the mean probability, predictive entropy, variance and mutual
information (the epistemic part: entropy of the mean minus mean entropy; 0 <= MI <= entropy).
Entropies are in nats; for a binary map the maximum is ln 2 = 0.693.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .io.errors import InputError

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
LN2 = float(np.log(2.0))
T = TypeVar("T")


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


def _map_tensors(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """``fn`` applied to every tensor inside ``obj`` (a tensor, list, tuple, dict or dataclass)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, v) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: _map_tensors(fn, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        )
    return obj


def _split(obj: Any, n: int, batch: int) -> list[Any]:
    """Undo a batch repeated ``n`` times: tensors (n * batch, ...) and per-item lists of length
    n * batch inside ``obj`` become ``n`` objects of ``batch`` items."""
    if isinstance(obj, torch.Tensor):
        return list(obj.reshape(n, batch, *obj.shape[1:]).unbind(0))
    if isinstance(obj, list) and len(obj) == n * batch and not any(isinstance(v, torch.Tensor) for v in obj):
        return [obj[i * batch : (i + 1) * batch] for i in range(n)]
    if isinstance(obj, dict):
        parts = {k: _split(v, n, batch) for k, v in obj.items()}
        return [{k: parts[k][i] for k in obj} for i in range(n)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = [f.name for f in dataclasses.fields(obj) if f.init]
        fparts = {k: _split(getattr(obj, k), n, batch) for k in names}
        return [dataclasses.replace(obj, **{k: fparts[k][i] for k in names}) for i in range(n)]
    return [obj] * n


def mc_samples(
    model: nn.Module,
    x: Any,
    n: int,
    seed: int = 0,
    *,
    forward: Callable[[Any], T] | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], T] | None = None,
    batched: bool = False,
) -> list[T]:
    """``n`` MC-dropout samples of the model's output for input ``x`` (model in
    :func:`mc_dropout_mode`, under ``torch.inference_mode``). Returns a list of ``n`` outputs of
    whatever ``forward`` / ``decode`` return (a tensor, a :class:`~medseg_core.results.ModelOutput`).

    * ``forward``: ``n`` full passes (report 003's way); sample ``i`` is drawn with seed (seed, i).
    * ``encode`` and ``decode`` (models whose dropout sits in the decoder, ``spec.mc_prefix``): the
      encoder once, the decoder ``n`` times with the same seeds: equal to the full passes sample for
      sample.
    * ``batched`` (with ``encode`` / ``decode``): the encoder state repeated ``n`` times along the
      batch axis and decoded in one call (one seed): independent dropout masks from the same
      distribution. Meant for GPUs: on this project's 2-core CPU it is slower than the sequential decoder
      on the U-Nets (0.9-1.9 x the naive passes; only EfficientNet-B0 gains, 0.39 x; ``make bench``).
    """
    if (forward is None) == (encode is None or decode is None):
        raise ValueError("mc_samples takes forward, or encode and decode")
    with torch.inference_mode(), mc_dropout_mode(model):
        if forward is not None:
            out = []
            for i in range(n):
                _seed(seed, i)
                out.append(forward(x))
            return out
        assert encode is not None and decode is not None
        state = encode(x)
        if batched:
            batch = _batch_size(state)
            _seed(seed, 0)
            reps = _map_tensors(lambda t: t.repeat(n, *([1] * (t.dim() - 1))), state)
            return _split(decode(reps), n, batch)
        out = []
        for i in range(n):
            _seed(seed, i)
            out.append(decode(state))
        return out


def _batch_size(state: Any) -> int:
    sizes: list[int] = []
    _map_tensors(lambda t: sizes.append(int(t.shape[0])), state)
    if not sizes or len(set(sizes)) != 1:
        raise ValueError("batched MC sampling needs an encoder state whose tensors share one batch size")
    return sizes[0]


def mc_samples_naive(
    forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor, n: int, seed: int = 0
) -> torch.Tensor:
    """N full stochastic passes stacked: (n, ...) of ``forward``'s output (:func:`mc_samples`)."""
    return torch.stack(mc_samples(model, x, n, seed, forward=forward))


def mc_samples_prefix(
    model: nn.Module,
    x: torch.Tensor,
    n: int,
    seed: int = 0,
    head: Callable[[object], torch.Tensor] | None = None,
    batched: bool = False,
) -> torch.Tensor:
    """N samples computing ``model.encode`` once and ``model.decode`` N times (or once, batched),
    stacked: (n, ...). ``head(state) -> probabilities`` defaults to ``sigmoid(model.decode(state))``."""
    # encode / decode are the registry models' own methods (nn.Module's typing does not know them)
    encode = cast(Callable[[torch.Tensor], object], model.encode)
    head = head or (lambda s: torch.sigmoid(cast(Callable[[object], torch.Tensor], model.decode)(s)))
    return torch.stack(mc_samples(model, x, n, seed, encode=encode, decode=head, batched=batched))


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


def _flip_back(y: Any, ax: tuple[int, ...]) -> Any:
    if isinstance(y, torch.Tensor):
        return torch.flip(y, ax)
    spatial = getattr(y, "SPATIAL", None)  # a ModelOutput: flip its maps back, keep scores and classes
    if spatial is not None:
        return dataclasses.replace(
            y, **{k: torch.flip(getattr(y, k), ax) for k in spatial if getattr(y, k) is not None}, boxes=None
        )
    raise TypeError(f"cannot flip {type(y).__name__} back")


def tta_samples_list(forward: Callable[[torch.Tensor], T], x: torch.Tensor, dims: int) -> list[T]:
    """``forward`` under each flip of :func:`flip_axes`, flipped back (tensors, or the maps of a
    :class:`~medseg_core.results.ModelOutput`; its crop boxes are dropped: they belong to one pass)."""
    out = []
    with torch.inference_mode():
        for ax in flip_axes(dims):
            y = forward(torch.flip(x, ax) if ax else x)
            out.append(_flip_back(y, ax) if ax else y)
    return out


def tta_samples(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dims: int) -> torch.Tensor:
    """Probabilities under each flip, flipped back: (n_aug, ...)."""
    return torch.stack(tta_samples_list(forward, x, dims))


# ----------------------------------------------------------------------------- scores
def uncertainty_scores(entropy: np.ndarray, mask: np.ndarray, band_px: int = 2) -> dict:
    """Per-slice and per-case uncertainty for ranking: mean entropy over the predicted mask plus a
    ``band_px`` in-plane band around it (where boundary doubt lives). Slices with no prediction
    score the mean entropy of the slice (so a missed structure with high entropy still ranks).
    Values in nats (max ln 2). ``on_prediction[z]`` says which of the two a slice's score is (True:
    over the prediction and its band; False: the whole slice, no prediction there)."""
    e = np.asarray(entropy, np.float32)
    m = np.asarray(mask) > 0
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    region = ndimage.binary_dilation(m, st, iterations=band_px) if m.any() else m
    per_slice, on_prediction = [], []
    for z in range(e.shape[0]):
        r = region[z]
        on_prediction.append(bool(r.any()))
        per_slice.append(float(e[z][r].mean()) if r.any() else float(e[z].mean()))
    case = float(e[region].mean()) if region.any() else float(e.mean())
    return {"per_slice": per_slice, "on_prediction": on_prediction, "case": case, "band_px": band_px}
