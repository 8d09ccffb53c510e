"""The one evaluation engine: predictions of a model (or masks made elsewhere) against a dataset's
references, as typed per-case and per-slice records.

``evaluate`` (the command), ``cohort`` (the failure gallery's runs), ``train`` (held-out metrics in
the model card) and the checkpoint-floor tests all call :func:`evaluate_cases`; none of them
computes a metric or a failure tag on its own.

* :class:`CaseRecord`: one per (case, label): Dice, IoU, precision, recall, specificity, HD95 and
  ASSD in mm (foreground only, with voxel spacing), volumes in mL, Dice against both ovaries and the
  unlabelled one where the dataset has it, the case-level failure tags, the case's uncertainty.
* :class:`SliceRecord`: one per (case, label, axial slice) of a 3D case: the same per slice (areas in
  mm^2), Dice* and the slice's failure tags (:mod:`medseg_core.analysis`). ``slice`` is the 0-based
  array index; people see ``slice + 1``.
* :class:`CaseResult`: a case's records, its :class:`~medseg_core.inference.Prediction`, and for
  classifiers p(malignant) or per-slice scores with the truth they are scored against.

A *source* is a :class:`~medseg_core.checkpoints.LoadedModel` or a :class:`PredictionFolder`
(masks another tool wrote, matched to the cases by name as nnU-Net's ``evaluate_folder`` does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import analysis as A
from . import metrics as M
from .io.errors import InputError

if TYPE_CHECKING:
    from .checkpoints import LoadedModel
    from .data.datasets import Case
    from .inference import Prediction, PredictOptions
    from .io import Volume

METRIC_KEYS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "hd95_mm",
    "assd_mm",
    "pred_volume_ml",
    "ref_volume_ml",
)


@dataclass
class CaseRecord:
    case: str
    patient: str
    label: str
    dice: float
    iou: float
    precision: float
    recall: float
    specificity: float
    hd95_mm: float
    assd_mm: float
    pred_volume_ml: float
    ref_volume_ml: float
    both_empty: bool
    dice_vs_both_ovaries: float | None = None
    dice_other_ovary: float | None = None
    uncertainty: float | None = None
    primary: str = ""
    tags: tuple[str, ...] = ()

    def row(self) -> dict:
        """A flat dict for CSV (tags joined with ';'; absent optional values left out)."""
        d = asdict(self)
        d["tags"] = ";".join(self.tags)
        return {k: v for k, v in d.items() if v is not None or k in ("uncertainty",)}


@dataclass
class SliceRecord:
    case: str
    patient: str
    label: str
    slice: int  # 0-based array index (people see slice + 1)
    dice: float
    iou: float
    precision: float
    recall: float
    hd95_mm: float
    pred_area_mm2: float
    ref_area_mm2: float
    both_empty: bool
    ref_present: bool
    pred_present: bool
    dice_star: float
    dice_before_pp: float
    delta_pp: float
    frac_on_other: float
    n_components: int
    uncertainty: float | None
    primary: str
    tags: tuple[str, ...]

    def row(self) -> dict:
        d = asdict(self)
        d["tags"] = ";".join(self.tags)
        return d


@dataclass
class CaseResult:
    case: str
    patient: str
    prediction: Prediction | None  # None once evaluate has sent the records to rank 0
    records: list[CaseRecord] = field(default_factory=list)
    slices: list[SliceRecord] = field(default_factory=list)
    p_malignant: float | None = None
    malignant: int | None = None  # the case's truth, when the dataset has it
    slice_scores: np.ndarray | None = None  # slice classifier: p(ovary present) per slice
    slice_truth: np.ndarray | None = None  # ... and whether the reference has foreground there
    seconds: float = 0.0
    units: list[dict] | None = None  # a report protocol's scoring units (evaluate_cases(scorer=...))
    class_pred: int | None = None  # a multi-class head (MMOTU's 8 classes): the argmax class ...
    class_truth: int | None = None  # ... and the case's class id
    case_key: str = ""  # content hash of the loaded volume (medseg_core.review.case_key): verdicts find it


# ----------------------------------------------------------------------------- sources
def reference_masks(labels: Sequence[str], masks: dict, label_map: dict | None = None) -> dict[str, np.ndarray]:
    """The dataset mask that each output label is scored against: ``label_map[label]``, the mask of
    the same name, the expert's mask, or the only mask."""
    label_map = label_map or {}
    out = {}
    for lab in labels:
        key = label_map.get(lab, lab)
        if key not in masks and masks:
            key = "expert" if "expert" in masks else (next(iter(masks)) if len(masks) == 1 else key)
        if key in masks:
            out[lab] = (np.asarray(masks[key]) > 0).astype(np.uint8)
    return out


_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".PNG", ".tif", ".tiff")


class PredictionFolder:
    """Masks written by another tool, one file per case: ``<case_id>.nii.gz`` (or ``.nii``, a DICOM
    SEG or RT Structure Set ``.dcm``, ``.png``), optionally with a suffix (``<case_id>_pred.nii.gz``).
    Read by :func:`medseg_core.io.load_label_masks`: a label map's value ``v`` (a SEG's segment, an
    RTSTRUCT's ROI) is the label ``labels[v]`` when given, the file's own name otherwise; a file with
    a single label is the dataset's primary (first) label. The grid check of :func:`medseg_core.io.load_mask`
    applies: a mask on another grid is refused."""

    def __init__(
        self,
        directory: str | Path,
        name: str | None = None,
        labels: dict[int, str] | None = None,
        family: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError(f"The predictions folder '{directory}' does not exist.")
        self.name = name or self.directory.name
        self.labels = {int(k): v for k, v in (labels or {}).items()}
        self.family = family
        self._files = sorted(p for p in self.directory.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))

    def file_for(self, case_id: str) -> Path | None:
        exact = [p for p in self._files if _stem(p.name) == case_id]
        if exact:
            return exact[0]
        pat = re.compile(re.escape(case_id) + r"[_\-.]")
        near = [p for p in self._files if pat.match(p.name)]
        return near[0] if len(near) == 1 else None

    def predict(self, case: Case, volume: Volume, ref_labels: Sequence[str]) -> Prediction:
        from .inference import prediction_from_masks
        from .io import load_label_masks

        f = self.file_for(case.case_id)
        if f is None:
            raise InputError(f"The predictions folder '{self.directory.name}' has no file for case '{case.case_id}'.")
        masks = load_label_masks(f, like=volume, names=self.labels)
        if len(masks) == 1 and ref_labels and not self.labels:
            # a binary mask (or a single segment) is the dataset's primary (first) label
            masks = {ref_labels[0]: next(iter(masks.values()))}
        return prediction_from_masks(self.name, masks, volume)


def _stem(name: str) -> str:
    for s in _SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


# ----------------------------------------------------------------------------- the engine
def evaluate_cases(
    source: LoadedModel | PredictionFolder,
    cases: Sequence[Case],
    options: PredictOptions | None = None,
    label_map: dict | None = None,
    rules: A.TagRules = A.TagRules(),
    per_slice: bool = True,
    progress: Callable[[int, int], None] | None = None,
    scorer: Callable | None = None,
) -> Iterator[CaseResult]:
    """Predict every case with ``source`` (a LoadedModel with PredictOptions ``options``, or a
    PredictionFolder) and score it against the case's references; yields one CaseResult per case.

    Clinical inputs (menopausal, oncology_center) come from each case's metadata; oracle side
    masking gets the case's reference. ``per_slice`` adds per-slice records for 3D cases.
    ``scorer(case, prediction, refs, volume)`` (a report's protocol, :mod:`medseg_core.protocols`)
    fills ``CaseResult.units`` from the same prediction and references."""
    import time

    from .inference import PredictOptions, predict
    from .review import case_key

    options = options or PredictOptions()
    spec = None if isinstance(source, PredictionFolder) else source.spec
    family = (source.family or "") if isinstance(source, PredictionFolder) else source.spec.family
    for i, case in enumerate(cases):
        vol, masks = case.load()
        t = time.perf_counter()
        if spec is not None and not isinstance(source, PredictionFolder):  # a model
            opts = options
            if spec.clinical_inputs:
                opts = replace(
                    options,
                    menopausal=int(case.extra.get("menopausal", 0)),
                    oncology_center=int(case.extra.get("oncology_center", 0)),
                )
            refs = reference_masks(spec.labels, masks, label_map)
            ref0 = next(iter(refs.values()), None)
            pred = predict(source, vol, opts, reference=ref0 if opts.side_masking == "oracle" else None)
        else:
            assert isinstance(source, PredictionFolder)  # spec is None only for a folder of predictions
            ref_names = [k for k in masks if k != "ovary_other"]
            pred = source.predict(case, vol, ref_names)
            refs = reference_masks(list(pred.masks), masks, label_map)
            if not family and "ovary" in pred.masks:
                family = "ovary"
        res = CaseResult(case.case_id, case.patient_id, pred, seconds=time.perf_counter() - t, case_key=case_key(vol))
        other = masks.get("ovary_other")
        side = case.extra.get("labelled_side")
        mirrored = family == "ovary"
        first = next(iter(pred.masks), None)
        unc = pred.uncertainty_scores or {}
        for lab, ref in refs.items():
            if lab not in pred.masks:
                continue
            mask = pred.masks[lab]
            oth = other if lab == first else None
            before = pred.masks_before_postprocessing.get(lab)
            m = M.segmentation_metrics(mask, ref, vol.spacing)
            tc = A.tag_case(
                mask,
                ref,
                vol,
                other=oth,
                side=side,
                before=before,
                rules=rules,
                mirrored=mirrored,
                hd95_mm=m["hd95_mm"],
            )
            rec = CaseRecord(
                case.case_id,
                case.patient_id,
                lab,
                **{k: m[k] for k in METRIC_KEYS},
                both_empty=bool(m["both_empty"]),
                uncertainty=unc.get("case") if lab == first else None,
                primary=tc["primary"],
                tags=tuple(tc["tags"]),
            )
            if oth is not None:
                rec.dice_vs_both_ovaries = M.dice(mask, (ref > 0) | (oth > 0))
                rec.dice_other_ovary = M.dice(mask, oth)
            res.records.append(rec)
            if per_slice and vol.shape[0] > 1:
                ps = M.per_slice_metrics(mask, ref, vol.spacing)
                tags = A.tag_slices(
                    mask,
                    ref,
                    vol,
                    other=oth,
                    side=side,
                    before=before,
                    rules=rules,
                    mirrored=mirrored,
                    hd95_mm=[s["hd95_mm"] for s in ps],
                )
                u = unc.get("per_slice") if lab == first else None
                for s, tg in zip(ps, tags, strict=True):
                    z = s["slice"]
                    res.slices.append(
                        SliceRecord(
                            case.case_id,
                            case.patient_id,
                            lab,
                            z,
                            s["dice"],
                            s["iou"],
                            s["precision"],
                            s["recall"],
                            s["hd95_mm"],
                            s["pred_area_mm2"],
                            s["ref_area_mm2"],
                            bool(s["both_empty"]),
                            bool(tg["ref_present"]),
                            bool(tg["pred_present"]),
                            tg["dice_star"],
                            tg["dice_before_pp"],
                            tg["delta_pp"],
                            tg["frac_on_other"],
                            int(tg["n_components"]),
                            None if u is None else float(u[z]),
                            tg["primary"],
                            tuple(tg["tags"]),
                        )
                    )
        if scorer is not None:
            res.units = scorer(case, pred, refs, vol)
        if pred.class_probabilities is not None and len(pred.class_probabilities) > 2:
            res.class_pred = int(np.argmax(pred.class_probabilities))
            if "class_id" in case.extra:
                res.class_truth = int(case.extra["class_id"])
        if pred.class_probabilities is not None and len(pred.class_probabilities) == 2:  # not MMOTU's 8 classes
            res.p_malignant = float(pred.class_probabilities[1])
            if "malignant" in case.extra:
                res.malignant = int(case.extra["malignant"])
        if pred.slice_probabilities is not None and masks:
            truth = next((m for k, m in masks.items() if k != "ovary_other"), None)
            res.slice_scores = np.asarray(pred.slice_probabilities)
            res.slice_truth = (np.asarray(truth) > 0).reshape(vol.shape[0], -1).any(1).astype(int)
        if progress:
            progress(i + 1, len(cases))
        yield res


def summarise(results: list[CaseResult], threshold: float = 0.5) -> dict:
    """Means (NaN-aware, with the number of cases behind each) per label, and classification metrics
    (accuracy, sensitivity, specificity, precision, F1, ROC AUC) at the operating ``threshold``."""
    import math

    records = [r for res in results for r in res.records]
    out: dict = {"n_cases": len(results)}
    for lab in sorted({r.label for r in records}):
        rows = [asdict(r) for r in records if r.label == lab]
        s = {}
        for k in METRIC_KEYS + ("dice_vs_both_ovaries", "dice_other_ovary", "uncertainty"):
            vals = [r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
            if vals:
                s[k] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "n": len(vals)}
        out[lab] = s
    cls = [(r.malignant, r.p_malignant) for r in results if r.malignant is not None and r.p_malignant is not None]
    if cls:
        y, p = zip(*cls, strict=True)
        out["classification"] = M.classification_metrics(list(y), list(p), threshold)
    multi = [(r.class_truth, r.class_pred) for r in results if r.class_truth is not None and r.class_pred is not None]
    if multi:
        y, p = np.array(multi).T
        out["multiclass"] = {
            "accuracy": float(np.mean(y == p)),
            "n_cases": int(len(y)),
            "n_classes_seen": int(len(set(y.tolist()))),
        }
    scored = [r for r in results if r.slice_scores is not None]
    if scored:
        truth = np.concatenate([r.slice_truth for r in scored])
        scores = np.concatenate([r.slice_scores for r in scored])
        out["slice_classification"] = {"auc": M.roc_auc(list(truth), list(scores)), "n_slices": int(len(truth))}
    return out


def headline(results: list[CaseResult]) -> dict:
    """The numbers a model card and the checkpoint floors record: mean Dice per case (over the labels
    whose reference is not empty), Dice against both ovaries, classification or slice AUC."""
    out: dict = {"n_cases": len(results)}
    dices, both = [], []
    for res in results:
        per_label = [r.dice for r in res.records if r.ref_volume_ml > 0]
        if res.records:
            dices.append(float(np.mean(per_label)) if per_label else float("nan"))
        both += [r.dice_vs_both_ovaries for r in res.records if r.dice_vs_both_ovaries is not None]
    if dices:
        out["dice"] = M.nanmean(dices)
    if both:
        out["dice_vs_both_ovaries"] = M.nanmean(both)
    s = summarise(results)
    if "classification" in s:
        out["auc"] = s["classification"]["auc"]
    elif "slice_classification" in s:
        out["auc"] = s["slice_classification"]["auc"]
    return out
