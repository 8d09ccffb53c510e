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

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
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
from .results import (
    Classification,
    Geometry,
    GridMaps,
    LabelResult,
    ModelOutput,
    Prediction,
    Restoration,
    SideResult,
    Uncertainty,
)

__all__ = ["PredictOptions", "Prediction", "predict", "prediction_from_masks", "check_contract", "out_of_envelope"]

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
        mc_batched: decode the MC samples in one batched decoder pass (models with ``spec.mc_prefix``):
            samples from the same distribution but not equal sample for sample to the default sequential
            passes; faster only where a big batch is cheap (a GPU; on this 2-core CPU only EfficientNet-B0
            gains, see :mod:`medseg_core.uncertainty`).
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
    mc_batched: bool = False
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
        geometry=Geometry(volume.shape, volume.spacing, volume.affine.copy()),
        options=options,
        timings=timings,
    )
    pre_name = options.preprocessing or spec.preprocessing
    # the card's parameters belong to the card's step; another step chosen by the user runs with its defaults
    params = spec.preprocessing_params if pre_name == spec.preprocessing else {}
    pred.warnings.extend(out_of_envelope(loaded, volume))
    denoiser = (loaded.card or {}).get("denoiser")
    if denoiser:  # report 001's denoised models: their annotation-removal checkpoint cleans every input first
        from .denoise import apply_denoiser, load_denoiser

        dn = load_denoiser(str(denoiser))
        done = volume.meta.get("annotation_removed")
        if (
            done != dn.name
        ):  # an image this denoiser already cleaned (the Ultrasound page's switch) is not cleaned twice
            if done:
                pred.warnings.append(
                    f"This image's annotations were removed by {done}; the model was trained on images cleaned "
                    f"by {dn.name}, which was applied as well."
                )
            volume = apply_denoiser(volume, dn)
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
            out = _run_2d(loaded, xm, options, prog, timings, 0.1, 0.9)
    if geo is not None:
        out = _geometry_back(geo, out, pred)
    _finish(pred, loaded, volume, options, out, timings)
    if options.gate:
        _apply_gate(pred, volume, options, prog)
    prog(1.0, "done")
    timings["total_s"] = time.perf_counter() - t0
    return pred


def _geometry_back(geo, out: GridMaps, pred: Prediction) -> GridMaps:
    """Maps made on a :class:`~medseg_core.preprocessing.PelvisGeometry` grid back onto the input
    grid: probabilities and MC samples bilinear, two-pass side masks nearest (0 outside the box)."""
    for side in pred.sides.values():
        side.mask = (geo.inverse(side.mask, order=0) > 0.5).astype(np.uint8)
    return out.replace(
        **{k: geo.inverse(getattr(out, k)) for k in ("seg", "samples", "image") if getattr(out, k) is not None}
    )


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
    for r in pred.per_label.values():
        r.removed = r.removed | (r.mask * (1 - keep))
        r.mask = r.mask * keep
    for side in pred.sides.values():
        side.mask = side.mask * keep
    pred.presence = p
    pred.gate = {"model": gate.name, "threshold": float(thr), "skipped": [int(z) for z in np.flatnonzero(skip)]}
    for k, v in g.timings.items():
        if k.endswith("_s"):
            pred.timings[f"gate_{k}"] = v


# ----------------------------------------------------------------------------- 2D
def _clinical(options: PredictOptions, n: int, device) -> torch.Tensor:
    v = [float(options.menopausal or 0), float(options.oncology_center or 0)]
    return torch.tensor([v] * n, dtype=torch.float32, device=device)


def _outputs_to_probs(spec, out) -> ModelOutput:
    """The network's raw output -> :class:`~medseg_core.results.ModelOutput` (probabilities)."""
    if spec.task == "restoration":
        return ModelOutput(image=out)
    if isinstance(out, dict):  # multitask models; a single-task one (task seg / cls) gives one of the two
        return ModelOutput(
            seg=torch.sigmoid(out["seg"]) if "seg" in out else None,
            cls=torch.softmax(out["cls"], dim=1) if "cls" in out else None,
            boxes=out.get("boxes"),
        )
    if spec.task == "classification":
        return ModelOutput(score=torch.sigmoid(out)[:, 0])
    if spec.activation == "softmax":
        return ModelOutput(seg=torch.softmax(out, dim=1)[:, 1:])
    return ModelOutput(seg=torch.sigmoid(out))


def _forward(loaded: LoadedModel, xb: torch.Tensor, options: PredictOptions):
    spec, m = loaded.spec, loaded.module
    return m(xb, _clinical(options, xb.shape[0], xb.device)) if spec.clinical_inputs else m(xb)


def _decoder(loaded: LoadedModel, options: PredictOptions, size) -> Callable[[Any], ModelOutput]:
    """``state -> ModelOutput`` through the model's own ``decode`` (clinical inputs sized to the state's batch)."""
    spec, m = loaded.spec, loaded.module
    decode = cast(Callable[..., Any], m.decode)  # the registry models' own method (unknown to nn.Module)

    def run(state) -> ModelOutput:
        if spec.clinical_inputs:
            n = unc._batch_size(state)
            return _outputs_to_probs(spec, decode(state, _clinical(options, n, loaded.device), size=size))
        return _outputs_to_probs(spec, decode(state))

    return run


def _mean_output(samples: list[ModelOutput]) -> tuple[ModelOutput, torch.Tensor]:
    """The mean of sampled outputs (crop boxes: the first sample's) and the stacked samples of the
    map whose spread is the uncertainty (:meth:`ModelOutput.sampled`)."""
    mean = ModelOutput(boxes=samples[0].boxes)
    for k in ModelOutput.TENSORS:
        vals = [getattr(o, k) for o in samples]
        if vals[0] is not None:
            setattr(mean, k, torch.stack(vals).mean(0))
    return mean, torch.stack([cast(torch.Tensor, o.sampled()) for o in samples])


def _batch_probs(loaded: LoadedModel, xb: torch.Tensor, options: PredictOptions) -> tuple[ModelOutput, Any]:
    """(deterministic or mean output, samples of the sampled map or None) for one 2D batch. MC
    dropout and TTA go through :func:`medseg_core.uncertainty.mc_samples` / ``tta_samples_list``."""
    spec, m = loaded.spec, loaded.module
    n = options.mc_samples

    def run(t: torch.Tensor) -> ModelOutput:
        return _outputs_to_probs(spec, _forward(loaded, t, options))

    if n:
        if spec.mc_prefix:
            samples = unc.mc_samples(
                m,
                xb,
                n,
                options.seed,
                encode=cast(Callable[[torch.Tensor], Any], m.encode),
                decode=_decoder(loaded, options, xb.shape[-2:]),
                batched=options.mc_batched,
            )
        else:
            samples = unc.mc_samples(m, xb, n, options.seed, forward=run)
        return _mean_output(samples)
    if options.tta and spec.task != "classification":
        return _mean_output(unc.tta_samples_list(run, xb, 2))
    with torch.inference_mode():
        return run(xb), None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()


def _run_2d(
    loaded: LoadedModel, x: np.ndarray, options: PredictOptions, prog: Progress, timings: dict, f0: float, f1: float
) -> GridMaps:
    """Every axial slice of ``x`` (Z, Y, X) through a 2D model in batches, resized to the model's
    input and the maps resized back; progress reported between ``f0`` and ``f1``."""
    from .runtime import prepare

    device = loaded.device
    runtime = prepare(loaded)
    z, h, w = x.shape
    size = (int(loaded.size[0]), int(loaded.size[1]))
    rs = SliceResize((h, w), size)
    t = time.perf_counter()
    xin = rs.forward(x)  # (Z, H', W')
    timings["resize_s"] = timings.get("resize_s", 0.0) + time.perf_counter() - t
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ModelOutput.TENSORS}
    samples: list[np.ndarray] = []
    boxes: list = []
    bs = max(1, int(options.batch_size))
    t = time.perf_counter()
    for i in range(0, z, bs):
        xb = torch.from_numpy(np.ascontiguousarray(xin[i : i + bs, None])).to(device)
        out, smp = _batch_probs(loaded, xb, options)
        for k in ModelOutput.TENSORS:
            v = getattr(out, k)
            if v is not None:
                parts[k].append(_np(v))
        if out.boxes is not None:
            boxes.extend(out.boxes)
        if smp is not None:
            samples.append(_np(smp))
        prog(f0 + (f1 - f0) * min(1.0, (i + bs) / z), f"slices {min(i + bs, z)}/{z}")
    timings["model_s"] = timings.get("model_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    res = GridMaps(runtime=runtime)
    if parts["seg"]:
        s = np.concatenate(parts["seg"])  # (Z, L, H', W')
        res.seg = np.stack([rs.inverse(s[:, k]) for k in range(s.shape[1])], axis=0)  # (L, Z, H, W)
    if samples:
        smp_all = np.concatenate(samples, axis=1)  # (n, Z, H', W') or (n, Z) for slice scores
        if smp_all.ndim == 4:
            res.samples = np.stack([rs.inverse(smp_all[i]) for i in range(smp_all.shape[0])])
    if parts["cls"]:
        res.cls = np.concatenate(parts["cls"])
    if parts["score"]:
        res.score = np.concatenate(parts["score"])
    if parts["image"]:
        res.image = rs.inverse(np.concatenate(parts["image"])[:, 0])
    if boxes:
        sy, sx = h / size[0], w / size[1]
        res.boxes = [
            None
            if b is None
            else (int(b[0] * sy), int(math.ceil(b[1] * sy)), int(b[2] * sx), int(math.ceil(b[3] * sx)))
            for b in boxes
        ]
    timings["resize_s"] += time.perf_counter() - t
    return res


def _two_pass(
    loaded: LoadedModel, x: np.ndarray, volume: Volume, options: PredictOptions, prog: Progress, timings: dict, pred
) -> GridMaps:
    """Report 000's proposed deployment: segment each anatomical half separately."""
    t = options.threshold if options.threshold is not None else loaded.spec.threshold
    outs: dict[str, GridMaps] = {}
    sides = {}
    for k, side in enumerate(("left", "right")):
        xm, _ = apply_side_masking(x, volume, side)
        outs[side] = _run_2d(loaded, xm, options, prog, timings, 0.1 + 0.4 * k, 0.5 + 0.4 * k)
    keep = {s: side_mask(volume, s) for s in ("left", "right")}
    left, right = outs["left"], outs["right"]
    assert left.seg is not None and right.seg is not None  # side masking applies to segmentation models
    combined = left.replace(seg=np.where(keep["left"][None], left.seg, right.seg))
    if left.samples is not None and right.samples is not None:
        combined.samples = np.where(keep["left"][None], left.samples, right.samples)
    for side in ("left", "right"):
        seg = outs[side].seg
        assert seg is not None
        p = seg[0] * keep[side]
        m = p > t
        sides[side] = SideResult(
            mask=m.astype(np.uint8),
            confidence=float(p[m].mean()) if m.any() else 0.0,
            max_probability=float(p.max()),
            volume_ml=float(m.sum() * np.prod(volume.spacing) / 1000),
        )
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


def _run_3d(
    loaded: LoadedModel, x: np.ndarray, volume: Volume, options: PredictOptions, prog: Progress, timings: dict
) -> GridMaps:
    """MONAI sliding window on the model's spacing, probabilities resampled back to the input grid.
    The module runs in the layout :func:`medseg_core.runtime.prepare` chose (channels-last-3d on the
    CPU); MC dropout and TTA go through the same samplers as the 2D runners."""
    from monai.inferers import sliding_window_inference

    from .runtime import prepare

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
    runtime = prepare(loaded)
    total_calls = max(1, math.ceil(_n_windows(new_shape, roi, spec.sw_overlap) / spec.sw_batch_size))
    calls = [0]

    def fg(logits: torch.Tensor) -> torch.Tensor:
        if spec.activation == "softmax":
            if logits.shape[1] == 2:  # softmax(l)[1] = sigmoid(l1 - l0): one channel, no normalising pass
                return torch.sigmoid(logits[:, 1:2] - logits[:, 0:1])
            return torch.softmax(logits, 1)[:, 1:2]
        return torch.sigmoid(logits[:, :1])

    def predictor(win: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        prog(0.1 + 0.8 * min(1.0, calls[0] / total_calls), f"Sliding window: part {calls[0]} of {total_calls}")
        if n_mc:  # samples as channels: MONAI blends each one like a probability map
            return torch.cat(unc.mc_samples(m, win, n_mc, options.seed, forward=lambda w: fg(m(w))), 1)
        if options.tta:
            return torch.cat(unc.tta_samples_list(lambda w: fg(m(w)), win, 3), 1)
        return fg(m(win))

    t = time.perf_counter()
    with torch.inference_mode():
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
    arr = _np(out[0])  # (n, Z, Y, X)
    timings["resample_s"] += time.perf_counter() - t
    if arr.shape[0] > 1:
        return GridMaps(seg=arr.mean(0, keepdims=True), samples=arr, runtime=runtime)
    return GridMaps(seg=arr, runtime=runtime)


# ----------------------------------------------------------------------------- finishing
def _finish(
    pred: Prediction, loaded: LoadedModel, volume: Volume, options: PredictOptions, out: GridMaps, timings: dict
) -> None:
    """Threshold, post-process, classify, calibrate, restore and summarise uncertainty into ``pred``."""
    spec = loaded.spec
    thr = options.threshold if options.threshold is not None else spec.threshold
    pred.runtime = out.runtime
    t = time.perf_counter()
    steps = options.postprocessing if options.postprocessing is not None else spec.postprocessing
    if out.seg is not None:
        # few full-size copies: on a 300 x 512 x 512 CT each freshly written array costs 0.1-0.3 s
        none = np.zeros(out.seg.shape[1:], np.uint8)
        none.flags.writeable = False  # one shared empty map for "nothing removed / added"
        for k, label in enumerate(spec.labels):
            p = np.asarray(out.seg[k], np.float32)
            p = np.clip(p, 0, 1, out=p) if p.flags.writeable else np.clip(p, 0, 1)
            m = (p > thr).view(np.uint8)
            kept, removed, added = m, none, none
            for step in steps:
                if step == "raovseg":
                    kept, r, a = post.raovseg_postprocess(kept)
                    removed, added = removed | r, added | a
                elif step in post.POSTPROCESSING:
                    kept, r = post.POSTPROCESSING[step](kept)
                    removed = r if removed is none else removed | r
                else:
                    raise InputError(f"Unknown post-processing '{step}'; choose largest_2d, largest_3d or raovseg.")
            pred.per_label[label] = LabelResult(
                mask=np.asarray(kept, np.uint8),
                before_postprocessing=m,
                removed=removed if removed is none else np.asarray(removed & m, np.uint8),
                added=np.asarray(added, np.uint8),
                probability=p,
            )
    if pred.sides and steps:
        first = pred.per_label[spec.labels[0]].mask
        for side in pred.sides.values():
            side.mask = (side.mask & first).astype(np.uint8)
    timings["postprocess_s"] = time.perf_counter() - t
    if out.cls is not None:
        probs = out.cls.mean(0)
        ct = options.class_threshold if options.class_threshold is not None else (spec.class_threshold or 0.5)
        # a benign/malignant head only: MMOTU's 8-class head (report 001) has no p(malignant)
        pred.classification = Classification(
            probabilities=probs,
            slice_probabilities=out.cls,
            malignant=bool(probs[1] >= ct) if len(probs) == 2 else None,
        )
    temperature = card_temperature(loaded) if options.calibrated else None
    if temperature is not None:  # after every decision: calibration changes confidence, not masks
        from .calibration import apply_temperature

        for res in pred.per_label.values():
            if res.probability is not None:
                res.probability = apply_temperature(res.probability, temperature)
        c = pred.classification
        if c is not None and len(c.probabilities) == 2:
            pm = float(apply_temperature(np.array([c.probabilities[1]]), temperature)[0])
            c.probabilities = np.array([1 - pm, pm], np.float32)
        pred.calibration = {"temperature": temperature}
    elif options.calibrated:
        pred.warnings.append(
            "This model's card has no calibration: the probabilities shown are the model's own. "
            "Fit one with 'medseg calibrate'."
        )
    if out.score is not None:
        pred.presence = out.score
    if out.image is not None:
        pre = options.preprocessing or spec.preprocessing
        if pre == "scale255":
            lo, hi = 0.0, 255.0
        else:
            lo, hi = float(volume.array.min()), float(volume.array.max())
        pred.restoration = Restoration((np.clip(out.image, 0, 1) * (hi - lo) + lo).astype(np.float32))
    if out.boxes is not None:
        pred.boxes = out.boxes
    if out.samples is not None:
        t = time.perf_counter()
        maps = unc.summarise(out.samples)
        if options.mc_samples and float(maps["variance"].max()) == 0.0:
            pred.warnings.append(
                "All MC-dropout samples were identical: this model's dropout does not act on its "
                "output, so the uncertainty maps are empty. Use test-time augmentation instead."
            )
        pred.uncertainty = Uncertainty(
            maps=maps,
            method="mc_dropout" if options.mc_samples else "tta",
            n_samples=int(out.samples.shape[0]),
            scores=unc.uncertainty_scores(maps["entropy"], pred.mask) if pred.mask is not None else {},
        )
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
    return Prediction.from_maps(str(name), volume.shape, volume.spacing, volume.affine.copy(), masks=out)
