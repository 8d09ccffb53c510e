"""Logic behind the review app's pages, kept out of Streamlit so it is testable: which models fit
a case (and why not), a per-session prediction cache, metrics tables and exports."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import metrics as M
from .checkpoints import checkpoint_status, list_checkpoints, model_spec, read_card
from .inference import Prediction, PredictOptions
from .io import Volume
from .io.errors import InputError
from .tables import csv_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .budget import MemoryBudget
    from .checkpoints import LoadedModel
    from .models import ModelSpec


@dataclass
class ModelChoice:
    """One checkpoint the app can offer for a case."""

    ref: str  # what load_model takes: a shipped name or a checkpoint path ("session:NAME" for uploads)
    name: str
    title: str
    ok: bool
    reason: str  # why it cannot run on this case ("" when it can)
    warnings: list = field(default_factory=list)  # where the case lies outside its training data
    source: str = "shipped"  # shipped | your models | uploaded in this session
    task: str = ""
    family: str = ""
    anatomy: str | None = None  # what its training data show (the card's envelope)

    @property
    def outside(self) -> bool:
        """The case lies outside the model's training data (not merely: no envelope recorded)."""
        from .cards import OUTSIDE

        return any(w.startswith(OUTSIDE) for w in self.warnings)

    @property
    def label(self) -> str:
        tag = {"shipped": "", "your models": " · your model", "uploaded in this session": " · uploaded"}[self.source]
        # the warning first: a narrow sidebar cuts the end of a long label
        return f"{'Outside training data: ' if self.outside else ''}{self.title} · {self.name}{tag}"


_TASK_ORDER = {"segmentation": 0, "segmentation+classification": 1, "classification": 2, "restoration": 3}
_ENVELOPE_CACHE: OrderedDict = OrderedDict()


def fit_reason(spec: ModelSpec, volume: Volume) -> str:
    """Why a model cannot run on ``volume`` at all ("" when its input contract fits)."""
    if volume.modality not in spec.modalities:
        return f"needs {'/'.join(spec.modalities)}, case is {volume.modality}"
    if spec.dims == "3d" and volume.shape[0] < 8:
        n = volume.shape[0]
        return f"needs a 3D volume of at least 8 slices; this case has {n} slice{'s' if n != 1 else ''}"
    if spec.task == "restoration" and not volume.is_2d:
        return "works on a single 2D image"
    return ""


def envelope_warnings(spec: ModelSpec, card: dict, volume: Volume, case: str | None = None) -> list[str]:
    """check_envelope, memoised per (case, checkpoint) so the sidebar does not redo it on every rerun."""
    from .cards import check_envelope

    key = (case, spec.name, card.get("sha256"), volume.meta.get("anatomy")) if case else None
    if key and key in _ENVELOPE_CACHE:
        return _ENVELOPE_CACHE[key]
    w = check_envelope(spec, card.get("envelope"), volume)
    if key:
        _ENVELOPE_CACHE[key] = w
        while len(_ENVELOPE_CACHE) > 512:
            _ENVELOPE_CACHE.popitem(last=False)
    return w


def ultrasound_kinds() -> dict[str, str | None]:
    """What a user can say an ultrasound shows -> the anatomy compared with the models' envelopes."""
    from .cards import REGIONS

    return {
        "Not stated": None,
        "Adnexal lesion (transvaginal ultrasound)": REGIONS["ultrasound"][1],
        "Prostate (transrectal micro-ultrasound)": REGIONS["prostate"][1],
        "Another organ": "another organ",
    }


def state_anatomy(volume: Volume, anatomy: str | None) -> bool:
    """Record what the user says the case shows (``meta["anatomy"]``, compared with every model's
    envelope); True when it changed."""
    if volume.meta.get("anatomy") == anatomy:
        return False
    if anatomy is None:
        volume.meta.pop("anatomy", None)
    else:
        volume.meta["anatomy"] = anatomy
    return True


def compatible_models(
    volume: Volume, directory: str | Path | None = None, session_models: dict | None = None, case: str | None = None
) -> list[ModelChoice]:
    """Every checkpoint in the model folders (``directory`` alone if given) and the session's
    uploads, with whether it can run on ``volume``, why not, and where the case lies outside the
    model's training data. Sorted: runnable first, then inside the envelope, then by task."""
    out = []
    for c in list_checkpoints([Path(directory)] if directory is not None else None):
        ref = c.ref if directory is None else str(c.weights)
        source = "shipped" if c.shipped else "your models"
        try:  # the resolved CheckpointRef itself: no second look-up through the model folders
            spec, card = model_spec(c), read_card(c) or {}
        except InputError as e:
            out.append(ModelChoice(ref, c.name, c.name, False, str(e), [], source))
            continue
        reason = fit_reason(spec, volume)
        if not reason:
            st = checkpoint_status(c)
            reason = "" if st == "ok" else st
        warn = envelope_warnings(spec, card, volume, case) if not reason else []
        out.append(
            ModelChoice(
                ref,
                spec.name,
                spec.title,
                not reason,
                reason,
                warn,
                source,
                spec.task,
                spec.family,
                (card.get("envelope") or {}).get("anatomy"),
            )
        )
    for key, lm in (session_models or {}).items():
        reason = fit_reason(lm.spec, volume)
        warn = envelope_warnings(lm.spec, lm.card, volume, case) if not reason else []
        out.append(
            ModelChoice(
                key,
                lm.spec.name,
                lm.spec.title,
                not reason,
                reason,
                warn,
                "uploaded in this session",
                lm.spec.task,
                lm.spec.family,
                (lm.envelope or {}).get("anatomy"),
            )
        )
    # runnable first; then made for what the user says the case shows; then inside the envelope; then
    # the fewest ways outside it (';'-separated findings)
    stated = volume.meta.get("anatomy")
    out.sort(
        key=lambda c: (
            not c.ok,
            bool(stated) and c.anatomy != stated,
            c.outside,
            bool(c.warnings),
            sum(w.count(";") + 1 for w in c.warnings if c.outside),
            _TASK_ORDER.get(c.task, 9),
            c.source != "shipped",
            c.name,
        )
    )
    return out


#: Ovary-side masking modes as people read them (PredictOptions.side_masking values are the keys).
SIDE_LABELS = {
    "none": "None",
    "left": "Left only",
    "right": "Right only",
    "two_pass": "Two-pass (each side separately)",
    "oracle": "Oracle (side of the reference)",
}

#: The post-processing choices offered in the review page (label -> PredictOptions.postprocessing).
POSTPROCESSING_CHOICES = {
    "model default": None,
    "none": (),
    "largest component per slice": ("largest_2d",),
    "largest component 3D": ("largest_3d",),
    "RAovSeg closing + largest 3D": ("raovseg",),
}


def review_state_for(name: str, option_kw: dict) -> dict:
    """The review page's widget values that reproduce ``option_kw`` (a cohort option set) for model
    ``name`` (a checkpoint reference), so a gallery thumbnail opens the case with the run's options.
    MC-dropout samples and their seed are part of it: a cohort stores the MC mean mask, and only the
    same samples with the same seed reproduce it voxel for voxel."""
    spec = model_spec(name)
    post = option_kw.get("postprocessing")
    post = None if post is None else tuple(post)
    label = next((k for k, v in POSTPROCESSING_CHOICES.items() if v == post), "model default")
    return {
        f"pre_{name}": option_kw.get("preprocessing") or spec.preprocessing,
        "side_mode": option_kw.get("side_masking", "none"),
        "post_mode": label,
        "thr": float(option_kw.get("threshold") or spec.threshold),
        "mc_n": int(option_kw.get("mc_samples") or 0),
        "mc_seed": int(option_kw.get("seed") or 0),
        "gate_on": bool(option_kw.get("gate")),
    }


def case_key(volume: Volume) -> str:
    """A content hash identifying the case (array, geometry, modality)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(np.ascontiguousarray(volume.array).data)  # the buffer itself: no copy of a large volume
    h.update(np.asarray(volume.affine).tobytes())
    h.update(volume.modality.encode())
    return h.hexdigest()


class PredictionCache:
    """LRU cache of predictions per (case, model, options): moving a slider never re-runs a model.

    Lives in one session's state (never shared), holding at most ``max_items`` predictions. With a
    ``budget`` (:class:`medseg_core.budget.MemoryBudget`) and the ``session`` id, every prediction
    is stored compactly (:func:`medseg_core.budget.compact_prediction`) and accounted in the
    server-wide budget, which may evict it for another session's request: ``get`` then misses and
    :meth:`was_evicted` says so (the page recomputes it and says why).
    """

    def __init__(self, max_items: int = 4, budget: MemoryBudget | None = None, session: str | None = None) -> None:
        import threading

        self.max_items = max_items
        if budget is not None and session is None:
            raise ValueError("a prediction cache charged to a memory budget needs its session")
        self.budget = budget
        self.session: str = session or ""  # only used with a budget
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.evicted: set = set()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(case: str, model: str, options: PredictOptions) -> tuple:
        return (case, model, options.key())

    def get(self, key: Hashable) -> Prediction | None:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                pred = self._d[key]
            else:
                self.misses += 1
                return None
        if self.budget is not None:
            self.budget.touch(self.session, ("prediction", id(self), key))
        return pred

    def was_evicted(self, key: Hashable) -> bool:
        """Whether ``key``'s prediction was released by the memory budget (not recomputed since)."""
        return key in self.evicted

    def _release(self, key) -> None:  # the budget's callback, possibly from another session's thread
        with self._lock:
            if self._d.pop(key, None) is not None:
                self.evicted.add(key)

    def put(self, key: Hashable, pred: Prediction) -> Prediction:
        """Store ``pred`` (compactly, with a budget); returns what is stored."""
        if self.budget is not None:
            from .budget import compact_prediction, prediction_bytes

            pred = compact_prediction(pred)
            self.budget.hold(
                self.session,
                ("prediction", id(self), key),
                prediction_bytes(pred),
                evictable=True,
                on_release=lambda: self._release(key),
                what="keeping this result",
            )
        with self._lock:
            self._d[key] = pred
            self._d.move_to_end(key)
            self.evicted.discard(key)
            dropped = []
            while len(self._d) > self.max_items:
                dropped.append(self._d.popitem(last=False)[0])
        if self.budget is not None:
            for k in dropped:
                self.budget.drop(self.session, ("prediction", id(self), k))
        return pred

    def clear(self) -> None:
        with self._lock:
            keys = list(self._d)
            self._d.clear()
            self.evicted.clear()
        if self.budget is not None:
            for k in keys:
                self.budget.drop(self.session, ("prediction", id(self), k))

    def __len__(self) -> int:
        return len(self._d)


def metrics_table(pred: Prediction, reference: np.ndarray, spacing: Sequence[float]) -> list[dict]:
    """Per-case metrics of the primary (first) label against the reference: one row."""
    label, mask = next(iter(pred.masks.items()))
    m = M.segmentation_metrics(mask, reference, spacing)
    return [
        {
            "label": label,
            "dice": m["dice"],
            "iou": m["iou"],
            "hd95_mm": m["hd95_mm"],
            "assd_mm": m["assd_mm"],
            "precision": m["precision"],
            "recall": m["recall"],
            "pred_volume_ml": m["pred_volume_ml"],
            "ref_volume_ml": m["ref_volume_ml"],
        }
    ]


def slice_metrics(pred_mask: np.ndarray, reference: np.ndarray, spacing: Sequence[float], z: int) -> dict:
    m = M.segmentation_metrics(pred_mask[z], reference[z], spacing[1:])
    return {
        "dice": m["dice"],
        "iou": m["iou"],
        "hd95_mm": m["hd95_mm"],
        "pred_area_mm2": m["pred_volume_ml"] * 1000,
        "ref_area_mm2": m["ref_volume_ml"] * 1000,
    }


def metrics_csv(rows: list[dict], extra: dict | None = None) -> bytes:
    """The metrics table as CSV bytes, each row prefixed with the ``extra`` columns (model, case)."""
    return csv_text([{**(extra or {}), **r} for r in rows]).encode()


def model_card_summary(ref: str, directory: str | Path | None = None) -> dict:
    """What the Models page shows: the card's recipe facts plus its training data, envelope and metrics."""
    return _summary(model_spec(ref, directory), read_card(ref, directory) or {}, checkpoint_status(ref, directory))


def loaded_model_summary(lm: LoadedModel) -> dict:
    """:func:`model_card_summary` of a model uploaded in a session (verified when it was added)."""
    return _summary(lm.spec, lm.card, "ok")


def _summary(spec, card: dict, status: str) -> dict:
    from .cards import envelope_summary

    return {
        "name": spec.name,
        "title": spec.title,
        "report": card.get("report") or spec.report,
        "task": spec.task,
        "contract": contract_of(spec),
        "dropout": spec.dropout,
        "notes": spec.notes,
        "builder": spec.builder_name,
        "checkpoint": status,
        "card": card,
        "envelope": envelope_summary(card.get("envelope")),
    }


RANDOM_INIT = "random init (no ImageNet weights available offline)"


def pretrained_words(card: dict) -> str:
    """Where a checkpoint's starting weights came from, in words (issue 19 item 5; the card's
    ``pretrained`` field written by :func:`medseg_core.train.pretrained_entry`): a local encoder
    weights file by name and SHA-256 prefix, a checkpoint it was fine-tuned from, or random
    initialisation (the reports fine-tune ImageNet encoders; none can be downloaded here)."""
    p = card.get("pretrained")
    if p is None:
        return "not recorded (card written before the field; medseg never downloads weights)"
    if isinstance(p, str):
        return RANDOM_INIT if p == "random init" else p
    parts = []
    enc = p.get("encoder")
    if enc and enc != "random init":
        sha = (p.get("sha256") or "")[:12]
        n = f", {p['tensors_loaded']} of {p['encoder_tensors']} tensors" if p.get("encoder_tensors") else ""
        parts.append(f"encoder from `{enc}`" + (f" (SHA-256 {sha}…{n})" if sha else ""))
    init = p.get("init_from")
    if init:
        parts.append(f"fine-tuned from checkpoint `{init.get('checkpoint')}`")
    return "; ".join(parts) or RANDOM_INIT


def card_view(s: dict) -> dict:
    """The words and numbers of a model summary for people: a recipe line, headline metrics, training."""
    from .labels import display_name

    card = s["card"]
    r = card.get("recipe") or {}
    pre = r.get("preprocessing") or {}
    params = ", ".join(f"{k} {v}" for k, v in (pre.get("params") or {}).items())
    post = ", ".join(display_name(p, "post") for p in r.get("postprocessing") or []) or "none"
    summary = (
        f"**Report** {s['report']} · **Task** {s['task']} · **Architecture** {s['builder']}  \n"
        f"**Input** {s['contract']}  \n**Preprocessing** "
        f"{display_name(str(pre.get('name')), 'pre')}{f' ({params})' if params else ''} · "
        f"**Post-processing** {post} · **Threshold** {r.get('threshold')} · "
        f"**Labels** {', '.join(r.get('labels') or [])}  \n**Dropout** {s['dropout']}"
    )
    summary += f"  \n**Encoder weights** {pretrained_words(card)}"
    geo = r.get("geometry")
    if geo:
        summary += (
            f" · **Geometry** in-plane {geo.get('inplane_mm')} mm, "
            f"{'pelvis crop' if geo.get('crop') == 'body' else 'no crop'} before slicing"
        )
    test = card.get("test") or {}
    metrics = {"Parameters": f"{card.get('parameters', 0) / 1e6:.2f} M"}
    if "dice" in test:
        metrics["Held-out Dice"] = f"{test['dice']:.3f}"
    if "auc" in test:
        metrics["Held-out AUC"] = f"{test['auc']:.3f}"
    if "dice_vs_both_ovaries" in test:
        metrics["Dice vs both ovaries"] = f"{test['dice_vs_both_ovaries']:.3f}"
    td = card.get("training_data") or {}
    arch = r.get("architecture") or {}
    if td.get("adapter"):
        kind = "synthetic" if td.get("synthetic") else "real"
        data = (
            f"**Training data** `{td['adapter']}` layout ({td.get('n_cases', '?')} {kind} cases), split by "
            f"patient; loss {display_name((card.get('loss') or {}).get('name', '?')).lower()}; "
            f"{card.get('epochs_run', '?')} epochs"
        )
    elif td.get("source"):  # e.g. an imported MONAI bundle: its training data are not described here
        data = (
            f"**Training data** not recorded: imported from a {td['source']} "
            f"({td.get('bundle', '')} {td.get('version', '')}".rstrip()
            + ")"
        )
    else:
        data = "**Training data** not recorded"
    training = (
        f"{data}; input {' x '.join(map(str, r.get('input_size') or []))}; variant "
        f"{arch.get('variant', '?')}; storage {card.get('storage', '?')}; card schema {card.get('schema')}"
        f"{' (migrated from ' + card['migrated_from'] + ')' if card.get('migrated_from') else ''}."
    )
    return {"summary": summary, "metrics": metrics, "training": training}


def initial_slice(shape: tuple[int, int, int], plane: str, *masks: np.ndarray | None) -> int:
    """The slice to open on: through the centre of the first non-empty mask, else the middle."""
    from .io.orientation import n_slices

    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    for m in masks:
        if m is not None and np.any(m):
            return int(np.argwhere(m)[:, axis].mean())
    return n_slices(shape, plane) // 2


def preprocessing_preview(
    volume: Volume, name: str, z: int, params: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Displayed axial slice ``z`` before and after preprocessing ``name`` (whole-volume statistics)."""
    from .io import display_slice
    from .preprocessing import preprocess

    return (
        display_slice(volume.array, "axial", z),
        display_slice(preprocess(name, volume.array, **(params or {})), "axial", z),
    )


def contract_of(spec: ModelSpec) -> str:
    """The input contract a checkpoint runs with (from its card's recipe), in words: the
    preprocessing step by its name for people (the card's step, whatever its architecture's default)."""
    from .labels import display_name

    size = " x ".join(map(str, spec.input_size))
    sp = f", resampled to {' x '.join(f'{s:g}' for s in spec.target_spacing)} mm" if spec.target_spacing else ""
    arch = "" if spec.builder_name == spec.name else f"; architecture {spec.builder_name}"
    return (
        f"{spec.dims.upper()} {spec.in_channels} x {size}{sp}; {', '.join(spec.modalities)}; "
        f"{display_name(spec.preprocessing, 'pre')}{arch}"
    )


def slice_curve(
    values: Sequence[float],
    current: int,
    y_title: str,
    threshold: float | None = None,
    marked: Iterable[int] = (),
    height: int = 170,
) -> go.Figure:
    """A per-slice curve under the viewer's slider, x in 1-based slice numbers as people count them:
    ``values[z]`` for every axial slice, the current slice highlighted, ``threshold`` as a dashed line
    and ``marked`` slices (e.g. those a slice-classifier gate skips) shaded."""
    import plotly.graph_objects as go

    v = np.asarray(values, float)
    x = np.arange(1, len(v) + 1)
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=v,
            mode="lines+markers",
            marker=dict(size=4),
            line=dict(color="#4c78a8"),
            hovertemplate="slice %{x}: %{y:.2f}<extra></extra>",
            showlegend=False,
        )
    )
    for z in marked:
        fig.add_vrect(x0=z + 0.5, x1=z + 1.5, fillcolor="#999", opacity=0.25, line_width=0)
    if threshold is not None:
        fig.add_hline(
            y=threshold,
            line_dash="dash",
            line_color="#e45756",
            annotation_text=f"threshold {threshold:g}",
            annotation_position="top left",
        )
    if 0 <= current < len(v):
        fig.add_trace(
            go.Scatter(
                x=[current + 1],
                y=[v[current]],
                mode="markers",
                showlegend=False,
                marker=dict(size=11, color="#f58518"),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        height=height,
        margin=dict(l=40, r=10, t=10, b=30),
        xaxis_title="slice",
        yaxis_title=y_title,
        yaxis_range=[0, 1.02] if v.size and v.min() >= 0 and v.max() <= 1 else None,
    )
    return fig


def gate_choices(spec: ModelSpec) -> list[str]:
    """Slice-classifier checkpoints that can gate ``spec`` (2D slice-wise segmentation of the same
    family): report 000's RAovSeg first stage for the ovary models."""
    if spec.mode != "slicewise" or spec.task != "segmentation":
        return []
    out = []
    for c in list_checkpoints():
        try:
            s = model_spec(c)
        except InputError:
            continue
        if s.task == "classification" and s.family == spec.family and s.mode == "slicewise":
            out.append(c.ref)
    return out


def segmentation_checkpoints() -> dict:
    """{reference: spec} of every checkpoint in the model folders that segments (what a cohort runs)."""
    out = {}
    for c in list_checkpoints():
        try:
            s = model_spec(c)
        except InputError:
            continue
        if s.task in ("segmentation", "segmentation+classification"):
            out[c.ref] = s
    return out


def cohort_unfit(specs: dict[str, ModelSpec], volume: Volume) -> dict[str, str]:
    """{reference: why it cannot run} for the models of ``specs`` whose input contract does not fit
    ``volume`` (a dataset's first case, or a bundled case like the cohort's phantoms): a cohort run is
    refused before it starts instead of failing after some of its parts."""
    return {ref: why for ref, spec in specs.items() if (why := fit_reason(spec, volume))}


def dropped_option_sets(specs: Iterable[ModelSpec]) -> str:
    """Why report 000's side-masking sets are not offered for these models ("" when they are)."""
    no_side = [s.title for s in specs if not s.side_masking]
    if not no_side:
        return ""
    return (
        "Oracle side masking and two-pass need every model to support side masking; "
        f"{', '.join(no_side)} {'does' if len(no_side) == 1 else 'do'} not, so only the model defaults are offered."
    )


def cohort_option_sets(specs: Iterable[ModelSpec]) -> dict[str, dict]:
    """The option sets a cohort of these models can compare: report 000's side-masking sets when every
    model supports side masking, the slice-classifier gate when every model has one, else the model
    defaults alone."""
    from .cohort import SIDE_SETS

    specs = list(specs)
    sets: dict[str, dict] = {"orig": {}}
    if specs and all(s.side_masking for s in specs):
        sets = {k: dict(v) for k, v in SIDE_SETS.items()}
    gates = [gate_choices(s) for s in specs]
    if specs and all(gates):
        sets["gated"] = {"gate": gates[0][0]}
    return sets
