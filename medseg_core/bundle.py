"""Import a MONAI Model Zoo bundle as a medseg checkpoint (safetensors weights + a ``medseg.card/2`` card).

``import_bundle(bundle_dir, out_dir)`` reads a bundle in MONAI's published layout::

    <bundle>/configs/metadata.json      name, version, task, input modality, output channels (labels)
    <bundle>/configs/inference.json     network_def, preprocessing (Spacingd, ScaleIntensityRanged),
                                        inferer (SlidingWindowInferer), postprocessing (.yaml accepted)
    <bundle>/models/model.pt            the state dict (read with torch.load(weights_only=True))

and writes ``<out>/<name>.safetensors`` + ``<name>.json``, so ``load_model`` runs the network as
the bundle does. Only MONAI's UNet, UNETR and VNet (3D, one input channel, one foreground class)
are imported; everything medseg cannot reproduce is refused with a sentence rather than
approximated silently: other networks, Python expressions (``$...``) in the values medseg needs,
intensity or geometry transforms other than Orientationd (RAS) / Spacingd / ScaleIntensityRanged,
TorchScript (never opened: it is a program, not weights), pickles that are not plain tensors
(``weights_only`` refuses them before anything runs), weights that do not fit the architecture.

Nothing in the bundle is executed: configs are parsed as data (JSON or ``yaml.safe_load``), ``@``
references are looked up, never evaluated, and ``torch.load`` is used here only, with
``weights_only=True``. The written checkpoint is verified by loading it back through
:func:`medseg_core.checkpoints.load_model` and comparing every tensor.

Known differences from MONAI's own pipeline (recorded in the card's notes): medseg applies the
intensity window before resampling (MONAI resamples first), resamples with trilinear interpolation
and blends sliding windows with Gaussian weights (the bundle's inferer mode may be "constant").
Predictions agree closely but not bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from . import cards
from .checkpoints import CheckpointError, load_model, save_checkpoint
from .io.errors import InputError
from .models import get_spec

#: MONAI network classes medseg imports -> registry builder.
NETWORKS = {"UNet": "unet3d", "UNETR": "unetr3d", "VNet": "vnet3d"}
_ALIASES = {"Unet": "UNet", "unet": "UNet"}  # MONAI's own aliases of UNet
_MONAI_PREFIXES = (
    "monai.networks.nets.",
    "monai.networks.nets.unet.",
    "monai.networks.nets.unetr.",
    "monai.networks.nets.vnet.",
)
#: Preprocessing transforms that do not change what the network sees beyond what medseg reproduces.
_NEUTRAL_PRE = {
    "LoadImage",
    "EnsureChannelFirst",
    "AddChannel",
    "AsChannelFirst",
    "EnsureType",
    "ToTensor",
    "CastToType",
    "ToDevice",
    "Identity",
    "CopyItems",
    "ToNumpy",
    "DeleteItems",
    "SelectItems",
}
#: Post-processing transforms whose effect medseg reproduces (or that only write files / undo geometry).
_KNOWN_POST = {
    "Activations",
    "AsDiscrete",
    "KeepLargestConnectedComponent",
    "Invert",
    "SaveImage",
    "EnsureType",
    "ToTensor",
    "CopyItems",
    "ToDevice",
    "CastToType",
    "ToNumpy",
    "DeleteItems",
    "SelectItems",
}
_MAX_CONFIG_BYTES = 5_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class BundleError(CheckpointError):
    """A MONAI bundle that medseg cannot import as it is, with the reason in one sentence."""


# ----------------------------------------------------------------------------- reading the files
def _read_config(path: Path) -> dict:
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise BundleError(
            f"The bundle's {path.parent.name}/{path.name} is larger than "
            f"{_MAX_CONFIG_BYTES // 1_000_000} MB, which no real bundle config is; medseg does not read it."
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception:  # noqa: BLE001 - any parse failure is the bundle's file
        raise BundleError(
            f"The bundle's {path.parent.name}/{path.name} is not valid "
            f"{'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}; restore it from the bundle."
        ) from None
    if not isinstance(data, dict):
        raise BundleError(f"The bundle's {path.parent.name}/{path.name} is not a mapping of settings.")
    return data


def _bundle_root(bundle_dir: Path) -> Path:
    if bundle_dir.is_file() and bundle_dir.suffix == ".zip":
        raise BundleError(f"'{bundle_dir.name}' is a zipped bundle; unzip it and give the folder that holds configs/.")
    if not bundle_dir.is_dir():
        raise BundleError(f"No MONAI bundle folder at '{bundle_dir}'.")
    if not (bundle_dir / "configs").is_dir():
        # a zoo download unzips to <folder>/<bundle name>/configs: accept the outer folder too
        inner = [d for d in bundle_dir.iterdir() if d.is_dir() and (d / "configs" / "metadata.json").is_file()]
        if len(inner) == 1:
            return inner[0]
    return bundle_dir


def _find_configs(root: Path) -> tuple[Path, Path]:
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        raise BundleError(f"'{root.name}' is not a MONAI bundle: configs/metadata.json is missing.")
    for ext in (".json", ".yaml", ".yml"):
        inf = root / "configs" / f"inference{ext}"
        if inf.is_file():
            return meta, inf
    raise BundleError(
        f"The bundle '{root.name}' has no configs/inference.json (or .yaml), which says how its network "
        "is built and fed; medseg cannot import it without one."
    )


# ----------------------------------------------------------------------------- config values
_REF = re.compile(r"@([\w#:.-]+)")


def _lookup(config: dict, ref: str, what: str, depth: int):
    node: Any = config
    for part in re.split(r"#|::", ref):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise BundleError(f"The bundle's inference config refers to '@{ref}' for {what}, which it does not define.")
    return _ref(config, node, what, depth + 1)


def _ref(config: dict, v, what: str, depth: int = 0):
    """``v`` with a reference looked up (``@a``, ``$@a``, ``$@a + @b`` of lists), one level: lists and
    mappings are returned as they are. Any other Python expression (``$...``) or macro (``%...``) is
    refused, never evaluated."""
    if depth > 20:
        raise BundleError(f"The bundle's inference config refers in a circle for {what}.")
    if not isinstance(v, str):
        return v
    s = v.strip()
    if s.startswith("@"):
        return _lookup(config, s[1:], what, depth)
    if s.startswith("$"):
        parts = [p.strip() for p in s[1:].split("+")]
        if parts and all(_REF.fullmatch(p) for p in parts):
            vals = [_lookup(config, p[1:], what, depth) for p in parts]
            if len(vals) == 1:
                return vals[0]
            if all(isinstance(x, list) for x in vals):
                return [y for x in vals for y in x]
        raise BundleError(
            f"The bundle sets {what} with a Python expression ('{s[:60]}'), which medseg does not "
            "run; write the value out in its inference config to import it."
        )
    if s.startswith("%"):
        raise BundleError(
            f"The bundle takes {what} from another file ('{s[:60]}'); copy the value into its "
            "inference config to import it."
        )
    return v


def _value(config: dict, v, what: str, depth: int = 0):
    """``v`` with every reference inside it looked up (see :func:`_ref`)."""
    if depth > 50:
        raise BundleError(f"The bundle's inference config nests too deeply for {what}.")
    v = _ref(config, v, what)
    if isinstance(v, list):
        return [_value(config, x, what, depth + 1) for x in v]
    if isinstance(v, dict):
        return {k: _value(config, x, what, depth + 1) for k, x in v.items()}
    return v


def _arg(config: dict, d: dict, key: str, what: str, default=None):
    return _value(config, d[key], what) if key in d else default


def _component(d: dict, config: dict, what: str) -> tuple[str, dict]:
    """(class name as written, raw arguments) of a ``_target_`` component."""
    target = _ref(config, d.get("_target_") or d.get("_name_"), what)
    if not isinstance(target, str) or not target:
        raise BundleError(f"The bundle's {what} names no class (_target_).")
    args = {k: v for k, v in d.items() if not (k.startswith("_") and k.endswith("_"))}
    return target, args


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def _transforms(config: dict, key: str) -> list[dict]:
    what = f"the {key} transforms"
    node = _ref(config, config.get(key), what)
    if node is None:
        return []
    if isinstance(node, dict) and _short(str(_ref(config, node.get("_target_", ""), what))) == "Compose":
        node = _ref(config, node.get("transforms"), what)
    items = [_ref(config, t, what) for t in node] if isinstance(node, list) else None
    if items is None or not all(isinstance(t, dict) for t in items):
        raise BundleError(f"The bundle's {key} is not a plain list of MONAI transforms; medseg cannot read it.")
    return [t for t in items if str(t.get("_disabled_", False)).lower() != "true"]


def _keys(t: dict, config: dict) -> list[str]:
    k = _value(config, t.get("keys", []), "transform keys")
    return [k] if isinstance(k, str) else [str(x) for x in (k or [])]


def _num(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BundleError(f"The bundle's {what} is not a number ({v!r}).")
    return float(v)


def _triple(v, what: str) -> list[float]:
    vals = [v] * 3 if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if not isinstance(vals, list) or len(vals) != 3:
        raise BundleError(f"The bundle's {what} is not three numbers ({v!r}); medseg imports 3D bundles only.")
    out = [_num(x, what) for x in vals]
    if any(x <= 0 for x in out):
        raise BundleError(f"The bundle's {what} ({v!r}) has a value that is not positive; medseg needs all three.")
    return out


# ----------------------------------------------------------------------------- the network
def network_from_config(config: dict) -> tuple[str, str, dict]:
    """(MONAI class, registry builder, builder kwargs) of the bundle's ``network_def``: MONAI's
    defaults for every argument the bundle leaves out, then the bundle's values, then medseg's
    axis order (MONAI's RAS (x, y, z) arrays are medseg's (z, y, x) ones transposed)."""
    import inspect

    from monai.networks import nets

    node = config.get("network_def")
    if node is None and isinstance(config.get("network"), dict):
        node = config["network"]
    node = _ref(config, node, "network_def")
    if not isinstance(node, dict):
        raise BundleError(
            "The bundle's inference config has no network_def, so medseg cannot tell which network the "
            "weights belong to."
        )
    target, args = _component(node, config, "network_def")
    cls_name = _ALIASES.get(_short(target), _short(target))
    prefix = target[: -len(_short(target))]
    if cls_name not in NETWORKS or (prefix and prefix not in _MONAI_PREFIXES):
        raise BundleError(
            f"The bundle's network is {target}; medseg imports only MONAI's UNet, UNETR and VNet "
            "(other networks would need their own medseg builder)."
        )
    cls = getattr(nets, cls_name)
    sig = inspect.signature(cls.__init__)
    params = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    kw = {k: v for k, v in params.items() if v is not inspect.Parameter.empty}
    args = _value(config, args, f"the {cls_name} arguments")
    if cls_name == "UNETR" and "pos_embed" in args:  # MONAI < 1.3's name of proj_type
        pe = args.pop("pos_embed")
        if args.setdefault("proj_type", pe) != pe:
            raise BundleError("The bundle's UNETR sets both pos_embed and proj_type, differently; fix network_def.")
    if cls_name == "VNet" and "dropout_prob" in args:  # deprecated in MONAI 1.2 for dropout_prob_down
        dp = args.pop("dropout_prob")
        args.setdefault("dropout_prob_down", dp)
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise BundleError(
            f"The bundle passes {', '.join(unknown)} to {cls_name}, which MONAI's {cls_name} here does "
            "not take; the bundle needs another MONAI version."
        )
    kw.update(args)
    missing = [k for k, v in kw.items() if v is inspect.Parameter.empty]
    if missing:
        raise BundleError(
            f"The bundle's network_def does not set {', '.join(missing)}, which MONAI's {cls_name} needs."
        )
    dims = kw.pop("spatial_dims")
    if dims != 3:
        raise BundleError(f"The bundle's {cls_name} is not 3D (spatial_dims {dims}); medseg imports 3D bundles only.")
    if int(kw["in_channels"]) != 1:
        raise BundleError(
            f"The bundle's network takes {kw['in_channels']} input channels; medseg feeds a 3D model one "
            "image, so it imports single-channel bundles only."
        )
    if cls_name == "UNETR":
        kw.pop("save_attn", None)  # attention maps kept for inspection: no effect on the output
        if isinstance(kw["img_size"], (int, float)):
            kw["img_size"] = [int(kw["img_size"])] * 3
    if cls_name == "VNet":
        kw.pop("dropout_prob", None)
        kw["width"] = 16  # MONAI's fixed first-stage width
    kw["axis_order"] = "xyz"
    return cls_name, NETWORKS[cls_name], cards._plain(kw)


def _build(builder: str, kw: dict, cls_name: str):
    try:
        return get_spec(builder).builder(**kw)
    except Exception as e:  # noqa: BLE001 - MONAI's own complaint about the arguments
        reason = str(e).strip().split("\n")[0][:160] or type(e).__name__
        raise BundleError(
            f"MONAI cannot build the {cls_name} that the bundle's network_def describes ({reason}); "
            "check its arguments."
        ) from None


# ----------------------------------------------------------------------------- the weights
def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (a zip with compiled code), told apart without loading anything."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names)


def read_state_dict(root: Path) -> tuple[dict, Path]:
    """The bundle's state dict from ``models/model.pt``, loaded with ``weights_only=True`` (tensors
    and plain containers only: a pickle that would run code is refused by PyTorch before it runs)."""
    import pickle

    import torch

    pt = root / "models" / "model.pt"
    if not pt.is_file():
        if (root / "models" / "model.ts").is_file():
            raise BundleError(
                "The bundle holds only TorchScript weights (models/model.ts), a program medseg never "
                "runs; download the bundle with models/model.pt (its state dict)."
            )
        raise BundleError(
            f"The bundle '{root.name}' has no models/model.pt (its weights); download the complete bundle."
        )
    if _is_torchscript(pt):
        raise BundleError(
            "The bundle's models/model.pt is TorchScript (compiled code), not a state dict; medseg never "
            "runs TorchScript, so it needs the bundle's plain state dict."
        )
    try:
        obj = torch.load(pt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BundleError(
            "The bundle's models/model.pt holds more than tensors (PyTorch's safe loader refused it "
            "because loading it would run code); medseg does not open it."
        ) from None
    except Exception:  # noqa: BLE001 - a damaged or foreign file
        raise BundleError(
            "The bundle's models/model.pt cannot be read as PyTorch weights (damaged or another "
            "format); download the bundle again."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())
    ):
        raise BundleError(
            "The bundle's models/model.pt is not a state dict (names mapped to tensors), plain or under "
            "'state_dict' or 'model'; medseg cannot tell which weights are the network's."
        )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}
    return state, pt


def _fit(net, state: dict, cls_name: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or shape:
        example = (shape or missing or extra)[0]
        raise BundleError(
            f"The weights in models/model.pt do not fit the {cls_name} that configs/inference describes "
            f"({len(missing)} missing, {len(extra)} unexpected, {len(shape)} of another shape, e.g. "
            f"'{example}'); the bundle's files do not belong together."
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# ----------------------------------------------------------------------------- metadata
def _modality(inp: dict) -> str:
    words = [str(inp.get("modality") or "")] + [str(v) for v in (inp.get("channel_def") or {}).values()]
    for w in words:
        u = w.strip().upper()
        if u in ("CT",) or u.startswith("CT ") or "COMPUTED TOMOGRAPHY" in u:
            return "CT"
        if u in ("MR", "MRI", "T1", "T2", "T1C", "T1CE", "FLAIR", "ADC", "DWI", "PD") or u.startswith(
            ("MR", "T1", "T2")
        ):
            return "MR"
        if u in ("US", "ULTRASOUND"):
            return "US"
    if str(inp.get("format") or "").lower() == "hounsfield":
        return "CT"
    raise BundleError(
        "The bundle's metadata.json does not say which modality its input is (network_data_format "
        "inputs image modality); medseg checks every case against it, so it cannot import the bundle."
    )


def _labels(out: dict, n_out: int) -> list[str]:
    cdef = out.get("channel_def") or {}
    try:
        names = {int(k): str(v).strip() for k, v in cdef.items()}
    except (TypeError, ValueError):
        names = {}
    # softmax over two channels: channel 0 is the background and is dropped; one sigmoid channel is the label
    idx = 1 if n_out == 2 else 0
    return [names.get(idx) or "foreground"]


# ----------------------------------------------------------------------------- the import
def import_bundle(
    bundle_dir: str | Path, out_dir: str | Path, name: str | None = None, overwrite: bool = False
) -> Path:
    """Convert the MONAI bundle in ``bundle_dir`` into ``<out_dir>/<name>.safetensors`` with its
    ``medseg.card/2`` card; returns the weights' path. ``name`` defaults to the bundle's folder
    name. Raises :class:`BundleError` (a :class:`~medseg_core.checkpoints.CheckpointError`) with a
    sentence for anything medseg cannot reproduce."""
    root = _bundle_root(Path(bundle_dir).expanduser())
    meta_path, inf_path = _find_configs(root)
    meta = _read_config(meta_path)
    config = _read_config(inf_path)
    cfg_name = f"configs/{inf_path.name}"
    bundle_id = root.resolve().name
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle_id).strip("._-") or "bundle"
    if not _NAME.fullmatch(name) or name.endswith("_last"):
        raise BundleError(
            f"'{name}' cannot name a checkpoint: use letters, digits, '_', '-' or '.', at most 100, "
            "not ending in '_last'."
        )
    out = Path(out_dir).expanduser()
    dest = out / f"{name}.safetensors"
    if not overwrite and (dest.exists() or dest.with_suffix(".json").exists()):
        raise BundleError(f"'{dest}' exists already; give another name (--name) or replace it (--force).")

    # --- network
    cls_name, builder, kw = network_from_config(config)
    n_out = int(kw["out_channels"])

    # --- preprocessing: only what medseg reproduces exactly; anything else is refused
    ndf = meta.get("network_data_format") or {}
    inputs = ndf.get("inputs") or {}
    image_key = "image" if "image" in inputs or not inputs else next(iter(inputs))
    inp = inputs.get(image_key) or {}
    spacing_xyz, window, orientation = None, None, None
    for t in _transforms(config, "preprocessing"):
        target, args = _component(t, config, "a preprocessing transform")
        short = _short(target)
        base = short[:-1] if short.endswith("d") else short
        if "keys" in t and image_key not in _keys(t, config):
            continue  # acts on other data (labels), not on what the network sees
        if base in _NEUTRAL_PRE:
            continue
        if base == "Orientation":
            ax = str(_arg(config, args, "axcodes", "Orientationd axcodes", "")).upper()
            if ax != "RAS":
                raise BundleError(
                    f"The bundle orients images to {ax or 'an unstated orientation'}; medseg imports "
                    "bundles that orient to RAS (its own canonical orientation)."
                )
            orientation = ax
        elif base == "Spacing":
            if spacing_xyz is not None:
                raise BundleError("The bundle resamples twice (two Spacingd); medseg resamples once.")
            spacing_xyz = _triple(_arg(config, args, "pixdim", "Spacingd pixdim"), "Spacingd pixdim")
        elif base == "ScaleIntensityRange":
            if window is not None:
                raise BundleError("The bundle scales intensities twice (two ScaleIntensityRanged); medseg cannot.")
            a = {
                k: _arg(config, args, k, f"ScaleIntensityRanged {k}")
                for k in ("a_min", "a_max", "b_min", "b_max", "clip")
            }
            if not a.get("clip"):
                raise BundleError(
                    "The bundle's ScaleIntensityRanged does not clip; medseg's ct_window always clips, so "
                    "it would not feed the network what the bundle does."
                )
            b_min, b_max = (
                (0.0, 1.0)
                if a["b_min"] is None or a["b_max"] is None
                else (_num(a["b_min"], "ScaleIntensityRanged b_min"), _num(a["b_max"], "ScaleIntensityRanged b_max"))
            )
            lo, hi = _num(a["a_min"], "ScaleIntensityRanged a_min"), _num(a["a_max"], "ScaleIntensityRanged a_max")
            if hi <= lo:
                raise BundleError(f"The bundle's ScaleIntensityRanged window {lo:g}..{hi:g} is empty.")
            window = {"lo_hu": lo, "hi_hu": hi, "out_lo": b_min, "out_hi": b_max}
        else:
            raise BundleError(
                f"The bundle's preprocessing uses {short}, which medseg does not reproduce (it runs "
                "Orientationd RAS, Spacingd and ScaleIntensityRanged only), so the network would not see "
                "what it was trained on."
            )
    if spacing_xyz is None:
        raise BundleError(
            "The bundle's preprocessing has no Spacingd, so it states no voxel spacing for the network; "
            "medseg resamples every 3D case to its model's spacing and cannot import it."
        )
    # MONAI's pixdim is per array axis of the RAS-oriented image, i.e. (x, y, z); medseg's arrays
    # are (z, y, x), so the target spacing (and the roi below) are the bundle's values reversed.
    target_spacing = spacing_xyz[::-1]

    # --- inferer
    inferer = _ref(config, config.get("inferer"), "the inferer")
    if not isinstance(inferer, dict):
        raise BundleError(
            "The bundle's inference config has no inferer; medseg runs 3D models with a sliding window "
            "and needs its roi_size."
        )
    inf_target, inf_args = _component(inferer, config, "the inferer")
    if _short(inf_target) != "SlidingWindowInferer":
        raise BundleError(
            f"The bundle's inferer is {_short(inf_target)}; medseg runs 3D models with a sliding window "
            "(SlidingWindowInferer) only."
        )
    roi_xyz = [
        int(v)
        for v in _triple(_arg(config, inf_args, "roi_size", "the inferer's roi_size"), "SlidingWindowInferer roi_size")
    ]
    sw_batch = int(
        _num(
            _arg(config, inf_args, "sw_batch_size", "the inferer's sw_batch_size", 1),
            "SlidingWindowInferer sw_batch_size",
        )
    )
    overlap = _num(_arg(config, inf_args, "overlap", "the inferer's overlap", 0.25), "SlidingWindowInferer overlap")
    blend = str(_arg(config, inf_args, "mode", "the inferer's mode", "constant"))
    if builder == "unetr3d" and [int(s) for s in kw["img_size"]] != roi_xyz:
        raise BundleError(
            f"The bundle's UNETR takes {kw['img_size']} windows but its inferer cuts {roi_xyz}; "
            "MONAI could not run it either."
        )

    # --- outputs: one foreground class, softmax over 2 channels or sigmoid on 1
    activation, threshold, post, not_run = None, 0.5, [], []
    for t in _transforms(config, "postprocessing"):
        target, args = _component(t, config, "a post-processing transform")
        short = _short(target)
        base = short[:-1] if short.endswith("d") else short
        if base == "Activations":
            if _arg(config, args, "softmax", "Activationsd softmax"):
                activation = "softmax"
            elif _arg(config, args, "sigmoid", "Activationsd sigmoid"):
                activation = "sigmoid"
        elif base == "AsDiscrete":
            thr = _arg(
                config,
                args,
                "threshold",
                "AsDiscreted threshold",
                _arg(config, args, "threshold_values", "AsDiscreted threshold"),
            )
            if isinstance(thr, (int, float)) and not isinstance(thr, bool):
                threshold = float(thr)
        elif base == "KeepLargestConnectedComponent":
            post = ["largest_3d"]
        elif base not in _KNOWN_POST:
            not_run.append(short)
    if n_out not in (1, 2):
        raise BundleError(
            f"The bundle's network has {n_out} output channels; medseg's 3D inference runs one foreground "
            "class (2 channels with softmax or 1 with sigmoid)."
        )
    activation = activation or ("softmax" if n_out == 2 else "sigmoid")
    if (n_out, activation) not in ((2, "softmax"), (1, "sigmoid")):
        raise BundleError(
            f"The bundle applies {activation} to {n_out} output channel(s); medseg runs softmax over 2 "
            "channels or sigmoid on 1."
        )
    outputs = ndf.get("outputs") or {}
    pred_meta = outputs.get("pred") or (next(iter(outputs.values())) if outputs else {}) or {}
    if str(pred_meta.get("format", "segmentation")).lower() != "segmentation":
        raise BundleError(
            f"The bundle's output is {pred_meta.get('format')}, not a segmentation; medseg imports "
            "segmentation bundles only."
        )
    labels = _labels(pred_meta, n_out)
    modality = _modality(inp)

    # --- weights
    state, pt = read_state_dict(root)
    net = _build(builder, kw, cls_name)
    _fit(net, state, cls_name)

    # --- the card
    spec = get_spec(builder)
    title_name = str(meta.get("name") or bundle_id)
    version = str(meta.get("version") or "unknown")
    pre_name, params = ("ct_window", window) if window else ("none", {})
    recipe = cards.recipe_from_spec(
        spec,
        "bundle",
        {},
        input_size=roi_xyz[::-1],
        preprocessing=pre_name,
        preprocessing_params=params,
        postprocessing=post,
        threshold=threshold,
        architecture_kwargs=kw,
    )
    unit = "HU" if modality == "CT" else "intensity"
    drop = {"UNet": kw.get("dropout", 0.0), "UNETR": kw.get("dropout_rate", 0.0)}.get(cls_name)
    recipe.update(
        {
            "task": "segmentation",
            "in_channels": 1,
            "modalities": [modality],
            "intensity": (
                f"{unit} windowed {window['lo_hu']:g}..{window['hi_hu']:g}"
                f" to {window['out_lo']:g}..{window['out_hi']:g}"
                if window
                else "raw intensities (the bundle scales none)"
            ),
            "target_spacing": target_spacing,
            "sw_overlap": overlap,
            "sw_batch_size": max(1, sw_batch),
            "labels": labels,
            "activation": activation,
            "class_threshold": None,
            "side_masking": False,
            "clinical_inputs": [],
            "dropout": {
                "where": (
                    f"MONAI {cls_name} dropout {drop:g}; MC needs full passes"
                    if drop
                    else f"none (the bundle's {cls_name} has dropout 0); MC dropout unavailable"
                )
                if drop is not None
                else "MONAI VNet dropout (two deepest down and up stages); MC needs full passes",
                "mc_prefix": False,
            },
        }
    )
    stated = meta.get("eval_metrics") if isinstance(meta.get("eval_metrics"), dict) else None
    differences = [
        "medseg applies the intensity window before resampling (MONAI after)",
        f"blends sliding windows with Gaussian weights (the bundle: {blend})",
        "resamples with trilinear interpolation",
    ]
    if orientation is None:
        differences.append("the bundle states no Orientationd; medseg feeds RAS-oriented arrays")
    notes = (
        f"Imported MONAI bundle '{bundle_id}' version {version} (python -m medseg_core.checkpoints import-bundle): "
        f"MONAI's {cls_name} as its {cfg_name} builds it, weights from models/model.pt unchanged (float32), fed "
        f"in MONAI's (x, y, z) axis order; resampled to {' x '.join(f'{s:g}' for s in target_spacing)} mm (z, y, x) "
        f"and preprocessed as the bundle states. Differences from MONAI's pipeline: {'; '.join(differences)}; "
        "predictions agree closely, not bit for bit. "
        + (f"Post-processing steps of the bundle medseg does not run: {', '.join(not_run)}. " if not_run else "")
        + "Not validated by medseg; no training-data envelope (the bundle does not describe its training images)."
    )
    card = cards.new_card(
        name,
        recipe,
        None,
        title=f"{title_name} (MONAI bundle {version})",
        report="MONAI bundle",
        bundle={
            "id": bundle_id,
            "name": title_name,
            "version": version,
            "task": meta.get("task"),
            "description": meta.get("description"),
            "authors": meta.get("authors"),
            "intended_use": meta.get("intended_use"),
            "monai_version": meta.get("monai_version"),
            "stated_metrics": stated,
            "network": cls_name,
            "config": cfg_name,
        },
        training_data={
            "source": "MONAI bundle",
            "bundle": bundle_id,
            "version": version,
            "data_source": meta.get("data_source"),
            "model_spacing_mm": target_spacing,
            "note": "The bundle states the grid its network runs on (model_spacing_mm, z, y, x), not the "
            "spacing, field of view or number of its training images.",
        },
        source_weights={"file": "models/model.pt", "sha256": _sha256(pt)},
        command=f"python -m medseg_core.checkpoints import-bundle {root} --out {out} --name {name}",
        notes=notes,
        notice=(
            "Research use only. Not a medical device. Imported from a MONAI bundle; medseg has not validated it"
            + (f" (the bundle's intended use: {meta['intended_use']})" if meta.get("intended_use") else "")
            + "."
        ),
    )
    path = save_checkpoint(net, name, card, directory=out, fp16=False)
    _verify(path, net)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, net) -> None:
    """Load the written checkpoint back as medseg will and compare every tensor with the bundle's."""
    import torch

    try:
        lm = load_model(path)
        got, want = lm.module.state_dict(), net.state_dict()
        same = set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    except InputError:
        same = False
    if not same:
        for p in (path, path.with_suffix(".json")):
            p.unlink(missing_ok=True)
        raise BundleError(
            f"The converted checkpoint '{path.name}' did not load back with the bundle's weights; nothing was kept."
        )
