"""Words for people: the one mapping from the library's machine names (CSV/JSON columns, option
values, tags, uncertainty maps) to what the app shows.

Files keep the machine names (``hd95_mm``, ``pred_area_mm2``, ``two_pass``); pages convert at the
point of display with :func:`display_name`, :func:`describe` (a name, a number and its unit) and
:func:`display_rows` (a table's columns and its name-like cells).

Slice numbers: arrays and files index slices from 0 (the ``slice`` column); people count from 1
(``slice_number`` = ``slice`` + 1, written beside it by :func:`medseg_core.tables.csv_text`), and
every page shows ``slice_number`` (see :func:`slice_words`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: machine name -> (words, unit or ""). A key may be namespaced ("map:mean") where one name means
#: different things in different places; :func:`display_name` tries the namespaced key first.
NAMES: dict[str, tuple[str, str]] = {
    # metrics (per case, per slice)
    "dice": ("Dice", ""),
    "iou": ("IoU", ""),
    "precision": ("Precision", ""),
    "recall": ("Recall", ""),
    "hd95_mm": ("HD95", "mm"),
    "assd_mm": ("ASSD", "mm"),
    "pred_volume_ml": ("Predicted volume", "mL"),
    "ref_volume_ml": ("Reference volume", "mL"),
    "pred_area_mm2": ("Predicted area", "mm²"),
    "ref_area_mm2": ("Reference area", "mm²"),
    "dice_star": ("Dice*", ""),
    "dice_before_pp": ("Dice before post-processing", ""),
    "delta_pp": ("Dice* change by post-processing", ""),
    "frac_on_other": ("Share on the other ovary", ""),
    "n_components": ("Components", ""),
    "dice_vs_both_ovaries": ("Dice against both ovaries", ""),
    "both_empty": ("Both empty", ""),
    "ref_present": ("Reference present", ""),
    "pred_present": ("Prediction present", ""),
    "uncertainty": ("Uncertainty (mean entropy)", "nats"),
    "seconds": ("Time", "s"),
    "primary": ("Main finding", ""),
    "tags": ("Findings", ""),
    # identifiers
    "label": ("Label", ""),
    "model": ("Model", ""),
    "set": ("Option set", ""),
    "case": ("Case", ""),
    "patient": ("Patient", ""),
    "slice": ("Slice index (0-based)", ""),
    "slice_number": ("Slice", ""),
    # report 000's Table 1 and the paired comparisons
    "dice_orig": ("Dice, no side masking", ""),
    "dice_masked": ("Dice, oracle side masking", ""),
    "delta_dice": ("ΔDice", ""),
    "n_slices": ("Slices", ""),
    "wilcoxon_p": ("Wilcoxon p", ""),
    "a": ("Baseline", ""),
    "b": ("Compared with", ""),
    "metric": ("Metric", ""),
    "mean_dice_a": ("Mean Dice, baseline", ""),
    "mean_dice_b": ("Mean Dice, compared", ""),
    "mean_delta": ("Mean difference", ""),
    "sd_delta": ("SD of the difference", ""),
    "better": ("Better", ""),
    "worse": ("Worse", ""),
    "same": ("Same", ""),
    # option sets of a cohort run (medseg_core.cohort.SIDE_SETS) and the options they set
    "set:orig": ("Original (no side masking)", ""),
    "set:masked": ("Oracle side masking", ""),
    "set:two_pass": ("Two-pass", ""),
    "set:as_delivered": ("As delivered", ""),
    "set:gated": ("Slice-classifier gate (RAovSeg first stage)", ""),
    "side_masking": ("Side masking", ""),
    "postprocessing": ("Post-processing", ""),
    "preprocessing": ("Preprocessing", ""),
    "threshold": ("Threshold", ""),
    "mc_samples": ("MC samples", ""),
    "tta": ("Test-time augmentation", ""),
    "seed": ("Seed", ""),
    "gate": ("Slice classifier gate", ""),
    "side:none": ("none", ""),
    "side:left": ("left only", ""),
    "side:right": ("right only", ""),
    "side:two_pass": ("two-pass", ""),
    "side:oracle": ("oracle", ""),
    # uncertainty maps and methods
    "map:entropy": ("Entropy", "nats"),
    "map:mutual_information": ("Mutual information", "nats"),
    "map:mean": ("Mean probability", "probability"),
    "map:variance": ("Variance", "probability²"),
    "mutual_information": ("Mutual information", "nats"),
    "entropy": ("Entropy", "nats"),
    "mc_dropout": ("MC dropout", ""),
    # failure tags (medseg_core.analysis.TAGS)
    "good": ("Good", ""),
    "missed": ("Missed", ""),
    "false_positive_empty": ("False positive on an empty slice", ""),
    "under_segmentation": ("Under-segmentation", ""),
    "over_segmentation": ("Over-segmentation", ""),
    "side_swap": ("Side swap", ""),
    "double_ovary": ("Double ovary", ""),
    "fragmented": ("Fragmented", ""),
    "postprocessing_helped": ("Post-processing helped", ""),
    "postprocessing_hurt": ("Post-processing hurt", ""),
    "boundary_error": ("Boundary error", ""),
}

# preprocessing steps (medseg_core.preprocessing.PREPROCESSING) as people read them
NAMES.update(
    {
        "pre:none": ("None (raw intensities)", ""),
        "pre:plain": ("Z-score per slice", ""),
        "pre:minmax": ("Min-max to 0..1", ""),
        "pre:scale255": ("Grey / 255", ""),
        "pre:raovseg": ("RAovSeg remap", ""),
        "pre:raovseg_sharp": ("RAovSeg remap + sharpening", ""),
        "pre:clahe": ("CLAHE (clip 2.0)", ""),
        "pre:ct_window": ("CT window (HU)", ""),
        "post:largest_2d": ("largest component per slice", ""),
        "post:largest_3d": ("largest component in 3D", ""),
        "post:raovseg": ("RAovSeg closing + largest 3D component", ""),
        # stages of a prediction's timings (Prediction.timings keys, without their _s)
        "time:preprocess": ("preprocessing", ""),
        "time:resize": ("resizing", ""),
        "time:resample": ("resampling", ""),
        "time:model": ("model", ""),
        "time:postprocess": ("post-processing", ""),
        "time:uncertainty": ("uncertainty", ""),
        "time:total": ("total", ""),
    }
)

#: Units spelled in a machine name's suffix, for names not in :data:`NAMES`.
_SUFFIX_UNITS = (("_mm2", "mm²"), ("_mm", "mm"), ("_ml", "mL"), ("_s", "s"))


def _lookup(key: str, kind: str | None) -> tuple[str, str]:
    key = str(key)
    if kind and f"{kind}:{key}" in NAMES:
        return NAMES[f"{kind}:{key}"]
    if key in NAMES:
        return NAMES[key]
    unit = ""
    for suffix, u in _SUFFIX_UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            key, unit = key[: -len(suffix)], u
            break
    words = key.replace("_", " ").strip()
    return (words[:1].upper() + words[1:] if kind != "set" else words), unit


def display_name(key: str, kind: str | None = None) -> str:
    """Words for a machine name, with the unit in brackets: ``hd95_mm`` -> "HD95 (mm)",
    ``pred_area_mm2`` -> "Predicted area (mm²)", ``display_name("two_pass", "set")`` -> "Two-pass".
    ``kind`` picks a namespace ("set", "map", "side") where a name means something specific there.
    Names not in :data:`NAMES` lose their underscores and keep a unit their suffix spells."""
    words, unit = _lookup(key, kind)
    return f"{words} ({unit})" if unit and unit.lower() not in words.lower() else words


def name_and_unit(key: str, kind: str | None = None) -> tuple[str, str]:
    """(words, unit) of a machine name: ``hd95_mm`` -> ("HD95", "mm"); the unit is "" when it has none."""
    return _lookup(key, kind)


def format_value(value: object, fmt: str = ".3g") -> str:
    """A number for people: "n/a" for missing or NaN, booleans as yes/no, thousands written out with
    separators ("1,260") rather than in exponent notation."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if fmt.endswith("g") and 1000 <= abs(value) < 1e15:  # 1,260 mm², not 1.26e+03
            return f"{value:,.0f}"
        return format(value, fmt)
    return str(value)


def describe(key: str, value: object, fmt: str = ".3g", kind: str | None = None) -> str:
    """A name, its value and its unit: ``describe("hd95_mm", 3.21)`` -> "HD95 3.21 mm"."""
    words, unit = _lookup(key, kind)
    v = format_value(value, fmt)
    return f"{words} {v}{' ' + unit if unit and v != 'n/a' else ''}"


def options_words(options: dict) -> str:
    """A cohort option set's options in words: {'side_masking': 'none'} -> "side masking none"."""
    parts = []
    for k, v in (options or {}).items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v)) or "none"
        elif k == "side_masking":
            v = display_name(v, "side")
        parts.append(f"{display_name(k).lower()} {v}")
    return "; ".join(parts)


def set_name(name: str, options: dict | None = None) -> str:
    """An option set as people read it: "Original (no side masking)"; a set this module does not
    know is named as its author wrote it, followed by its options in words."""
    if f"set:{name}" in NAMES:
        return NAMES[f"set:{name}"][0]
    extra = options_words(options or {})
    return f"{name} ({extra})" if extra else str(name)


#: Cell values translated by :func:`display_rows` (column -> namespace for :func:`display_name`).
_CELL_KINDS = {"set": "set", "a": "set", "b": "set", "primary": None, "tags": None, "metric": None}


def display_rows(rows: list[dict], drop: Iterable[str] = (), fmt: str | None = None) -> list[dict]:
    """Rows for ``st.dataframe``: columns renamed with :func:`display_name`, option-set names, tags
    and metric names in words, booleans as yes/no. A 0-based ``slice`` column is shown as the
    1-based "Slice" (``slice_number``). Columns in ``drop`` are left out. ``fmt`` formats floats as
    text (None: numbers stay numbers, so the table sorts)."""
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if k in drop or (k == "slice" and "slice_number" in r):
                continue
            if k == "slice" and isinstance(v, int):
                k, v = "slice_number", v + 1
            if k in _CELL_KINDS and isinstance(v, str):
                v = set_name(v) if _CELL_KINDS[k] == "set" else display_name(v)
            elif k in _CELL_KINDS and isinstance(v, (list, tuple)):
                v = ", ".join(display_name(t) for t in v)
            elif isinstance(v, bool):
                v = "yes" if v else "no"
            elif fmt and isinstance(v, float):
                v = format_value(v, fmt)
            d[display_name(k)] = v
        out.append(d)
    return out


def slice_words(index: int, n: int | None = None) -> str:
    """The 0-based array index ``index`` as people count it: "slice 5 of 24"."""
    return f"slice {int(index) + 1}" + (f" of {n}" if n else "")


def timings_words(timings: dict) -> str:
    """``{"model_s": 0.48, "gate_model_s": 0.03, ...}`` -> "model 0.48 s, slice gate: model 0.03 s, ..."."""
    parts = []
    for k, v in timings.items():
        if not k.endswith("_s"):
            continue
        stage = k[:-2]
        gate = stage.startswith("gate_")
        words = _lookup(stage[5:] if gate else stage, "time")[0].lower()
        parts.append(f"{'slice gate: ' if gate else ''}{words} {v:.2f} s")
    return ", ".join(parts)
