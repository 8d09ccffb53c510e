"""Logic behind the review app's pages, kept out of Streamlit so it is testable: which models fit
a case (and why not), a per-session prediction cache, metrics tables and exports."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import metrics as M
from .checkpoints import CHECKPOINT_DIR, checkpoint_status, read_card
from .inference import PredictOptions, Prediction
from .io import Volume
from .models import get_spec, list_models
from .tables import csv_text


@dataclass
class ModelChoice:
    name: str
    title: str
    ok: bool
    reason: str


def compatible_models(volume: Volume, directory=CHECKPOINT_DIR) -> list[ModelChoice]:
    """Every registry model with whether it can run on ``volume`` and, if not, why."""
    out = []
    for name in list_models():
        spec = get_spec(name)
        reason = ""
        if volume.modality not in spec.modalities:
            reason = f"needs {'/'.join(spec.modalities)}, case is {volume.modality}"
        elif spec.dims == "3d" and volume.shape[0] < 8:
            reason = "needs a 3D volume"
        elif spec.task == "restoration" and not volume.is_2d:
            reason = "works on a single 2D image"
        else:
            st = checkpoint_status(name, directory)
            if st == "missing":
                reason = "no checkpoint shipped yet"
            elif st != "ok":
                reason = st
        out.append(ModelChoice(name, spec.title, not reason, reason))
    order = {"segmentation": 0, "segmentation+classification": 1, "classification": 2, "restoration": 3}
    out.sort(key=lambda c: (not c.ok, order[get_spec(c.name).task], c.name))
    return out


#: The post-processing choices offered in the review page (label -> PredictOptions.postprocessing).
POSTPROCESSING_CHOICES = {"model default": None, "none": (), "largest component per slice": ("largest_2d",),
                          "largest component 3D": ("largest_3d",), "RAovSeg closing + largest 3D": ("raovseg",)}


def review_state_for(name: str, option_kw: dict) -> dict:
    """The review page's widget values that reproduce ``option_kw`` (a cohort option set) for model
    ``name``, so a gallery thumbnail opens the case with the run's options. Options the page has no
    widget for are left at their defaults."""
    spec = get_spec(name)
    post = option_kw.get("postprocessing")
    post = None if post is None else tuple(post)
    label = next((k for k, v in POSTPROCESSING_CHOICES.items() if v == post), "model default")
    return {f"pre_{name}": option_kw.get("preprocessing") or spec.preprocessing,
            "side_mode": option_kw.get("side_masking", "none"), "post_mode": label,
            "thr": float(option_kw.get("threshold") or spec.threshold)}


def case_key(volume: Volume) -> str:
    """A content hash identifying the case (array, geometry, modality)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(np.ascontiguousarray(volume.array).tobytes())
    h.update(np.asarray(volume.affine).tobytes())
    h.update(volume.modality.encode())
    return h.hexdigest()


class PredictionCache:
    """LRU cache of predictions per (case, model, options): moving a slider never re-runs a model.

    Lives in one session's state (never shared), holding at most ``max_items`` predictions.
    """

    def __init__(self, max_items: int = 4):
        self.max_items = max_items
        self._d: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(case: str, model: str, options: PredictOptions) -> tuple:
        return (case, model, options.key())

    def get(self, key):
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        self.misses += 1
        return None

    def put(self, key, pred: Prediction) -> None:
        self._d[key] = pred
        self._d.move_to_end(key)
        while len(self._d) > self.max_items:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


def metrics_table(pred: Prediction, reference: np.ndarray, spacing) -> list[dict]:
    """Per-case metrics of the primary (first) label against the reference: one row."""
    label, mask = next(iter(pred.masks.items()))
    m = M.segmentation_metrics(mask, reference, spacing)
    return [{"label": label, "dice": m["dice"], "iou": m["iou"], "hd95_mm": m["hd95_mm"],
             "assd_mm": m["assd_mm"], "precision": m["precision"], "recall": m["recall"],
             "pred_volume_ml": m["pred_volume_ml"], "ref_volume_ml": m["ref_volume_ml"]}]


def slice_metrics(pred_mask: np.ndarray, reference: np.ndarray, spacing, z: int) -> dict:
    m = M.segmentation_metrics(pred_mask[z], reference[z], spacing[1:])
    return {"dice": m["dice"], "iou": m["iou"], "hd95_mm": m["hd95_mm"],
            "pred_area_mm2": m["pred_volume_ml"] * 1000, "ref_area_mm2": m["ref_volume_ml"] * 1000}


def metrics_csv(rows: list[dict], extra: dict | None = None) -> bytes:
    """The metrics table as CSV bytes, each row prefixed with the ``extra`` columns (model, case)."""
    return csv_text([{**(extra or {}), **r} for r in rows]).encode()


def model_card_summary(name: str, directory=CHECKPOINT_DIR) -> dict:
    """What the Models page shows: spec facts plus the card's training data and metrics."""
    spec = get_spec(name)
    card = read_card(name, directory) or {}
    return {"name": name, "title": spec.title, "report": spec.report, "task": spec.task,
            "contract": spec.contract(), "dropout": spec.dropout, "notes": spec.notes,
            "checkpoint": checkpoint_status(name, directory), "card": card}


def initial_slice(shape, plane: str, *masks) -> int:
    """The slice to open on: through the centre of the first non-empty mask, else the middle."""
    from .io.orientation import n_slices

    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    for m in masks:
        if m is not None and np.any(m):
            return int(np.argwhere(m)[:, axis].mean())
    return n_slices(shape, plane) // 2


def preprocessing_preview(volume: Volume, name: str, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Displayed axial slice ``z`` before and after preprocessing ``name`` (whole-volume statistics)."""
    from .io import display_slice
    from .preprocessing import preprocess

    return display_slice(volume.array, "axial", z), display_slice(preprocess(name, volume.array), "axial", z)


def contract_of(name: str, directory=CHECKPOINT_DIR) -> str:
    """The input contract of the shipped checkpoint (its card's input size where it has one)."""
    spec = get_spec(name)
    card = read_card(name, directory) or {}
    size = card.get("input_size")
    text = spec.contract()
    if size:
        text += f" (this checkpoint: {' x '.join(map(str, size))}, {card.get('variant', '')} variant)"
    return text
