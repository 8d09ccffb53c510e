"""Each report's evaluation protocol, as a named option of ``evaluate`` (``--protocol reportNNN``).

medseg's own protocol (the default, :mod:`medseg_core.engine`) scores every case in 3D with voxel
spacing: Dice and friends on the foreground, HD95 = max of the two directed 95th percentiles, both
empty = undefined (NaN, left out of means). The reports averaged differently, and their numbers can
only be compared with a reproduction scored the same way. A :class:`Protocol` says:

* ``unit``: what one score is computed on: ``case`` (the whole volume / image), ``slice`` (every
  axial slice), ``positive_slice`` (slices whose reference has foreground), ``both_nonempty_slice``
  (slices where reference and prediction both have foreground);
* ``average``: ``units`` (mean over all units of all cases, pooled) or ``case_then_cases`` (mean over
  a case's units, then over cases);
* ``dice``: ``standard`` (:func:`metrics.dice`, both empty = NaN) or ``report002`` (threshold 0.5,
  epsilon 0.001, both empty = 1, per channel: :func:`metrics.dice_report002`);
* ``hd95``: ``max_directed`` (:func:`metrics.hd95`) or ``pooled`` (medpy's definition: the 95th
  percentile of both directions' distances pooled, :func:`metrics.hd95_pooled`);
* ``inplane_spacing_mm``: a fixed in-plane pixel spacing the report's code used instead of the
  file's (report 004: 0.033586 mm);
* ``options``: the :class:`~medseg_core.inference.PredictOptions` the report evaluated with (for
  example no post-processing);
* ``class_threshold``: the operating threshold for classification metrics (None: the model's card).

The scoring runs inside the one engine (``evaluate_cases(..., scorer=...)``); this module only
decides what is scored and how it is averaged. Facts and section references are in each protocol's
``description`` and in ``configs/reproduce/rows/NNN.yaml``'s ``protocol`` block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import metrics as M
from .io.errors import InputError

if TYPE_CHECKING:
    from .data.datasets import Case
    from .inference import Prediction
    from .io import Volume

UNITS = ("case", "slice", "positive_slice", "both_nonempty_slice")
AVERAGES = ("units", "case_then_cases")
SCORED = ("dice", "iou", "precision", "recall", "specificity", "hd95_mm")


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    description: str
    unit: str = "case"
    average: str = "units"
    dice: str = "standard"
    hd95: str = "max_directed"
    inplane_spacing_mm: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    class_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS or self.average not in AVERAGES:
            raise ValueError(f"protocol {self.name}: unit {self.unit!r} / average {self.average!r}")


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "medseg",
            "medseg's own protocol",
            "Per case in 3D with voxel spacing; HD95 = max of the directed 95th percentiles; both empty = NaN.",
        ),
        Protocol(
            "report000",
            "Report 000 (ovary MRI, Table 1)",
            "Dice on the ovary-positive validation slices (slices whose reference has ovary), pooled over "
            "all such slices of all validation patients (report 000, Table 1); the 'masked' column adds "
            "oracle side masking (row option side_masking=oracle); no post-processing (the report measures "
            "largest-component post-processing separately).",
            unit="positive_slice",
            average="units",
            options={"postprocessing": ()},
        ),
        Protocol(
            "report001",
            "Report 001 (ovarian lesions in ultrasound)",
            "Per image: segmentation Dice / IoU of each image at threshold 0.5, averaged over images; "
            "classification accuracy, sensitivity, specificity, F1 and ROC AUC over images at the operating "
            "threshold p(malignant) >= 0.5 (see configs/reproduce/rows/001.yaml for the report's wording).",
            unit="case",
            average="units",
            options={"postprocessing": ()},
            class_threshold=0.5,
        ),
        Protocol(
            "report002",
            "Report 002 (GI tract MRI)",
            "Per slice and per organ channel: Dice at threshold 0.5 with epsilon 0.001, so both empty = 1 "
            "(report 002's dice_coefficient), averaged over all slices and channels of the test split.",
            unit="slice",
            average="units",
            dice="report002",
            options={"postprocessing": ()},
        ),
        Protocol(
            "report003",
            "Report 003 (3D spleen CT)",
            "Per test case in 3D with voxel spacing: Dice, IoU, precision, recall, specificity on the spleen "
            "channel only, HD95 in mm (max of the directed 95th percentiles), averaged over the 5 test cases "
            "(report 003, Table I: 'average values from test set inferences').",
            unit="case",
            average="units",
        ),
        Protocol(
            "report004",
            "Report 004 (micro-ultrasound prostate)",
            "Per 2D slice where both masks are non-empty: Dice, and HD95 with medpy's pooled definition at the "
            "public code's pixel spacing 0.033586 mm; averaged per case, then over the test cases; no "
            "post-processing (MicroSegNet's evaluation code; see configs/reproduce/rows/004.yaml).",
            unit="both_nonempty_slice",
            average="case_then_cases",
            hd95="pooled",
            inplane_spacing_mm=0.033586,
            options={"postprocessing": ()},
        ),
    )
}


def get_protocol(name: str | None) -> Protocol:
    key = (name or "medseg").lower()
    if key not in PROTOCOLS:
        raise InputError(f"There is no evaluation protocol '{name}'; medseg knows {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[key]


def _scores(p: Protocol, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    if p.dice == "report002":  # (N, C, H, W): one slice, one channel
        d = M.dice_report002(
            pred.reshape((1, 1) + pred.shape[-2:]).astype(np.float32),
            ref.reshape((1, 1) + ref.shape[-2:]).astype(np.float32),
        )
    else:
        d = M.dice(pred, ref)
    out = {
        "dice": float(d),
        "iou": M.iou(pred, ref),
        "precision": M.precision(pred, ref),
        "recall": M.recall(pred, ref),
        "specificity": M.specificity(pred, ref),
    }
    out["hd95_mm"] = M.hd95_pooled(pred, ref, spacing) if p.hd95 == "pooled" else M.hd95(pred, ref, spacing)
    return out


def score_case(
    p: Protocol, masks: Mapping[str, np.ndarray], refs: Mapping[str, np.ndarray], spacing: Sequence[float]
) -> list[dict]:
    """The protocol's units of one case: a list of ``{label, slice, dice, ..., hd95_mm}`` (``slice`` is
    None for whole-case units). ``spacing`` is the volume's (z, y, x) in mm."""
    sp = tuple(float(s) for s in spacing)
    if p.inplane_spacing_mm:
        sp = (sp[0], float(p.inplane_spacing_mm), float(p.inplane_spacing_mm))
    units = []
    for lab, ref in refs.items():
        if lab not in masks:
            continue
        pred = np.asarray(masks[lab]) > 0
        ref = np.asarray(ref) > 0
        if p.unit == "case":
            units.append({"label": lab, "slice": None, **_scores(p, pred, ref, sp)})
            continue
        for z in range(pred.shape[0]):
            r, q = ref[z], pred[z]
            if p.unit == "positive_slice" and not r.any():
                continue
            if p.unit == "both_nonempty_slice" and not (r.any() and q.any()):
                continue
            units.append({"label": lab, "slice": z, **_scores(p, q, r, sp[1:])})
    return units


def scorer(p: Protocol) -> Callable[..., list[dict]]:
    """The engine's ``scorer`` hook for this protocol."""

    def score(case: Case, prediction: Prediction, refs: dict[str, np.ndarray], volume: Volume) -> list[dict]:
        return score_case(p, prediction.masks, refs, volume.spacing)

    return score


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else math.nan


def aggregate(p: Protocol, per_case_units: dict[str, list[dict]]) -> dict:
    """``{label: {metric: {"mean", "n"}}}`` plus ``"all labels"`` (every label's units together) from
    each case's units, averaged as the protocol says. ``n`` counts units (or cases for
    ``case_then_cases``) with a defined value."""
    labels = sorted({u["label"] for us in per_case_units.values() for u in us})
    out: dict = {}
    for lab in labels + ["all labels"]:
        s = {}
        for k in SCORED:
            if p.average == "units":
                vals = [u[k] for us in per_case_units.values() for u in us if lab in ("all labels", u["label"])]
            else:
                vals = [
                    _mean([u[k] for u in us if lab in ("all labels", u["label"])]) for us in per_case_units.values()
                ]
            defined = [v for v in vals if not math.isnan(v)]
            s[k] = {"mean": _mean(defined), "n": len(defined)}
        out[lab] = s
    out["n_units"] = sum(len(us) for us in per_case_units.values())
    return out


def per_case(per_case_units: dict[str, list[dict]]) -> dict[str, dict]:
    """Each case's own means (``{case: {label | "all labels": {metric: mean}}}``): the per-case rows of
    a report's table (report 004's Table 2 lists every test case)."""
    out = {}
    for case, us in per_case_units.items():
        labels = sorted({u["label"] for u in us})
        out[case] = {
            lab: {k: _mean([u[k] for u in us if lab in ("all labels", u["label"])]) for k in SCORED}
            for lab in labels + ["all labels"]
        }
    return out


def row_value(summary: dict, metric: str, label: str | None = None, case: str | None = None) -> float:
    """The number a report's table row reads from an ``evaluate --protocol`` summary: a segmentation
    metric of ``label`` (default: all labels together), of one ``case`` when the row is a per-case
    row, or a classification metric."""
    if case is not None:
        v = ((summary.get("protocol_per_case") or {}).get(case) or {}).get(label or "all labels", {}).get(metric)
        return math.nan if v is None else float(v)
    prot = summary.get("protocol_scores") or {}
    if metric in SCORED:
        return float(prot.get(label or "all labels", {}).get(metric, {}).get("mean", math.nan))
    cls = summary.get("classification") or summary.get("multiclass") or summary.get("slice_classification") or {}
    if metric in cls:
        return float(cls[metric])
    return math.nan
