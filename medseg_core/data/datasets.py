"""Adapters for the public datasets in their published layouts, plus a generic folder layout.

Each adapter returns a list of :class:`Case` records (paths and labels, nothing loaded yet) with a
``patient_id`` so that splits are made per patient; ``Case.load()`` reads the image as a
:class:`~medseg_core.io.Volume` and the masks aligned to it. Layout facts come from
``shared/reference/methods.md``.

* :func:`msd_spleen` -- MSD Task09: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.
* :func:`ut_endomri_d2` -- UT-EndoMRI D2: ``D2_TCPW/D2-XXX/D2-XXX_T2FS.nii.gz`` + ``_ov``; RAovSeg
  rule: keep subjects with ``_T2FS`` and ``_ov`` and neither ``_cy`` nor ``_em``.
* :func:`ut_endomri_d1` -- UT-EndoMRI D1 multi-rater ovary masks (``_ov_r1``, ``_r2``, ``_r3``).
* :func:`mmotu` -- ``images/*.JPG``, ``annotations/*.PNG``, ``train_cls.txt`` / ``val_cls.txt``.
* :func:`us_primary` -- report 001's hospital data in our layout: MMOTU's folders + ``primary.csv``.
* :func:`uw_madison_gi` -- ``train.csv`` (RLE) + ``train/caseN/caseN_dayM/scans/slice_*.png``.
* :func:`microsegnet` -- micro-US volumes with expert and non-expert annotations.
* :func:`generic_folder` -- ``images/`` + ``masks/`` with matching file stems.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import Volume, load_mask, load_volume

MMOTU_CLASSES = (
    "chocolate cyst",
    "serous cystadenoma",
    "teratoma",
    "theca cell tumor",
    "simple cyst",
    "normal ovary",
    "mucinous cystadenoma",
    "high-grade serous",
)
#: MMOTU classes counted as malignant for a benign/malignant task (assumption: only high-grade
#: serous carcinoma is malignant among the 8 classes; the others are benign lesions or normal).
MMOTU_MALIGNANT = frozenset({7})
GI_CLASSES = ("large_bowel", "small_bowel", "stomach")


#: a mask file, or a callable ``(volume) -> array`` for masks that are not files (RLE strings)
MaskSource = Path | Callable[[Volume], np.ndarray]


@dataclass
class Case:
    """One case of a dataset: where its files are and what is known about it.

    ``masks`` maps a label name to a mask file, or to a callable ``(volume) -> array`` for masks
    that are not files (RLE strings). ``extra`` holds clinical variables and class labels.
    """

    case_id: str
    patient_id: str
    image: Path
    masks: Mapping[str, MaskSource] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    modality: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None

    def load(self) -> tuple[Volume, dict[str, np.ndarray]]:
        vol = load_volume(self.image, modality=self.modality, pixel_spacing_mm=self.pixel_spacing_mm)
        masks = {}
        for name, src in self.masks.items():
            masks[name] = src(vol) if callable(src) else (load_mask(src, like=vol) > 0).astype(np.uint8)
        return vol, masks


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


# ----------------------------------------------------------------------------- MSD spleen
def msd_spleen(root: str | Path) -> list[Case]:
    """MSD Task09_Spleen training cases listed in ``dataset.json`` (patient = file stem)."""
    root = Path(root)
    meta = json.loads(_need(root / "dataset.json", "dataset.json").read_text())
    out = []
    for e in meta.get("training", []):
        img = root / e["image"]
        lab = root / e["label"]
        stem = Path(e["image"]).name.replace(".nii.gz", "").replace(".nii", "")
        out.append(Case(stem, stem, img, {"spleen": lab}, modality="CT"))
    return out


# ----------------------------------------------------------------------------- UT-EndoMRI
def _nii(folder: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def ut_endomri_d2(root: str | Path, apply_raovseg_rule: bool = True, sequence: str = "T2FS") -> list[Case]:
    """UT-EndoMRI D2 subjects with a T2FS image and an ovary mask.

    ``root`` may be the dataset folder (holding ``D2_TCPW``) or ``D2_TCPW`` itself. With
    ``apply_raovseg_rule`` subjects that also have ``_cy`` or ``_em`` masks are skipped (RAovSeg).
    Other structures present (``_ut``) are returned as extra masks.
    """
    root = Path(root)
    base = root / "D2_TCPW" if (root / "D2_TCPW").is_dir() else root
    out = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("D2-")):
        sid = sub.name
        img = _nii(sub, f"{sid}_{sequence}")
        ov = _nii(sub, f"{sid}_ov")
        if img is None or ov is None:
            continue
        if apply_raovseg_rule and (_nii(sub, f"{sid}_cy") or _nii(sub, f"{sid}_em")):
            continue
        masks: dict[str, MaskSource] = {"ovary": ov}
        ut = _nii(sub, f"{sid}_ut")
        if ut:
            masks["uterus"] = ut
        other = _nii(sub, f"{sid}_ovother")  # synthetic datasets only: the unlabelled ovary
        if other:
            masks["ovary_other"] = other
        out.append(Case(sid, sid, img, masks, modality="MR"))
    return out


def ut_endomri_d1(root: str | Path, sequence: str = "T2FS") -> list[Case]:
    """UT-EndoMRI D1 subjects with per-rater ovary masks (``ovary_r1``, ``ovary_r2``, ...)."""
    root = Path(root)
    base = root / "D1_MHS" if (root / "D1_MHS").is_dir() else root
    out = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("D1-")):
        sid = sub.name
        img = _nii(sub, f"{sid}_{sequence}")
        if img is None:
            continue
        masks = {}
        for p in sorted(sub.glob(f"{sid}_ov_r*.nii*")):
            m = re.search(r"_ov_(r\d+)\.nii", p.name)
            if m:
                masks[f"ovary_{m.group(1)}"] = p
        if masks:
            out.append(Case(sid, sid, img, masks, modality="MR"))
    return out


# ----------------------------------------------------------------------------- MMOTU
def mmotu(root: str | Path, split: str | None = None, clinical_csv: str | Path | None = None) -> list[Case]:
    """MMOTU 2D ultrasound: images, binarised annotation masks, class (0-7) and benign/malignant.

    ``split`` "train" or "val" reads ``{split}_cls.txt``; None reads both. A clinical CSV (columns
    ``image,menopausal,oncology_center``; our synthetic layout adds one) is merged into ``extra``.
    Patient IDs: MMOTU gives none, so each image is its own patient (the published convention).
    """
    root = Path(root)
    files = [f"{split}_cls.txt"] if split else ["train_cls.txt", "val_cls.txt"]
    clinical = {}
    cpath = Path(clinical_csv) if clinical_csv else root / "clinical.csv"
    if cpath.exists():
        with open(cpath, newline="") as fh:
            for row in csv.DictReader(fh):
                clinical[row["image"]] = {
                    "menopausal": int(row["menopausal"]),
                    "oncology_center": int(row["oncology_center"]),
                }
    out = []
    for fname in files:
        p = root / fname
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            name, cls = parts[0], int(parts[1])
            stem = Path(name).stem
            img = root / "images" / name
            ann = root / "annotations" / f"{stem}.PNG"
            if not ann.exists():
                ann = root / "annotations" / f"{stem}.png"
            extra = {
                "class_id": cls,
                "class_name": MMOTU_CLASSES[cls],
                "malignant": int(cls in MMOTU_MALIGNANT),
                "split": fname.split("_")[0],
            }
            extra.update(clinical.get(name, {}))
            out.append(Case(stem, stem, img, {"lesion": ann}, extra=extra, modality="US"))
    return out


def us_primary(root: str | Path) -> list[Case]:
    """Report 001's primary (hospital) dataset, private; our layout for it: MMOTU's ``images/`` and
    ``annotations/<stem>.PNG`` plus ``primary.csv`` with columns ``image,patient_id,malignant,
    menopausal,oncology_center`` (1 to 20 slides per patient; splits are per patient, section 3.5.1;
    perimenopausal recorded as postmenopausal, Appendix C step 8). The synthetic ``us`` layout writes one."""
    root = Path(root)
    table = root / "primary.csv"
    if not table.exists():
        return []
    out = []
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["image"]
            stem = Path(name).stem
            ann = root / "annotations" / f"{stem}.PNG"
            if not ann.exists():
                ann = root / "annotations" / f"{stem}.png"
            extra = {
                "malignant": int(row["malignant"]),
                "menopausal": int(row["menopausal"]),
                "oncology_center": int(row["oncology_center"]),
            }
            out.append(
                Case(stem, str(row["patient_id"]), root / "images" / name, {"lesion": ann}, extra=extra, modality="US")
            )
    return out


# ----------------------------------------------------------------------------- UW-Madison GI
def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a UW-Madison run-length string to a (height, width) uint8 mask.

    Pairs of (1-based start, length) over the image flattened row-major (C order).
    """
    h, w = shape
    flat = np.zeros(h * w, np.uint8)
    if isinstance(rle, str) and rle.strip():
        nums = np.asarray(rle.split(), dtype=np.int64)
        starts, lengths = nums[0::2] - 1, nums[1::2]
        for s, n in zip(starts, lengths, strict=False):  # a malformed odd-length RLE drops its last start
            flat[s : s + n] = 1
    return flat.reshape(h, w)


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode` (empty string for an empty mask)."""
    flat = np.asarray(mask, np.uint8).ravel()
    padded = np.concatenate([[0], flat, [0]])
    changes = np.nonzero(padded[1:] != padded[:-1])[0] + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends, strict=True))


_GI_SLICE = re.compile(r"slice_(\d+)_(\d+)_(\d+)_([\d.]+)_([\d.]+)\.png$")


def uw_madison_gi(root: str | Path) -> list[Case]:
    """UW-Madison GI slices with their three RLE masks (decoded on load, in display layout).

    The image path is ``train/caseN/caseN_dayM/scans/slice_XXXX_W_H_pw_ph.png``; W, H and the pixel
    spacing (mm) are read from the name. Patient = ``caseN``.
    """
    root = Path(root)
    rows: dict[str, dict[str, str]] = {}
    with open(_need(root / "train.csv", "train.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["id"], {})[row["class"]] = row.get("segmentation") or ""
    index = {}
    for p in (root / "train").rglob("slice_*.png"):
        case_day = p.parent.parent.name  # caseN_dayM
        m = _GI_SLICE.search(p.name)
        if m:
            index[f"{case_day}_slice_{m.group(1)}"] = (p, m)
    out = []
    for sid, segs in sorted(rows.items()):
        if sid not in index:
            continue
        p, m = index[sid]
        w, h, pw, ph = int(m.group(2)), int(m.group(3)), float(m.group(4)), float(m.group(5))
        masks = {c: _gi_mask(segs.get(c, ""), (h, w)) for c in GI_CLASSES}
        # report 002 section 2.2's "organ" column (which organs the slice has), read from the RLE
        combo = "_".join(c for c in GI_CLASSES if (segs.get(c) or "").strip())
        out.append(
            Case(
                sid,
                sid.split("_")[0],
                p,
                masks,
                extra={"organ_combination": combo},
                modality="MR",
                pixel_spacing_mm=(ph, pw),
            )
        )
    return out


def _gi_mask(rle: str, shape: tuple[int, int]) -> Callable[[Volume], np.ndarray]:
    def make(vol: Volume) -> np.ndarray:
        pic = rle_decode(rle, shape)  # as the PNG looks on screen
        return np.ascontiguousarray(pic[::-1, ::-1][None])  # -> canonical (1, Y, X), see io.image

    return make


# ----------------------------------------------------------------------------- MicroSegNet
def microsegnet(root: str | Path, split: str = "train") -> list[Case]:
    """MicroSegNet micro-US: ``{split}/micro_ultrasound_scans/microUS_{split}_NN.nii.gz`` with
    ``expert_annotations/expert_annotation_{split}_NN.nii.gz`` and, for train,
    ``non_expert_annotations/*_NN.nii.gz``. Patient = NN."""
    base = Path(root) / split
    out = []
    for img in sorted((base / "micro_ultrasound_scans").glob(f"microUS_{split}_*.nii*")):
        m = re.search(r"_(\d+)\.nii", img.name)
        if not m:
            continue
        nn = m.group(1)
        masks: dict[str, MaskSource] = {}
        exp = list((base / "expert_annotations").glob(f"*_{nn}.nii*"))
        if exp:
            masks["expert"] = exp[0]
        nonexp = (
            list((base / "non_expert_annotations").glob(f"*_{nn}.nii*"))
            if (base / "non_expert_annotations").is_dir()
            else []
        )
        if nonexp:
            masks["non_expert"] = nonexp[0]
        out.append(Case(f"microUS_{split}_{nn}", nn, img, masks, modality="US"))
    return out


# ----------------------------------------------------------------------------- generic
def generic_folder(root: str | Path, label: str = "mask", modality: str | None = None) -> list[Case]:
    """``images/`` + ``masks/`` with the same file stem (any supported format). Patient = stem,
    or the part before ``__`` when names look like ``PATIENT__slice``."""
    root = Path(root)

    def stem(p: Path) -> str:
        n = p.name
        for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"):
            if n.lower().endswith(ext):
                return n[: -len(ext)]
        return p.stem

    masks = {stem(p): p for p in (root / "masks").iterdir() if p.is_file()} if (root / "masks").is_dir() else {}
    out = []
    for p in sorted(_need(root / "images", "images/ folder").iterdir()):
        if not p.is_file():
            continue
        s = stem(p)
        out.append(Case(s, s.split("__")[0], p, {label: masks[s]} if s in masks else {}, modality=modality))
    return out


# ----------------------------------------------------------------------------- splits
def patient_split(
    cases: list[Case], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[Case]]:
    """Seeded split by patient: no patient appears in two parts. Returns train/val/test lists."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("fractions must sum to 1")
    patients = sorted({c.patient_id for c in cases})
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    n = len(order)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_train = min(max(n_train, 1), n - 2)
        n_val = min(max(n_val, 1), n - n_train - (1 if fractions[2] > 0 else 0))
    parts = {
        "train": set(order[:n_train]),
        "val": set(order[n_train : n_train + n_val]),
        "test": set(order[n_train + n_val :]),
    }
    return {k: [c for c in cases if c.patient_id in v] for k, v in parts.items()}


def organ_combination(case: Case) -> str:
    """Which labels a case has, as report 002 section 2.2's ``organ`` column: the non-empty mask names
    joined by ``_`` ("" for none). Read from ``case.extra["organ_combination"]`` when the adapter
    records it (UW-Madison, from the RLE strings, no image read), else from the loaded masks."""
    if "organ_combination" in case.extra:
        return str(case.extra["organ_combination"])
    _, masks = case.load()
    return "_".join(k for k in sorted(masks) if np.asarray(masks[k]).any())


def drop_unlabelled(cases: list[Case]) -> list[Case]:
    """The cases with at least one labelled organ (report 002 section 2.2: slices without labels,
    Kaggle's test cases, were discarded before the split). For UW-Madison a case is one slice; a
    volume case is kept when any of its slices is labelled (training then drops its unlabelled slices,
    ``data.drop_unlabelled`` in :func:`medseg_core.train.prepare_2d`)."""
    return [c for c in cases if organ_combination(c)]


def _largest_remainder(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer parts of ``total`` proportional to ``sizes`` (Hamilton's method), never above a size."""
    sizes = np.asarray(sizes, np.int64)
    if total <= 0 or sizes.sum() == 0:
        return np.zeros_like(sizes)
    ideal = sizes * (total / sizes.sum())
    base = np.minimum(np.floor(ideal).astype(np.int64), sizes)
    rest = ideal - base
    for i in np.argsort(-rest, kind="stable"):
        if base.sum() >= total:
            break
        if base[i] < sizes[i]:
            base[i] += 1
    return base


def stratified_split(
    cases: list[Case], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, by: str = "organ_combination"
) -> dict[str, list[Case]]:
    """Seeded split of **cases** (not patients) keeping each stratum's share in every part (report
    002 section 2.2: "split into training, test, and validation with a proportion of 80%-10%-10%,
    maintaining the class imbalance across the three splits", the class being the organ combination).

    The report splits its table of slices, so for UW-Madison (one case = one slice) this is a
    slice-level split: slices of one patient and one scan land in different parts, as in the report.
    Part sizes: round(fraction x n) for train and val, the rest test (at least one validation case
    from 2 cases on, one test case from 3 on when its fraction is non-zero); within the parts each
    stratum gets its proportional share by largest remainders, members drawn at random (seeded).
    ``by``: ``organ_combination`` (:func:`organ_combination`) or any key of ``case.extra``."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("fractions must sum to 1")
    keys = [organ_combination(c) if by == "organ_combination" else str(c.extra.get(by, "")) for c in cases]
    n = len(cases)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    if n >= 2 and fractions[1] > 0:
        n_val = max(n_val, 1)
    n_test = n - n_train - n_val
    if n >= 3 and fractions[2] > 0:
        n_test = max(n_test, 1)
    n_train = max(n - n_val - n_test, 0)
    strata = sorted(set(keys))
    rng = np.random.default_rng(seed)
    members = {k: [i for i in rng.permutation(n) if keys[i] == k] for k in strata}
    sizes = np.array([len(members[k]) for k in strata])
    tr = _largest_remainder(sizes, n_train)
    va = _largest_remainder(sizes - tr, n_val)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for k, a, b in zip(strata, tr, va, strict=True):
        m = members[k]
        parts["train"] += m[:a]
        parts["val"] += m[a : a + b]
        parts["test"] += m[a + b :]
    return {k: [cases[i] for i in sorted(v)] for k, v in parts.items()}


ADAPTERS = {
    "msd_spleen": msd_spleen,
    "ut_endomri_d2": ut_endomri_d2,
    "ut_endomri_d1": ut_endomri_d1,
    "mmotu": mmotu,
    "uw_madison_gi": uw_madison_gi,
    "microsegnet": microsegnet,
    "generic": generic_folder,
    "us_primary": us_primary,
}


def detect_adapter(root: str | Path) -> str:
    """The name of the first adapter that finds cases in ``root`` (published layouts first, then the
    generic ``images/`` + ``masks/`` layout); InputError with a sentence when none does."""
    from ..io.errors import InputError

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"The folder '{root}' does not exist on the server.")
    for name in ("msd_spleen", "ut_endomri_d2", "ut_endomri_d1", "mmotu", "uw_madison_gi", "microsegnet", "generic"):
        try:
            if ADAPTERS[name](root):
                return name
        except Exception:  # noqa: BLE001 - a layout that does not match is the expected case
            continue
    raise InputError(
        f"No supported dataset layout was found in '{root.name}': use a published layout (MSD, "
        "UT-EndoMRI, MMOTU, UW-Madison GI, MicroSegNet) or images/ + masks/ with matching file names."
    )
