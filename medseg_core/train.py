"""``python -m medseg_core.train --config configs/<name>.yaml [key=value ...]``

Trains any registry model on a dataset read through :mod:`medseg_core.data.datasets` (real data
or a synthetic dataset in the same layout, generated on first use), with a patient-level split,
the report's loss and optimiser, augmentation, best-checkpoint selection (validation Dice, or
validation loss where the report says so), early stopping, a fixed seed, a progress bar, a
per-epoch CSV log (optional TensorBoard) and resume. The same command under
``torchrun --nproc_per_node N`` trains with DistributedDataParallel (gloo on CPU, NCCL on GPU) and
a distributed sampler; rank 0 writes everything.

Output: ``<out>/<name>.safetensors`` + ``<out>/<name>.json`` (model card), ``<name>_log.csv`` and
``<name>_last.safetensors`` / ``_last.json`` (state to resume from).

Samples are prepared with exactly the preprocessing and resizing that
:func:`medseg_core.inference.predict` applies, so training and inference cannot drift apart.

:func:`train` is a short sequence of named steps with typed inputs and outputs (dataclasses):
:func:`setup_run` (:class:`RunSetup`: process group, seeds, spec, grid), :func:`split_data` and
:func:`prepare_data` (:class:`TrainingData`: cases, patient split, 2D arrays or 3D crop sources),
:func:`build_training_model` (:class:`TrainingModel`: model, pretrained entry, loss),
:func:`plan_stages` / :func:`build_stage` (:class:`Stage`: ``main``, the cascade's segmenter and
classifier, or report 002's phases), :func:`resume_stage` (:class:`StageState`), :func:`run_stage`
(:func:`run_epoch`, :func:`validate_epoch`, :func:`select_best` on :class:`Best`,
:func:`record_epoch`) and :func:`write_card` (card and checkpoint).

Augmentation and 3D patch sampling are MONAI dictionary transforms
(:mod:`medseg_core.train_transforms`): 2D ``RandFlipd`` / ``RandAffined`` /
``RandScaleIntensityd`` + ``RandStdShiftIntensityd`` on the image and every label map together;
3D ``RandCropByPosNegLabeld`` (``crop: {pos, neg, image_threshold}``, ``samples_per_volume``;
negative patches centred on background voxels, label 0 and image above ``image_threshold``) then
``RandFlipd`` / ``RandRotated`` / ``RandRotate90d``. Crops and augmentation are seeded by (seed,
rank, epoch), and so is torch's generator (dropout) at the start of every epoch; the sample order
by ``seed + epoch``; so a run repeats exactly and a resumed run ends where an uninterrupted one does.

Best-epoch selection (:func:`_better`): a higher validation score wins; an equal score (AUC 1.0
again) wins only with a lower validation loss, so the kept epoch is the best calibrated of those
that rank equally well.

``python -m medseg_core.train --recalibrate-bn CHECKPOINT --config CONFIG [--reason TEXT] [--out DIR]``
repairs a trained checkpoint with batch norm whose running statistics do not match its weights
(:func:`recalibrate_bn`): the statistics are re-estimated on the card's own training split, prepared
as training prepared it (the cascade: its classifier on the reference-mask lesion crops), with no
gradient and no weight change; the checkpoint and its card are written again through
``save_checkpoint`` (same storage) with a ``repairs`` entry (what, on how many inputs, why, the old
SHA-256, held-out metrics before and after, re-measured through the evaluation engine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from . import losses as L
from . import metrics as M
from . import train_features as TF
from . import train_transforms as TT
from .checkpoints import RESEARCH_NOTICE, LoadedModel, save_checkpoint
from .data import datasets as D
from .io.errors import InputError
from .models import ModelSpec, build_model, count_parameters, get_spec, list_models, model_kwargs
from .options import parse_pairs, set_dotted
from .preprocessing import SliceResize, apply_side_masking, plan_geometry, preprocess
from .tables import write_csv

ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict[str, Any] = {
    "name": None,
    "model": None,
    "variant": "demo",
    "overrides": {},
    "input_size": None,
    "report": "",
    "data": {
        "adapter": None,
        "root": None,
        "synthetic": None,
        "split": {"fractions": [0.7, 0.15, 0.15], "seed": 0},
        "positive_slices_only": False,
        "negative_fraction": 0.0,
        "label_map": {},
        "max_cases": None,
    },
    "preprocessing": None,
    "preprocessing_params": None,
    "postprocessing": None,
    "threshold": None,
    "title": None,
    "body_region": None,
    "anatomy": None,
    "side_masking_train": "none",
    "geometry": None,
    "loss": {"name": "bce", "params": {}},
    "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9, "scheduler": None},
    "encoder_weights": None,
    "init_from": None,
    "train": {
        "epochs": 20,
        "batch_size": 8,
        "patience": 10,
        "select_by": "val_dice",
        "seed": 0,
        "max_steps_per_epoch": None,
        "val_every": 1,
        "select_on": "original",
    },
    "augment": {"flip": True, "vflip": False, "rotate_deg": 10.0, "translate": 0.05, "intensity": 0.1},
    "roi": None,
    "samples_per_volume": 4,
    "crop": dict(TT.DEFAULT_CROP),
    "log": {"tensorboard": False},
    "evaluate_test": True,
    "out": "checkpoints",
    "fp16": False,
}


# ----------------------------------------------------------------------------- config
def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in (b or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    cfg = _merge(DEFAULTS, raw)
    for k, v in parse_pairs(overrides).items():
        set_dotted(cfg, k, v)
    if not cfg.get("model"):
        raise InputError(f"The config '{path}' names no model; add 'model: <registry architecture>'.")
    if cfg["model"] not in list_models():
        raise InputError(
            f"The config '{path}' asks for model '{cfg['model']}', which is not a registry architecture "
            f"({', '.join(list_models())})."
        )
    cfg["name"] = cfg.get("name") or cfg["model"]
    return cfg


# ----------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, local, device)


def _log(d: Dist, *a) -> None:
    if d.main:
        print(*a, flush=True)


# ----------------------------------------------------------------------------- data
def kind_of(spec: ModelSpec, cfg: dict) -> str:
    if spec.dims == "3d":
        return "seg3d"
    if spec.name == "us_cascade":
        return "cascade"
    if spec.task == "segmentation+classification":
        return "mtl"
    if spec.task == "classification":
        return "cls2d"
    if spec.task == "restoration":
        return "restore"
    return "seg2d"


def ensure_data(cfg: dict) -> Path:
    """The dataset root; a configured synthetic dataset is generated there on first use."""
    data = cfg["data"]
    root = Path(data["root"])
    if not root.is_absolute():
        root = ROOT / root
    syn = data.get("synthetic")
    if syn:
        from .data.make_synthetic import ensure_synthetic

        ensure_synthetic(root, syn)
    return root


def load_cases(cfg: dict) -> list:
    root = ensure_data(cfg)
    adapter = D.ADAPTERS[cfg["data"]["adapter"]]
    cases = adapter(root)
    if cfg["data"].get("drop_unlabelled"):  # report 002 section 2.2: unlabelled slices dropped before the split
        cases = D.drop_unlabelled(cases)
    n = cfg["data"].get("max_cases")
    return cases[: int(n)] if n else cases


def _label_masks(spec, masks: dict, label_map: dict) -> list[np.ndarray]:
    out = []
    for lab in spec.labels:
        key = label_map.get(lab, lab)
        if key not in masks:
            if len(masks) == 1:
                key = next(iter(masks))
            else:
                raise KeyError(f"dataset has no mask '{key}' for label '{lab}' (has {list(masks)}); set data.label_map")
        out.append((masks[key] > 0).astype(np.uint8))
    return out


def _preprocessing(spec, cfg) -> tuple[str, dict]:
    """The preprocessing step and its parameters this run trains with (and writes into the card)."""
    pre = cfg["preprocessing"] or spec.preprocessing
    params = cfg.get("preprocessing_params")
    if params is None:
        params = spec.preprocessing_params if pre == spec.preprocessing else {}
    return pre, dict(params)


def _geometry(spec, cfg) -> dict:
    """The in-plane geometry step (report 000: ``{inplane_mm: 0.35, crop: body, margin_mm}``) this
    run trains with and writes into the card (``recipe.geometry``); config ``geometry`` (``{}`` for
    none), else the registry spec's."""
    g = cfg.get("geometry")
    return dict(spec.geometry if g is None else g)


def prepare_2d(
    cases: Sequence[D.Case], spec: ModelSpec, cfg: dict, size: Sequence[int], training: bool
) -> dict[str, np.ndarray]:
    """Slices on the model grid, prepared exactly as predict() prepares them."""
    pre, params = _preprocessing(spec, cfg)
    dcfg = cfg["data"]
    kind = kind_of(spec, cfg)
    X, Y, EXTRA, LAB, CLIN, PID, CASE = [], [], [], [], [], [], []
    rng = np.random.default_rng(cfg["train"]["seed"])
    denoiser = cfg.get("denoiser") if kind != "restore" else None
    label_key = dcfg.get("label_key") or "malignant"
    geometry = _geometry(spec, cfg)
    for case in cases:
        vol, masks = case.load()
        if denoiser:  # report 001's denoised rows: annotation removal before everything (medseg_core.denoise)
            from .denoise import apply_denoiser

            vol = apply_denoiser(vol, str(denoiser))
        if geometry and kind in ("seg2d", "cls2d"):  # report 000: 0.35 mm in-plane + pelvis crop, as predict() does
            geo = plan_geometry(vol, **geometry)
            vol = geo.volume(vol)
            masks = {
                k: (geo.forward(np.asarray(m, np.float32), order=0) > 0.5).astype(np.uint8) for k, m in masks.items()
            }
        x = preprocess(pre, vol.array, **params)
        if kind == "restore":
            clean_path = Path(case.image).parent.parent / "clean" / f"{case.case_id}.PNG"
            from .io import load_volume

            clean = preprocess(pre, load_volume(clean_path, modality="US").array, **params)
            rs = SliceResize(x.shape[-2:], (size[0], size[1]))
            X.append(rs.forward(x))
            Y.append(rs.forward(clean)[:, None])
            PID += [case.patient_id] * x.shape[0]
            CASE += [case.case_id] * x.shape[0]
            continue
        ys = (
            _label_masks(spec, masks, dcfg.get("label_map", {}))
            if kind != "cls2d"
            else [(next(iter(masks.values())) > 0).astype(np.uint8)]
        )
        # Model 7 (report 000 section 3.5): masked training images; the validation images that pick
        # the checkpoint are the original ones unless train.select_on says masked
        if cfg.get("side_masking_train", "none") == "oracle" and (
            training or cfg["train"].get("select_on", "original") == "masked"
        ):
            x, _ = apply_side_masking(x, vol, "oracle", ys[0])
        rs = SliceResize(x.shape[-2:], (size[0], size[1]))
        xr = rs.forward(x)
        yr = np.stack([(rs.forward(y.astype(np.float32), order=0) > 0.5) for y in ys], axis=1).astype(np.uint8)
        extra = None
        if "non_expert" in masks:
            extra = (rs.forward(masks["non_expert"].astype(np.float32), order=0) > 0.5).astype(np.uint8)[:, None]
        keep: np.ndarray = np.ones(x.shape[0], bool)
        if dcfg.get("positive_slices_only") and kind in ("seg2d",):
            pos = yr.reshape(yr.shape[0], -1).any(1)
            neg = ~pos & (rng.random(x.shape[0]) < float(dcfg.get("negative_fraction", 0.0)))
            keep = np.asarray(pos | neg)
        if dcfg.get("drop_unlabelled") and kind in ("seg2d",):  # report 002: slices with no organ mask
            keep = np.asarray(yr.reshape(yr.shape[0], -1).any(1))
        X.append(xr[keep])
        Y.append(yr[keep])
        if extra is not None:
            EXTRA.append(extra[keep])
        if kind in ("mtl", "cascade"):
            if label_key not in case.extra:
                raise InputError(
                    f"Case '{case.case_id}' has no '{label_key}' (data.label_key); the "
                    f"{cfg['data']['adapter']} adapter gives {sorted(case.extra)}."
                )
            LAB += [int(case.extra[label_key])] * int(keep.sum())
            clin = [float(case.extra.get("menopausal", 0)), float(case.extra.get("oncology_center", 0))]
            CLIN += [clin] * int(keep.sum())
        PID += [case.patient_id] * int(keep.sum())
        CASE += [case.case_id] * int(keep.sum())
    out = {
        "x": np.concatenate(X)[:, None].astype(np.float32),
        "y": np.concatenate(Y).astype(np.float32),
        "pid": np.array(PID),
        "case": np.array(CASE),
    }
    if EXTRA:
        out["non_expert"] = np.concatenate(EXTRA).astype(np.float32)
    if LAB:
        out["label"] = np.array(LAB, np.int64)
        out["clinical"] = np.array(CLIN, np.float32)
    if kind == "cls2d":
        out["label"] = out["y"].reshape(out["y"].shape[0], -1).max(1).astype(np.int64)
    return out


def prepare_3d(cases: Sequence[D.Case], spec: ModelSpec, cfg: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Volumes preprocessed and resampled to the model spacing (as predict() does)."""
    pre, params = _preprocessing(spec, cfg)
    out = []
    for case in cases:
        vol, masks = case.load()
        x = torch.from_numpy(preprocess(pre, vol.array, **params))[None, None]
        lab = _label_masks(spec, masks, cfg["data"].get("label_map", {}))[0]
        y = torch.from_numpy(lab.astype(np.float32))[None, None]
        assert spec.target_spacing is not None  # 3D registry models are resampled to their target spacing
        shape = tuple(
            max(1, int(round(n * s / t))) for n, s, t in zip(vol.shape, vol.spacing, spec.target_spacing, strict=True)
        )
        x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
        y = F.interpolate(y, size=shape, mode="nearest")
        out.append((x[0].numpy(), y[0].numpy()))
    return out


# ----------------------------------------------------------------------------- augmentation
# MONAI dictionary transforms (medseg_core.train_transforms): 2D flips / affine / intensity,
# 3D foreground/background patches (RandCropByPosNegLabeld) and flips / rotations.
augment_2d = TT.augment_2d
augment_3d = TT.augment_3d


def crop_config(cfg: dict) -> dict:
    """The 3D patch sampling of ``crop`` (``{pos, neg, image_threshold}``, MONAI
    ``RandCropByPosNegLabeld``; see :mod:`medseg_core.train_transforms`)."""
    return TT.crop_config(cfg.get("crop"))


# ----------------------------------------------------------------------------- losses
def make_loss(cfg: dict, spec: ModelSpec) -> torch.nn.Module:
    name = cfg["loss"]["name"]
    params = cfg["loss"].get("params") or {}
    if name == "dice_softmax":
        from monai.losses import DiceLoss

        return DiceLoss(to_onehot_y=True, softmax=True, **params)
    if name == "cross_entropy":
        return torch.nn.CrossEntropyLoss(weight=torch.tensor(params.get("class_weights", [1.0, 2.0])))
    return L.LOSSES[name](**params)


# ----------------------------------------------------------------------------- state
def save_training_state(
    path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, epoch: int, best: float, history: list
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = optim.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
    save_file(tensors, str(path))
    meta = {"epoch": epoch, "best": best, "history": history, "param_groups": sd["param_groups"]}
    path.with_suffix(".json").write_text(json.dumps(meta, default=float))


def load_training_state(path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer) -> tuple[int, float, list]:
    from safetensors.torch import load_file

    t = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    meta = json.loads(path.with_suffix(".json").read_text())
    state: dict = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["epoch"]), float(meta["best"]), list(meta["history"])


# ----------------------------------------------------------------------------- training
def _optimizer(cfg, params):
    o = cfg["optim"]
    if o["name"] == "adam":
        return torch.optim.Adam(params, lr=float(o["lr"]), weight_decay=float(o.get("weight_decay", 0)))
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=float(o["lr"]), weight_decay=float(o.get("weight_decay", 0.01)))
    if o["name"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=float(o["lr"]),
            momentum=float(o.get("momentum", 0.9)),
            weight_decay=float(o.get("weight_decay", 0)),
        )
    if o["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=float(o["lr"]), momentum=float(o.get("momentum", 0.9)))
    raise InputError(f"The config asks for optimiser '{o['name']}'; medseg trains with adam, adamw, sgd or rmsprop.")


SCHEDULERS = {
    "step": "StepLR",
    "multistep": "MultiStepLR",
    "cosine": "CosineAnnealingLR",
    "cosine_warm_restarts": "CosineAnnealingWarmRestarts",
    "plateau": "ReduceLROnPlateau",
    "exponential": "ExponentialLR",
    # MicroSegNet (report 004): lr = base (1 - t / T)^0.9; torch's PolynomialLR, stepped per epoch here
    "poly": "PolynomialLR",
}


def _scheduler(o: dict, optim: torch.optim.Optimizer, epochs: int):
    """The learning-rate scheduler of ``optim.scheduler`` (``{name: ..., <torch kwargs>}``), stepped once
    per epoch by :func:`_scheduler_step`; None for no scheduler (``name: none`` or absent).

    Names map to ``torch.optim.lr_scheduler``: step, multistep, cosine (``T_max`` defaults to the
    number of epochs), cosine_warm_restarts, plateau (on the validation loss), exponential."""
    sc = dict(o.get("scheduler") or {})
    name = str(sc.pop("name", "none")).lower()
    if name in ("none", "constant", ""):
        return None
    if name not in SCHEDULERS:
        raise InputError(f"The config asks for scheduler '{name}'; medseg knows {', '.join(['none', *SCHEDULERS])}.")
    if name == "cosine":
        sc.setdefault("T_max", max(int(epochs), 1))
    if name == "poly":
        sc.setdefault("total_iters", max(int(epochs), 1))
        sc.setdefault("power", 0.9)
    return getattr(torch.optim.lr_scheduler, SCHEDULERS[name])(optim, **sc)


def _scheduler_step(sched, val: dict, train_loss: float) -> None:
    """One epoch's scheduler step; ReduceLROnPlateau watches the validation loss (the training loss
    on epochs without validation)."""
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        v = val.get("val_loss") if val else None
        sched.step(float(v) if v is not None and not math.isnan(float(v)) else train_loss)
    else:
        sched.step()


def split_cases(cases: list, cfg: dict) -> dict[str, list]:
    """The patient-level split of ``data.split``: ``counts: [n_train, n_val, n_test]`` (patients, as a
    report gives them: report 003's 28/8/5) or ``fractions``; seeded. When the dataset has fewer
    patients than the counts ask for (a smoke run on phantoms), the counts are used as proportions."""
    sp = cfg["data"]["split"]
    counts = sp.get("counts")
    fractions = tuple(sp.get("fractions") or (0.7, 0.15, 0.15))
    if counts:
        counts = [int(c) for c in counts]
        n = len({c.patient_id for c in cases})
        if len(counts) != 3 or min(counts) < 0 or not sum(counts):
            raise InputError("data.split.counts must be three patient counts [train, val, test].")
        if n == sum(counts):
            fractions = tuple(c / n for c in counts)
        elif n < sum(counts):
            fractions = tuple(c / sum(counts) for c in counts)
        else:
            raise InputError(
                f"data.split.counts asks for {sum(counts)} patients but the dataset has {n}; "
                "give counts that sum to the number of patients, or fractions."
            )
    if sp.get("stratify"):  # report 002 section 2.2: a case-level split keeping each stratum's share
        return D.stratified_split(cases, fractions, int(sp.get("seed", 0)), by=str(sp["stratify"]))
    return D.patient_split(cases, fractions, int(sp.get("seed", 0)))


def _matching_state(target: torch.nn.Module, state: dict, prefixes=("", "encoder.", "model.", "module.")) -> dict:
    """The entries of ``state`` that fit ``target`` by name (after removing one of ``prefixes``) and shape."""
    own = target.state_dict()
    out = {}
    for k, v in state.items():
        for p in prefixes:
            kk = k[len(p) :] if p and k.startswith(p) else (k if not p else None)
            if kk is not None and kk in own and tuple(own[kk].shape) == tuple(v.shape):
                out[kk] = v
                break
    return out


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder a pretrained weights file is for: ``model.encoder`` (smp models, TL-5),
    ``model.features`` (the EfficientNet-B0 multitask model), else the whole model."""
    for attr in ("encoder", "features"):
        if isinstance(getattr(model, attr, None), torch.nn.Module):
            return getattr(model, attr)
    return model


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> dict:
    """Pretrained encoder weights from a local ``.safetensors`` file (ImageNet weights cannot be
    downloaded here): loaded into ``model.encoder`` (smp and TL-5 models) or the model itself, by name
    and shape. Refused with a sentence unless most of the encoder's tensors are found. Returns the card's
    ``pretrained`` entry (file name, SHA-256, how many tensors were loaded)."""
    import hashlib

    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = ROOT / p
    if not p.is_file():
        raise InputError(
            f"The encoder weights file '{path}' does not exist; give a local .safetensors file, or "
            "encoder_weights: null to train from random initialisation."
        )
    target = encoder_of(model)
    try:
        state = load_file(str(p))
    except Exception as e:  # noqa: BLE001 - any unreadable file is one sentence
        raise InputError(f"'{p.name}' is not a readable safetensors file ({type(e).__name__}).") from None
    found = _matching_state(target, state)
    n_own = len([k for k in target.state_dict() if not k.endswith("num_batches_tracked")])
    n_found = len([k for k in found if not k.endswith("num_batches_tracked")])
    if n_own and n_found < 0.9 * n_own:
        raise InputError(
            f"'{p.name}' fits {n_found} of the encoder's {n_own} tensors by name and shape; it is not "
            "a weights file for this encoder."
        )
    target.load_state_dict(found, strict=False)
    return {
        "encoder": p.name,
        "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        "tensors_loaded": n_found,
        "encoder_tensors": n_own,
    }


def load_init_weights(model: torch.nn.Module, ref: str) -> dict:
    """Start from another trained checkpoint (fine-tuning, e.g. report 001's MMOTU-pretrained models on
    the primary data): every tensor that fits by name and shape is copied; heads whose shape differs
    (8 MMOTU classes vs 2) keep their fresh initialisation. Returns the card's ``init_from`` entry."""
    from .checkpoints import load_model

    lm = load_model(ref)
    found = _matching_state(model, lm.module.state_dict())
    model.load_state_dict(found, strict=False)
    n_own = len(model.state_dict())
    return {
        "checkpoint": lm.card.get("name") or str(ref),
        "sha256": lm.card.get("sha256"),
        "tensors_loaded": len(found),
        "model_tensors": n_own,
    }


def pretrained_entry(model: torch.nn.Module, cfg: dict) -> dict:
    """Apply ``init_from`` and ``encoder_weights`` to a freshly built model; the card's ``pretrained``
    field: where the starting weights came from, "random init" when from nowhere."""
    out: dict = {}
    if cfg.get("init_from"):
        out["init_from"] = load_init_weights(model, str(cfg["init_from"]))
    if cfg.get("encoder_weights"):
        out.update(load_encoder_weights(model, cfg["encoder_weights"]))
    elif encoder_of(model) is not model:
        out.setdefault("encoder", "random init")
    if not out:
        out["encoder"] = "random init"
    return out


def cascade_seg_loss(cfg: dict) -> torch.nn.Module:
    """The cascade segmenter's loss, ``cascade.seg_loss``: ``dice`` (report 001 section 5.3 / Appendix B:
    the segmentation-only EfficientNet-B0 trained with Dice loss) or ``compound`` (0.5 Dice + 0.5 BCE,
    the shipped demo cascade; the default)."""
    name = (cfg.get("cascade") or {}).get("seg_loss", "compound")
    if name == "compound":
        return L.CompoundLoss(0.5, 0.5)
    if name not in L.LOSSES:
        raise InputError(f"cascade.seg_loss '{name}' is not a loss medseg knows ({', '.join(L.LOSSES)}).")
    return L.LOSSES[name]()


def _forward_loss(kind, model, loss_fn, batch, spec):
    x = batch["x"]
    if kind == "seg3d":
        return loss_fn(model(x), batch["y"])
    if kind == "mtl":
        out = model(x, batch["clinical"])
        return loss_fn(out, batch["y"], batch["label"])
    if kind == "cls2d":
        return F.binary_cross_entropy_with_logits(model(x)[:, 0], batch["label"].float())
    if kind == "restore":
        return loss_fn(model(x), batch["y"], x)
    if kind == "cascade_seg":
        return loss_fn(model(x), batch["y"])
    if kind == "cascade_cls":
        return loss_fn(model(x, batch["clinical"]), batch["label"])
    logits = model(x)
    guided = isinstance(loss_fn, (L.AGBCELoss, L.AdaptiveFocalLoss))
    if isinstance(logits, (list, tuple)):  # deep supervision (TransUNet in train mode): MicroSegNet's sum
        from .deep_supervision import deep_supervision_loss

        return deep_supervision_loss(loss_fn, logits, batch["y"], batch["non_expert"] if guided else None)
    if guided:
        return loss_fn(logits, batch["y"], batch["non_expert"])
    return loss_fn(logits, batch["y"])


def _batches(arrays: dict, idx: np.ndarray, bs: int, device):
    for i in range(0, len(idx), bs):
        sel = idx[i : i + bs]
        yield {k: torch.from_numpy(v[sel]).to(device) for k, v in arrays.items() if k not in ("pid", "case")}


@torch.no_grad()
def validate_2d(
    kind: str | None,
    model: torch.nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    arrays: dict[str, np.ndarray] | None,
    device: str,
    bs: int = 16,
) -> dict:
    if arrays is None:
        raise ValueError("validate_2d needs the validation arrays")
    model.eval()
    losses, dices, probs, labels, correct = [], [], [], [], []
    dices002: list = []  # report 002's Dice per (slice, organ), both-empty = 1 (metrics.dice_report002)
    idx = np.arange(len(arrays["x"]))
    for b in _batches(arrays, idx, bs, device):
        losses.append(float(_forward_loss(kind, model, loss_fn, b, None)) * len(b["x"]))
        if kind in ("seg2d", "mtl", "cascade_seg"):
            out = model(b["x"], b["clinical"]) if kind == "mtl" else model(b["x"])
            seg = out.get("seg") if isinstance(out, dict) else out
            if seg is not None:  # a classification-only network has no segmentation output
                p = (torch.sigmoid(seg) > 0.5).cpu().numpy()
                y = b["y"].cpu().numpy() > 0.5
                for i in range(len(p)):
                    if y[i].any():
                        dices.append(M.dice(p[i], y[i]))
                if kind == "seg2d":
                    dices002 += M.dice_report002(p, y, reduction="none").ravel().tolist()
            if kind == "mtl" and "cls" in out:
                sm = torch.softmax(out["cls"], 1)
                if sm.shape[1] == 2:
                    probs += sm[:, 1].cpu().tolist()
                correct += (sm.argmax(1) == b["label"]).cpu().tolist()
                labels += b["label"].cpu().tolist()
        if kind in ("cls2d",):
            probs += torch.sigmoid(model(b["x"])[:, 0]).cpu().tolist()
            labels += b["label"].cpu().tolist()
        if kind == "cascade_cls":
            probs += torch.softmax(model(b["x"], b["clinical"]), 1)[:, 1].cpu().tolist()
            labels += b["label"].cpu().tolist()
    out = {"val_loss": sum(losses) / max(len(idx), 1)}
    if dices:
        out["val_dice"] = float(np.mean(dices))
    if dices002:
        out["val_dice_report002"] = float(np.mean(dices002))
    if probs:
        out["val_auc"] = M.roc_auc(labels, probs)
    if correct:
        out["val_accuracy"] = float(np.mean(correct))
    return out


def validate_3d(
    model: torch.nn.Module,
    spec: ModelSpec,
    cfg: dict,
    cases: Sequence[D.Case],
    size: Sequence[int],
    device: str,
) -> dict:
    from .inference import PredictOptions, predict

    model.eval()
    lm = LoadedModel(spec, model, {}, device, tuple(size))
    dices = []
    for case in cases:
        vol, masks = case.load()
        p = predict(lm, vol, PredictOptions(postprocessing=()))
        assert p.mask is not None  # a segmentation model's prediction has a mask
        dices.append(M.dice(p.mask, _label_masks(spec, masks, cfg["data"].get("label_map", {}))[0]))
    return {"val_dice": float(np.nanmean(dices)) if dices else float("nan")}


def _selection(val: dict, select: str) -> tuple[float, float]:
    """(score, validation loss) of one validation: the score is ``val[select]`` (higher is better;
    the negated loss when selecting by loss); a NaN metric (e.g. AUC with one class present) falls
    back to the negated loss far below any real score."""
    loss = float(val.get("val_loss", math.nan))
    score = -loss if select == "val_loss" else float(val.get(select, math.nan))
    if math.isnan(score) and not math.isnan(loss):
        score = -loss - 1e6
    return score, loss


def _better(score: float, loss: float, best_score: float, best_loss: float) -> bool:
    """Whether an epoch with (``score``, validation ``loss``) replaces the best so far: a higher
    score wins; an equal score (AUC 1.0 again, the same Dice) wins with a strictly lower validation
    loss, so a later epoch that ranks as well and is better calibrated is kept instead of the first
    one that got there (the shipped cascade's classifier was kept from epoch 3 at loss 2.33 over
    epochs 7-8 at AUC 1.0 and loss 0.016 / 0.009). A NaN score never wins; a NaN loss never breaks
    a tie."""
    if math.isnan(score):
        return False
    if score > best_score:
        return True
    return score == best_score and not math.isnan(loss) and loss < best_loss


# ----------------------------------------------------------------------------- training steps
# train() runs these steps, each with typed inputs and outputs (issue 20 item 3): setup_run ->
# split_data -> build_training_model -> prepare_data -> plan_stages -> per stage or phase:
# build_stage, resume_stage, run_stage (run_epoch, validate_epoch, select_best, record_epoch) ->
# write_card. Order and seeds are those of the single function they replaced.
@dataclass
class RunSetup:
    """One run's resolved contract, shared by every step: config, process, registry spec, data kind,
    model grid, architecture overrides, output folder, seed."""

    cfg: dict
    d: Dist
    spec: Any
    kind: str
    size: tuple
    over: dict
    name: str
    out_dir: Path
    seed: int
    t_start: float
    argv: list[str] | None = None


@dataclass
class TrainingData:
    """The cases, their patient-level split, and the training samples: 2D arrays of
    :func:`prepare_2d` (``train``, ``val``) or 3D crop sources (``volumes``, :func:`prepare_3d`
    through :func:`medseg_core.train_transforms.crop_sources`) with the crop size ``roi``."""

    cases: list
    split: dict[str, list]
    train: dict | None = None
    val: dict | None = None
    volumes: list | None = None
    roi: tuple | None = None


@dataclass
class TrainingModel:
    """The network (on the run's device), the run's loss and the card's ``pretrained`` entry."""

    model: torch.nn.Module
    loss_fn: Any
    pretrained: dict


@dataclass
class StagePlan:
    """One stage of the run: ``main``; the cascade's ``segmenter`` then ``classifier``; or one phase
    of ``train.phases`` (report 002)."""

    name: str
    kind: str
    phase: dict | None = None


@dataclass
class Stage:
    """A stage ready to train: the network part it trains (and its DDP wrapper), loss, samples,
    epochs, optimiser, scheduler and selection metric."""

    plan: StagePlan
    net: torch.nn.Module
    ddp_net: torch.nn.Module
    loss_fn: Any
    train: dict | None
    val: dict | None
    epochs: int
    optim: torch.optim.Optimizer
    sched: Any
    select: str


@dataclass
class Best:
    """The best epoch so far (:func:`select_best`): selection score, validation loss (the tie
    breaker of :func:`_better`), its validation metrics and weights."""

    score: float = -math.inf
    loss: float = math.inf
    metrics: dict = field(default_factory=dict)
    state: dict | None = None


@dataclass
class StageState:
    """Where a stage starts: first epoch, best so far, early-stopping patience left. A resumed stage
    (:func:`resume_stage`) starts after the saved epoch with the best of its log."""

    start_epoch: int
    best: Best
    patience_left: int


def setup_run(cfg: dict, argv: list[str] | None = None) -> RunSetup:
    """Process group, seeds (torch ``seed + rank``, numpy ``seed``), spec, grid, output folder."""
    d = setup_distributed()
    seed = int(cfg["train"]["seed"])
    torch.manual_seed(seed + d.rank)
    np.random.seed(seed)
    spec = get_spec(cfg["model"])
    size = tuple(cfg["input_size"] or spec.input_size)
    over = dict(cfg["overrides"] or {})
    if spec.name == "unetr3d":
        over.setdefault("img_size", list(size))
    out_dir = Path(cfg["out"])
    if not out_dir.is_absolute():
        out_dir = ROOT / out_dir
    return RunSetup(cfg, d, spec, kind_of(spec, cfg), size, over, cfg["name"], out_dir, seed, time.time(), argv)


def split_data(run: RunSetup) -> TrainingData:
    """The dataset's cases (generated first when synthetic) and their patient-level split."""
    cases = load_cases(run.cfg)
    split = split_cases(cases, run.cfg)
    _log(
        run.d,
        f"[{run.name}] {len(cases)} cases: {len(split['train'])} train / {len(split['val'])} val / "
        f"{len(split['test'])} test; kind={run.kind}; world={run.d.world}",
    )
    return TrainingData(cases, split)


def build_training_model(run: RunSetup) -> TrainingModel:
    """The model from the registry with the same initial weights on every rank (torch seeded with
    ``seed``), ``init_from`` / ``encoder_weights`` applied (:func:`pretrained_entry`), and the loss."""
    torch.manual_seed(run.seed)  # identical initial weights on every rank
    model = build_model(run.spec.name, run.cfg["variant"], **run.over)
    pretrained = pretrained_entry(model, run.cfg)
    model = model.to(run.d.device)
    loss_fn = make_loss(run.cfg, run.spec)
    if hasattr(loss_fn, "to"):
        loss_fn = loss_fn.to(run.d.device)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    return TrainingModel(model, loss_fn, pretrained)


def prepare_data(run: RunSetup, data: TrainingData) -> TrainingData:
    """The training samples (after the model is built, as always: a denoiser loaded here draws from
    torch's generator): 2D slices of the training and validation split on the model grid, or the 3D
    training volumes at the model spacing ready for foreground/background cropping."""
    cfg = run.cfg
    if run.kind == "seg3d":
        roi = tuple(cfg["roi"] or run.size)
        vols = prepare_3d(data.split["train"], run.spec, cfg)
        return replace(data, volumes=TT.crop_sources(vols, roi, crop_config(cfg)), roi=roi)
    tr = prepare_2d(data.split["train"], run.spec, cfg, run.size, True)
    va = prepare_2d(data.split["val"], run.spec, cfg, run.size, False)
    _log(run.d, f"[{run.name}] {len(tr['x'])} training / {len(va['x'])} validation slices at {run.size}")
    return replace(data, train=tr, val=va)


def plan_stages(run: RunSetup) -> list[StagePlan]:
    """``main``; the cascade's two stages; or one stage per ``train.phases`` entry."""
    if run.kind == "cascade":
        return [StagePlan("segmenter", "cascade_seg"), StagePlan("classifier", "cascade_cls")]
    phases = TF.phases_of(run.cfg) if run.kind != "seg3d" else []
    if phases:  # train.phases (report 002 section 3.2): one stage per phase, run one after another
        return [StagePlan(ph["name"], run.kind, ph) for ph in phases]
    return [StagePlan("main", run.kind)]


def build_stage(run: RunSetup, data: TrainingData, tm: TrainingModel, plan: StagePlan) -> Stage:
    """The network part a stage trains, its loss and samples (the cascade classifier: reference-mask
    crops), frozen parts, optimiser and scheduler (a phase's own), selection metric."""
    cfg, model, d = run.cfg, tm.model, run.d
    net: torch.nn.Module = model
    loss_fn, tr, va = tm.loss_fn, data.train, data.val
    if plan.kind in ("cascade_seg", "cascade_cls"):
        assert data.train is not None and data.val is not None  # 2D arrays (prepare_data)
    if plan.kind == "cascade_seg":
        net, loss_fn = cast(torch.nn.Module, model.segmenter), cascade_seg_loss(cfg)
        tr, va = dict(data.train or {}), dict(data.val or {})
    elif plan.kind == "cascade_cls":
        net = cast(torch.nn.Module, model.classifier)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0], device=d.device))
        tr, va = _cascade_crops(data.train or {}, model), _cascade_crops(data.val or {}, model)
    ddp_net = net
    if d.world > 1:
        ddp_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.local_rank] if "cuda" in d.device else None
        )
    phase = plan.phase
    if phase:  # its epochs, optimiser, scheduler and frozen parts (train_features.apply_freeze)
        TF.apply_freeze(net, phase)
        epochs = int(phase["epochs"])
        optim = _optimizer({"optim": phase["optim"]}, [q for q in net.parameters() if q.requires_grad])
    else:
        epochs = int(cfg["train"]["epochs"])
        optim = _optimizer(cfg, net.parameters())
    sched = _scheduler(phase["optim"] if phase else cfg["optim"], optim, epochs)
    # the cascade's classifier: cascade.cls_select_by (report 001: val_loss, Appendix B; the shipped demo: val_auc)
    select = (
        cfg["train"]["select_by"]
        if plan.kind != "cascade_cls"
        else (cfg.get("cascade") or {}).get("cls_select_by", "val_auc")
    )
    return Stage(plan, net, ddp_net, loss_fn, tr, va, epochs, optim, sched, select)


def _weights(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def resume_stage(run: RunSetup, stage: Stage, path: Path, history: list[dict]) -> StageState:
    """Continue from a ``<name>_last.safetensors``: weights and optimiser of the last epoch, the log
    (``history`` is replaced by the saved one), the best score and the metrics of the best logged
    epoch of this stage (the same rule as during training: ties go to the lower loss), the scheduler
    stepped to where it was (plateau restarts its patience). The best *weights* are the last epoch's
    until a later epoch beats the best score."""
    start_epoch, best_score, saved = load_training_state(path, stage.net, stage.optim)
    history[:] = saved
    best = Best(score=best_score, state=_weights(stage.net))
    scored = [h for h in history if h.get(stage.select) is not None and h["stage"] == stage.plan.name]
    if scored:
        top = scored[0]
        for h in scored[1:]:
            if _better(*_selection(h, stage.select), *_selection(top, stage.select)):
                top = h
        best.metrics = {k: v for k, v in top.items() if k.startswith("val_")}
        best.metrics["best_epoch"] = top["epoch"]
        best.loss = float(top.get("val_loss", math.inf))
    if stage.sched is not None and not isinstance(stage.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        for _ in range(start_epoch):
            stage.sched.step()
    _log(
        run.d, f"[{run.name}] resumed at epoch {start_epoch} (weights of the last epoch; best so far {best_score:.4f})"
    )
    return StageState(start_epoch, best, int(run.cfg["train"]["patience"]))


def epoch_samples(run: RunSetup, data: TrainingData, stage: Stage, epoch: int) -> dict:
    """The samples of one epoch: the stage's arrays, or (3D) fresh foreground/background crops of the
    training volumes (:func:`medseg_core.train_transforms.sample_crops`), seeded by (seed, rank, epoch)."""
    if stage.plan.kind != "seg3d":
        assert stage.train is not None
        return stage.train
    assert data.volumes is not None  # 3D crop sources (prepare_data)
    xs, ys = TT.sample_crops(
        data.volumes,
        int(run.cfg["samples_per_volume"]),
        TT.seed_of(run.seed, run.d.rank, epoch, TT.SALT_CROP),
        crop_config(run.cfg),
    )
    return {"x": xs.astype(np.float32), "y": ys.astype(np.float32)}


def epoch_order(run: RunSetup, stage: Stage, arrays: dict, epoch: int) -> np.ndarray:
    """This rank's sample order: a permutation seeded by ``seed + epoch`` (or report 002's weighted
    draw, ``train.sampler``), then the distributed sampler's disjoint shard ``[rank::world]``."""
    n = len(arrays["x"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(run.seed + epoch)).numpy()
    weighted = TF.epoch_order(run.cfg, arrays, run.seed, epoch) if stage.plan.kind == "seg2d" else None
    if weighted is not None:  # train.sampler (report 002: WeightedRandomSampler by organ combination)
        order = weighted
    return order[run.d.rank :: run.d.world]


def augment_batch(run: RunSetup, stage: Stage, b: dict, gen: torch.Generator) -> dict:
    """The batch after training augmentation: 2D image with every label map (``y``, ``non_expert``)
    through ``augment`` (:func:`augment_2d` or report 002's pipeline), 3D through :func:`augment_3d`."""
    a, d = run.cfg["augment"], run.d
    if stage.plan.kind in ("seg2d", "mtl", "cascade_seg", "cls2d"):
        ys = [b["y"]] + ([b["non_expert"]] if "non_expert" in b else [])
        x, ys = TF.augment_fn(a)(b["x"].cpu(), [y.cpu() for y in ys], a, gen)
        b["x"], b["y"] = x.to(d.device), ys[0].to(d.device)
        if "non_expert" in b:
            b["non_expert"] = ys[1].to(d.device)
    elif stage.plan.kind == "seg3d":
        b["x"], b["y"] = augment_3d(b["x"], b["y"], a, gen)
    return b


def run_epoch(run: RunSetup, data: TrainingData, stage: Stage, epoch: int) -> float:
    """One training epoch of a stage (at most ``train.max_steps_per_epoch`` steps); returns the mean
    training loss (averaged over ranks). Augmentation draws come from a generator seeded by
    (seed, rank, epoch), and torch's own generator (dropout, stochastic depth) is seeded by (seed,
    rank, epoch) too, so an epoch is the same whether the run was resumed or not."""
    from tqdm import tqdm

    cfg, d = run.cfg, run.d
    stage.net.train()
    arrays = epoch_samples(run, data, stage, epoch)
    order = epoch_order(run, stage, arrays, epoch)
    bs = int(cfg["train"]["batch_size"])
    steps = math.ceil(len(order) / bs)
    if cfg["train"].get("max_steps_per_epoch"):
        steps = min(steps, int(cfg["train"]["max_steps_per_epoch"]))
    gen = torch.Generator().manual_seed(TT.seed_of(run.seed, d.rank, epoch, TT.SALT_AUGMENT))
    torch.manual_seed(TT.seed_of(run.seed, d.rank, epoch, TT.SALT_TORCH))
    total = 0.0
    bar = tqdm(
        range(steps),
        desc=f"{run.name} {stage.plan.name} ep{epoch + 1}/{stage.epochs}",
        leave=False,
        disable=not d.main or not sys.stderr.isatty(),
    )
    for step in bar:
        sel = order[step * bs : (step + 1) * bs]
        b = {k: torch.from_numpy(v[sel]).to(d.device) for k, v in arrays.items() if k not in ("pid", "case")}
        loss = _forward_loss(stage.plan.kind, stage.ddp_net, stage.loss_fn, augment_batch(run, stage, b, gen), run.spec)
        stage.optim.zero_grad(set_to_none=True)
        loss.backward()
        stage.optim.step()
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    train_loss = total / max(steps, 1)
    if d.world > 1:
        # DDP syncs parameters, but each rank's last forward updated its own batch-norm
        # running statistics: take rank 0's so every rank validates the same network.
        for buf in stage.net.buffers():
            dist.broadcast(buf.data, 0)
        tl = torch.tensor([train_loss], device=d.device)
        dist.all_reduce(tl)
        train_loss = float(tl) / d.world
    return train_loss


def validate_epoch(run: RunSetup, data: TrainingData, stage: Stage, epoch: int) -> dict:
    """Validation metrics of the epoch (``{}`` between ``train.val_every`` epochs; the last epoch is
    always validated): 3D through predict() on whole validation volumes, 2D on the prepared slices."""
    every = max(1, int(run.cfg["train"].get("val_every", 1)))
    if (epoch + 1) % every and epoch + 1 < stage.epochs:
        return {}
    if stage.plan.kind == "seg3d":
        pre, params = _preprocessing(run.spec, run.cfg)
        return validate_3d(
            stage.net,
            replace(run.spec, preprocessing=pre, preprocessing_params=params),
            run.cfg,
            data.split["val"],
            run.size,
            run.d.device,
        )
    return validate_2d(stage.plan.kind, stage.net, stage.loss_fn, stage.val, run.d.device)


def select_best(best: Best, val: dict, select: str, epoch: int, net: torch.nn.Module, d: Dist) -> bool:
    """Whether this epoch becomes the stage's best (:func:`_selection`, :func:`_better`; ``select_by:
    last`` keeps every validated epoch, report 001's denoiser); when it does, ``best`` takes its
    score, loss, metrics and weights. Under DDP rank 0 decides, so every rank keeps the same weights."""
    score, loss_now = _selection(val, select) if val else (math.nan, math.nan)
    improved = bool(val) if select == "last" else _better(score, loss_now, best.score, best.loss)
    if d.world > 1:
        flag = torch.tensor([1 if improved else 0])
        dist.broadcast(flag, 0)
        improved = bool(flag.item())
        if improved and math.isnan(score):
            score = best.score
    if improved:
        best.score, best.loss = score, loss_now
        best.state = _weights(net)
        best.metrics = dict(val, best_epoch=epoch + 1)
    return improved


def record_epoch(run: RunSetup, stage: Stage, row: dict, history: list[dict], best: Best, writer: Any) -> None:
    """Rank 0: the CSV log, TensorBoard, the state to resume from, one printed line."""
    if not run.d.main:
        return
    write_csv(run.out_dir / f"{run.name}_log.csv", history)
    if writer:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                writer.add_scalar(f"{stage.plan.name}/{k}", v, row["epoch"])
    save_training_state(
        run.out_dir / f"{run.name}_last.safetensors", stage.net, stage.optim, row["epoch"], best.score, history
    )
    print(
        f"[{run.name}] {stage.plan.name} epoch {row['epoch']}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)),
        flush=True,
    )


def run_stage(run: RunSetup, data: TrainingData, stage: Stage, state: StageState, history: list[dict]) -> Best:
    """The epochs of one stage from ``state``: train, validate, step the scheduler, log, select,
    stop early after ``train.patience`` validations without a better epoch (rank 0 decides). The
    stage's network ends with its best weights, which are returned with their metrics."""
    best, patience_left = state.best, state.patience_left
    writer = _tensorboard(run.cfg, run.out_dir, run.name) if run.d.main else None
    for epoch in range(state.start_epoch, stage.epochs):
        t0 = time.time()
        train_loss = run_epoch(run, data, stage, epoch)
        val = validate_epoch(run, data, stage, epoch)
        row = {
            "stage": stage.plan.name,
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **val,
            "lr": stage.optim.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        _scheduler_step(stage.sched, val, train_loss)
        history.append(row)
        if select_best(best, val, stage.select, epoch, stage.net, run.d):
            patience_left = int(run.cfg["train"]["patience"])
        elif val:
            patience_left -= 1
        record_epoch(run, stage, row, history, best, writer)
        stop = torch.tensor([1 if patience_left <= 0 else 0])
        if run.d.world > 1:
            dist.broadcast(stop, 0)
        if int(stop):
            _log(run.d, f"[{run.name}] early stop after epoch {epoch + 1}")
            break
    assert best.state is not None  # a fresh stage starts from its initial weights
    stage.net.load_state_dict(best.state)
    return best


def write_card(
    run: RunSetup,
    data: TrainingData,
    tm: TrainingModel,
    plans: list[StagePlan],
    history: list[dict],
    best_overall: dict,
) -> dict:
    """Rank 0: the model card (recipe, envelope, split, provenance, ``pretrained``, validation of every
    stage's best epoch, test metrics through the evaluation engine) and the checkpoint; every rank
    under DDP writes its weights' hash and leaves the process group. Returns train()'s result."""
    cfg, d, model, name = run.cfg, run.d, tm.model, run.name
    model.eval()
    result = {"val": best_overall, "history": history}
    if d.main:
        card = training_card(cfg, run.spec, name, run.over, run.size, data.split, data.cases, run.argv)
        card["pretrained"] = tm.pretrained
        if cfg["data"]["split"].get("stratify"):  # a case-level split: patients span parts, so list the cases
            card["split_cases"] = {k: [c.case_id for c in v] for k, v in data.split.items()}
        if cfg.get("denoiser") and run.kind != "restore":  # inference applies it too (medseg_core.denoise)
            card["denoiser"] = str(cfg["denoiser"])
        if (
            run.kind in ("mtl", "cascade")
            and int(model_kwargs(run.spec.name, cfg["variant"], **run.over).get("n_clinical", 2)) == 0
        ):
            card["recipe"]["clinical_inputs"] = []
        test_metrics = (
            evaluate_split(model, card, cfg, data.split["test"], d.device) if cfg.get("evaluate_test") else {}
        )
        counted = {p.name for p in plans if p.phase} | {plans[-1].name}  # every phase, or the last stage
        card.update(
            {
                "epochs_run": len([h for h in history if h["stage"] in counted]),
                "validation": best_overall,
                "test": test_metrics,
                "parameters": count_parameters(model),
                "training_seconds": round(time.time() - run.t_start, 1),
                "device": d.device,
                "world_size": d.world,
            }
        )
        save_checkpoint(model, name, card, run.out_dir, fp16=bool(cfg.get("fp16")))
        result["test"] = test_metrics
        print(
            f"[{name}] saved {run.out_dir / (name + '.safetensors')}; val={best_overall}; test={test_metrics}",
            flush=True,
        )
    if d.world > 1:
        (run.out_dir / f"{name}_rank{d.rank}.sha256").write_text(_state_hash(model))
        dist.barrier()
        dist.destroy_process_group()
    return result


def train(cfg: dict, resume: str | None = None, argv: list[str] | None = None) -> dict:
    """Train ``cfg`` (see the module docstring): the steps above, in order. Stages run one after
    another; a later phase starts from, and competes with, the earlier phases' best epoch; ``resume``
    continues the last stage. Returns ``{"val": best metrics per stage, "history": log rows[, "test"]}``."""
    run = setup_run(cfg, argv)
    data = split_data(run)
    tm = build_training_model(run)
    data = prepare_data(run, data)
    plans = plan_stages(run)
    history: list[dict] = []
    best_overall: dict[str, dict] = {}
    carried: Best | None = None  # the best epoch handed from one phase to the next
    for plan in plans:
        stage = build_stage(run, data, tm, plan)
        if resume and plan is plans[-1]:
            state = resume_stage(run, stage, Path(resume), history)
        else:
            state = StageState(0, Best(state=_weights(stage.net)), int(cfg["train"]["patience"]))
        if plan.phase and carried:
            state.best = replace(carried)
        carried = run_stage(run, data, stage, state, history)
        best_overall[plan.name] = carried.metrics
    return write_card(run, data, tm, plans, history, best_overall)


def training_card(
    cfg: dict,
    spec: ModelSpec,
    name: str,
    over: dict,
    size: Sequence[int],
    split: dict,
    cases: list,
    argv: list[str] | None,
) -> dict:
    """The model card of a training run: the recipe it trained with, the envelope of its training
    split, and its provenance (metrics are added once measured)."""
    from . import cards

    pre, params = _preprocessing(spec, cfg)
    recipe = cards.recipe_from_spec(
        spec,
        cfg["variant"],
        over,
        input_size=size,
        preprocessing=pre,
        preprocessing_params=params,
        postprocessing=cfg.get("postprocessing"),
        threshold=cfg.get("threshold"),
        geometry=_geometry(spec, cfg),
    )
    region, anatomy = cards.region_defaults(spec.family)
    train_cases = split["train"] or cases
    envelope = cards.data_envelope(
        (c.load()[0] for c in train_cases),
        pre,
        params,
        body_region=cfg.get("body_region") or region,
        anatomy=cfg.get("anatomy") or anatomy,
        case_ids=[c.case_id for c in train_cases],
    )
    title = cfg.get("title") or (spec.title if name == spec.name else f"{name} ({spec.title})")
    return cards.new_card(
        name,
        recipe,
        envelope,
        title=title,
        report=cfg.get("report") or spec.report,
        training_data={
            "adapter": cfg["data"]["adapter"],
            "root": str(cfg["data"]["root"]),
            "synthetic": cfg["data"].get("synthetic"),
            "n_cases": len(cases),
        },
        split={k: sorted({c.patient_id for c in v}) for k, v in split.items()},
        loss=cfg["loss"],
        optimiser=cfg["optim"],
        augmentation=cfg["augment"],
        command="python -m medseg_core.train " + " ".join(shlex.quote(a) for a in (argv or [])),
        seed=int(cfg["train"]["seed"]),
        notes=(
            f"Demo configuration ({cfg['variant']}), narrower than the paper where CPU training demands it; "
            "trained and evaluated on synthetic phantoms only."
        )
        if cfg["variant"] == "demo"
        else "",
        notice=RESEARCH_NOTICE,
    )


def _state_hash(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def _cascade_crops(arrays: dict, model) -> dict:
    """Reference-mask crops (1 % padding, square, crop size) for training the cascade classifier."""
    from .models.ultrasound import lesion_crop_box, square_crop

    xs = []
    for i in range(len(arrays["x"])):
        box = lesion_crop_box(arrays["y"][i, 0]) or (0, arrays["x"].shape[-2], 0, arrays["x"].shape[-1])
        xs.append(square_crop(torch.from_numpy(arrays["x"][i]), box, model.crop_size).numpy())
    return {
        "x": np.stack(xs).astype(np.float32),
        "label": arrays["label"],
        "clinical": arrays["clinical"],
        "y": np.zeros((len(xs), 1), np.float32),
    }


def evaluate_split(model: torch.nn.Module, card: dict, cfg: dict, cases: Sequence[D.Case], device: str) -> dict:
    """Held-out metrics through the one evaluation engine (the real predict() pipeline), run from the
    card's recipe exactly as a user will run the saved checkpoint (recorded in the model card)."""
    from .cards import spec_from_card
    from .engine import evaluate_cases, headline

    spec = spec_from_card(card)
    if not cases or spec.task == "restoration":
        return {}
    lm = LoadedModel(spec, model, {}, device)
    return headline(list(evaluate_cases(lm, cases, label_map=cfg["data"].get("label_map", {}), per_slice=False)))


# ----------------------------------------------------------------------------- batch-norm repair
def _test_metrics(lm: LoadedModel, cases, label_map: dict) -> dict:
    """Held-out metrics through the one evaluation engine: :func:`~medseg_core.engine.headline`,
    plus sensitivity and specificity at the card's class threshold for a classifier."""
    from .engine import evaluate_cases, headline, summarise

    results = list(evaluate_cases(lm, cases, label_map=label_map, per_slice=False))
    out = headline(results)
    thr = lm.spec.class_threshold
    cls = summarise(results, 0.5 if thr is None else float(thr)).get("classification")
    if cls:
        out["sensitivity"], out["specificity"] = float(cls["sensitivity"]), float(cls["specificity"])
    return out


def recalibrate_bn(
    ref: str | Path,
    config: str | Path,
    reason: str = "",
    out: str | Path | None = None,
    device: str = "cpu",
    argv: list[str] | None = None,
) -> dict:
    """Re-estimate the batch-norm running statistics of a trained checkpoint on its own training
    split and write it again (weights, card with a ``repairs`` entry); no weight changes.

    The training cases are the card's ``split["train"]`` (patient IDs) of the dataset the card and
    ``config`` name, prepared with the card's recipe exactly as training prepared them
    (:func:`prepare_2d`; the cascade's classifier gets the reference-mask crops of
    :func:`_cascade_crops`, the part whose statistics are re-estimated; 3D models get seeded
    foreground/background ROI crops, :func:`medseg_core.train_transforms.sample_crops`). Every
    batch-norm layer is reset and, with momentum None (a cumulative
    average over the batches), updated by one seeded pass of forward passes in train mode (as
    training and ``torch.optim.swa_utils.update_bn`` do), under ``torch.no_grad``. The card's ``test``
    metrics are measured again on the card's test split through the evaluation engine; the old
    SHA-256 and the metrics before and after go into the repair entry. Returns that entry."""
    import copy
    import datetime

    from safetensors.torch import load_file

    from .checkpoints import find_checkpoint, load_model

    ckpt = find_checkpoint(ref)
    lm = load_model(ref, device=device)
    card = copy.deepcopy(lm.card)
    builder = card["recipe"]["architecture"]["builder"]
    cfg = load_config(config)
    if cfg["model"] != builder:
        raise InputError(
            f"The config '{config}' trains '{cfg['model']}' but the checkpoint '{ckpt.name}' is a "
            f"'{builder}'; give the config it was trained with."
        )
    td = card.get("training_data") or {}
    for k in ("adapter", "root", "synthetic"):  # the card records the data the checkpoint saw
        if td.get(k) is not None:
            cfg["data"][k] = td[k]
    spec = replace(lm.spec, name=lm.spec.architecture)  # the registry name decides the data kind
    cfg["preprocessing"], cfg["preprocessing_params"] = spec.preprocessing, dict(spec.preprocessing_params)
    size = lm.size
    kind = kind_of(spec, cfg)
    split_ids = card.get("split") or {}
    if not split_ids.get("train"):
        raise InputError(f"The card of '{ckpt.name}' records no training split; its statistics cannot be re-estimated.")
    cases = load_cases(cfg)
    split = {k: [c for c in cases if c.patient_id in set(v)] for k, v in split_ids.items()}
    found = {c.patient_id for c in split["train"]}
    if found != set(split_ids["train"]):
        raise InputError(
            f"{len(set(split_ids['train']) - found)} training patient(s) of '{ckpt.name}' are not in "
            f"{cfg['data']['root']}; re-estimate on the data it was trained on."
        )
    label_map = cfg["data"].get("label_map", {})
    model = lm.module
    test_before = _test_metrics(lm, split.get("test") or [], label_map) if split.get("test") else {}

    bs = int(cfg["train"]["batch_size"])
    seed = int(cfg["train"]["seed"])
    net, part, val_kind, va = model, "whole model", None, None
    if kind == "seg3d":
        roi = tuple(cfg["roi"] or size)
        crop = crop_config(cfg)
        xs, _ = TT.sample_crops(
            TT.crop_sources(prepare_3d(split["train"], spec, cfg), roi, crop),
            int(cfg["samples_per_volume"]),
            TT.seed_of(seed, 0, 0, TT.SALT_CROP),
            crop,
        )
        arrays = {"x": xs.astype(np.float32)}
        what = (
            f"{len(xs)} random {' x '.join(map(str, roi))} crops ({cfg['samples_per_volume']} per training volume, "
            f"foreground:background {crop['pos']:g}:{crop['neg']:g}, MONAI RandCropByPosNegLabeld)"
        )
    else:
        arrays = prepare_2d(split["train"], spec, cfg, size, True)
        va = prepare_2d(split["val"], spec, cfg, size, False) if split.get("val") else None
        what = f"{len(arrays['x'])} training slices at {' x '.join(map(str, size))}"
        val_kind = kind
        if kind == "cascade":
            net, part, val_kind = cast(torch.nn.Module, model.classifier), "classifier", "cascade_cls"
            arrays = _cascade_crops(arrays, model)
            va = _cascade_crops(va, model) if va is not None else None
            what = (
                f"{len(arrays['x'])} reference-mask lesion crops of the training split "
                f"({model.crop_size} x {model.crop_size}, as train._cascade_crops makes them)"
            )
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise InputError(f"'{ckpt.name}' ({part}) has no batch-norm layer; there are no statistics to re-estimate.")

    def forward(b):
        if kind == "mtl" or val_kind == "cascade_cls":
            return net(b["x"], b["clinical"])
        return net(b["x"])

    def loss_fn():
        if val_kind == "cascade_cls":  # the cascade classifier's training loss
            return torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0], device=device))
        return make_loss(cfg, spec)

    val_before = validate_2d(val_kind, net, loss_fn(), va, device) if va is not None else {}
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    momenta = [m.momentum for m in bns]
    # train mode as in training (and torch.optim.swa_utils.update_bn): the statistics see the
    # activations training saw, stochastic depth and dropout included, so the run is seeded
    net.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    torch.manual_seed(seed)
    n = len(arrays["x"])
    with torch.no_grad():
        for b in _batches(arrays, np.arange(n), bs, device):
            forward(b)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.eval()
    changed = [k for k, v in net.named_parameters() if not torch.equal(v, params[k])]
    assert not changed, f"weights changed: {changed[:5]}"
    val_after = validate_2d(val_kind, net, loss_fn(), va, device) if va is not None else {}
    test_after = _test_metrics(lm, split.get("test") or [], label_map) if split.get("test") else {}

    old_sha = card["sha256"]
    entry = {
        "date": datetime.date.today().isoformat(),
        "what": (
            f"batch-norm running statistics of the {part} ({len(bns)} layers) re-estimated: reset, then a "
            "cumulative average (momentum None) over one pass of forward passes in batches of "
            f"{bs} in train mode (torch seed {seed}), no gradient; no weight changed"
        ),
        "inputs": what,
        "n_inputs": int(n),
        "why": reason or "the stored running statistics did not match the weights",
        "old_sha256": old_sha,
        "command": "python -m medseg_core.train "
        + " ".join(shlex.quote(a) for a in (argv or ["--recalibrate-bn", str(ref), "--config", str(config)])),
        "test_before": test_before,
        "test_after": test_after,
    }
    if val_before:
        entry["validation_before"], entry["validation_after"] = val_before, val_after
    card["repairs"] = list(card.get("repairs") or []) + [entry]
    if test_after:
        card["test"] = test_after
    directory = Path(out) if out else ckpt.weights.parent
    name = card["name"]
    staging = directory / f".{name}.recalibrating"
    try:
        staged = save_checkpoint(model, name, card, staging, fp16=card.get("storage") == "float16")
        # what is written: every tensor but the re-estimated batch-norm buffers is the old one, bit for bit
        prefix = "classifier." if part == "classifier" else ""
        buffers = {prefix + k for k, _ in net.named_buffers()}
        before, after = load_file(str(ckpt.weights)), load_file(str(staged))
        differ = sorted(set(after) ^ set(before)) or [
            k for k in after if k not in buffers and not torch.equal(after[k], before[k])
        ]
        if differ:
            raise RuntimeError(f"the rewritten checkpoint differs outside the batch-norm statistics: {differ[:5]}")
        path = directory / staged.name
        if path.exists():
            os.chmod(staged, path.stat().st_mode & 0o777)
        os.replace(staged, path)
        os.replace(staged.with_suffix(".json"), path.with_suffix(".json"))
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"[{card['name']}] re-estimated {len(bns)} batch-norm layers of the {part} on {what}; "
        f"test before {test_before}, after {test_after}; wrote {path} (was sha256 {old_sha[:12]})",
        flush=True,
    )
    return entry


def _tensorboard(cfg, out_dir, name):
    if not cfg["log"].get("tensorboard"):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        print("TensorBoard is not installed; logging to CSV only", flush=True)
        return None
    return SummaryWriter(str(out_dir / "tb" / name))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description="Train a registry model (see the module docstring).")
    ap.add_argument("--config", required=True)
    ap.add_argument("--resume", default=None, help="a <name>_last.safetensors written by an earlier run")
    ap.add_argument(
        "--recalibrate-bn",
        default=None,
        metavar="CHECKPOINT",
        help="instead of training: re-estimate this checkpoint's batch-norm running statistics on its "
        "card's training split (no weight changes) and write it again (see recalibrate_bn)",
    )
    ap.add_argument("--reason", default="", help="with --recalibrate-bn: why, recorded in the card's repairs entry")
    ap.add_argument("--out", default=None, help="with --recalibrate-bn: folder to write to (default: in place)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value, e.g. train.epochs=5 optim.lr=1e-4")
    a = ap.parse_args(argv)
    if not Path(a.config).is_file():
        raise InputError(f"The config file '{a.config}' does not exist.")
    if a.recalibrate_bn:
        recalibrate_bn(a.recalibrate_bn, a.config, reason=a.reason, out=a.out, argv=argv)
        return
    cfg = load_config(a.config, a.overrides)
    train(cfg, resume=a.resume, argv=argv)


if __name__ == "__main__":
    from .cli import guarded

    guarded(main)
