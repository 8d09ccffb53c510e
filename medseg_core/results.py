"""The typed results that pass between the stages of :func:`medseg_core.inference.predict`.

Three layers, each a small dataclass instead of a string-keyed dict:

* :class:`ModelOutput`: one batch through the network, as probabilities (torch tensors on the
  model's grid). A multitask model fills ``seg`` and ``cls``; a slice classifier ``score``; an
  annotation-removal network ``image``; the cascade adds its crop ``boxes``.
* :class:`GridMaps`: what a runner (2D slice-wise, two-pass, 3D sliding window) returns for the
  whole volume: numpy maps on the working grid, the samples behind them when uncertainty was
  asked for, and the runtime that ran the network.
* :class:`Prediction`: what the caller gets, organised by what it holds: per-label results
  (:class:`LabelResult`), the classification (:class:`Classification`), the restoration
  (:class:`Restoration`), uncertainty (:class:`Uncertainty`), the geometry (:class:`Geometry`),
  plus the side-masking, gate and calibration records, options, timings and warnings.

The flat names of earlier versions (``pred.masks``, ``pred.probabilities``, ``pred.class_probabilities``,
``pred.restored``, ``pred.shape`` ...) remain as read-only views, so reading code stays short; writing
goes through the groups (``pred.per_label[label].mask = ...``). Array orientation everywhere:
(Z, Y, X) on the input volume's grid (:mod:`medseg_core.io`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .inference import PredictOptions


# ----------------------------------------------------------------------------- between stages
@dataclass
class ModelOutput:
    """One batch's network output as probabilities, on the model's grid.

    Attributes:
        seg: (B, L, H, W) foreground probability per label (2D) or (B, L, *roi) (3D).
        cls: (B, K) class probabilities (K = 2: benign, malignant; MMOTU: 8 classes).
        score: (B,) p(structure present) of a slice classifier.
        image: (B, 1, H, W) restored image in [0, 1] (annotation removal).
        boxes: the cascade's crop per item (r0, r1, c0, c1) on the model grid, or None.
    """

    seg: torch.Tensor | None = None
    cls: torch.Tensor | None = None
    score: torch.Tensor | None = None
    image: torch.Tensor | None = None
    boxes: list | None = None

    #: the fields that are spatial maps (flipped back after a flipped pass; resized back)
    SPATIAL = ("seg", "image")
    TENSORS = ("seg", "cls", "score", "image")

    def sampled(self) -> torch.Tensor | None:
        """The map whose spread is the uncertainty: the first label's probability, else the slice
        score, else the restored image."""
        if self.seg is not None:
            return self.seg[:, 0]
        return self.score if self.score is not None else (None if self.image is None else self.image[:, 0])


@dataclass
class GridMaps:
    """A runner's result for the whole volume, numpy on the working grid (Z, Y, X).

    Attributes:
        seg: (L, Z, Y, X) foreground probabilities (the mean over samples when sampled).
        samples: (n, Z, Y, X) MC-dropout or TTA samples of :meth:`ModelOutput.sampled` (None: none).
        cls: (Z, K) per-slice class probabilities.
        score: (Z,) per-slice p(present).
        image: (Z, Y, X) restored image in [0, 1].
        boxes: per-slice cascade crops on the working grid.
        runtime: what ran the network, in words ("PyTorch" or "PyTorch, channels-last-3d",
            :mod:`medseg_core.runtime`).
    """

    seg: np.ndarray | None = None
    samples: np.ndarray | None = None
    cls: np.ndarray | None = None
    score: np.ndarray | None = None
    image: np.ndarray | None = None
    boxes: list | None = None
    runtime: str = "PyTorch"

    def replace(self, **changes: Any) -> GridMaps:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- the prediction
@dataclass
class Geometry:
    """The input volume's grid: shape (Z, Y, X), spacing in mm (z, y, x), 4 x 4 affine (RAS+ world)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray


@dataclass
class LabelResult:
    """One label's maps on the input grid (Z, Y, X).

    ``mask`` is after post-processing; ``before_postprocessing`` the thresholded probability;
    ``removed`` / ``added`` what post-processing took away / filled in (both 0/1 uint8).
    ``probability`` is None for masks made outside medseg (no probabilities)."""

    mask: np.ndarray
    before_postprocessing: np.ndarray
    removed: np.ndarray
    added: np.ndarray
    probability: np.ndarray | None = None


@dataclass
class Classification:
    """Case-level classification: ``probabilities`` (K,) ([benign, malignant] for K = 2), the
    per-slice ones (Z, K), and the decision at the operating threshold (None for K != 2)."""

    probabilities: np.ndarray
    slice_probabilities: np.ndarray | None = None
    malignant: bool | None = None

    @property
    def p_malignant(self) -> float | None:
        return float(self.probabilities[1]) if len(self.probabilities) == 2 else None


@dataclass
class Restoration:
    """An annotation-removal model's output, back in the input's intensity range."""

    image: np.ndarray


@dataclass
class Uncertainty:
    """Uncertainty maps (``mean``, ``entropy``, ``variance``, ``mutual_information``, see
    :func:`medseg_core.uncertainty.summarise`), how they were made (``mc_dropout`` or ``tta``),
    how many samples, and the per-case / per-slice scores for ranking."""

    maps: dict[str, np.ndarray]
    method: str
    n_samples: int = 0
    scores: dict = field(default_factory=dict)


@dataclass
class SideResult:
    """Report 000's two-pass deployment, one anatomical half: its mask (0/1, input grid), the mean
    probability inside it ("confidence"), the largest probability on that half, and its volume in mL."""

    mask: np.ndarray
    confidence: float
    max_probability: float
    volume_ml: float


@dataclass
class Prediction:
    """A model's output for one volume, on the input grid (see the module docstring)."""

    model: str
    geometry: Geometry
    per_label: dict[str, LabelResult] = field(default_factory=dict)
    classification: Classification | None = None
    presence: np.ndarray | None = None  # slice classifier (or gate): p(structure present) per slice
    restoration: Restoration | None = None
    boxes: list | None = None  # cascade crops (r0, r1, c0, c1) on the displayed slice grid
    uncertainty: Uncertainty | None = None
    sides: dict[str, SideResult] = field(default_factory=dict)  # two-pass: "left" / "right"
    side_info: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)  # slice-classifier gate: model, threshold, skipped slices
    calibration: dict = field(default_factory=dict)  # temperature applied to the probabilities shown
    options: PredictOptions = None  # type: ignore[assignment]  # set in __post_init__ (no import cycle)
    runtime: str = "PyTorch"  # what ran the network (medseg_core.runtime)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_maps(
        cls,
        model: str,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        affine: np.ndarray,
        probabilities: Mapping[str, np.ndarray] | None = None,
        masks: Mapping[str, np.ndarray] | None = None,
        masks_before_postprocessing: Mapping[str, np.ndarray] | None = None,
        removed: Mapping[str, np.ndarray] | None = None,
        added: Mapping[str, np.ndarray] | None = None,
        **groups: Any,
    ) -> Prediction:
        """A prediction from per-label maps given label by label (another tool's probabilities and
        masks): no post-processing unless ``masks_before_postprocessing`` / ``removed`` / ``added``
        say otherwise. ``groups`` are the other fields (``classification=...``, ``options=...``)."""
        probabilities = dict(probabilities or {})
        masks = dict(masks or {})
        for k, p in probabilities.items():
            masks.setdefault(k, (np.asarray(p) > 0.5).astype(np.uint8))
        per_label = {}
        for k, m in masks.items():
            m = np.asarray(m).astype(np.uint8, copy=False)
            zeros = np.zeros_like(m)
            per_label[k] = LabelResult(
                mask=m,
                before_postprocessing=(masks_before_postprocessing or {}).get(k, m),
                removed=(removed or {}).get(k, zeros),
                added=(added or {}).get(k, zeros),
                probability=probabilities.get(k),
            )
        z, y, x = (int(v) for v in shape)
        sz, sy, sx = (float(v) for v in spacing)
        return cls(model=model, geometry=Geometry((z, y, x), (sz, sy, sx), affine), per_label=per_label, **groups)

    def __post_init__(self) -> None:
        if self.options is None:
            from .inference import PredictOptions

            self.options = PredictOptions()

    # ------------------------------------------------------------------ read-only views
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def affine(self) -> np.ndarray:
        return self.geometry.affine

    @property
    def labels(self) -> list[str]:
        return list(self.per_label)

    def _view(self, attr: str) -> Mapping[str, np.ndarray]:
        return MappingProxyType({k: getattr(r, attr) for k, r in self.per_label.items()})

    @property
    def masks(self) -> Mapping[str, np.ndarray]:
        return self._view("mask")

    @property
    def masks_before_postprocessing(self) -> Mapping[str, np.ndarray]:
        return self._view("before_postprocessing")

    @property
    def removed(self) -> Mapping[str, np.ndarray]:
        return self._view("removed")

    @property
    def added(self) -> Mapping[str, np.ndarray]:
        return self._view("added")

    @property
    def probabilities(self) -> Mapping[str, np.ndarray]:
        return MappingProxyType({k: r.probability for k, r in self.per_label.items() if r.probability is not None})

    @property
    def mask(self) -> np.ndarray | None:
        """The first label's mask (the primary output)."""
        return next((r.mask for r in self.per_label.values()), None)

    @property
    def probability(self) -> np.ndarray | None:
        return next((r.probability for r in self.per_label.values()), None)

    @property
    def class_probabilities(self) -> np.ndarray | None:
        return None if self.classification is None else self.classification.probabilities

    @property
    def slice_class_probabilities(self) -> np.ndarray | None:
        return None if self.classification is None else self.classification.slice_probabilities

    @property
    def malignant(self) -> bool | None:
        return None if self.classification is None else self.classification.malignant

    @property
    def slice_probabilities(self) -> np.ndarray | None:
        return self.presence

    @property
    def restored(self) -> np.ndarray | None:
        return None if self.restoration is None else self.restoration.image

    @property
    def uncertainty_maps(self) -> Mapping[str, np.ndarray]:
        return MappingProxyType(self.uncertainty.maps if self.uncertainty else {})

    @property
    def uncertainty_method(self) -> str | None:
        return None if self.uncertainty is None else self.uncertainty.method

    @property
    def uncertainty_scores(self) -> dict:
        return {} if self.uncertainty is None else self.uncertainty.scores
