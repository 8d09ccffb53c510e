"""Failure-mode tags: report 000's qualitative failures, found by documented rules.

Every slice (and every case) of a prediction gets a set of tags and one *primary* tag. Inputs are
the prediction, the reference, optionally the other structure that the model may confuse with the
target (for the ovary: the unlabelled contralateral ovary), the labelled side, and the mask before
post-processing. Every threshold is a field of :class:`TagRules`.

Rules (``P`` prediction, ``R`` reference, ``O`` the "other" region, ``|.|`` voxel counts;
``Dice*`` is Dice with an empty/empty slice counted as 1 and one-sided emptiness as 0):

``good``
    no error tag below (either both empty, or Dice >= ``good_dice`` with HD95 <= ``boundary_hd95_mm``
    and a single component).
``missed``
    ``|R| > 0`` and ``|P| == 0``.
``false_positive_empty``
    ``|R| == 0`` and ``|P| > 0``.
``under_segmentation`` / ``over_segmentation``
    both present, not a side swap, Dice < ``good_dice``; *under* when ``|P| < |R|`` (more voxels
    missed than added: FN > FP), *over* otherwise (FP >= FN).
``side_swap``
    the prediction sits on the other ovary: ``|P & O| / |P| >= swap_fraction`` and the labelled
    ovary is not found (``|P & R| / |R| < found_recall``, or ``|R| == 0``). ``O`` is the second-ovary
    mask when the data has it (dilated by ``other_margin_px`` in-plane), otherwise the half of the
    image contralateral to the labelled side (the *mirrored side* rule; the side is given or taken
    from the reference's horizontal centroid, see :func:`medseg_core.preprocessing.side_of_mask`).
``double_ovary``
    both ovaries predicted: the labelled one found (``|P & R| / |R| >= found_recall``) and, with the
    second-ovary mask, ``|P & O| / |O| >= found_recall``; with the mirrored rule,
    ``|P & O| / |P| >= double_fraction``.
``fragmented``
    the prediction has at least ``fragment_components`` connected components (8-connected in 2D,
    26 in 3D) of at least ``min_component_mm2`` mm^2 in-plane (``min_component_ml`` in 3D); one
    more component is required when ``double_ovary`` already explains two.
``postprocessing_helped`` / ``postprocessing_hurt``
    ``Dice*(P, R) - Dice*(P_before, R)`` >= ``pp_delta`` / <= ``-pp_delta``. These two are
    annotations: they never become the primary tag.
``boundary_error``
    good overlap (Dice >= ``good_dice``) but HD95 > ``boundary_hd95_mm``.

The primary tag is the first present in :data:`PRIMARY_ORDER`. A slice *failed* when its primary
tag is not ``good`` (used for the uncertainty-vs-failure AUROC).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from . import metrics as M

if TYPE_CHECKING:
    from .io import Volume

TAGS = (
    "good",
    "missed",
    "false_positive_empty",
    "under_segmentation",
    "over_segmentation",
    "side_swap",
    "double_ovary",
    "fragmented",
    "postprocessing_helped",
    "postprocessing_hurt",
    "boundary_error",
)
PRIMARY_ORDER = (
    "side_swap",
    "double_ovary",
    "missed",
    "false_positive_empty",
    "under_segmentation",
    "over_segmentation",
    "boundary_error",
    "fragmented",
    "good",
)
TAG_DESCRIPTIONS = {
    "good": "no error found by the rules",
    "missed": "reference present, nothing predicted",
    "false_positive_empty": "nothing there, something predicted",
    "under_segmentation": "poor overlap, fewer voxels predicted than the reference (FN > FP)",
    "over_segmentation": "poor overlap, more voxels predicted than the reference (FP >= FN)",
    "side_swap": "the prediction is on the contralateral ovary",
    "double_ovary": "both ovaries predicted",
    "fragmented": "the prediction falls apart into several components",
    "postprocessing_helped": "post-processing raised Dice by at least the threshold",
    "postprocessing_hurt": "post-processing lowered Dice by at least the threshold",
    "boundary_error": "good overlap, but a large HD95",
}


@dataclass(frozen=True)
class TagRules:
    """Thresholds of the tag rules (see the module docstring)."""

    good_dice: float = 0.5
    swap_fraction: float = 0.5
    found_recall: float = 0.2
    double_fraction: float = 0.2
    other_margin_px: int = 1
    fragment_components: int = 2
    min_component_mm2: float = 4.0
    min_component_ml: float = 0.01
    pp_delta: float = 0.1
    boundary_hd95_mm: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)


def dice_star(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice with both-empty = 1 (a correct negative) and one-sided emptiness = 0."""
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    if not p.any() and not r.any():
        return 1.0
    return float(M.dice(p, r))


def n_components(mask: np.ndarray, spacing: Sequence[float], rules: TagRules = TagRules()) -> int:
    """Connected components (full connectivity) at least the minimum size (mm^2 in 2D, mL in 3D)."""
    m = np.asarray(mask) > 0
    if not m.any():
        return 0
    lab, n = ndimage.label(m, np.ones((3,) * m.ndim, bool))
    sizes = np.bincount(lab.ravel())[1:] * float(np.prod(spacing))
    floor = rules.min_component_mm2 if m.ndim == 2 else rules.min_component_ml * 1000.0
    return int(np.count_nonzero(sizes >= floor))


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0 or not mask.any():
        return mask
    st = ndimage.generate_binary_structure(2, 1)
    if mask.ndim == 3:
        st = np.stack([np.zeros_like(st), st, np.zeros_like(st)])
    return ndimage.binary_dilation(mask, st, iterations=px)


def tag_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    other: np.ndarray | None = None,
    contralateral: np.ndarray | None = None,
    before: np.ndarray | None = None,
    rules: TagRules = TagRules(),
    hd95_mm: float | None = None,
) -> dict:
    """Tags and the numbers behind them for one slice (2D) or one case (3D).

    ``other``: the second-ovary mask (preferred); ``contralateral``: boolean mask of the image half
    opposite the labelled side (used when ``other`` is None); ``before``: the prediction before
    post-processing; ``hd95_mm``: the pair's HD95 when the caller has already computed it (the
    distance transform is the expensive part). Returns a dict with ``tags`` (list), ``primary`` and
    the measured values.
    """
    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    spacing = tuple(float(s) for s in spacing)
    pa, ra = int(p.sum()), int(r.sum())
    tp = int(np.count_nonzero(p & r))
    out: dict[str, Any] = {
        "dice": M.dice(p, r),
        "iou": M.iou(p, r),
        "hd95_mm": M.NAN,
        "pred_voxels": pa,
        "ref_voxels": ra,
        "ref_present": ra > 0,
        "pred_present": pa > 0,
        "frac_on_other": M.NAN,
        "other_recall": M.NAN,
        "n_components": n_components(p, spacing, rules),
        "dice_star": dice_star(p, r),
        "dice_before_pp": M.NAN,
        "delta_pp": M.NAN,
    }
    tags: list[str] = []
    recall_ref = tp / ra if ra else 0.0

    region, rule = None, None
    if other is not None and np.asarray(other).any():
        o = np.asarray(other) > 0
        region, rule = _grow(o, rules.other_margin_px) & ~r, "other_mask"
        out["other_recall"] = float(np.count_nonzero(p & o) / o.sum())
    elif other is None and contralateral is not None:
        region, rule = np.asarray(contralateral, bool) & ~r, "mirrored_side"
    swap = double = False
    if region is not None and pa:
        frac = float(np.count_nonzero(p & region) / pa)
        out["frac_on_other"] = frac
        swap = frac >= rules.swap_fraction and (ra == 0 or recall_ref < rules.found_recall)
        if ra and recall_ref >= rules.found_recall:
            double = (
                (out["other_recall"] >= rules.found_recall) if rule == "other_mask" else frac >= rules.double_fraction
            )
    out["side_rule"] = rule
    if swap:
        tags.append("side_swap")
    if double:
        tags.append("double_ovary")

    if ra and not pa:
        tags.append("missed")
    elif pa and not ra:
        tags.append("false_positive_empty")
    elif pa and ra:
        out["hd95_mm"] = M.hd95(p, r, spacing) if hd95_mm is None else float(hd95_mm)
        if out["dice"] >= rules.good_dice:
            if out["hd95_mm"] > rules.boundary_hd95_mm:
                tags.append("boundary_error")
        elif not swap:
            tags.append("under_segmentation" if pa < ra else "over_segmentation")
    if out["n_components"] >= rules.fragment_components + (1 if double else 0):
        tags.append("fragmented")

    if before is not None:
        db, da = dice_star(before, r), out["dice_star"]
        out["dice_before_pp"], out["delta_pp"] = db, da - db
        if da - db >= rules.pp_delta:
            tags.append("postprocessing_helped")
        elif db - da >= rules.pp_delta:
            tags.append("postprocessing_hurt")
    if not any(t in tags for t in PRIMARY_ORDER[:-1]):
        tags.insert(0, "good")
    out["tags"] = tags
    out["primary"] = next(t for t in PRIMARY_ORDER if t in tags)
    return out


def contralateral_mask(volume: Volume, ref: np.ndarray, side: str | None = None) -> np.ndarray | None:
    """The half of ``volume`` opposite the labelled side (given, or from ``ref``'s centroid)."""
    from .preprocessing import side_mask, side_of_mask

    side = side or side_of_mask(ref, volume)
    if side is None:
        return None
    return side_mask(volume, "right" if side == "left" else "left")


def tag_slices(
    pred: np.ndarray,
    ref: np.ndarray,
    volume: Volume,
    other: np.ndarray | None = None,
    side: str | None = None,
    before: np.ndarray | None = None,
    rules: TagRules = TagRules(),
    mirrored: bool = True,
    hd95_mm: Sequence[float] | None = None,
) -> list[dict]:
    """:func:`tag_masks` for every axial slice of a (Z, Y, X) case; rows carry ``slice``.

    ``mirrored=False`` turns the mirrored-side rule off (structures without a contralateral twin,
    e.g. the spleen): side tags then need the ``other`` mask. ``hd95_mm``: per-slice HD95 values
    already computed (e.g. by :func:`medseg_core.metrics.per_slice_metrics`)."""
    pred, ref = np.asarray(pred) > 0, np.asarray(ref) > 0
    contra = contralateral_mask(volume, ref, side) if other is None and mirrored else None
    rows = []
    for z in range(pred.shape[0]):
        row = tag_masks(
            pred[z],
            ref[z],
            volume.spacing[1:],
            other=None if other is None else np.asarray(other)[z],
            contralateral=None if contra is None else contra[z],
            before=None if before is None else np.asarray(before)[z],
            rules=rules,
            hd95_mm=None if hd95_mm is None else hd95_mm[z],
        )
        rows.append({"slice": z, **row})
    return rows


def tag_case(
    pred: np.ndarray,
    ref: np.ndarray,
    volume: Volume,
    other: np.ndarray | None = None,
    side: str | None = None,
    before: np.ndarray | None = None,
    rules: TagRules = TagRules(),
    mirrored: bool = True,
    hd95_mm: float | None = None,
) -> dict:
    """:func:`tag_masks` on the whole (Z, Y, X) case (3D components, 3D HD95)."""
    contra = contralateral_mask(volume, ref, side) if other is None and mirrored else None
    return tag_masks(
        pred, ref, volume.spacing, other=other, contralateral=contra, before=before, rules=rules, hd95_mm=hd95_mm
    )


def failed(row: dict) -> bool:
    return row["primary"] != "good"


def tag_counts(rows: Iterable[dict]) -> dict[str, int]:
    """How many rows carry each tag (a row may count under several)."""
    counts = {t: 0 for t in TAGS}
    for r in rows:
        tags = r["tags"] if isinstance(r["tags"], (list, tuple)) else str(r["tags"]).split(";")
        for t in tags:
            if t in counts:
                counts[t] += 1
    return counts


def uncertainty_auroc(rows: Iterable[dict], score_key: str = "uncertainty", only_informative: bool = True) -> dict:
    """AUROC of an uncertainty score for detecting failed slices (primary tag not ``good``).

    With ``only_informative`` slices where neither reference nor prediction has anything are left
    out (trivial negatives would inflate the AUROC). Returns auroc (NaN with one class only), the
    numbers of failed and good slices, and the score's mean in each group.
    """
    use = [
        r
        for r in rows
        if r.get(score_key) is not None
        and np.isfinite(float(r[score_key]))
        and (not only_informative or r["ref_present"] or r["pred_present"])
    ]
    y = np.array([r["primary"] != "good" for r in use], bool)
    s = np.array([float(r[score_key]) for r in use], float)
    return failure_auroc(y, s)


def failure_auroc(failed: np.ndarray, score: np.ndarray) -> dict:
    """:func:`uncertainty_auroc` on arrays: ``failed`` (bool per slice) and its ``score``."""
    y, s = np.asarray(failed, bool), np.asarray(score, float)
    out = {
        "n_failed": int(y.sum()),
        "n_good": int((~y).sum()),
        "auroc": M.NAN,
        "mean_failed": float(s[y].mean()) if y.any() else M.NAN,
        "mean_good": float(s[~y].mean()) if (~y).any() else M.NAN,
    }
    if y.any() and (~y).any():
        out["auroc"] = M.roc_auc(y.astype(int), s)
    return out
