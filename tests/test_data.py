"""Synthetic phantoms, dataset adapters in their published layouts, samples, splits."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg_core.data import datasets as ds
from medseg_core.data import synthetic as syn
from medseg_core.data.make_synthetic import WRITERS, write_us
from medseg_core.io import display_slice, load_volume
from medseg_core.samples import list_samples


# ------------------------------------------------------------------ determinism and geometry
@pytest.mark.parametrize("kind", sorted(syn.GENERATORS))
def test_generators_deterministic(kind):
    gen = syn.GENERATORS[kind]
    a, b, c = gen(7), gen(7), gen(8)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
        assert a.masks[k].dtype == np.uint8 and a.masks[k].shape == a.volume.shape
    assert not np.array_equal(a.volume.array, c.volume.array)
    assert a.masks[a.meta["primary_label"]].any()


def test_pelvic_geometry_and_one_labelled_ovary():
    sides = set()
    for seed in range(8):
        c = syn.pelvic_mri(seed)
        v = c.volume
        assert v.shape == (24, 256, 256) and v.spacing == (6.0, 0.7, 0.7) and v.modality == "MR"
        assert v.orientation == "RAS"
        assert 0 <= v.array.min() and 300 < np.percentile(v.array, 99.9) < 1500
        ov, other = c.masks["ovary"], c.masks["ovary_other"]
        assert ov.any() and other.any() and not (ov & other).any()
        # the labelled side is anatomical: RAS +x is the patient's right
        zyx = np.argwhere(ov).mean(0)
        x_world = v.index_to_world(*zyx)[0]
        side = c.meta["labelled_side"]
        assert (x_world > 0) == (side == "right")
        assert (v.index_to_world(*np.argwhere(other).mean(0))[0] > 0) == (side == "left")
        sides.add(side)
        # the ovaries span several 6 mm slices, and follicles make them brighter than stroma in places
        assert 3 <= len(np.unique(np.nonzero(ov)[0])) <= 8
        assert np.percentile(v.array[ov > 0], 98) > 1.5 * np.median(v.array[ov > 0])
    assert sides == {"left", "right"}


def test_pelvic_low_ovary_contrast():
    c = syn.pelvic_mri(3)
    a = c.volume.array
    stroma = np.median(a[c.masks["ovary"] > 0])
    uterus = np.median(a[c.masks["uterus"] > 0])
    bladder = np.median(a[c.masks["bladder"] > 0])
    assert bladder > 1.8 * stroma  # fluid is bright on T2FS
    assert abs(stroma - uterus) / uterus < 0.35  # the ovary barely stands out from soft tissue


def test_ct_in_hounsfield_and_spleen_varies():
    vols = []
    for seed in range(5):
        c = syn.abdominal_ct(seed)
        v = c.volume
        assert v.shape == (64, 128, 128) and v.spacing == (2.5, 1.5, 1.5) and v.modality == "CT"
        assert v.array.min() >= -1024 and v.array.max() <= 3071
        assert np.median(v.array[0, :3, :3]) < -900  # air outside the body
        spleen = v.array[c.masks["spleen"] > 0]
        assert 90 < np.median(spleen) < 140
        x = v.index_to_world(*np.argwhere(c.masks["spleen"]).mean(0))[0]
        assert x < 0  # patient's left
        vols.append(c.meta["spleen_volume_ml"])
        assert c.meta["spleen_volume_ml"] == pytest.approx(c.masks["spleen"].sum() * 2.5 * 1.5 * 1.5 / 1000)
    assert max(vols) > 1.4 * min(vols)
    assert syn.abdominal_ct(0, shape=(32, 64, 96), spacing=(3, 2, 2)).volume.shape == (32, 64, 96)


def test_ultrasound_lesion_morphology_and_fan():
    from skimage.measure import regionprops

    sol = {0: [], 1: []}
    for seed in range(10):
        for mal in (False, True):
            c = syn.ultrasound(seed, malignant=mal)
            m = display_slice(c.masks["lesion"], "axial", 0)
            sol[int(mal)].append(regionprops(m.astype(int))[0].solidity)
            pic = display_slice(c.volume.array, "axial", 0)
            assert pic[0, 0] == 0 and pic[0, -1] == 0  # outside the fan is black
            # the lesion interior is darker than the tissue around it (anechoic fluid)
            assert np.median(pic[m > 0]) < np.median(pic[(m == 0) & (pic > 0)])
    assert min(sol[0]) > 0.97
    assert np.mean(sol[1]) < np.mean(sol[0]) - 0.03


def test_ultrasound_clinical_relation_follows_report_001():
    counts = {}
    for seed in range(600):
        c = syn.ultrasound(seed, shape=(48, 64))
        key = (c.meta["clinical"]["menopausal"], c.meta["clinical"]["oncology_center"])
        counts.setdefault(key, []).append(c.meta["malignant"])
    rate = {k: np.mean(v) for k, v in counts.items()}
    assert rate[(1, 0)] > rate[(0, 0)] + 0.15  # non-oncology: menopause matters
    assert abs(rate[(1, 1)] - rate[(0, 1)]) < 0.15  # oncology centre: roughly independent
    assert syn.malignancy_probability(1, 0) > syn.malignancy_probability(0, 0)


def test_ultrasound_annotations_burned_in():
    c = syn.ultrasound(4, annotate=True)
    rgb = c.meta["annotated_rgb"]
    clean = display_slice(c.meta["clean"], "axial", 0)
    changed = np.any(rgb != clean[..., None], axis=-1)
    assert 30 < changed.sum() < 0.05 * changed.size
    assert c.meta["annotations"]["text"] in syn.ANNOTATION_TEXTS
    assert list(rgb[changed][0]) in [list(col) for col in syn.ANNOTATION_COLOURS] or rgb[changed].max() > 200


def test_microus_disagreement_near_bladder_border():
    for seed in range(5):
        c = syn.microus_prostate(seed)
        e = display_slice(c.masks["expert"], "axial", 0)
        n = display_slice(c.masks["non_expert"], "axial", 0)
        diff = np.argwhere(e != n)
        assert len(diff) > 50
        rows = np.argwhere(e)[:, 0]
        centre_row = rows.mean()
        assert (diff[:, 0] < centre_row).all()  # only the bladder (upper) side disagrees
        assert c.volume.spacing[1] == pytest.approx(0.033586)


def test_gi_three_overlapping_labels():
    overlaps = 0
    for seed in range(10):
        c = syn.gi_mri(seed)
        assert set(c.masks) == set(syn.GI_LABELS)
        assert c.volume.array.max() > 255  # 16-bit range
        overlaps += int((c.masks["small_bowel"] & c.masks["large_bowel"]).any())
    assert overlaps >= 3


# ------------------------------------------------------------------ make_synthetic -> adapters
def test_pelvic_dataset_round_trip(tmp_path):
    WRITERS["pelvic"](tmp_path, 3, seed=1)
    cases = ds.ut_endomri_d2(tmp_path)
    assert [c.patient_id for c in cases] == ["D2-000", "D2-001", "D2-002"]
    meta = json.loads((tmp_path / "synthetic_meta.json").read_text())
    vol, masks = cases[1].load()
    ref = syn.pelvic_mri(meta["D2-001"]["seed"])
    np.testing.assert_array_equal(vol.array, np.rint(ref.volume.array))
    np.testing.assert_array_equal(masks["ovary"], ref.masks["ovary"])
    np.testing.assert_array_equal(masks["ovary_other"], ref.masks["ovary_other"])
    assert vol.spacing == pytest.approx((6.0, 0.7, 0.7))


def test_ct_dataset_round_trip(tmp_path):
    WRITERS["ct"](tmp_path, 2)
    cases = ds.msd_spleen(tmp_path)
    assert [c.case_id for c in cases] == ["spleen_0", "spleen_1"]
    vol, masks = cases[0].load()
    ref = syn.abdominal_ct(0)
    np.testing.assert_array_equal(vol.array, ref.volume.array)
    np.testing.assert_array_equal(masks["spleen"], ref.masks["spleen"])
    assert vol.modality == "CT"


def test_us_dataset_round_trip(tmp_path):
    write_us(tmp_path, 6, seed=2, annotate=True)
    cases = ds.mmotu(tmp_path)
    assert len(cases) == 6
    for c in cases:
        assert {"menopausal", "oncology_center", "malignant", "class_name"} <= set(c.extra)
        assert c.extra["malignant"] == int(c.extra["class_id"] == 7)
    vol, masks = cases[0].load()
    assert vol.is_2d and vol.modality == "US" and masks["lesion"].any()
    ref = syn.ultrasound(int(2 * 100000 + int(cases[0].case_id) - 1), annotate=True)
    inter = (masks["lesion"] & ref.masks["lesion"]).sum()
    assert inter / ref.masks["lesion"].sum() > 0.99
    assert (tmp_path / "clean" / f"{cases[0].case_id}.PNG").exists()


def test_microus_dataset_round_trip(tmp_path):
    WRITERS["microus"](tmp_path, 2)
    cases = ds.microsegnet(tmp_path)
    assert [c.patient_id for c in cases] == ["01", "02"]
    vol, masks = cases[0].load()
    assert vol.shape == (4, 224, 224)
    assert set(masks) == {"expert", "non_expert"} and (masks["expert"] != masks["non_expert"]).any()


def test_gi_dataset_round_trip(tmp_path):
    WRITERS["gi"](tmp_path, 5)
    cases = ds.uw_madison_gi(tmp_path)
    assert len(cases) == 5 and {c.patient_id for c in cases} == {"case1", "case2"}
    vol, masks = cases[0].load()
    ref = syn.gi_mri(0)
    for k in syn.GI_LABELS:
        np.testing.assert_array_equal(masks[k], ref.masks[k])
    np.testing.assert_array_equal(vol.array, np.rint(ref.volume.array))
    assert vol.spacing[1:] == (1.5, 1.5)


# ------------------------------------------------------------------ hand-built published layouts
def _nii(path, shape=(4, 4, 2), value=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.uint8), np.eye(4)), path)


def test_d2_raovseg_rule(tmp_path):
    b = tmp_path / "D2_TCPW"
    for sid, extra in (("D2-000", []), ("D2-001", ["_cy"]), ("D2-002", ["_em"]), ("D2-003", []), ("D2-004", ["_ut"])):
        _nii(b / sid / f"{sid}_T2FS.nii.gz")
        if sid != "D2-003":
            _nii(b / sid / f"{sid}_ov.nii.gz")
        for e in extra:
            _nii(b / sid / f"{sid}{e}.nii.gz")
    assert [c.case_id for c in ds.ut_endomri_d2(tmp_path)] == ["D2-000", "D2-004"]
    assert [c.case_id for c in ds.ut_endomri_d2(tmp_path, apply_raovseg_rule=False)] == [
        "D2-000",
        "D2-001",
        "D2-002",
        "D2-004",
    ]
    assert "uterus" in ds.ut_endomri_d2(tmp_path)[1].masks


def test_d1_multi_rater(tmp_path):
    b = tmp_path / "D1_MHS" / "D1-000"
    _nii(b / "D1-000_T2FS.nii.gz")
    for r in (1, 2, 3):
        _nii(b / f"D1-000_ov_r{r}.nii.gz")
    cases = ds.ut_endomri_d1(tmp_path)
    assert list(cases[0].masks) == ["ovary_r1", "ovary_r2", "ovary_r3"]


def test_mmotu_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for i in (1, 2):  # classes 0 and 7, written to the split files below
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "images" / f"{i}.JPG")
        ann = np.zeros((8, 8, 3), np.uint8)
        ann[2:5, 2:5] = (128, 0, 64)  # colour masks, binarised with > 0
        Image.fromarray(ann).save(tmp_path / "annotations" / f"{i}.PNG")
    (tmp_path / "train_cls.txt").write_text("1.JPG 0\n")
    (tmp_path / "val_cls.txt").write_text("2.JPG 7\n")
    cases = ds.mmotu(tmp_path)
    assert [(c.extra["class_name"], c.extra["malignant"], c.extra["split"]) for c in cases] == [
        ("chocolate cyst", 0, "train"),
        ("high-grade serous", 1, "val"),
    ]
    _, masks = cases[0].load()
    assert masks["lesion"].sum() == 9
    assert len(ds.mmotu(tmp_path, split="val")) == 1
    assert len(ds.MMOTU_CLASSES) == 8


def test_rle_decode_encode():
    m = ds.rle_decode("1 3 10 2", (4, 4))
    assert m.ravel().nonzero()[0].tolist() == [0, 1, 2, 9, 10]
    assert ds.rle_encode(m) == "1 3 10 2"
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = (rng.random((13, 17)) > 0.6).astype(np.uint8)
        np.testing.assert_array_equal(ds.rle_decode(ds.rle_encode(x), x.shape), x)
    assert ds.rle_encode(np.zeros((3, 3))) == "" and not ds.rle_decode("", (3, 3)).any()


def test_generic_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("p1__a", "p1__b", "p2__a"):
        Image.fromarray(np.full((6, 6), 100, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(np.eye(6, dtype=np.uint8) * 255).save(tmp_path / "masks" / f"{name}.png")
    cases = ds.generic_folder(tmp_path)
    assert [c.patient_id for c in cases] == ["p1", "p1", "p2"]
    _, masks = cases[0].load()
    assert masks["mask"].sum() == 6


def test_patient_split_no_leak_and_seeded():
    cases = [ds.Case(f"c{i}", f"p{i // 3}", None) for i in range(60)]
    a = ds.patient_split(cases, seed=3)
    b = ds.patient_split(cases, seed=3)
    assert [c.case_id for c in a["val"]] == [c.case_id for c in b["val"]]
    pats = {k: {c.patient_id for c in v} for k, v in a.items()}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert sum(len(v) for v in a.values()) == 60 and all(a.values())
    assert ds.patient_split(cases, seed=4)["val"] != a["val"]


# ------------------------------------------------------------------ samples
def test_samples_load_with_ground_truth():
    samples = list_samples()
    assert {s.family for s in samples} >= {"ovary", "spleen", "ultrasound", "prostate", "gi"}
    for s in samples:
        vol, mask, extras = s.load()
        assert vol.array.size and s.description
        if mask is not None:
            assert mask.shape == vol.shape and mask.any()
        for m in extras.values():
            assert m.shape == vol.shape
    pelvic = next(s for s in samples if s.key == "pelvic")
    v = load_volume(pelvic.image)
    assert v.shape == (24, 256, 256) and v.spacing == pytest.approx((6.0, 0.7, 0.7))
