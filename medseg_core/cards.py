"""Model cards: the checkpoint's whole recipe, versioned (schema ``medseg.card/2``).

A card is the JSON file next to a ``.safetensors`` checkpoint. Whatever trained the weights wrote
it, and :func:`medseg_core.checkpoints.load_model` runs the model **only from it**, exactly as
trained (as nnU-Net's plans and a MONAI bundle's ``inference.json`` do). The registry
(:mod:`medseg_core.models`) only builds architectures and supplies the defaults for writing new
cards.

Schema (every key is written by :func:`new_card`; ``recipe`` and ``envelope`` are the contract)::

    schema        "medseg.card/2"
    name, title   the checkpoint's own name (not necessarily a registry name) and a display title
    file, sha256, parameters, storage, notice
    recipe:
      architecture  {builder: registry builder name, variant, overrides, kwargs: the full builder kwargs}
      task, dims, mode, in_channels, modalities, intensity (words)
      input_size    (H, W) for 2D, the sliding-window roi (D, H, W) for 3D
      target_spacing (z, y, x) mm for 3D models (null for 2D), sw_overlap, sw_batch_size
      preprocessing {name, params}  (a name of medseg_core.preprocessing.PREPROCESSING)
      labels, activation, threshold, class_threshold, postprocessing
      side_masking  whether ovary-side masking applies; clinical_inputs: names, in order
      dropout       {where: words, mc_prefix: bool}
      geometry      2D slice-wise models: in-plane resampling + pelvis crop before slicing
                    (keywords of preprocessing.plan_geometry; absent or null = none)
    envelope:       the training data the model has seen (None when unknown):
      modalities, body_region, anatomy, n_cases, fingerprint (SHA-256 of the cases' ids and geometry),
      spacing_mm / fov_mm: per axis (z, y, x) [min, max], intensity: percentiles p1/p50/p99
      after preprocessing, each [min, max] over the cases
    training data, split, loss, optimiser, augmentation, command, seed, epochs, validation, test ...

Cards written before the schema existed (``medseg-1``: ``variant``, ``overrides``,
``input_size``, ``preprocessing`` ... at the top level) are migrated on load by :func:`migrate`;
a card with an unknown schema is refused with a sentence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .io.errors import InputError
from .models import ModelSpec, get_spec, list_models, model_kwargs

if TYPE_CHECKING:
    from .io import Volume

SCHEMA = "medseg.card/2"
#: Keys of a version-1 card that the recipe replaces.
_V1_RECIPE_KEYS = (
    "variant",
    "overrides",
    "architecture_kwargs",
    "input_size",
    "input_contract",
    "preprocessing",
    "postprocessing",
    "labels",
    "model",
)
#: Body region (DICOM BodyPartExamined terms) and anatomy per registry family.
REGIONS = {
    "ovary": ("PELVIS", "ovary (pelvic MRI)"),
    "spleen": ("ABDOMEN", "spleen (abdominal CT)"),
    "ultrasound": ("PELVIS", "adnexal lesion (transvaginal ultrasound)"),
    "prostate": ("PROSTATE", "prostate (transrectal micro-ultrasound)"),
    "gi": ("ABDOMEN", "stomach and bowel (abdominal MRI)"),
}
#: DICOM BodyPartExamined values that count as each region.
_REGION_TERMS = {
    "PELVIS": {"PELVIS", "ABDOMENPELVIS", "OVARY", "UTERUS", "ADNEXA", "PROSTATE", "BLADDER"},
    "ABDOMEN": {
        "ABDOMEN",
        "ABDOMENPELVIS",
        "CHESTABDOMEN",
        "CHESTABDOMENPELVIS",
        "SPLEEN",
        "LIVER",
        "KIDNEY",
        "STOMACH",
        "BOWEL",
        "COLON",
        "PANCREAS",
        "TORSO",
    },
    "PROSTATE": {"PROSTATE", "PELVIS"},
}
#: How far beyond the training range a geometric property may lie before a case is called
#: outside the envelope (a factor: 1.25 = 25 % smaller than the smallest or larger than the largest).
GEOMETRY_TOLERANCE = 1.25


#: How an out-of-envelope warning begins (the app tells it apart from "no envelope recorded").
OUTSIDE = "This case lies outside the data"


class CardError(InputError):
    """A model card that cannot be read, migrated or trusted."""


# ----------------------------------------------------------------------------- writing
def recipe_from_spec(
    spec: ModelSpec,
    variant: str = "demo",
    overrides: dict | None = None,
    input_size: Sequence[int] | None = None,
    preprocessing: str | None = None,
    preprocessing_params: dict | None = None,
    postprocessing: Sequence[str] | None = None,
    threshold: float | None = None,
    architecture_kwargs: dict | None = None,
    geometry: dict | None = None,
) -> dict:
    """The recipe of a model built from registry builder ``spec`` with these choices (registry
    defaults fill the rest)."""
    builder = spec.architecture or spec.name
    overrides = dict(overrides or {})
    kwargs = architecture_kwargs if architecture_kwargs is not None else model_kwargs(builder, variant, **overrides)
    return {
        "architecture": {
            "builder": builder,
            "variant": variant,
            "overrides": _plain(overrides),
            "kwargs": _plain(kwargs),
        },
        "task": spec.task,
        "dims": spec.dims,
        "mode": spec.mode,
        "in_channels": spec.in_channels,
        "modalities": list(spec.modalities),
        # the registry's words describe its default step; another step is named as itself
        "intensity": spec.intensity
        if (preprocessing or spec.preprocessing) == spec.preprocessing
        else f"{preprocessing} preprocessing",
        "input_size": [int(s) for s in (input_size or spec.input_size)],
        "target_spacing": list(spec.target_spacing) if spec.target_spacing else None,
        "sw_overlap": spec.sw_overlap,
        "sw_batch_size": spec.sw_batch_size,
        "preprocessing": {
            "name": preprocessing or spec.preprocessing,
            "params": _plain(
                preprocessing_params
                if preprocessing_params is not None
                else (spec.preprocessing_params if not preprocessing or preprocessing == spec.preprocessing else {})
            ),
        },
        "labels": list(spec.labels),
        "activation": spec.activation,
        "threshold": float(spec.threshold if threshold is None else threshold),
        "class_threshold": spec.class_threshold,
        "postprocessing": list(spec.postprocessing if postprocessing is None else postprocessing),
        "side_masking": spec.side_masking,
        "clinical_inputs": list(spec.clinical_inputs),
        "dropout": {"where": spec.dropout, "mc_prefix": spec.mc_prefix},
        # report 000's in-plane resampling + pelvis crop before slicing (null: none); inference repeats it
        "geometry": _plain(dict(geometry if geometry is not None else spec.geometry)) or None,
    }


def new_card(
    name: str, recipe: dict, envelope: dict | None = None, title: str | None = None, **provenance: Any
) -> dict:
    """A card in the current schema (``save_checkpoint`` adds file, SHA-256 and parameters)."""
    builder = recipe["architecture"]["builder"]
    return {
        "schema": SCHEMA,
        "name": name,
        "title": title or get_spec(builder).title,
        "recipe": recipe,
        "envelope": envelope,
        **provenance,
    }


def _plain(v: object) -> Any:
    """JSON-ready: tuples to lists, numpy scalars to Python."""
    return json.loads(json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ----------------------------------------------------------------------------- reading
def migrate(card: dict, name: str | None = None) -> dict:
    """A card in the current schema. Version-1 cards (no ``schema`` key, written before recipes
    existed) are rebuilt from their own fields plus the registry defaults of their architecture;
    the weights and SHA-256 are untouched. Anything else is refused."""
    schema = card.get("schema")
    if schema == SCHEMA:
        return validate(card)
    if schema is not None:
        raise CardError(
            f"The model card of '{name or card.get('name')}' has schema '{schema}', which this medseg "
            f"cannot read (it reads {SCHEMA}); update medseg or re-export the card."
        )
    arch = card.get("model") or card.get("name")
    if arch not in list_models():
        raise CardError(
            f"The model card of '{name or card.get('name')}' is an old card without a recipe and names no "
            f"registry architecture ('{arch}'); retrain it or write a {SCHEMA} card."
        )
    spec = get_spec(arch)
    recipe = recipe_from_spec(
        spec,
        card.get("variant", "demo"),
        card.get("overrides") or {},
        input_size=card.get("input_size"),
        preprocessing=card.get("preprocessing"),
        postprocessing=card.get("postprocessing"),
        architecture_kwargs=card.get("architecture_kwargs"),
    )
    if card.get("labels"):
        recipe["labels"] = list(card["labels"])
    rest = {k: v for k, v in card.items() if k not in _V1_RECIPE_KEYS}
    rest.setdefault("title", spec.title)
    out = {"schema": SCHEMA, **rest, "recipe": recipe, "envelope": card.get("envelope")}
    out["migrated_from"] = "medseg-1"
    return validate(out)


def validate(card: dict) -> dict:
    """Check that a current-schema card can be run; raise :class:`CardError` with a sentence if not."""
    who = card.get("name", "this checkpoint")
    recipe = card.get("recipe")
    if not isinstance(recipe, dict):
        raise CardError(f"The model card of '{who}' has no recipe; it cannot be run as trained.")
    builder = (recipe.get("architecture") or {}).get("builder")
    if builder not in list_models():
        raise CardError(
            f"The model card of '{who}' asks for architecture '{builder}', which is not a medseg "
            f"registry builder ({', '.join(list_models())}); medseg only runs registry architectures."
        )
    missing = [
        k
        for k in ("task", "dims", "mode", "input_size", "preprocessing", "labels", "activation", "threshold")
        if k not in recipe
    ]
    if missing:
        raise CardError(f"The model card of '{who}' misses recipe field(s) {', '.join(missing)}.")
    from .preprocessing import PREPROCESSING

    pre = recipe["preprocessing"].get("name") if isinstance(recipe["preprocessing"], dict) else None
    if pre not in PREPROCESSING:
        raise CardError(
            f"The model card of '{who}' names preprocessing '{pre}', which medseg does not have "
            f"({', '.join(PREPROCESSING)})."
        )
    return card


def spec_from_card(card: dict) -> ModelSpec:
    """The :class:`ModelSpec` that runs this checkpoint: the registry builder's spec with every
    recipe field taken from the card (the name is the checkpoint's own)."""
    card = migrate(card) if card.get("schema") != SCHEMA else validate(card)
    r = card["recipe"]
    base = get_spec(r["architecture"]["builder"])
    pre = r["preprocessing"]
    return replace(
        base,
        name=card["name"],
        title=card.get("title") or base.title,
        architecture=base.name,
        task=r["task"],
        dims=r["dims"],
        mode=r["mode"],
        in_channels=int(r.get("in_channels", base.in_channels)),
        input_size=tuple(int(s) for s in r["input_size"]),
        modalities=tuple(r.get("modalities") or base.modalities),
        intensity=r.get("intensity", base.intensity),
        preprocessing=pre["name"],
        preprocessing_params=dict(pre.get("params") or {}),
        postprocessing=tuple(r.get("postprocessing") or ()),
        labels=tuple(r["labels"]),
        activation=r["activation"],
        threshold=float(r["threshold"]),
        class_threshold=r.get("class_threshold"),
        target_spacing=tuple(r["target_spacing"]) if r.get("target_spacing") else None,
        sw_overlap=float(r.get("sw_overlap", base.sw_overlap)),
        sw_batch_size=int(r.get("sw_batch_size", base.sw_batch_size)),
        side_masking=bool(r.get("side_masking", base.side_masking)),
        clinical_inputs=tuple(r.get("clinical_inputs") or ()),
        dropout=(r.get("dropout") or {}).get("where", base.dropout),
        mc_prefix=bool((r.get("dropout") or {}).get("mc_prefix", base.mc_prefix)),
        arch_kwargs=dict(r["architecture"].get("kwargs") or {}),
        geometry=dict(r.get("geometry") or {}),
    )


# ----------------------------------------------------------------------------- the data envelope
def data_envelope(
    volumes: Iterable,
    preprocessing: str,
    params: dict | None = None,
    body_region: str | None = None,
    anatomy: str | None = None,
    case_ids: Iterable[str] | None = None,
) -> dict:
    """What the training data looked like: modality, spacing and field of view per axis, intensity
    percentiles after ``preprocessing``, body region and a fingerprint of the cases."""
    from .preprocessing import preprocess

    mods, sp, fov, pct, px, known = set(), [], [], [], [], True
    h = hashlib.sha256()
    ids = list(case_ids) if case_ids is not None else None
    n = 0
    for k, vol in enumerate(volumes):
        n += 1
        mods.add(vol.modality)
        sp.append(vol.spacing)
        px.append(vol.shape)
        known = known and vol.meta.get("spacing_source") != "assumed"
        fov.append([a * b for a, b in zip(vol.shape, vol.spacing, strict=True)])
        x = preprocess(preprocessing, vol.array, **(params or {}))
        step = max(1, x.size // 2_000_000)  # percentiles of at most ~2 M voxels per case
        pct.append(np.percentile(x.ravel()[::step], [1, 50, 99]))
        h.update(f"{ids[k] if ids else k}|{vol.shape}|{tuple(round(s, 4) for s in vol.spacing)}".encode())
    if not n:
        return None  # type: ignore[return-value]

    def rng(rows: list) -> list[list[float]]:
        a = np.asarray(rows)
        return [[round(float(a[:, i].min()), 4), round(float(a[:, i].max()), 4)] for i in range(a.shape[1])]

    return {
        "modalities": sorted(mods),
        "body_region": body_region,
        "anatomy": anatomy,
        "n_cases": n,
        "fingerprint": h.hexdigest()[:16],
        "spacing_known": known,
        "spacing_mm": rng(sp),
        "fov_mm": rng(fov),
        "size_px": [[int(a), int(b)] for a, b in rng(px)],
        "intensity": {"after": preprocessing, **{p: v for p, v in zip(("p1", "p50", "p99"), rng(pct), strict=True)}},
    }


def region_defaults(family: str) -> tuple[str | None, str | None]:
    return REGIONS.get(family, (None, None))


def _fmt_range(r: Sequence[float], unit: str = "mm") -> str:
    lo, hi = r
    return f"{lo:.3g} {unit}" if abs(hi - lo) < 1e-9 else f"{lo:.3g}-{hi:.3g} {unit}"


def check_envelope(
    spec: ModelSpec, envelope: dict | None, volume: Volume, stated_anatomy: str | None = None
) -> list[str]:
    """Plain sentences for every way ``volume`` lies outside the data the model was trained on:
    one warning listing :func:`envelope_findings`, or one saying that no envelope is recorded;
    empty when the case lies inside."""
    if not envelope:
        return [
            f"The card of {spec.title} records no training-data envelope, so medseg cannot tell whether this "
            "case resembles what the model was trained on."
        ]
    out = envelope_findings(spec, envelope, volume, stated_anatomy)
    if not out:
        return []
    return [
        f"{OUTSIDE} {spec.title} was trained on ({envelope.get('anatomy') or 'unknown anatomy'}, "
        f"{envelope.get('n_cases')} cases): " + "; ".join(out) + ". Its output here is not to be trusted."
    ]


def envelope_findings(spec: ModelSpec, envelope: dict, volume: Volume, stated_anatomy: str | None = None) -> list[str]:
    """Each way ``volume`` lies outside the envelope, as a short phrase ("slice thickness 1 mm
    (trained on 6 mm)"); empty when it lies inside. A single 2D image is compared
    in-plane only; spacing and field of view in mm when both the case and the training data state a
    pixel size, image size in pixels otherwise; the intensity profile after the card's preprocessing;
    DICOM's BodyPartExamined and a user-stated anatomy against the card's region."""
    out = []
    axes = ("slice thickness", "row spacing", "column spacing")
    fov_axes = ("extent across slices", "field of view (rows)", "field of view (columns)")
    px_axes = ("number of slices", "image height", "image width")
    tol = GEOMETRY_TOLERANCE
    first = 1 if volume.is_2d else 0
    note = None
    case_known = volume.meta.get("spacing_source") != "assumed"
    env_known = envelope.get("spacing_known", True)
    if case_known and env_known:
        for i in range(first, 3):
            lo, hi = envelope["spacing_mm"][i]
            if not (lo / tol <= volume.spacing[i] <= hi * tol):
                out.append(f"{axes[i]} {volume.spacing[i]:.3g} mm (trained on {_fmt_range((lo, hi))})")
        for i in range(first, 3):
            lo, hi = envelope["fov_mm"][i]
            v = volume.shape[i] * volume.spacing[i]
            if not (lo / tol <= v <= hi * tol):
                out.append(f"{fov_axes[i]} {v:.0f} mm (trained on {_fmt_range((lo, hi))})")
    else:
        if case_known != env_known:
            note = (
                "pixel size not compared ("
                + ("this image states none" if env_known else "the training images stated none")
                + "), sizes compared in pixels"
            )
        for i in range(first, 3):
            lo, hi = (envelope.get("size_px") or [[0, 1e9]] * 3)[i]
            if not (lo / tol <= volume.shape[i] <= hi * tol):
                out.append(f"{px_axes[i]} {volume.shape[i]} px (trained on {_fmt_range((lo, hi), 'px')})")
    inten = envelope.get("intensity")
    if inten:
        from .preprocessing import ELEMENTWISE, preprocess

        step = max(1, volume.array.size // 2_000_000)
        if spec.preprocessing in ELEMENTWISE:  # the same voxels, preprocessed after sampling: 1/step of the work
            x = preprocess(spec.preprocessing, volume.array.ravel()[::step], **spec.preprocessing_params)
        else:
            x = preprocess(spec.preprocessing, volume.array, **spec.preprocessing_params).ravel()[::step]
        got = np.percentile(x, [1, 50, 99])
        # a percentile is outside when it leaves the training range by more than a quarter of the
        # training data's own spread (p99 - p1) after preprocessing
        spread = max(float(inten["p99"][1] - inten["p1"][0]), 1e-6)
        bad = [
            f"{p} {g:.3g} (trained on {_fmt_range(inten[p], '').strip()})"
            for p, g in zip(("p1", "p50", "p99"), got, strict=True)
            if not (inten[p][0] - 0.25 * spread <= g <= inten[p][1] + 0.25 * spread)
        ]
        if bad:
            out.append("intensity percentiles after preprocessing " + ", ".join(bad))
    region = envelope.get("body_region")
    part = str(volume.meta.get("BodyPartExamined", "")).upper().replace(" ", "")
    if region and part and part not in _REGION_TERMS.get(region, {region}):
        out.append(f"body part {volume.meta['BodyPartExamined']} (trained on {region.lower()})")
    anatomy = stated_anatomy or volume.meta.get("anatomy")
    if anatomy and envelope.get("anatomy") and anatomy != envelope["anatomy"]:
        out.append(f"described as {anatomy} (trained on {envelope['anatomy']})")
    if out and note:
        out.append(note)
    return out


def envelope_summary(envelope: dict | None) -> str:
    """One line for the Models page."""
    if not envelope:
        return "no training-data envelope recorded"
    sp = " x ".join(_fmt_range(r, "").strip() for r in envelope["spacing_mm"])
    fov = " x ".join(_fmt_range(r, "").strip() for r in envelope["fov_mm"])
    return (
        f"{envelope['n_cases']} {'/'.join(envelope['modalities'])}"
        f" cases of {envelope.get('anatomy') or 'unknown anatomy'}; "
        f"spacing {sp} mm, field of view {fov} mm (Z/Y/X)"
    )


# ----------------------------------------------------------------------------- migration command
def envelope_from_training_data(card: dict, root: str | None = None) -> dict | None:
    """Recompute a card's envelope from the training split it records (synthetic data is
    regenerated deterministically when absent); None when the data cannot be found."""
    from pathlib import Path

    from .data import datasets as D

    td = card.get("training_data") or {}
    adapter = td.get("adapter")
    if adapter not in D.ADAPTERS:
        return None
    root_path = Path(root or td.get("root") or "")
    if not root_path.is_absolute():
        root_path = Path(__file__).resolve().parents[1] / root_path
    if td.get("synthetic"):
        from .data.make_synthetic import ensure_synthetic

        ensure_synthetic(root_path, td["synthetic"])
    if not root_path.exists():
        return None
    train_ids = set((card.get("split") or {}).get("train") or [])
    cases = [c for c in D.ADAPTERS[adapter](root_path) if not train_ids or c.patient_id in train_ids]
    spec = spec_from_card(card)
    region, anatomy = region_defaults(spec.family)
    return data_envelope(
        (c.load()[0] for c in cases),
        spec.preprocessing,
        spec.preprocessing_params,
        body_region=region,
        anatomy=anatomy,
        case_ids=[c.case_id for c in cases],
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m medseg_core.cards migrate DIR``: rewrite every card in DIR in the current schema,
    with the envelope of its recorded training split; weights (and their SHA-256) are untouched."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["migrate"])
    ap.add_argument("directory")
    ap.add_argument("--recompute", action="store_true", help="recompute envelopes that are already recorded")
    a = ap.parse_args(argv)
    for p in sorted(Path(a.directory).glob("*.json")):
        if p.stem.endswith("_last") or not p.with_suffix(".safetensors").exists():
            continue
        raw = json.loads(p.read_text())
        card = migrate(raw, p.stem)
        if a.recompute or not card.get("envelope"):
            card["envelope"] = envelope_from_training_data(card)
        p.write_text(json.dumps(card, indent=1, default=str))
        print(f"{p.name}: {SCHEMA}; envelope {envelope_summary(card['envelope'])}")


if __name__ == "__main__":
    main()
