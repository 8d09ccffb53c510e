"""``predict``: preprocessing -> model -> inverse mapping -> post-processing, on the input grid.

* 2D models run slice-wise over every axial slice in batches (ultrasound: the one image), each
  slice resized to the model's input size and the probabilities resized back. A card with a
  ``recipe.geometry`` (report 000: 0.35 mm in-plane, pelvis crop) has the volume resampled and cut
  first and the maps taken back afterwards (:class:`~medseg_core.preprocessing.PelvisGeometry`).
* 3D models: the volume is resampled to the model's spacing, run with MONAI's
  ``sliding_window_inference`` (Gaussian blending, the spec's roi and overlap), and the
  probabilities are resampled back to the input grid.
* Everything runs under ``torch.inference_mode`` with the model in eval mode (dropout switched on
  only for MC sampling). Results are :class:`Prediction` objects whose maps have exactly the
  input :class:`~medseg_core.io.Volume`'s shape and affine.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from . import postprocess as post
from . import uncertainty as unc
from .checkpoints import LoadedModel, load_auxiliary, load_model
from .io import Volume
from .io.errors import InputError
from .preprocessing import SIDE_MODES, SliceResize, apply_side_masking, plan_geometry, preprocess, side_mask

Progress = Callable[[float, str], None]
_THREADS_SET = False


@dataclass(frozen=True)
class PredictOptions:
    """What to run. ``None`` means "the model's default" (see its spec).

    Attributes:
        preprocessing: a name from :data:`medseg_core.preprocessing.PREPROCESSING`.
        side_masking: none | left | right | oracle (needs ``reference``; evaluation only) | two_pass.
        postprocessing: names from ``largest_2d``, ``largest_3d``, ``raovseg``; ``()`` for none.
        threshold: probability threshold for masks.
        mc_samples: MC-dropout samples (0 = off).
        tta: flip test-time augmentation (a model-agnostic uncertainty estimate).
        seed: makes MC sampling reproducible.
        batch_size: slices per forward pass for 2D models.
        menopausal, oncology_center: clinical inputs (0/1) for the ultrasound models.
        class_threshold: operating threshold on p(malignant).
        gate: a slice-classifier checkpoint (reference as for ``load_model``; report 000's RAovSeg
            first stage, e.g. ``ovary_slice_classifier``): slices it calls free of the structure are
            left empty. 2D slice-wise segmentation models only.
        gate_threshold: p(present) below which a slice is skipped (default: the classifier's card).
        calibrated: show temperature-scaled probabilities (the card's ``recipe.calibration``, fitted by
            ``medseg calibrate``); masks and class decisions stay those of the uncalibrated model.
    """

    preprocessing: str | None = None
    side_masking: str = "none"
    postprocessing: tuple[str, ...] | None = None
    threshold: float | None = None
    mc_samples: int = 0
    tta: bool = False
    seed: int = 0
    batch_size: int = 8
    menopausal: int | None = None
    oncology_center: int | None = None
    class_threshold: float | None = None
    gate: str | LoadedModel | None = None
    gate_threshold: float | None = None
    calibrated: bool = False

    def key(self) -> tuple:
        return tuple(sorted(asdict(self).items()))


@dataclass
class Prediction:
    model: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    masks_before_postprocessing: dict[str, np.ndarray] = field(default_factory=dict)
    removed: dict[str, np.ndarray] = field(default_factory=dict)
    added: dict[str, np.ndarray] = field(default_factory=dict)
    class_probabilities: np.ndarray | None = None  # (2,) [benign, malignant] for the case
    slice_class_probabilities: np.ndarray | None = None  # (Z, 2)
    malignant: bool | None = None
    slice_probabilities: np.ndarray | None = None  # slice classifier: p(ovary present) per slice
    restored: np.ndarray | None = None  # annotation removal output, input intensity range
    boxes: list | None = None  # cascade crops (r0, r1, c0, c1) on the displayed slice grid
    uncertainty: dict[str, np.ndarray] = field(default_factory=dict)
    uncertainty_method: str | None = None
    uncertainty_scores: dict = field(default_factory=dict)
    sides: dict = field(default_factory=dict)
    side_info: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)  # slice-classifier gate: model, threshold, skipped slices
    calibration: dict = field(default_factory=dict)  # temperature applied to the probabilities shown
    options: PredictOptions = field(default_factory=PredictOptions)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.masks)

    @property
    def mask(self) -> np.ndarray | None:
        """The first label's mask (the primary output)."""
        return next(iter(self.masks.values()), None)

    @property
    def probability(self) -> np.ndarray | None:
        return next(iter(self.probabilities.values()), None)


def configure_threads() -> int:
    """Use every core for intra-op work unless ``MEDSEG_THREADS`` says otherwise."""
    global _THREADS_SET
    if not _THREADS_SET:
        n = int(os.environ.get("MEDSEG_THREADS", os.cpu_count() or 1))
        torch.set_num_threads(max(1, n))
        _THREADS_SET = True
    return torch.get_num_threads()


def _resolve(model) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model)
    raise TypeError("predict() takes a registry name or a LoadedModel")


def check_contract(loaded: LoadedModel, volume: Volume, options: PredictOptions) -> None:
    """Raise InputError when the case does not fit the model's input contract."""
    spec = loaded.spec
    if volume.modality not in spec.modalities:
        raise InputError(
            f"The {spec.title} model expects {' or '.join(spec.modalities)} images but this case is "
            f"{volume.modality}; choose a model made for {volume.modality} or load a {spec.modalities[0]} case."
        )
    if spec.dims == "3d" and volume.shape[0] < 8:
        raise InputError(
            f"The {spec.title} model needs a 3D volume but this case has {volume.shape[0]} slice(s); "
            "load the whole series or choose a 2D model."
        )
    if options.side_masking not in SIDE_MODES:
        raise InputError(f"Unknown side-masking mode '{options.side_masking}'; choose one of {', '.join(SIDE_MODES)}.")
    if options.side_masking != "none" and not spec.side_masking:
        raise InputError(f"Ovary-side masking applies to the ovary slice models; switch it off for {spec.title}.")
    if spec.clinical_inputs and (options.menopausal is None or options.oncology_center is None):
        raise InputError(
            f"The {spec.title} model needs the clinical inputs menopausal status and oncology centre (0 or 1 each); "
            "enter them before running it."
        )
    if options.gate and (spec.mode != "slicewise" or spec.task != "segmentation"):
        raise InputError(
            f"A slice-classifier gate applies to 2D slice-wise segmentation models, not to {spec.title}; "
            "switch the gate off."
        )
    if options.mc_samples and not unc.has_dropout(loaded.module):
        unc.require_dropout(loaded.module, f"the {spec.title} model")
    budget = float(os.environ.get("MEDSEG_PREDICT_MEMORY_GB", "8")) * 1e9
    n = int(np.prod(volume.shape))
    if spec.dims == "3d":
        factor = np.prod(np.asarray(volume.spacing) / np.asarray(spec.target_spacing))
        n_model = n * factor
        need = n * 4 * 6 + n_model * 4 * (4 + 2 * max(options.mc_samples, 1))
    else:
        need = n * 4 * (6 + 2 * max(options.mc_samples, 1))
    if need > budget:
        raise InputError(
            f"This volume would need about {need / 1e9:.1f} GB to segment, more than this server allows "
            f"({budget / 1e9:.0f} GB); crop it or reduce the number of MC samples."
        )


def out_of_envelope(loaded: LoadedModel, volume: Volume) -> list[str]:
    """Sentences saying how ``volume`` lies outside the model's training data (its card's envelope);
    empty when it lies inside. Shown before a run and kept in ``Prediction.warnings``."""
    from .cards import check_envelope

    if not loaded.card:  # a network built in memory (tests, training), not a checkpoint
        return []
    return check_envelope(loaded.spec, loaded.envelope, volume)


def predict(
    model: LoadedModel | str,
    volume: Volume,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
    reference: np.ndarray | None = None,
) -> Prediction:
    """Segment ``volume`` with ``model`` (a registry name or a :class:`LoadedModel`).

    ``reference`` (the ground-truth mask) is used only by ``side_masking="oracle"``.
    ``progress(fraction, message)`` is called as work advances.
    """
    options = options or PredictOptions()
    loaded = _resolve(model)
    spec = loaded.spec
    prog = progress or (lambda f, m: None)
    check_contract(loaded, volume, options)
    if options.side_masking == "oracle" and reference is None:
        raise InputError("Oracle side masking needs the ground-truth mask; upload one or choose another mode.")
    configure_threads()
    t0 = time.perf_counter()
    timings: dict[str, float] = {"threads": float(torch.get_num_threads())}
    pred = Prediction(
        model=spec.name,
        shape=volume.shape,
        spacing=volume.spacing,
        affine=volume.affine.copy(),
        options=options,
        timings=timings,
    )
    pre_name = options.preprocessing or spec.preprocessing
    # the card's parameters belong to the card's step; another step chosen by the user runs with its defaults
    params = spec.preprocessing_params if pre_name == spec.preprocessing else {}
    pred.warnings.extend(out_of_envelope(loaded, volume))
    denoiser = (loaded.card or {}).get("denoiser")
    if denoiser:  # report 001's denoised models: their annotation-removal checkpoint cleans every input first
        from .denoise import apply_denoiser

        volume = apply_denoiser(volume, str(denoiser))
        timings["denoise_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    # report 000's geometry (card recipe.geometry): resample in-plane and cut the pelvis box before
    # slicing, exactly as training prepared the slices; the maps go back onto the input grid below
    geo, work = None, volume
    if spec.geometry and spec.dims == "2d" and spec.mode == "slicewise":
        geo = plan_geometry(volume, **spec.geometry)
        work = geo.volume(volume)
        if reference is not None:
            reference = (geo.forward(np.asarray(reference, np.float32), order=0) > 0.5).astype(np.uint8)
        timings["geometry_s"] = time.perf_counter() - t
    x = preprocess(pre_name, work.array, **params)
    timings["preprocess_s"] = time.perf_counter() - t
    prog(0.05, f"preprocessed ({pre_name})")
    with loaded.lock:
        if spec.dims == "3d":
            out = _run_3d(loaded, x, volume, options, prog, timings)
        elif options.side_masking == "two_pass":
            out = _two_pass(loaded, x, work, options, prog, timings, pred)
        else:
            xm, info = apply_side_masking(x, work, options.side_masking, reference)
            pred.side_info = info
            out = _run_2d(loaded, xm, work, options, prog, timings, 0.1, 0.9)
    if geo is not None:
        out = _geometry_back(geo, out, pred)
    _finish(pred, loaded, volume, options, out, timings)
    if options.gate:
        _apply_gate(pred, volume, options, prog)
    prog(1.0, "done")
    timings["total_s"] = time.perf_counter() - t0
    return pred


def _geometry_back(geo, out: dict, pred: Prediction) -> dict:
    """Maps made on a :class:`~medseg_core.preprocessing.PelvisGeometry` grid back onto the input
    grid: probabilities and MC samples bilinear, two-pass side masks nearest (0 outside the box)."""
    out = dict(out)
    for k in ("seg", "samples", "image"):
        if k in out:
            out[k] = geo.inverse(out[k])
    for side in pred.sides.values():
        side["mask"] = (geo.inverse(side["mask"], order=0) > 0.5).astype(np.uint8)
    return out


def _gate_model(ref: str) -> LoadedModel:
    """Slice classifiers used as gates, loaded once per process."""
    return load_auxiliary(
        ref,
        "classification",
        "The gate '{ref}' is a {task} model; a gate must be a slice classifier (for example ovary_slice_classifier).",
    )


def _apply_gate(pred: Prediction, volume: Volume, options: PredictOptions, prog) -> None:
    """Report 000's two-stage RAovSeg: blank the slices the classifier calls free of the structure.
    What it blanks is added to ``removed`` (shown as removed by post-processing)."""
    if options.gate is None:
        return
    gate = options.gate if isinstance(options.gate, LoadedModel) else _gate_model(options.gate)
    prog(0.95, "slice classifier gate")
    g = predict(gate, volume, PredictOptions(batch_size=options.batch_size))
    thr = options.gate_threshold if options.gate_threshold is not None else gate.spec.threshold
    p = np.asarray(g.slice_probabilities, np.float32)
    skip = p < thr
    keep = (~skip).astype(np.uint8)[:, None, None]
    for label, m in pred.masks.items():
        pred.removed[label] = pred.removed[label] | (m * (1 - keep))
        pred.masks[label] = m * keep
    for side in pred.sides.values():
        side["mask"] = side["mask"] * keep
    pred.slice_probabilities = p
    pred.gate = {"model": gate.name, "threshold": float(thr), "skipped": [int(z) for z in np.flatnonzero(skip)]}
    for k, v in g.timings.items():
        if k.endswith("_s"):
            pred.timings[f"gate_{k}"] = v


# ----------------------------------------------------------------------------- 2D
def _clinical(options: PredictOptions, n: int, device) -> torch.Tensor:
    v = [float(options.menopausal or 0), float(options.oncology_center or 0)]
    return torch.tensor([v] * n, dtype=torch.float32, device=device)


def _outputs_to_probs(spec, out) -> dict[str, torch.Tensor]:
    """Model output -> {"seg": (B,L,H,W) probs, "cls": (B,2) probs, "score": (B,), "image": ...}."""
    if spec.task == "restoration":
        return {"image": out}
    if isinstance(out, dict):  # multitask models; a single-task one (task seg / cls) gives one of the two
        r = {}
        if "seg" in out:
            r["seg"] = torch.sigmoid(out["seg"])
        if "cls" in out:
            r["cls"] = torch.softmax(out["cls"], dim=1)
        if "boxes" in out:
            r["boxes"] = out["boxes"]
        return r
    if spec.task == "classification":
        return {"score": torch.sigmoid(out)[:, 0]}
    if spec.activation == "softmax":
        return {"seg": torch.softmax(out, dim=1)[:, 1:]}
    return {"seg": torch.sigmoid(out)}


def _forward(loaded: LoadedModel, xb: torch.Tensor, options: PredictOptions):
    spec, m = loaded.spec, loaded.module
    return m(xb, _clinical(options, xb.shape[0], xb.device)) if spec.clinical_inputs else m(xb)


def _decode(loaded: LoadedModel, state, options, n, size):
    spec, m = loaded.spec, loaded.module
    decode = cast(Callable[..., Any], m.decode)  # the registry models' own method (unknown to nn.Module)
    if spec.clinical_inputs:
        return decode(state, _clinical(options, n, next(m.parameters()).device), size=size)
    return decode(state)


def _batch_probs(loaded: LoadedModel, xb: torch.Tensor, options: PredictOptions):
    """(deterministic/mean probs dict, samples of the seg/score map or None) for one batch."""
    spec, m = loaded.spec, loaded.module
    n = options.mc_samples
    if n:
        if spec.mc_prefix:
            with torch.inference_mode(), unc.mc_dropout_mode(m):
                state = cast(Callable[[torch.Tensor], Any], m.encode)(xb)
                samples = []
                for i in range(n):
                    unc._seed(options.seed, i)
                    samples.append(_outputs_to_probs(spec, _decode(loaded, state, options, xb.shape[0], xb.shape[-2:])))
        else:
            with torch.inference_mode(), unc.mc_dropout_mode(m):
                samples = []
                for i in range(n):
                    unc._seed(options.seed, i)
                    samples.append(_outputs_to_probs(spec, _forward(loaded, xb, options)))
        return _stack_samples(samples)
    if options.tta and spec.task != "classification":
        samples = []
        with torch.inference_mode():
            for ax in unc.flip_axes(2):
                o = _outputs_to_probs(spec, _forward(loaded, torch.flip(xb, ax) if ax else xb, options))
                for k in ("seg", "image"):
                    if k in o and ax:
                        o[k] = torch.flip(o[k], ax)
                o.pop("boxes", None)
                samples.append(o)
        return _stack_samples(samples)
    with torch.inference_mode():
        return _outputs_to_probs(spec, _forward(loaded, xb, options)), None


def _stack_samples(samples: list[dict]):
    keys = [k for k in samples[0] if k != "boxes"]
    stacked = {k: torch.stack([s[k] for s in samples]) for k in keys}
    mean = {k: v.mean(0) for k, v in stacked.items()}
    if "boxes" in samples[0]:
        mean["boxes"] = samples[0]["boxes"]
    main = stacked.get("seg", stacked.get("score", stacked.get("image")))
    return mean, main


def _run_2d(loaded: LoadedModel, x: np.ndarray, volume: Volume, options: PredictOptions, prog, timings, f0, f1):
    device = loaded.device
    z, h, w = x.shape
    size = (int(loaded.size[0]), int(loaded.size[1]))
    rs = SliceResize((h, w), size)
    t = time.perf_counter()
    xin = rs.forward(x)  # (Z, H', W')
    timings["resize_s"] = timings.get("resize_s", 0.0) + time.perf_counter() - t
    seg, cls, score, image, samples, boxes = [], [], [], [], [], []
    bs = max(1, int(options.batch_size))
    t = time.perf_counter()
    for i in range(0, z, bs):
        xb = torch.from_numpy(np.ascontiguousarray(xin[i : i + bs, None])).to(device)
        probs, smp = _batch_probs(loaded, xb, options)
        if "seg" in probs:
            seg.append(probs["seg"].float().cpu().numpy())
        if "cls" in probs:
            cls.append(probs["cls"].float().cpu().numpy())
        if "score" in probs:
            score.append(probs["score"].float().cpu().numpy())
        if "image" in probs:
            image.append(probs["image"].float().cpu().numpy())
        if "boxes" in probs:
            boxes.extend(probs["boxes"])
        if smp is not None:
            samples.append(smp.float().cpu().numpy())
        prog(f0 + (f1 - f0) * min(1.0, (i + bs) / z), f"slices {min(i + bs, z)}/{z}")
    timings["model_s"] = timings.get("model_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    out: dict = {}
    if seg:
        s = np.concatenate(seg)  # (Z, L, H', W')
        out["seg"] = np.stack([rs.inverse(s[:, k]) for k in range(s.shape[1])], axis=0)  # (L, Z, H, W)
    if samples:
        smp = np.concatenate(samples, axis=1)  # (n, Z, [L,] H', W')
        if smp.ndim == 5:
            smp = smp[:, :, 0]
        if smp.ndim == 4:
            out["samples"] = np.stack([rs.inverse(smp[i]) for i in range(smp.shape[0])])
    if cls:
        out["cls"] = np.concatenate(cls)
    if score:
        out["score"] = np.concatenate(score)
    if image:
        out["image"] = rs.inverse(np.concatenate(image)[:, 0])
    if boxes:
        sy, sx = h / size[0], w / size[1]
        out["boxes"] = [
            None
            if b is None
            else (int(b[0] * sy), int(math.ceil(b[1] * sy)), int(b[2] * sx), int(math.ceil(b[3] * sx)))
            for b in boxes
        ]
    timings["resize_s"] += time.perf_counter() - t
    return out


def _two_pass(loaded, x, volume, options, prog, timings, pred):
    """Report 000's proposed deployment: segment each anatomical half separately."""
    t = options.threshold if options.threshold is not None else loaded.spec.threshold
    outs, sides = {}, {}
    for k, side in enumerate(("left", "right")):
        xm, _ = apply_side_masking(x, volume, side)
        outs[side] = _run_2d(loaded, xm, volume, options, prog, timings, 0.1 + 0.4 * k, 0.5 + 0.4 * k)
    keep = {s: side_mask(volume, s) for s in ("left", "right")}
    combined = dict(outs["left"])
    combined["seg"] = np.where(keep["left"][None], outs["left"]["seg"], outs["right"]["seg"])
    if "samples" in outs["left"]:
        combined["samples"] = np.where(keep["left"][None], outs["left"]["samples"], outs["right"]["samples"])
    for side in ("left", "right"):
        p = outs[side]["seg"][0] * keep[side]
        m = p > t
        sides[side] = {
            "mask": m.astype(np.uint8),
            "confidence": float(p[m].mean()) if m.any() else 0.0,
            "max_probability": float(p.max()),
            "volume_ml": float(m.sum() * np.prod(volume.spacing) / 1000),
        }
    pred.sides = sides
    pred.side_info = {"mode": "two_pass"}
    return combined


# ----------------------------------------------------------------------------- 3D
def _n_windows(shape, roi, overlap) -> int:
    n = 1
    for s, r in zip(shape, roi, strict=True):
        if s <= r:
            continue
        step = max(int(r * (1 - overlap)), 1)
        n *= math.ceil((s - r) / step) + 1
    return n


def _run_3d(loaded: LoadedModel, x: np.ndarray, volume: Volume, options: PredictOptions, prog, timings):
    from monai.inferers import sliding_window_inference

    spec, m, device = loaded.spec, loaded.module, loaded.device
    target = np.asarray(spec.target_spacing, float)
    new_shape = tuple(
        max(1, int(round(n * s / ts))) for n, s, ts in zip(volume.shape, volume.spacing, target, strict=True)
    )
    t = time.perf_counter()
    xt = torch.from_numpy(x)[None, None].to(device)
    if new_shape != volume.shape:
        xt = F.interpolate(xt, size=new_shape, mode="trilinear", align_corners=False)
    timings["resample_s"] = time.perf_counter() - t
    roi = tuple(loaded.size)
    n_mc = options.mc_samples
    aug = unc.flip_axes(3) if (options.tta and not n_mc) else [()]
    total_calls = max(1, math.ceil(_n_windows(new_shape, roi, spec.sw_overlap) / spec.sw_batch_size))
    calls = [0]

    def fg(logits):
        if spec.activation == "softmax":
            if logits.shape[1] == 2:  # softmax(l)[1] = sigmoid(l1 - l0): one channel, no normalising pass
                return torch.sigmoid(logits[:, 1:2] - logits[:, 0:1])
            return torch.softmax(logits, 1)[:, 1:2]
        return torch.sigmoid(logits[:, :1])

    def predictor(win):
        calls[0] += 1
        prog(0.1 + 0.8 * min(1.0, calls[0] / total_calls), f"window batch {calls[0]}/{total_calls}")
        if n_mc:
            outs = []
            for i in range(n_mc):
                unc._seed(options.seed, i)
                outs.append(fg(m(win)))
            return torch.cat(outs, 1)
        outs = []
        for ax in aug:
            y = fg(m(torch.flip(win, ax) if ax else win))
            outs.append(torch.flip(y, ax) if ax else y)
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)

    t = time.perf_counter()
    ctx = unc.mc_dropout_mode(m) if n_mc else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        out = sliding_window_inference(
            xt,
            roi_size=roi,
            sw_batch_size=spec.sw_batch_size,
            predictor=predictor,
            overlap=spec.sw_overlap,
            mode="gaussian",
        )
    timings["model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    assert isinstance(out, torch.Tensor)  # the predictor returns one tensor, so the stitched output is one
    if tuple(out.shape[2:]) != volume.shape:
        out = F.interpolate(out, size=volume.shape, mode="trilinear", align_corners=False)
    arr = out[0].float().cpu().numpy()  # (n, Z, Y, X)
    timings["resample_s"] += time.perf_counter() - t
    res = {"seg": arr.mean(0, keepdims=True)}
    if arr.shape[0] > 1:
        res["samples"] = arr
    return res


# ----------------------------------------------------------------------------- finishing
def _finish(pred: Prediction, loaded: LoadedModel, volume: Volume, options: PredictOptions, out: dict, timings) -> None:
    spec = loaded.spec
    thr = options.threshold if options.threshold is not None else spec.threshold
    t = time.perf_counter()
    if "seg" in out:
        for k, label in enumerate(spec.labels):
            p = np.clip(out["seg"][k], 0, 1).astype(np.float32)
            pred.probabilities[label] = p
            pred.masks_before_postprocessing[label] = (p > thr).astype(np.uint8)
    steps = options.postprocessing if options.postprocessing is not None else spec.postprocessing
    for label, m in pred.masks_before_postprocessing.items():
        kept, removed, added = m, np.zeros_like(m), np.zeros_like(m)
        for step in steps:
            if step == "raovseg":
                kept, r, a = post.raovseg_postprocess(kept)
                removed, added = removed | r, added | a
            elif step in post.POSTPROCESSING:
                kept, r = post.POSTPROCESSING[step](kept)
                removed = removed | r
            else:
                raise InputError(f"Unknown post-processing '{step}'; choose largest_2d, largest_3d or raovseg.")
        pred.masks[label] = kept.astype(np.uint8)
        pred.removed[label] = (removed & m).astype(np.uint8)
        pred.added[label] = added.astype(np.uint8)
    if pred.sides:
        for side in pred.sides.values():
            side["mask"] = (side["mask"] & pred.masks[spec.labels[0]]).astype(np.uint8) if steps else side["mask"]
    timings["postprocess_s"] = time.perf_counter() - t
    if "cls" in out:
        pred.slice_class_probabilities = out["cls"]
        pred.class_probabilities = out["cls"].mean(0)
        ct = options.class_threshold if options.class_threshold is not None else (spec.class_threshold or 0.5)
        # a benign/malignant head only: MMOTU's 8-class head (report 001) has no p(malignant)
        pred.malignant = bool(pred.class_probabilities[1] >= ct) if len(pred.class_probabilities) == 2 else None
    temperature = card_temperature(loaded) if options.calibrated else None
    if temperature is not None:  # after every decision: calibration changes confidence, not masks
        from .calibration import apply_temperature

        pred.probabilities = {k: apply_temperature(v, temperature) for k, v in pred.probabilities.items()}
        if pred.class_probabilities is not None and len(pred.class_probabilities) == 2:
            pm = float(apply_temperature(np.array([pred.class_probabilities[1]]), temperature)[0])
            pred.class_probabilities = np.array([1 - pm, pm], np.float32)
        pred.calibration = {"temperature": temperature}
    elif options.calibrated:
        pred.warnings.append(
            "This model's card has no calibration: the probabilities shown are the model's own. "
            "Fit one with 'medseg calibrate'."
        )
    if "score" in out:
        pred.slice_probabilities = out["score"]
    if "image" in out:
        pre = options.preprocessing or spec.preprocessing
        if pre == "scale255":
            lo, hi = 0.0, 255.0
        else:
            lo, hi = float(volume.array.min()), float(volume.array.max())
        pred.restored = (np.clip(out["image"], 0, 1) * (hi - lo) + lo).astype(np.float32)
    if "boxes" in out:
        pred.boxes = out["boxes"]
    if "samples" in out:
        t = time.perf_counter()
        pred.uncertainty = unc.summarise(out["samples"])
        if options.mc_samples and float(pred.uncertainty["variance"].max()) == 0.0:
            pred.warnings.append(
                "All MC-dropout samples were identical: this model's dropout does not act on its "
                "output, so the uncertainty maps are empty. Use test-time augmentation instead."
            )
        pred.uncertainty_method = "mc_dropout" if options.mc_samples else "tta"
        if pred.mask is not None:
            pred.uncertainty_scores = unc.uncertainty_scores(pred.uncertainty["entropy"], pred.mask)
        timings["uncertainty_s"] = time.perf_counter() - t


def card_temperature(loaded: LoadedModel) -> float | None:
    """The temperature of the card's ``recipe.calibration`` (None when the model was never calibrated)."""
    from .calibration import card_calibration

    cal = card_calibration(loaded.card)
    return float(cal["temperature"]) if cal else None


def prediction_from_masks(name: str, masks: dict[str, np.ndarray], volume: Volume) -> Prediction:
    """A :class:`Prediction` for masks made outside medseg (nnU-Net, TotalSegmentator, MONAI Label, a
    colleague), so that the review page treats them as a model's output: TP / FP / FN colouring,
    metrics, failure tags, exports. ``masks`` maps label -> (Z, Y, X) mask on ``volume``'s grid (see
    :func:`medseg_core.io.load_label_masks`); the first label is the one compared with a reference.
    There is no post-processing (``removed`` / ``added`` are empty masks) and no probabilities."""
    if not masks:
        raise InputError("The prediction holds no label; upload a mask with at least one label.")
    out: dict[str, np.ndarray] = {}
    for label, m in masks.items():
        m = np.asarray(m)
        if m.shape != volume.shape:
            raise InputError(
                f"The prediction's label '{label}' is {' x '.join(map(str, m.shape))} voxels but the image "
                f"is {' x '.join(map(str, volume.shape))}; upload the prediction made on this image."
            )
        out[str(label)] = (m > 0).astype(np.uint8)
    zeros = np.zeros(volume.shape, np.uint8)
    zeros.flags.writeable = False  # one shared empty mask for every label
    return Prediction(
        model=str(name),
        shape=volume.shape,
        spacing=volume.spacing,
        affine=volume.affine.copy(),
        masks=out,
        masks_before_postprocessing=dict(out),
        removed={k: zeros for k in out},
        added={k: zeros for k in out},
    )
