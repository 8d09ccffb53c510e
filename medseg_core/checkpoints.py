"""Checkpoints: safetensors weights plus a JSON model card, verified by SHA-256.

Never pickle: ``torch.load`` is not used anywhere in medseg. A ``.pt``/``.pth``/``.ckpt``/``.bin``
file in ``checkpoints/`` is refused, never opened. The card records the architecture (registry
name, variant, overrides) so the exact network is rebuilt before weights are loaded with
``strict=True``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io.errors import InputError
from .models import ModelSpec, build_model, count_parameters, get_spec

CHECKPOINT_DIR = Path(os.environ.get("MEDSEG_CHECKPOINTS", Path(__file__).resolve().parents[1] / "checkpoints"))
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
RESEARCH_NOTICE = ("Research use only. Not a medical device. Trained on synthetic phantoms; performance on real "
                   "patients is unknown.")


class CheckpointError(InputError):
    """A checkpoint is missing, tampered with, or in an unsafe format."""


def sha256_file(path: str | Path, cached: bool = False) -> str:
    """SHA-256 of a file. ``cached=True`` memoises by (path, size, modification time), for the
    status shown on every app rerun; loading weights always hashes afresh (a writer could restore
    a file's size and time)."""
    st = os.stat(path)
    if cached:
        return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    return _sha256_cached.__wrapped__(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class LoadedModel:
    """A ready model: its spec, the module (eval mode), its card, device and input geometry."""

    spec: ModelSpec
    module: torch.nn.Module
    card: dict = field(default_factory=dict)
    device: str = "cpu"
    input_size: tuple[int, ...] | None = None  # overrides spec.input_size (e.g. UNETR demo img_size)
    # One prediction at a time per model: the app shares loaded models between sessions, and MC
    # sampling switches dropout layers to train mode while it runs.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.input_size or self.card.get("input_size") or self.spec.input_size)


def save_checkpoint(model: torch.nn.Module, name: str, card: dict[str, Any], directory: str | Path = CHECKPOINT_DIR,
                    fp16: bool = False) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` (card with SHA-256, parameter count)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    def stored(v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        # float16 only where it is exact enough: a tensor beyond its range (batch-norm running
        # variances of HU inputs reach 1e5) stays float32 instead of turning into inf
        if fp16 and v.is_floating_point() and (v.numel() == 0 or float(v.abs().max()) < 6.0e4):
            v = v.half()
        return v.contiguous().cpu()

    state = {k: stored(v) for k, v in model.state_dict().items()}
    path = directory / f"{name}.safetensors"
    save_file(state, str(path), metadata={"name": name, "format": "medseg-1"})
    full = {"name": name, "file": path.name, "sha256": sha256_file(path), "parameters": count_parameters(model),
            "storage": "float16" if fp16 else "float32", "notice": RESEARCH_NOTICE}
    full.update(card)
    full["sha256"] = sha256_file(path)
    (directory / f"{name}.json").write_text(json.dumps(full, indent=1, default=str))
    return path


def read_card(name: str, directory: str | Path = CHECKPOINT_DIR) -> dict | None:
    p = Path(directory) / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def checkpoint_status(name: str, directory: str | Path = CHECKPOINT_DIR) -> str:
    """"ok", "missing" or a sentence saying what is wrong (hash memoised by file size and time)."""
    try:
        _verified_paths(name, Path(directory), cached=True)
        return "ok"
    except CheckpointError as e:
        return "missing" if "no checkpoint" in str(e).lower() else str(e)


def _verified_paths(name: str, directory: Path, cached: bool = False) -> tuple[Path, dict]:
    for suf in PICKLE_SUFFIXES:
        bad = directory / f"{name}{suf}"
        if bad.exists():
            raise CheckpointError(
                f"'{bad.name}' is a pickle checkpoint, which medseg never loads (it can run code); convert it to "
                "safetensors with a model card.")
    weights = directory / f"{name}.safetensors"
    card_path = directory / f"{name}.json"
    if not weights.exists() or not card_path.exists():
        raise CheckpointError(
            f"No checkpoint for model '{name}': '{weights.name}' with its card '{card_path.name}' is missing from "
            f"{directory.name}/; run `make checkpoints` or choose another model.")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"The model card '{card_path.name}' is not valid JSON; restore it from the repository.") from None
    if sha256_file(weights, cached=cached) != card.get("sha256"):
        raise CheckpointError(
            f"'{weights.name}' does not match the SHA-256 in its model card (it was changed or damaged); "
            "restore it from the repository or retrain it.")
    return weights, card


def load_model(name: str, device: str = "cpu", directory: str | Path = CHECKPOINT_DIR) -> LoadedModel:
    """Build the registry model described by the card and load its verified safetensors weights."""
    from safetensors.torch import load_file

    spec = get_spec(name)
    weights, card = _verified_paths(name, Path(directory))
    model = build_model(name, card.get("variant", "demo"), **card.get("overrides", {}))
    state = load_file(str(weights))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(
            f"'{weights.name}' does not fit the '{name}' architecture its card describes; retrain or restore it.") from None
    device = resolve_device(device)
    model.to(device).eval()
    size = card.get("input_size")
    return LoadedModel(spec, model, card, device, tuple(size) if size else None)


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
