"""Regenerate the bundled sample cases: ``python -m medseg_core.data.make_samples``.

Writes ``medseg_core/sample_data/`` (real files: NIfTI for 3D, PNG + JSON for 2D) and its
``index.json``. The seeds were chosen by looking at the cases (see README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..samples import SAMPLE_DIR
from .make_synthetic import _save_nii, _screen
from .synthetic import abdominal_ct, gi_mri, microus_prostate, pelvic_mri, ultrasound


def _png(path: Path, pic: np.ndarray, bits16: bool = False) -> None:
    Image.fromarray(np.rint(pic).astype(np.uint16 if bits16 else np.uint8)).save(path)


def make_samples(out: Path = SAMPLE_DIR) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []

    c = pelvic_mri(0)
    a = c.volume.affine
    _save_nii(out / "pelvic_t2fs.nii.gz", np.rint(c.volume.array), a, np.int16)
    _save_nii(out / "pelvic_t2fs_ovary.nii.gz", c.masks["ovary"], a, np.uint8)
    _save_nii(out / "pelvic_t2fs_ovary_other.nii.gz", c.masks["ovary_other"], a, np.uint8)
    index.append(
        {
            "key": "pelvic",
            "title": "Pelvic T2FS MRI (synthetic): ovary",
            "family": "ovary",
            "image": "pelvic_t2fs.nii.gz",
            "mask": "pelvic_t2fs_ovary.nii.gz",
            "extra_masks": {"ovary_other": "pelvic_t2fs_ovary_other.nii.gz"},
            "extra": {"labelled_side": c.meta["labelled_side"]},
            "description": f"24 axial slices at 0.7 x 0.7 x 6 mm. Both ovaries are visible but only the patient's "
            f"{c.meta['labelled_side']} ovary is labelled, as in UT-EndoMRI: watch for side swaps "
            "and double-ovary predictions. A bright cyst and bowel loops act as distractors.",
        }
    )

    c = abdominal_ct(0)
    _save_nii(out / "abdomen_ct.nii.gz", c.volume.array, c.volume.affine, np.int16)
    _save_nii(out / "abdomen_ct_spleen.nii.gz", c.masks["spleen"], c.volume.affine, np.uint8)
    index.append(
        {
            "key": "ct_spleen",
            "title": "Abdominal CT (synthetic): spleen",
            "family": "spleen",
            "image": "abdomen_ct.nii.gz",
            "mask": "abdomen_ct_spleen.nii.gz",
            "extra": {},
            "description": f"Portal-venous CT in HU, 64 slices at 1.5 x 1.5 x 2.5 mm; spleen "
            f"{c.meta['spleen_volume_ml']:.0f} mL on the patient's left (image right).",
        }
    )

    for key, seed, mal in (("us_malignant", 0, True), ("us_benign", 1, False)):
        c = ultrasound(seed, malignant=mal, annotate=(key == "us_malignant"))
        _png(out / f"{key}.png", _screen(c.volume.array))
        _png(out / f"{key}_lesion.png", _screen(c.masks["lesion"]) * 255)
        extra = {"clinical": c.meta["clinical"], "malignant": int(mal)}
        files = {}
        if c.meta["annotated_rgb"] is not None:
            _png(out / f"{key}_clean.png", _screen(c.meta["clean"]))
            files["clean"] = f"{key}_clean.png"
        (out / f"{key}.json").write_text(json.dumps({**c.meta["clinical"], "malignant": int(mal)}, indent=1))
        index.append(
            {
                "key": key,
                "title": f"Transvaginal ultrasound (synthetic): {'malignant' if mal else 'benign'} lesion",
                "family": "ultrasound",
                "image": f"{key}.png",
                "mask": f"{key}_lesion.png",
                "clinical": f"{key}.json",
                "extra": extra,
                "files": files,
                "pixel_spacing_mm": [0.2, 0.2],
                "description": (
                    "Multilocular lesion with a solid part, papillary projections and septa; burned-in "
                    "caliper marks and text for the annotation-removal model."
                    if mal
                    else "Unilocular anechoic cyst with a smooth wall."
                )
                + f" Clinical: menopausal={c.meta['clinical']['menopausal']}, "
                f"oncology centre={c.meta['clinical']['oncology_center']}.",
            }
        )

    c = microus_prostate(0)
    _png(out / "microus_prostate.png", _screen(c.volume.array))
    _png(out / "microus_prostate_expert.png", _screen(c.masks["expert"]) * 255)
    _png(out / "microus_prostate_nonexpert.png", _screen(c.masks["non_expert"]) * 255)
    index.append(
        {
            "key": "microus",
            "title": "Micro-ultrasound prostate (synthetic)",
            "family": "prostate",
            "image": "microus_prostate.png",
            "mask": "microus_prostate_expert.png",
            "extra_masks": {"non_expert": "microus_prostate_nonexpert.png"},
            "pixel_spacing_mm": [0.033586, 0.033586],
            "extra": {},
            "description": "Expert and non-expert outlines disagree at the bladder neck (the hard "
            "region of report 004).",
        }
    )

    c = gi_mri(0)
    _png(out / "gi_mri.png", _screen(c.volume.array), bits16=True)
    masks = {}
    for k in ("stomach", "small_bowel", "large_bowel"):
        _png(out / f"gi_mri_{k}.png", _screen(c.masks[k]) * 255)
        masks[k] = f"gi_mri_{k}.png"
    index.append(
        {
            "key": "gi",
            "title": "GI-tract MRI slice (synthetic)",
            "family": "gi",
            "image": "gi_mri.png",
            "mask": None,
            "extra_masks": masks,
            "pixel_spacing_mm": [1.5, 1.5],
            "modality": "MR",
            "extra": {},
            "description": "16-bit abdominal MRI slice with stomach, small and large bowel"
            " as three overlapping labels.",
        }
    )
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


if __name__ == "__main__":
    for e in make_samples():
        print(e["key"], e["image"])
