"""Report 001's ultrasound workflow as the Ultrasound page runs it.

* Annotation removal first (optional): the annotation-removal U-Net's output becomes a new
  :class:`~medseg_core.io.Volume` (``volume.with_array(restored)``) and **the models run on it**,
  as in report 001's "denoised" rows. Predictions are cached under the content hash of the image
  the model actually saw, so results on the original and on the cleaned image never mix.
* The chosen model and a second opinion (the cascade beside a multitask model, the multitask
  EfficientNet-B0 beside the cascade) with a plain sentence when their calls differ.
* What the clinical inputs change: p(malignant) for all four (menopausal, oncology centre)
  combinations, measured on this image, and a sentence saying when a checkpoint in effect ignores
  them here.
* Calls at the operating threshold with the styling that matches their meaning (a benign call is
  never drawn in an alarming colour).

Measured facts about the shipped checkpoints that a user must know are in :data:`KNOWN_ISSUES`,
keyed by the checkpoint's SHA-256 so they disappear when the checkpoint is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .inference import Prediction, PredictOptions, predict
from .io import Volume
from .io.orientation import display_slice
from .review import PredictionCache, case_key

if TYPE_CHECKING:
    from .checkpoints import LoadedModel

DENOISER = "us_denoiser"
MULTITASK = ("us_mtl_effb0", "us_mtl_unet")
CASCADE = "us_cascade"
#: (menopausal, oncology_center) in the order the table lists them.
CLINICAL_COMBINATIONS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: A change of p(malignant) smaller than this over all clinical combinations counts as "ignores them".
NEGLIGIBLE_SHIFT = 0.01
RAN_ON_CLEANED = (
    "Models ran on the annotation-removed image (the annotation-removal U-Net's output), "
    "as in report 001's denoised rows."
)
SHORT_NAMES = {
    "us_mtl_effb0": "the multitask EfficientNet-B0",
    "us_mtl_unet": "the multitask U-Net",
    "us_cascade": "the cascade",
}

#: Measured defects of checkpoints, by SHA-256 of the weights file (see README, Ultrasound). A
#: checkpoint that was repaired or replaced has another SHA-256, so its entry no longer shows; an
#: entry stays for anyone who still loads the old file.
KNOWN_ISSUES = {
    # the cascade as first shipped; repaired (batch-norm statistics re-estimated, card "repairs")
    "916e412b33be2361333eedd1db9783af56f82b6b4a3229648247f808db9adb66": (
        "Known defect of this cascade checkpoint: its classifier gives p(malignant) between 0.0016 and 0.0051 "
        "for every image measured (30 held-out and 20 fresh synthetic cases: AUC 1.00, but no malignant case "
        "reaches even the lowest threshold offered here, 0.05). It ranks lesions correctly, but its batch-norm "
        "statistics are stale (the classifier was kept from training epoch 3), so its low p is not evidence of "
        "a benign lesion. Its crop, clinical inputs and normalisation were checked and match training. "
        "The shipped us_cascade is repaired; this file can be repaired with "
        "`python -m medseg_core.train --recalibrate-bn <file> --config configs/demo/us_cascade.yaml`."
    ),
}

Progress = Callable[[float, str], None]
Loader = Callable[[str], "LoadedModel"]


@dataclass(frozen=True)
class Call:
    """A p(malignant) read at an operating threshold, with the styling that matches its meaning."""

    p: float
    threshold: float

    @property
    def malignant(self) -> bool:
        return self.p >= self.threshold

    @property
    def label(self) -> str:
        return "malignant" if self.malignant else "benign"

    @property
    def badge(self) -> str:
        """The badge text (st.metric's delta): short, so that it is never cut off."""
        return f"call: {self.label}"

    @property
    def colour(self) -> str:
        """st.metric ``delta_color``: red for a malignant call, neutral grey for a benign one."""
        return "red" if self.malignant else "gray"


@dataclass
class ClinicalEffect:
    """p(malignant) of one model on one image for every clinical combination."""

    model: str
    user: tuple[int, int]
    p: dict[tuple[int, int], float]

    @property
    def shift(self) -> float:
        """Largest change of p(malignant) over the four combinations."""
        return float(max(self.p.values()) - min(self.p.values()))

    def ignores(self) -> bool:
        return self.shift < NEGLIGIBLE_SHIFT

    def changes_call(self, threshold: float) -> bool:
        calls = {Call(p, threshold).malignant for p in self.p.values()}
        return len(calls) > 1

    def sentence(self, threshold: float) -> str:
        who = model_label(self.model)
        if self.ignores():
            by = f"at most {self.shift:.4f}" if self.shift >= 1e-4 else "less than 0.0001"
            return (
                f"{who}: the clinical inputs move p(malignant) by {by} on this image (no call changes), "
                "so in practice this checkpoint ignores them here."
            )
        change = "and the call changes with them" if self.changes_call(threshold) else "but the call stays the same"
        return (
            f"{who}: the clinical inputs move p(malignant) by up to {self.shift:.2f} on this image, "
            f"{change} at threshold {threshold:.2f}."
        )


@dataclass
class UltrasoundResult:
    """What the Ultrasound page shows after Run."""

    original: Volume
    volume: Volume  # what the models ran on: the cleaned image when annotation removal was on
    denoised: bool
    primary: Prediction
    second: Prediction | None = None
    denoiser: Prediction | None = None
    effects: dict[str, ClinicalEffect] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # model -> known checkpoint issue

    @property
    def ran_on(self) -> str:
        return RAN_ON_CLEANED if self.denoised else "Models ran on the image as loaded."

    @property
    def p(self) -> float:
        return malignant_probability(self.primary)

    @property
    def p_second(self) -> float | None:
        return None if self.second is None else malignant_probability(self.second)

    def disagreement(self, threshold: float) -> str | None:
        """A plain sentence when the two models' calls differ at ``threshold``; None when they agree."""
        p_second = self.p_second
        if self.second is None or p_second is None:
            return None
        return disagreement(self.primary.model, self.p, self.second.model, p_second, threshold)

    def cascade(self) -> Prediction | None:
        for pr in (self.primary, self.second):
            if pr is not None and pr.boxes is not None:
                return pr
        return None


def model_label(model: str) -> str:
    """A short capitalised name for headings: "Multitask EfficientNet-B0", "Cascade"."""
    name = SHORT_NAMES.get(model, model).removeprefix("the ")
    return name[:1].upper() + name[1:]


def malignant_probability(pred: Prediction) -> float:
    if pred.class_probabilities is None:
        raise ValueError(f"{pred.model} gives no class probabilities")
    return float(pred.class_probabilities[1])


def disagreement(model_a: str, p_a: float, model_b: str, p_b: float, threshold: float) -> str | None:
    a, b = Call(p_a, threshold), Call(p_b, threshold)
    if a.malignant == b.malignant:
        return None
    na, nb = SHORT_NAMES.get(model_a, model_a), SHORT_NAMES.get(model_b, model_b)
    return (
        f"The two models disagree: {na} gives p(malignant) {p_a:.2f} ({a.label}), {nb} gives "
        f"{p_b:.2f} ({b.label}) at threshold {threshold:.2f}. Do not rely on either call alone."
    )


def second_opinion(model: str, available: Iterable[str]) -> str | None:
    """The model shown beside ``model``: the cascade beside a multitask model, the multitask
    EfficientNet-B0 (or U-Net) beside the cascade; None when none is available."""
    available = list(available)
    order = (CASCADE,) if model != CASCADE else MULTITASK
    return next((m for m in order if m in available and m != model), None)


def known_issue(loaded: object) -> str | None:
    card = getattr(loaded, "card", None) or {}
    return KNOWN_ISSUES.get(card.get("sha256", ""))


def _load(ref: str, load: Loader | None) -> LoadedModel:
    if load is not None:
        return load(ref)
    from .checkpoints import load_model

    return load_model(ref)


def _prefixed(progress: Progress, prefix: str) -> Progress:
    """``progress`` with ``prefix`` before every message."""
    return lambda f, msg: progress(f, prefix + msg)


def cached_predict(
    model: str,
    volume: Volume,
    options: PredictOptions,
    cache: PredictionCache | None = None,
    load: Loader | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """``predict`` once per (content of ``volume``, model, options): the key is the hash of the
    image the model sees, so the original and the annotation-removed image never share results."""
    key = PredictionCache.key(case_key(volume), model, options)
    pred = cache.get(key) if cache is not None else None
    if pred is None:
        pred = predict(_load(model, load), volume, options, progress=progress)
        if cache is not None:
            cache.put(key, pred)
    return pred


def remove_annotations(
    volume: Volume,
    cache: PredictionCache | None = None,
    load: Loader | None = None,
    progress: Progress | None = None,
    denoiser: str = DENOISER,
) -> tuple[Volume, Prediction]:
    """(the annotation-removed image as a new Volume on the same grid, the denoiser's prediction)."""
    pred = cached_predict(denoiser, volume, PredictOptions(), cache, load, progress)
    restored = np.asarray(pred.restored, dtype=volume.array.dtype)
    meta = dict(volume.meta, annotation_removed=denoiser)
    return volume.with_array(restored, name=f"{volume.name} (annotations removed)", meta=meta), pred


def analyse(
    volume: Volume,
    model: str,
    menopausal: int,
    oncology_center: int,
    denoise: bool = False,
    second: str | None = None,
    clinical_combinations: bool = True,
    cache: PredictionCache | None = None,
    load: Loader | None = None,
    progress: Progress | None = None,
) -> UltrasoundResult:
    """Denoise (optional), then run ``model`` and ``second`` on the image the user chose, with the
    user's clinical inputs and, with ``clinical_combinations``, with the three other combinations.

    Predictions are made with the model's default class threshold (the page applies its own
    threshold with :class:`Call`), so moving the threshold never re-runs a model.
    """
    prog = progress or (lambda f, m: None)
    loaded: dict = {}

    def get(ref: str) -> LoadedModel:  # each model loaded at most once per call
        if ref not in loaded:
            loaded[ref] = _load(ref, load)
        return loaded[ref]

    user = (int(menopausal), int(oncology_center))
    models = [m for m in (model, second) if m]
    combos = CLINICAL_COMBINATIONS if clinical_combinations else (user,)
    jobs = [(m, c) for m in models for c in ([user] + [c for c in combos if c != user])]
    n = len(jobs) + (1 if denoise else 0)
    step = [0]

    def sub(f: float, msg: str) -> None:
        prog(min((step[0] + f) / n, 1.0), msg)

    run_vol, dpred = volume, None
    if denoise:
        run_vol, dpred = remove_annotations(volume, cache, get, lambda f, m: sub(f, f"removing annotations: {m}"))
        step[0] += 1
    preds: dict[tuple[str, tuple[int, int]], Prediction] = {}
    for m, c in jobs:
        opts = PredictOptions(menopausal=c[0], oncology_center=c[1])
        preds[(m, c)] = cached_predict(m, run_vol, opts, cache, get, _prefixed(sub, f"{m}: "))
        step[0] += 1
    res = UltrasoundResult(
        original=volume,
        volume=run_vol,
        denoised=denoise,
        primary=preds[(model, user)],
        second=preds.get((second, user)) if second else None,
        denoiser=dpred,
    )
    if clinical_combinations:
        for m in models:
            res.effects[m] = ClinicalEffect(m, user, {c: malignant_probability(preds[(m, c)]) for c in combos})
    for m in models:
        note = known_issue(get(m))
        if note:
            res.notes[m] = note
    prog(1.0, "done")
    return res


def crop_picture(volume: Volume, box: Sequence[int] | None) -> np.ndarray | None:
    """The cascade's crop (``box`` on the array grid, as in ``Prediction.boxes``) of the image the
    model ran on, oriented as the page displays the whole image. None without a box."""
    if not box:
        return None
    r0, r1, c0, c1 = (int(v) for v in box)
    return display_slice(volume.array[:, r0:r1, c0:c1], "axial", 0)


def clinical_table(result: UltrasoundResult) -> list[dict]:
    """One row per clinical combination, one p(malignant) column per model, the user's row marked."""
    if not result.effects:
        return []
    user = next(iter(result.effects.values())).user
    rows = []
    for m, o in CLINICAL_COMBINATIONS:
        row = {"menopausal": "post" if m else "pre", "oncology centre": "yes" if o else "no"}
        for model, eff in result.effects.items():
            if (m, o) in eff.p:
                row[f"p(malignant), {model_label(model)}"] = f"{eff.p[(m, o)]:.4f}"
        row["your inputs"] = "yours" if (m, o) == user else ""
        rows.append(row)
    return rows
