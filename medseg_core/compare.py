"""Two results for the same volume, side by side (issue 18 item 1): two models, a model and a
prediction made elsewhere, or one model under two option sets.

* :func:`disagreement_map`: per voxel 0 = both background, 1 = only A says foreground, 2 = only B,
  3 = both foreground; "disagreement" is where exactly one of them says foreground (1 or 2).
* :func:`per_slice_disagreement`: per axial slice (axis 0) the disagreeing area in mm^2, the area each
  result claims alone, and Dice(A, B) on that slice (NaN where both are empty).
* :func:`most_disagreeing`: the slices to look at first (largest disagreeing area; ties to the lower
  slice index), only slices that disagree at all.
* :func:`comparison_table`: each result against the reference and the two against each other, with
  the engine's metrics (Dice, IoU, HD95 in mm, volumes in mL), in words for a table.

Arrays follow the library's (z, y, x) orientation; spacing is (z, y, x) in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import metrics as M

AGREE_BACKGROUND, ONLY_A, ONLY_B, AGREE_FOREGROUND = 0, 1, 2, 3


def disagreement_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 map: 0 both background, 1 only A, 2 only B, 3 both foreground."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"the two results have different shapes {a.shape} and {b.shape}")
    return (a.astype(np.uint8) * ONLY_A + b.astype(np.uint8) * ONLY_B).astype(np.uint8)  # 1 + 2 = 3 where both


def per_slice_disagreement(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> dict[str, np.ndarray]:
    """Per axial slice: ``disagree_mm2``, ``only_a_mm2``, ``only_b_mm2`` and ``dice`` (A vs B)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    px = float(spacing[1]) * float(spacing[2])
    only_a = (a & ~b).reshape(a.shape[0], -1).sum(1) * px
    only_b = (b & ~a).reshape(a.shape[0], -1).sum(1) * px
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    tot = a.reshape(a.shape[0], -1).sum(1) + b.reshape(a.shape[0], -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tot > 0, 2.0 * inter / np.maximum(tot, 1), np.nan)
    return {"disagree_mm2": only_a + only_b, "only_a_mm2": only_a, "only_b_mm2": only_b, "dice": dice}


def most_disagreeing(a: np.ndarray, b: np.ndarray, spacing: Sequence[float], k: int = 5) -> list[int]:
    """0-based indices of the (at most) ``k`` slices with the largest disagreeing area."""
    d = per_slice_disagreement(a, b, spacing)["disagree_mm2"]
    order = sorted(np.flatnonzero(d > 0).tolist(), key=lambda z: (-d[z], z))
    return order[:k]


def comparison_table(
    a: np.ndarray,
    b: np.ndarray,
    spacing: Sequence[float],
    ref: np.ndarray | None = None,
    name_a: str = "A",
    name_b: str = "B",
) -> list[dict]:
    """Rows for people: each result against the reference (when there is one) and A against B."""
    pairs = []
    if ref is not None:
        pairs += [(f"{name_a} vs reference", a, ref), (f"{name_b} vs reference", b, ref)]
    pairs.append((f"{name_a} vs {name_b}", a, b))
    rows = []
    for title, x, y in pairs:
        m = M.segmentation_metrics(x, y, spacing)
        rows.append(
            {
                "Comparison": title,
                "Dice": m["dice"],
                "IoU": m["iou"],
                "HD95 (mm)": m["hd95_mm"],
                "Volume, first named (mL)": m["pred_volume_ml"],
                "Volume, second named (mL)": m["ref_volume_ml"],
            }
        )
    return rows
