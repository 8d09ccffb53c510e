"""Segmentation and classification metrics, on the foreground only, with voxel spacing in mm.

Empty-mask conventions (never a crash, never a silent perfect score)
--------------------------------------------------------------------
* **both empty** (no reference, nothing predicted): overlap and distance metrics are ``NaN``
  (undefined; excluded from means) and :func:`segmentation_metrics` sets ``both_empty=True`` so a
  caller can count true-negative slices separately. Specificity is still defined.
* **reference empty, prediction not** (false positive): Dice 0, IoU 0, precision 0, recall NaN,
  distances NaN.
* **prediction empty, reference not** (missed): Dice 0, IoU 0, precision NaN, recall 0,
  distances NaN.

Surfaces follow MONAI's definition (a voxel of the mask with a background neighbour after a
6-/4-connected erosion); distances use ``scipy.ndimage.distance_transform_edt`` with ``sampling``
= spacing, so HD95 and ASSD are in millimetres. HD95 = max of the two directed 95th percentiles
(MONAI ``compute_hausdorff_distance(percentile=95)``); ASSD = mean of all surface distances in
both directions (MONAI ``compute_average_surface_distance(symmetric=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

if TYPE_CHECKING:
    import torch

NAN = float("nan")


def _b(x: ArrayLike) -> np.ndarray:
    return np.asarray(x) > 0


def _counts(pred: ArrayLike, ref: ArrayLike) -> tuple[int, int, int, int]:
    p, r = _b(pred), _b(ref)
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def dice(pred: ArrayLike, ref: ArrayLike) -> float:
    tp, fp, fn, _ = _counts(pred, ref)
    d = 2 * tp + fp + fn
    return NAN if d == 0 else 2 * tp / d


def iou(pred: ArrayLike, ref: ArrayLike) -> float:
    tp, fp, fn, _ = _counts(pred, ref)
    d = tp + fp + fn
    return NAN if d == 0 else tp / d


def precision(pred: ArrayLike, ref: ArrayLike) -> float:
    tp, fp, _, _ = _counts(pred, ref)
    return NAN if tp + fp == 0 else tp / (tp + fp)


def recall(pred: ArrayLike, ref: ArrayLike) -> float:
    tp, _, fn, _ = _counts(pred, ref)
    return NAN if tp + fn == 0 else tp / (tp + fn)


sensitivity = recall


def specificity(pred: ArrayLike, ref: ArrayLike) -> float:
    _, fp, _, tn = _counts(pred, ref)
    return NAN if tn + fp == 0 else tn / (tn + fp)


def volume_ml(mask: ArrayLike, spacing: Sequence[float]) -> float:
    """Foreground volume in millilitres (spacing in mm; 1 mL = 1000 mm^3)."""
    return float(np.count_nonzero(_b(mask)) * float(np.prod(spacing)) / 1000.0)


def area_mm2(mask2d: ArrayLike, spacing2d: Sequence[float]) -> float:
    return float(np.count_nonzero(_b(mask2d)) * float(np.prod(spacing2d)))


def _surface(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m)


def surface_distances(
    pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(distances from pred's surface to ref's, from ref's surface to pred's) in mm.

    Both arrays are empty when either mask is empty.
    """
    p, r = _b(pred), _b(ref)
    if not p.any() or not r.any():
        return np.zeros(0), np.zeros(0)
    spacing = tuple(spacing) if spacing is not None else (1.0,) * p.ndim
    sp, sr = _surface(p), _surface(r)
    dt_r = ndimage.distance_transform_edt(~sr, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dt_r[sp], dt_p[sr]


def _hd(a: np.ndarray, b: np.ndarray, percentile: float = 95.0) -> float:
    return NAN if a.size == 0 else float(max(np.percentile(a, percentile), np.percentile(b, percentile)))


def _assd(a: np.ndarray, b: np.ndarray) -> float:
    return NAN if a.size == 0 else float(np.concatenate([a, b]).mean())


def hd95(pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float] | None = None, percentile: float = 95.0) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (NaN if either mask is empty)."""
    return _hd(*surface_distances(pred, ref, spacing), percentile)


def hd95_pooled(
    pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float] | None = None, percentile: float = 95.0
) -> float:
    """medpy's ``metric.binary.hd95`` in mm: the 95th percentile of the **pooled** directed surface
    distances, ``np.percentile(np.hstack((d(pred -> ref), d(ref -> pred))), 95)``.

    This is the HD95 of MicroSegNet's and report 004's evaluation (``utils.calculate_metric_percase``
    calls medpy's ``hd95`` per slice, in pixels, then multiplies by 0.033586 mm; with equal in-plane
    spacing that equals passing the spacing here). medpy's surfaces are ``mask ^ binary_erosion(mask,
    generate_binary_structure(ndim, connectivity=1))``: a foreground pixel with a 4-connected (6 in
    3D) background neighbour or on the image border (erosion's border value 0) -- the same surface as
    :func:`surface_distances`, whose ``ndimage.binary_erosion`` default structure is that connectivity-1
    element. Distances: ``distance_transform_edt`` of the other mask's surface complement with
    ``sampling`` = spacing.

    It differs from :func:`hd95` (the max of the two directed 95th percentiles, MONAI's definition):
    when one direction has the far outliers, the pooled percentile dilutes them with the other
    direction's small distances and is smaller (tests/test_report004.py has a hand-made pair).
    medpy raises on an empty mask; here NaN.
    """
    a, b = surface_distances(pred, ref, spacing)
    return NAN if a.size == 0 else float(np.percentile(np.concatenate([a, b]), percentile))


def assd(pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance in mm (NaN if either mask is empty)."""
    return _assd(*surface_distances(pred, ref, spacing))


def segmentation_metrics(pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float]) -> dict:
    """All overlap and distance metrics of one mask pair, with units in the key names."""
    p, r = _b(pred), _b(ref)
    tp, fp, fn, tn = _counts(p, r)
    a, b = surface_distances(p, r, spacing)  # once, for both distance metrics
    return {
        "dice": dice(p, r),
        "iou": iou(p, r),
        "precision": precision(p, r),
        "recall": recall(p, r),
        "specificity": specificity(p, r),
        "hd95_mm": _hd(a, b),
        "assd_mm": _assd(a, b),
        "pred_volume_ml": volume_ml(p, spacing),
        "ref_volume_ml": volume_ml(r, spacing),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "both_empty": bool(not p.any() and not r.any()),
        "ref_empty": bool(not r.any()),
        "pred_empty": bool(not p.any()),
    }


def per_slice_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> list[dict]:
    """:func:`segmentation_metrics` of each axial slice (axis 0) with the in-plane spacing;
    volumes become areas in mm^2 (keys ``pred_area_mm2`` / ``ref_area_mm2``)."""
    out = []
    sp2 = tuple(spacing[1:])
    for z in range(np.shape(pred)[0]):
        m = segmentation_metrics(pred[z], ref[z], sp2)
        m["pred_area_mm2"] = m.pop("pred_volume_ml") * 1000.0
        m["ref_area_mm2"] = m.pop("ref_volume_ml") * 1000.0
        m["slice"] = z
        out.append(m)
    return out


def nanmean(values: Iterable[float]) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else NAN


@overload
def dice_report002(
    pred_probs_or_masks: ArrayLike | torch.Tensor,
    ref: ArrayLike | torch.Tensor,
    threshold: float = 0.5,
    eps: float = 0.001,
    reduction: Literal["mean"] = "mean",
) -> float: ...
@overload
def dice_report002(
    pred_probs_or_masks: ArrayLike | torch.Tensor,
    ref: ArrayLike | torch.Tensor,
    threshold: float = 0.5,
    eps: float = 0.001,
    *,
    reduction: Literal["none"],
) -> np.ndarray: ...
def dice_report002(
    pred_probs_or_masks: ArrayLike | torch.Tensor,
    ref: ArrayLike | torch.Tensor,
    threshold: float = 0.5,
    eps: float = 0.001,
    reduction: str = "mean",
) -> float | np.ndarray:
    """Report 002's Dice (section 2.4, its ``dice_coefficient(groundtruth, y_pred, thr=0.5,
    epsilon=0.001)``), on arrays or tensors shaped ``(N, C, H, W)`` (or one slice ``(C, H, W)``).

    pred = (pred_probs_or_masks > threshold) (probabilities, or 0/1 masks, which pass unchanged);
    per slice n and channel (organ) c: (2 |P ∩ G| + eps) / (|P| + |G| + eps), sums over H and W.
    So a channel empty in both prediction and reference scores **1** (eps / eps), a false positive
    on an empty reference about 0. This differs from :func:`dice`, where both-empty is NaN and
    excluded. ``reduction="mean"``: the mean over every (slice, channel) pair, as the report's
    ``.mean(dim=(1, 0))`` does within a batch (a float); ``"none"``: the ``(N, C)`` array.
    """
    p = np.asarray(
        pred_probs_or_masks.detach().cpu() if hasattr(pred_probs_or_masks, "detach") else pred_probs_or_masks,
        dtype=np.float64,
    )
    g = np.asarray(ref.detach().cpu() if hasattr(ref, "detach") else ref, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and reference {g.shape} differ in shape")
    if p.ndim == 3:
        p, g = p[None], g[None]
    if p.ndim != 4:
        raise ValueError("dice_report002 expects (N, C, H, W) or (C, H, W)")
    pb = (p > threshold).astype(np.float64)
    inter = (g * pb).sum(axis=(2, 3))
    den = g.sum(axis=(2, 3)) + pb.sum(axis=(2, 3))
    d = (2 * inter + eps) / (den + eps)
    if reduction == "none":
        return d
    if reduction != "mean":
        raise ValueError("reduction must be 'mean' or 'none'")
    return float(d.mean())


# ----------------------------------------------------------------------------- classification
def confusion_matrix(y_true: ArrayLike, p_pos: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """2x2 [[TN, FP], [FN, TP]] at ``p_pos >= threshold``."""
    y = np.asarray(y_true).astype(int)
    yhat = (np.asarray(p_pos) >= threshold).astype(int)
    return np.array(
        [
            [np.sum((y == 0) & (yhat == 0)), np.sum((y == 0) & (yhat == 1))],
            [np.sum((y == 1) & (yhat == 0)), np.sum((y == 1) & (yhat == 1))],
        ]
    )


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted as 1/2); NaN if one class."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return NAN
    ranks = _rankdata(s)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _rankdata(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_curve(y_true: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), from (0, 0) to (1, 1)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    thr = np.unique(s)[::-1]
    P, N = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = [0.0] + [float(np.sum(y & (s >= t)) / P) for t in thr]
    fpr = [0.0] + [float(np.sum(~y & (s >= t)) / N) for t in thr]
    return np.array(fpr), np.array(tpr), np.concatenate([[np.inf], thr])


def classification_metrics(y_true: ArrayLike, p_pos: ArrayLike, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, precision, F1, ROC AUC and the confusion matrix."""
    cm = confusion_matrix(y_true, p_pos, threshold)
    (tn, fp), (fn, tp) = cm
    div = lambda a, b: NAN if b == 0 else a / b  # noqa: E731
    prec, sens = div(tp, tp + fp), div(tp, tp + fn)
    f1 = NAN if (math.isnan(prec) or math.isnan(sens) or prec + sens == 0) else 2 * prec * sens / (prec + sens)
    return {
        "accuracy": div(tp + tn, cm.sum()),
        "sensitivity": sens,
        "specificity": div(tn, tn + fp),
        "precision": prec,
        "f1": f1,
        "auc": roc_auc(y_true, p_pos),
        "threshold": threshold,
        "confusion_matrix": cm.tolist(),
    }
