"""Write a synthetic dataset in the layout of the corresponding real dataset.

``python -m medseg_core.data.make_synthetic --kind pelvic --n 40 --out DIR [--seed 0]``

=========  ===============================================================================
kind       layout written (read back by the adapter in :mod:`medseg_core.data.datasets`)
=========  ===============================================================================
pelvic     UT-EndoMRI D2: ``D2_TCPW/D2-NNN/D2-NNN_T2FS.nii.gz``, ``_ov``, ``_ut`` (+ our
           ``_ovother`` with the unlabelled ovary, and ``synthetic_meta.json``)
ct         MSD Task09: ``dataset.json``, ``imagesTr/spleen_N.nii.gz``, ``labelsTr/spleen_N.nii.gz``
us         MMOTU: ``images/N.JPG``, ``annotations/N.PNG``, ``train_cls.txt``/``val_cls.txt`` (class ids
           0-7: 7 high-grade serous for a malignant phantom, another for a benign one), plus
           ``clinical.csv``, ``primary.csv`` (report 001's hospital layout, adapter ``us_primary``:
           patient IDs, two images each, malignant, clinical) and ``clean/N.PNG`` with ``--annotate``
microus    MicroSegNet: ``train/micro_ultrasound_scans/microUS_train_NN.nii.gz``,
           ``expert_annotations/``, ``non_expert_annotations/``
gi         UW-Madison: ``train.csv`` (RLE) and ``train/caseN/caseN_day0/scans/slice_*.png``
=========  ===============================================================================

Synthetic cases are seeded by ``seed * 100000 + index`` so datasets made with different seeds
never share a case.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from PIL import Image

from ..io.nifti import nifti_bytes
from ..io.orientation import display_slice, from_canonical_xyz
from .datasets import GI_CLASSES, rle_encode
from .synthetic import abdominal_ct, gi_mri, microus_prostate, pelvic_mri, ultrasound

BENIGN_MMOTU = (0, 1, 2, 3, 4, 6)


def _save_nii(path: Path, arr_zyx: np.ndarray, affine: np.ndarray, dtype: DTypeLike) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_bytes(from_canonical_xyz(arr_zyx), affine, compress=True, dtype=dtype))


def _screen(arr_zyx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(display_slice(arr_zyx, "axial", 0))


def _case_seed(seed: int, i: int) -> int:
    return seed * 100000 + i


def write_pelvic(out: Path, n: int, seed: int = 0) -> None:
    meta = {}
    for i in range(n):
        c = pelvic_mri(_case_seed(seed, i))
        sid = f"D2-{i:03d}"
        d = out / "D2_TCPW" / sid
        aff = c.volume.affine
        _save_nii(d / f"{sid}_T2FS.nii.gz", np.rint(c.volume.array), aff, np.int16)
        _save_nii(d / f"{sid}_ov.nii.gz", c.masks["ovary"], aff, np.uint8)
        _save_nii(d / f"{sid}_ut.nii.gz", c.masks["uterus"], aff, np.uint8)
        _save_nii(d / f"{sid}_ovother.nii.gz", c.masks["ovary_other"], aff, np.uint8)
        meta[sid] = {"labelled_side": c.meta["labelled_side"], "seed": c.meta["seed"]}
    (out / "synthetic_meta.json").write_text(json.dumps(meta, indent=1))


def write_ct(out: Path, n: int, seed: int = 0) -> None:
    training = []
    for i in range(n):
        c = abdominal_ct(_case_seed(seed, i))
        name = f"spleen_{i}.nii.gz"
        _save_nii(out / "imagesTr" / name, c.volume.array, c.volume.affine, np.int16)
        _save_nii(out / "labelsTr" / name, c.masks["spleen"], c.volume.affine, np.uint8)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Spleen (synthetic)",
                "modality": {"0": "CT"},
                "labels": {"0": "background", "1": "spleen"},
                "numTraining": n,
                "numTest": 0,
                "training": training,
                "test": [],
            },
            indent=1,
        )
    )


def write_us(out: Path, n: int, seed: int = 0, annotate: bool = False, val_fraction: float = 0.2) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    clinical, primary = [], []  # primary.csv: report 001's hospital layout (us_primary), two images per patient
    for i in range(n):
        c = ultrasound(_case_seed(seed, i), annotate=annotate)
        name = f"{i + 1}.JPG"
        if annotate:
            Image.fromarray(c.meta["annotated_rgb"]).save(out / "images" / name, quality=95)
            (out / "clean").mkdir(exist_ok=True)
            Image.fromarray(_screen(c.meta["clean"]).astype(np.uint8)).save(out / "clean" / f"{i + 1}.PNG")
        else:
            Image.fromarray(_screen(c.volume.array).astype(np.uint8)).convert("RGB").save(
                out / "images" / name, quality=95
            )
        Image.fromarray(_screen(c.masks["lesion"]) * 255).save(out / "annotations" / f"{i + 1}.PNG")
        cls = 7 if c.meta["malignant"] else int(rng.choice(BENIGN_MMOTU))
        lines["val" if rng.random() < val_fraction else "train"].append(f"{name} {cls}")
        clinical.append({"image": name, **c.meta["clinical"]})
        primary.append(
            {
                "image": name,
                "patient_id": f"P{i // 2:04d}",
                "malignant": int(bool(c.meta["malignant"])),
                **c.meta["clinical"],
            }
        )
    for k, v in lines.items():
        (out / f"{k}_cls.txt").write_text("\n".join(v) + ("\n" if v else ""))
    with open(out / "clinical.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "menopausal", "oncology_center"])
        w.writeheader()
        w.writerows(clinical)
    with open(out / "primary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "patient_id", "malignant", "menopausal", "oncology_center"])
        w.writeheader()
        w.writerows(primary)


def write_microus(out: Path, n: int, seed: int = 0, slices: int = 4) -> None:
    base = out / "train"
    for i in range(n):
        cases = [microus_prostate(_case_seed(seed, i) * 10 + k) for k in range(slices)]
        img = np.concatenate([c.volume.array for c in cases], axis=0)
        exp = np.concatenate([c.masks["expert"] for c in cases], axis=0)
        nex = np.concatenate([c.masks["non_expert"] for c in cases], axis=0)
        aff = cases[0].volume.affine
        nn = f"{i + 1:02d}"
        _save_nii(base / "micro_ultrasound_scans" / f"microUS_train_{nn}.nii.gz", np.rint(img), aff, np.uint8)
        _save_nii(base / "expert_annotations" / f"expert_annotation_train_{nn}.nii.gz", exp, aff, np.uint8)
        _save_nii(base / "non_expert_annotations" / f"nonexpert_annotation_train_{nn}.nii.gz", nex, aff, np.uint8)


def write_gi(out: Path, n: int, seed: int = 0, slices_per_case: int = 4) -> None:
    rows = []
    for i in range(n):
        case, sl = i // slices_per_case + 1, i % slices_per_case + 1
        c = gi_mri(_case_seed(seed, i))
        pic = _screen(c.volume.array)
        h, w = pic.shape
        d = out / "train" / f"case{case}" / f"case{case}_day0" / "scans"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(pic).astype(np.uint16)).save(d / f"slice_{sl:04d}_{w}_{h}_1.50_1.50.png")
        sid = f"case{case}_day0_slice_{sl:04d}"
        for cls in GI_CLASSES:
            rows.append({"id": sid, "class": cls, "segmentation": rle_encode(_screen(c.masks[cls]))})
    with open(out / "train.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["id", "class", "segmentation"])
        wr.writeheader()
        wr.writerows(rows)


WRITERS = {"pelvic": write_pelvic, "ct": write_ct, "us": write_us, "microus": write_microus, "gi": write_gi}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a synthetic dataset in a real dataset's layout.")
    ap.add_argument("--kind", required=True, choices=sorted(WRITERS))
    ap.add_argument("--n", type=int, default=20, help="number of cases (slices for gi)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--annotate", action="store_true", help="us only: burn in annotations, keep clean copies")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.kind == "us":
        write_us(out, a.n, a.seed, annotate=a.annotate)
    else:
        WRITERS[a.kind](out, a.n, a.seed)
    print(f"wrote {a.n} synthetic {a.kind} case(s) to {out}")


if __name__ == "__main__":
    main()


def parse_synthetic(text: str) -> dict:
    """The command lines' ``KIND:N:SEED`` (e.g. ``pelvic:12:7``) as an :func:`ensure_synthetic` spec."""
    kind, n, seed = text.split(":")
    return {"kind": kind, "n": int(n), "seed": int(seed)}


def ensure_synthetic(root: str | Path, syn: dict) -> Path:
    """Generate the synthetic dataset ``syn`` (kind, n, seed[, annotate]) at ``root`` unless a
    complete one with the same settings is already there (marker file ``.complete``)."""
    root = Path(root)
    marker = root / ".complete"
    if marker.exists() and json.loads(marker.read_text() or "{}") == dict(syn):
        return root
    if marker.exists():
        raise FileExistsError(
            f"{root} holds a different synthetic dataset ({marker.read_text()}); choose another folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    if syn["kind"] == "us":
        write_us(root, int(syn["n"]), int(syn.get("seed", 0)), annotate=bool(syn.get("annotate", False)))
    else:
        WRITERS[syn["kind"]](root, int(syn["n"]), int(syn.get("seed", 0)))
    marker.write_text(json.dumps(dict(syn)))
    return root
