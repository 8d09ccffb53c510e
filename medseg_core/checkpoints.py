"""Checkpoints: safetensors weights plus a JSON model card (the recipe), verified by SHA-256.

Never pickle: ``torch.load`` is used in exactly one place, :mod:`medseg_core.bundle`, with
``weights_only=True`` to convert a MONAI bundle's state dict. A ``.pt``/``.pth``/``.ckpt``/``.bin``
file given as a checkpoint is refused, never opened. The card (:mod:`medseg_core.cards`) holds the
whole recipe, so the exact network is rebuilt and run as trained, whatever its file name.

A checkpoint is named by a **reference** (:func:`find_checkpoint`): a name found in one of the model
folders (``MEDSEG_MODELS``, ``os.pathsep``-separated; default ``checkpoints/`` then ``runs/``), the
path of a ``.safetensors`` file (its card is the ``.json`` beside it), the path of a card, or a
folder holding one checkpoint.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Never

import torch

from . import cards
from .io.errors import InputError
from .models import ModelSpec, build_from_spec, count_parameters

CHECKPOINT_DIR = Path(os.environ.get("MEDSEG_CHECKPOINTS", Path(__file__).resolve().parents[1] / "checkpoints"))
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
RESEARCH_NOTICE = (
    "Research use only. Not a medical device. Trained on synthetic phantoms; performance on real patients is unknown."
)


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


ROOT = Path(__file__).resolve().parents[1]
#: Largest checkpoint an app session may upload (bytes); ``MEDSEG_MAX_CHECKPOINT_MB`` changes it.
MAX_UPLOAD_BYTES = int(float(os.environ.get("MEDSEG_MAX_CHECKPOINT_MB", "300")) * 1e6)


def model_dirs() -> list[Path]:
    """The folders whose checkpoints the app and the command lines know by name, in priority order."""
    env = os.environ.get("MEDSEG_MODELS")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path(CHECKPOINT_DIR), ROOT / "runs"]


@dataclass(frozen=True)
class CheckpointRef:
    """Where one checkpoint lives: its name (the card's, else the file stem), weights and card."""

    name: str
    weights: Path
    card_path: Path
    shipped: bool = False

    @property
    def ref(self) -> str:
        """The string that finds it again: the name for shipped checkpoints, else the weights path."""
        return self.name if self.shipped else str(self.weights)


def _is_checkpoint(p: Path) -> bool:
    return p.suffix == ".safetensors" and not p.stem.endswith("_last") and p.with_suffix(".json").exists()


def list_checkpoints(dirs: list[Path] | None = None) -> list[CheckpointRef]:
    """Every checkpoint (weights with a card beside them) in the model folders: directly in a
    folder or one or two levels below it (``runs/<run>/<name>.safetensors``); cohort runs and
    resume states (``*_last``) are skipped. Shipped checkpoints (``checkpoints/``) come first."""
    out, seen = [], set()
    shipped_dir = Path(CHECKPOINT_DIR).resolve()
    for d in dirs or model_dirs():
        d = Path(d)
        if not d.is_dir():
            continue
        found = (
            sorted(d.glob("*.safetensors")) + sorted(d.glob("*/*.safetensors")) + sorted(d.glob("*/*/*.safetensors"))
        )
        for p in found:
            if "cohorts" in p.relative_to(d).parts or not _is_checkpoint(p) or p.resolve() in seen:
                continue
            seen.add(p.resolve())
            out.append(CheckpointRef(p.stem, p, p.with_suffix(".json"), p.parent.resolve() == shipped_dir))
    return out


def _looks_like_path(ref: str) -> bool:
    return (
        any(c in ref for c in ("/", os.sep)) or ref.endswith((".safetensors", ".json")) or ref.endswith(PICKLE_SUFFIXES)
    )


def find_checkpoint(ref: str | Path | CheckpointRef, directory: str | Path | None = None) -> CheckpointRef:
    """Resolve a reference (name, ``.safetensors`` path, card path or folder) to its files; a
    :class:`CheckpointRef` from :func:`list_checkpoints` is already resolved.

    ``directory`` restricts name look-ups to that folder (``--checkpoints DIR``)."""
    if isinstance(ref, CheckpointRef):
        return ref
    text = str(ref)
    if isinstance(ref, Path) or _looks_like_path(text) or Path(text).is_dir():
        p = Path(text).expanduser()
        if p.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"'{p.name}' is a pickle checkpoint, which medseg never loads (it can run code); convert it to "
                "safetensors with a model card (a MONAI bundle: `python -m medseg_core.checkpoints import-bundle DIR`)."
            )
        if p.is_dir():
            found = [q for q in sorted(p.glob("*.safetensors")) if _is_checkpoint(q)]
            if not found:
                raise CheckpointError(
                    f"The folder '{p.name}' holds no checkpoint (a .safetensors file with its .json card)."
                )
            if len(found) > 1:
                raise CheckpointError(
                    f"The folder '{p.name}' holds {len(found)} checkpoints "
                    f"({', '.join(q.stem for q in found)}); give the path of one."
                )
            p = found[0]
        if p.suffix == ".json":
            p = p.with_suffix(".safetensors")
        if p.suffix != ".safetensors":
            raise CheckpointError(
                f"'{p.name}' is not a checkpoint; give a .safetensors file (with its .json card) "
                "or a folder holding one."
            )
        if not p.exists():
            raise CheckpointError(f"No checkpoint at '{p}'.")
        if not p.with_suffix(".json").exists():
            raise CheckpointError(
                f"'{p.name}' has no model card '{p.with_suffix('.json').name}' beside it; "
                "medseg needs the card to run a model as trained."
            )
        shipped = p.parent.resolve() == Path(CHECKPOINT_DIR).resolve()
        return CheckpointRef(p.stem, p, p.with_suffix(".json"), shipped)
    dirs = [Path(directory)] if directory is not None else model_dirs()
    for d in dirs:
        for suf in PICKLE_SUFFIXES:
            bad = d / f"{text}{suf}"
            if bad.exists():
                raise CheckpointError(
                    f"'{bad.name}' is a pickle checkpoint, which medseg never loads (it can run code); convert it to "
                    "safetensors with a model card."
                )
    for c in list_checkpoints(dirs):
        if c.name == text:
            return c
    known = ", ".join(c.name for c in list_checkpoints(dirs)) or "none"
    raise CheckpointError(
        f"No checkpoint named '{text}' ('{text}.safetensors' with its card '{text}.json') in "
        f"{', '.join(d.name + '/' for d in dirs)} (known: {known}); give a path to a .safetensors file or run folder, "
        "or run `make checkpoints`."
    )


@dataclass
class LoadedModel:
    """A ready model: the spec its card describes, the module (eval mode), the card, the device."""

    spec: ModelSpec
    module: torch.nn.Module
    card: dict = field(default_factory=dict)
    device: str = "cpu"
    input_size: tuple[int, ...] | None = None  # a training run's own size (the card's recipe otherwise)
    ref: str = ""  # how it was found (name or path); "" for an in-memory model
    # One prediction at a time per model: the app shares loaded models between sessions, and MC
    # sampling switches dropout layers to train mode while it runs.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.input_size or self.spec.input_size)

    @property
    def envelope(self) -> dict | None:
        return self.card.get("envelope")


def save_checkpoint(
    model: torch.nn.Module, name: str, card: dict[str, Any], directory: str | Path = CHECKPOINT_DIR, fp16: bool = False
) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` (the card, with SHA-256 and parameter count).
    ``card`` is a current-schema card (:func:`medseg_core.cards.new_card`); an old-style card is
    migrated (its ``model`` or ``name`` must be a registry architecture) or refused."""
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
    full = {
        "name": name,
        "file": path.name,
        "sha256": "",
        "parameters": count_parameters(model),
        "storage": "float16" if fp16 else "float32",
        "notice": RESEARCH_NOTICE,
    }
    full.update(card)
    full["name"], full["file"], full["sha256"] = name, path.name, sha256_file(path)
    full = cards.migrate(full, name)  # a card without a schema is an old one: migrated, or refused
    (directory / f"{name}.json").write_text(json.dumps(full, indent=1, default=str))
    return path


def read_card(ref: str | Path | CheckpointRef, directory: str | Path | None = None) -> dict | None:
    """The card of a checkpoint in the current schema (old cards migrated), or None if there is none."""
    try:
        c = find_checkpoint(ref, directory)
    except CheckpointError:
        return None
    return _read_card_file(c.card_path)


def _read_card_file(path: Path) -> dict:
    """The card at ``path`` in the current schema; parsed once per file version (the sidebar reads
    every card on every rerun). A copy, so a caller may change it."""
    path = Path(path)
    return copy.deepcopy(_card_cached(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _card_cached(path: str, mtime_ns: int) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(
            f"The model card '{Path(path).name}' is not valid JSON; restore it or write it again."
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"The model card '{Path(path).name}' is not a JSON object.")
    raw.setdefault("name", Path(path).stem)
    return cards.migrate(raw, Path(path).stem)


@functools.lru_cache(maxsize=256)
def _spec_cached(card_path: str, mtime_ns: int) -> ModelSpec:
    return cards.spec_from_card(_card_cached(card_path, mtime_ns))


def model_spec(ref: str | Path | CheckpointRef, directory: str | Path | None = None) -> ModelSpec:
    """The spec a checkpoint's card describes (memoised by card file and time): what the app shows
    and checks before loading any weights."""
    c = find_checkpoint(ref, directory)
    return _spec_cached(str(c.card_path.resolve()), c.card_path.stat().st_mtime_ns)


def checkpoint_status(ref: str | Path | CheckpointRef, directory: str | Path | None = None) -> str:
    """ "ok", "missing" or a sentence saying what is wrong (hash memoised by file size and time)."""
    try:
        _verified(find_checkpoint(ref, directory), cached=True)
        return "ok"
    except CheckpointError as e:
        return "missing" if str(e).startswith("No checkpoint") else str(e)


def _verified(c: CheckpointRef, cached: bool = False) -> dict:
    card = _read_card_file(c.card_path)
    if sha256_file(c.weights, cached=cached) != card.get("sha256"):
        raise CheckpointError(
            f"'{c.weights.name}' does not match the SHA-256 in its model card (it was changed or damaged); "
            "restore it from the repository or retrain it."
        )
    return card


def _build(card: dict, state: dict, label: str, device: str, ref: str = "") -> LoadedModel:
    spec = cards.spec_from_card(card)
    model = build_from_spec(spec)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(
            f"'{label}' does not fit the '{spec.builder_name}' architecture its card describes; retrain or restore it."
        ) from None
    device = resolve_device(device)
    model.to(device).eval()
    return LoadedModel(spec, model, card, device, None, ref)


def load_model(ref: str | Path, device: str = "cpu", directory: str | Path | None = None) -> LoadedModel:
    """Build the architecture the card describes and load its verified safetensors weights.

    ``ref``: a checkpoint name (in ``directory`` or the model folders), a ``.safetensors`` path,
    a card path or a folder holding one checkpoint (see :func:`find_checkpoint`)."""
    from safetensors.torch import load_file

    c = find_checkpoint(ref, directory)
    card = _verified(c)
    return _build(
        card, load_file(str(c.weights)), c.weights.name, device, c.ref if directory is None else str(c.weights)
    )


def load_model_bytes(
    weights: bytes, card_text: str | bytes, device: str = "cpu", max_bytes: int = MAX_UPLOAD_BYTES
) -> LoadedModel:
    """A model from uploaded files (the app's "upload a checkpoint"): safetensors bytes plus the
    card's JSON text; size-limited, SHA-256 checked against the card, architecture from the
    registry only; never pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_st

    if len(weights) > max_bytes:
        raise CheckpointError(
            f"The checkpoint is {len(weights) / 1e6:.0f} MB; this server accepts at most "
            f"{max_bytes / 1e6:.0f} MB (MEDSEG_MAX_CHECKPOINT_MB)."
        )
    if weights[:2] == b"PK" or weights[:1] == b"\x80":
        raise CheckpointError(
            "This file is a pickle (PyTorch .pt/.pth), which medseg never loads (it can run code); "
            "upload safetensors weights with their model card."
        )
    try:
        raw = json.loads(card_text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(
            "The model card is not valid JSON; upload the .json written next to the weights."
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError("The model card is not a JSON object; upload the .json written next to the weights.")
    card = cards.migrate(raw, raw.get("name"))
    if hashlib.sha256(weights).hexdigest() != card.get("sha256"):
        raise CheckpointError(
            "The weights do not match the SHA-256 in the model card: they belong to another card "
            "or were changed; upload the pair written together."
        )
    try:
        state = load_st(weights)
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure is the user's file
        raise CheckpointError(f"The weights are not a readable safetensors file ({type(e).__name__}).") from None
    return _build(card, state, card.get("file") or "the uploaded weights", device, "")


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m medseg_core.checkpoints import-bundle DIR [--out DIR] [--name NAME] [--force]``:
    convert a MONAI Model Zoo bundle (UNet, UNETR or VNet) into a safetensors checkpoint with its
    model card (see :mod:`medseg_core.bundle`). Errors are one sentence on stderr, exit status 2."""
    import argparse
    import sys

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Never:  # one line instead of argparse's usage block
            sys.stderr.write(f"Usage: {message}; see --help.\n")
            raise SystemExit(2)

    ap = _Parser(prog="python -m medseg_core.checkpoints", description="Checkpoint tools.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    imp = sub.add_parser("import-bundle", help="import a MONAI bundle (configs/ + models/model.pt) as a checkpoint")
    imp.add_argument("bundle_dir", help="the bundle's folder (holding configs/metadata.json and models/model.pt)")
    imp.add_argument(
        "--out",
        default=str(ROOT / "runs" / "imported"),
        help="folder for <name>.safetensors and <name>.json (default: runs/imported/)",
    )
    imp.add_argument("--name", default=None, help="the checkpoint's name (default: the bundle's folder name)")
    imp.add_argument("--force", action="store_true", help="replace a checkpoint of that name in --out")
    a = ap.parse_args(argv)
    try:
        from .bundle import import_bundle

        path = import_bundle(a.bundle_dir, a.out, a.name, overwrite=a.force)
    except InputError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    except Exception as e:  # noqa: BLE001 - a command line answers in one sentence, never a traceback
        sys.stderr.write(
            f"The bundle could not be imported ({type(e).__name__}:"
            f" {str(e).splitlines()[0][:200] if str(e) else 'no detail'}).\n"
        )
        return 2
    card = _read_card_file(path.with_suffix(".json"))
    r = card["recipe"]
    print(
        f"{path} ({card['title']}): {r['architecture']['builder']}, labels {', '.join(r['labels'])}, "
        f"roi {' x '.join(map(str, r['input_size']))}"
        f" at {' x '.join(f'{s:g}' for s in r['target_spacing'])} mm (z, y, x), "
        f"preprocessing {r['preprocessing']['name']} {r['preprocessing']['params']}"
    )
    listed = any(c.weights.resolve() == path.resolve() for c in list_checkpoints())
    print(
        f"Load it with load_model('{path}'); "
        + (
            f"the app lists it as '{path.stem}'."
            if listed
            else "add its folder to MEDSEG_MODELS for the app to list it."
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


_AUXILIARY: dict[str, LoadedModel] = {}
_AUXILIARY_LOCK = threading.Lock()


def load_auxiliary(ref: str, task: str, refusal: str) -> LoadedModel:
    """A model that another model's pipeline runs (report 000's slice-classifier gate, report 001's
    annotation-removal denoiser), loaded once per process and shared. ``refusal`` is the sentence for
    a checkpoint of another task (formatted with ``ref`` and ``task``, the checkpoint's own task)."""
    with _AUXILIARY_LOCK:
        if ref not in _AUXILIARY:
            lm = load_model(ref)
            if lm.spec.task != task:
                raise InputError(refusal.format(ref=ref, task=lm.spec.task))
            _AUXILIARY[ref] = lm
        return _AUXILIARY[ref]
