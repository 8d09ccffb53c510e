"""Failure-mode tags (one synthetic case per tag), cohort runs, Table 1 and the gallery helpers."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from medseg_core import analysis as A
from medseg_core import cohort as C
from medseg_core.io import Volume

SP = (1.0, 1.0)  # in-plane mm


def disk(cy, cx, r, shape=(96, 96)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def tags(pred, ref, **kw):
    return A.tag_masks(pred, ref, SP, **kw)


# Geometry: the identity affine, so array column x grows towards the patient's right; columns < 48
# are the patient's left. The labelled ovary sits on the left, the other one on the right.
LEFT, RIGHT = disk(48, 24, 8), disk(48, 72, 8)
CONTRA = np.zeros((96, 96), bool)
CONTRA[:, 48:] = True


def test_good_missed_and_false_positive():
    assert tags(LEFT, LEFT)["tags"] == ["good"]
    t = tags(np.zeros_like(LEFT), LEFT)
    assert t["primary"] == "missed" and t["dice"] == 0.0
    t = tags(LEFT, np.zeros_like(LEFT))
    assert t["tags"] == ["false_positive_empty"] and t["primary"] == "false_positive_empty"
    both_empty = tags(np.zeros_like(LEFT), np.zeros_like(LEFT))
    assert both_empty["tags"] == ["good"] and math.isnan(both_empty["dice"])


def test_under_and_over_segmentation_and_threshold_is_a_parameter():
    big, small = disk(48, 24, 10), disk(48, 24, 4)
    t = tags(small, big)
    assert t["primary"] == "under_segmentation" and t["dice"] < 0.5
    t = tags(big, small)
    assert t["primary"] == "over_segmentation"
    assert tags(small, big, rules=A.TagRules(good_dice=0.2))["primary"] == "good"


def test_side_swap_with_the_second_ovary_mask_and_with_the_mirrored_side():
    t = tags(RIGHT, LEFT, other=RIGHT)
    assert t["primary"] == "side_swap" and t["frac_on_other"] == 1.0 and t["side_rule"] == "other_mask"
    assert "under_segmentation" not in t["tags"] and "over_segmentation" not in t["tags"]
    t = tags(RIGHT, LEFT, contralateral=CONTRA)
    assert t["primary"] == "side_swap" and t["side_rule"] == "mirrored_side"
    # on a slice without the labelled ovary, a prediction on the other ovary is both
    t = tags(RIGHT, np.zeros_like(LEFT), other=RIGHT)
    assert t["tags"][:2] == ["side_swap", "false_positive_empty"]
    # a prediction on the correct side is no swap even when the other mask is known
    assert "side_swap" not in tags(LEFT, LEFT, other=RIGHT)["tags"]
    # half of the prediction on the other ovary, the labelled one found: double, not swap
    assert tags(LEFT | RIGHT, LEFT, other=RIGHT)["primary"] == "double_ovary"


def test_double_ovary_and_fragmented():
    t = tags(LEFT | RIGHT, LEFT, other=RIGHT)
    assert t["primary"] == "double_ovary" and t["n_components"] == 2
    assert "fragmented" not in t["tags"]  # two components are explained by the two ovaries
    assert tags(LEFT | RIGHT, LEFT, contralateral=CONTRA)["primary"] == "double_ovary"
    speck = disk(10, 30, 2)  # 13 px = 13 mm^2 >= the 4 mm^2 floor
    assert "fragmented" in tags(LEFT | RIGHT | speck, LEFT, other=RIGHT)["tags"]
    t = tags(LEFT | disk(48, 40, 3), LEFT)
    assert t["n_components"] == 2 and "fragmented" in t["tags"] and t["primary"] != "good"
    tiny = np.zeros_like(LEFT)
    tiny[5, 5] = True  # 1 mm^2: below the floor, not a fragment
    assert tags(LEFT | tiny, LEFT)["n_components"] == 1


def test_postprocessing_helped_and_hurt():
    blob = disk(80, 30, 5)
    t = tags(LEFT, LEFT, before=LEFT | blob)
    assert "postprocessing_helped" in t["tags"] and t["primary"] == "good" and t["delta_pp"] > 0.1
    decoy = disk(20, 30, 10)  # larger: a largest-component step keeps it and drops the true one
    t = tags(decoy, LEFT, before=LEFT | decoy)
    assert "postprocessing_hurt" in t["tags"] and t["delta_pp"] < -0.1
    assert not {"postprocessing_helped", "postprocessing_hurt"} & set(tags(LEFT, LEFT, before=LEFT)["tags"])


def test_boundary_error_good_overlap_large_hd95():
    ref = disk(48, 40, 20)
    spur = np.zeros_like(ref)
    spur[47:50, 60:94] = True
    t = tags(ref | spur, ref)
    assert t["dice"] >= 0.9 and t["hd95_mm"] > 10 and t["primary"] == "boundary_error"
    # the same spur is harmless on 0.2 mm pixels
    assert A.tag_masks(ref | spur, ref, (0.2, 0.2))["primary"] == "good"


def test_tag_slices_and_case_on_a_volume():
    ref = np.zeros((4, 96, 96), bool)
    other = np.zeros_like(ref)
    ref[1], ref[2] = LEFT, LEFT
    other[1:3] = RIGHT
    pred = np.zeros_like(ref)
    pred[1] = LEFT  # good
    pred[2] = RIGHT  # swap
    pred[3] = disk(48, 24, 5)  # nothing there
    vol = Volume(np.zeros((4, 96, 96), np.float32), (3.0, 1.0, 1.0), np.diag([1.0, 1.0, 3.0, 1.0]), modality="MR")
    rows = A.tag_slices(pred, ref, vol, other=other)
    assert [r["primary"] for r in rows] == ["good", "good", "side_swap", "false_positive_empty"]
    # without the second-ovary mask the mirrored side (from the reference's centroid: left) is used
    rows = A.tag_slices(pred, ref, vol)
    assert rows[2]["primary"] == "side_swap" and rows[2]["side_rule"] == "mirrored_side"
    case = A.tag_case(pred, ref, vol, other=other)
    assert case["primary"] == "double_ovary"  # in 3D the case hits both ovaries
    assert A.tag_counts(rows)["side_swap"] == 1


def test_uncertainty_auroc_by_hand():
    rows = [
        {"primary": p, "uncertainty": u, "ref_present": True, "pred_present": True}
        for p, u in [("good", 0.1), ("good", 0.2), ("missed", 0.3), ("good", 0.4), ("side_swap", 0.5)]
    ]
    rows.append({"primary": "good", "uncertainty": 0.9, "ref_present": False, "pred_present": False})  # left out
    r = A.uncertainty_auroc(rows)
    # failed scores {0.3, 0.5} vs good {0.1, 0.2, 0.4}: 5 of 6 pairs ordered correctly
    assert r["n_failed"] == 2 and r["n_good"] == 3 and r["auroc"] == pytest.approx(5 / 6)
    assert math.isnan(A.uncertainty_auroc(rows[:2])["auroc"])


def _row(model, s, case, z, dice, ref=True):
    return {"model": model, "set": s, "case": case, "slice": z, "dice": dice, "ref_present": ref, "primary": "good"}


def test_paired_deltas_compare_and_table1_by_hand():
    rows = []
    for z, (a, b) in enumerate([(0.2, 0.5), (0.4, 0.4), (0.1, 0.6), (0.3, 0.2)]):
        rows += [_row("m", "orig", "c1", z, a), _row("m", "masked", "c1", z, b)]
    rows += [_row("m", "orig", "c1", 9, float("nan"), ref=False), _row("m", "masked", "c1", 9, float("nan"), ref=False)]
    d = C.paired_deltas(rows, "m", "orig", "masked")
    assert [round(r["delta"], 6) for r in d] == [0.3, 0.0, 0.5, -0.1]
    c = C.compare_sets(rows, "m", "orig", "masked")
    assert c["n_slices"] == 4 and c["better"] == 2 and c["worse"] == 1 and c["same"] == 1
    assert c["mean_delta"] == pytest.approx(0.175) and math.isnan(c["wilcoxon_p"])  # < 5 non-zero pairs
    t = C.table1(rows, ["m"])
    assert t[0]["dice_orig"] == pytest.approx(0.25) and t[0]["dice_masked"] == pytest.approx(0.425)
    assert "| m | 0.250 | 0.425 | +0.175 | 4 |" in C.table1_markdown(t)


def test_parse_set():
    from medseg_core.options import predict_options

    name, kw = C.parse_set("pp:postprocessing=[largest_2d, raovseg],threshold=0.3")
    assert name == "pp" and kw == {"postprocessing": ["largest_2d", "raovseg"], "threshold": 0.3}
    assert predict_options(kw).postprocessing == ("largest_2d", "raovseg")
    # a single name is one step, not a tuple of characters (the bug of the old parsers)
    assert predict_options(C.parse_set("pp:postprocessing=largest_2d")[1]).postprocessing == ("largest_2d",)
    assert C.parse_set("masked:side_masking=oracle") == ("masked", {"side_masking": "oracle"})


@pytest.fixture(scope="module")
def pelvic_run(pelvic_cohort):
    return C.load_run(pelvic_cohort)


def test_cohort_run_finds_side_swaps_and_double_ovaries(pelvic_run):
    r = pelvic_run
    assert {p.name for p in r.path.iterdir()} >= {
        "cohort.json",
        "slices.csv",
        "cases.csv",
        "comparisons.csv",
        "table1.csv",
        "table1.md",
        "masks",
    }
    assert len(r.slices) == 3 * 3 * 24 and len(r.cases) == 9
    counts = A.tag_counts(C.filter_slices(r.slices, sets=["orig"]))
    assert counts["side_swap"] > 0 and counts["double_ovary"] > 0, counts
    # oracle masking removes the contralateral half: no double-ovary slice is left
    assert A.tag_counts(C.filter_slices(r.slices, sets=["masked"]))["double_ovary"] == 0
    t1 = C.read_rows(r.path / "table1.csv")[0]
    assert t1["model"] == "ovary_unet" and t1["n_slices"] > 0
    assert t1["delta_dice"] == pytest.approx(t1["dice_masked"] - t1["dice_orig"])
    # the stored masks are the predicted ones: the slice areas agree with them
    row = next(x for x in r.slices if x["set"] == "orig" and x["pred_present"])
    mask, _ = r.masks("ovary_unet", "orig", row["case"])
    case = r.dataset_cases()[row["case"]]
    vol, _ = case.load()
    assert mask[row["slice"]].sum() * vol.spacing[1] * vol.spacing[2] == pytest.approx(row["pred_area_mm2"])
    u = A.uncertainty_auroc(r.slices)
    assert 0.0 <= u["auroc"] <= 1.0 and u["n_failed"] > 0 and u["n_good"] > 0


def test_gallery_thumbnail_and_story_sheet(pelvic_run):
    from PIL import Image

    r = pelvic_run
    row = next(x for x in r.slices if "side_swap" in x["tags"])
    vol, masks = r.dataset_cases()[row["case"]].load()
    mask, before = r.masks(row["model"], row["set"], row["case"])
    z = row["slice"]
    th = C.thumbnail(vol, z, mask[z], masks["ovary"][z], masks["ovary_other"][z], before[z] & ~mask[z], size=160)
    assert th.dtype == np.uint8 and max(th.shape[:2]) == 160
    # prediction colour present where the swap is
    assert (np.abs(th.astype(int) - C.GALLERY_COLOURS["other ovary"]).sum(-1) < 10).any()
    png = C.story_png([(th, C.caption(row))] * 4, title="Side swaps", columns=2)
    im = Image.open(io.BytesIO(png))
    assert im.size[0] >= 2 * 160 and im.size[1] > 2 * 160
    with pytest.raises(ValueError):
        C.story_png([])
