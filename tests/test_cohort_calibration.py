"""Issue 18 item 4: cohort-level calibration per model and option set (calibration.json of a cohort
run, its reader, and the failure gallery's Calibration tab), checked against numbers computed
independently from predict() and the references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg_core import calibration as CAL
from medseg_core import cohort as C
from medseg_core.data import datasets as D
from medseg_core.data.make_synthetic import ensure_synthetic
from medseg_core.inference import Prediction
from medseg_core.results import Classification

ROOT = Path(__file__).resolve().parents[1]


def test_case_level_pairs_and_voxel_bins_merge_to_the_one_pass_reliability():
    """prediction_bins / cohort_entries on hand-made predictions: voxel bins summed over cases equal
    reliability() over the concatenation; p(malignant) against the case labels gives the case-level
    diagram; a prediction without probabilities (a folder of masks) gives no evidence."""
    rng = np.random.default_rng(3)
    evidence, ps, ys, near_p, near_y = [], [], [], [], []
    labels = [1, 0, 1]
    for k in range(3):
        p = rng.random((4, 20, 20)).astype(np.float32) ** 3
        ref = (rng.random(p.shape) < p).astype(np.uint8)
        mask = (p >= 0.5).astype(np.uint8)
        pred = Prediction.from_maps("m", p.shape, (1.0, 1.0, 1.0), np.eye(4), {"ovary": p}, {"ovary": mask})
        pred.classification = Classification(np.array([0.2 + 0.3 * k, 0.8 - 0.3 * k], np.float32))
        ev = CAL.prediction_bins(pred, {"ovary": ref}, margin=1)
        assert ev is not None and ev["temperature"] is None
        ev["malignant"] = labels[k]
        evidence.append(("m", "orig", ev))
        ps.append(p.ravel())
        ys.append(ref.ravel())
        box = CAL.near_region(mask, ref, margin=1)
        near_p.append(p[box].ravel())
        near_y.append(ref[box].ravel())
    doc = CAL.cohort_entries(evidence + [("folder", "as_delivered", None)], margin=1)
    assert [(e["model"], e["set"]) for e in doc["entries"]] == [("m", "orig")]  # the folder has no probabilities
    e = doc["entries"][0]
    assert e["n_cases"] == 3 and e["temperatures"] == [None]
    want_all = CAL.reliability(np.concatenate(ps), np.concatenate(ys))
    want_near = CAL.reliability(np.concatenate(near_p), np.concatenate(near_y))
    assert e["regions"]["all"]["counts"] == want_all.counts.tolist() and e["regions"]["all"]["n"] == 3 * 1600
    assert e["regions"]["all"]["ece"] == pytest.approx(want_all.ece, rel=1e-9)
    assert e["regions"]["near"]["ece"] == pytest.approx(want_near.ece, rel=1e-9)
    # p(malignant) 0.8, 0.5, 0.2 against labels 1, 0, 1: three bins, gaps 0.2, 0.5, 0.8 -> ECE 0.5, MCE 0.8
    assert e["regions"]["cases"]["n"] == 3
    assert e["regions"]["cases"]["ece"] == pytest.approx((0.2 + 0.5 + 0.8) / 3, abs=1e-6)
    assert e["regions"]["cases"]["mce"] == pytest.approx(0.8, abs=1e-6)
    no_probs = Prediction.from_maps(
        "f", (1, 2, 2), (1.0, 1.0, 1.0), np.eye(4), {}, {"ovary": np.ones((1, 2, 2), np.uint8)}
    )
    assert CAL.prediction_bins(no_probs, {"ovary": np.ones((1, 2, 2), np.uint8)}) is None


@pytest.fixture(scope="module")
def calib_run(tmp_path_factory) -> tuple[Path, list, Path]:
    """The shipped ovary U-Net, one option set, on 3 synthetic pelvic cases (no MC dropout)."""
    from medseg_core.checkpoints import checkpoint_status

    if checkpoint_status("ovary_unet") != "ok":
        pytest.skip("ovary_unet checkpoint not shipped")
    root = tmp_path_factory.mktemp("pelvic_cal")
    ensure_synthetic(root, {"kind": "pelvic", "n": 3, "seed": 13})
    cases = D.ut_endomri_d2(root)
    out = tmp_path_factory.mktemp("runs") / "cal_run"
    C.run_cohort(cases, ["ovary_unet"], {"orig": {}}, out, dataset={"adapter": "ut_endomri_d2", "root": str(root)})
    return out, cases, root


def test_cohort_ece_equals_reliability_of_the_concatenated_predictions_and_resume_gives_the_same_file(
    calib_run, tmp_path
):
    from medseg_core.checkpoints import load_model
    from medseg_core.inference import PredictOptions, predict

    out, cases, root = calib_run
    lm = load_model("ovary_unet")
    ps, ys, near_p, near_y = [], [], [], []
    for case in cases:  # independently of the cohort code: predict() and the dataset's ovary masks
        vol, masks = case.load()
        pred = predict(lm, vol, PredictOptions(seed=0))
        ref = np.asarray(masks["ovary"]) > 0
        ps.append(pred.probability.ravel())
        ys.append(ref.ravel())
        box = CAL.near_region(pred.mask, ref)
        near_p.append(pred.probability[box].ravel())
        near_y.append(ref[box].ravel())
    cal = CAL.cohort_calibration(out)
    assert cal is not None and cal.pairs() == [("ovary_unet", "orig")]
    assert cal.n_cases[("ovary_unet", "orig")] == 3 and cal.temperatures[("ovary_unet", "orig")] == [None]
    assert cal.regions("ovary_unet", "orig") == ["all", "near"]  # no p(malignant) head
    for region, (p, y) in {"all": (ps, ys), "near": (near_p, near_y)}.items():
        want = CAL.reliability(np.concatenate(p), np.concatenate(y))  # the near boxes are cut above
        got = CAL.cohort_reliability(out)[("ovary_unet", "orig", region)]
        assert got.counts.tolist() == want.counts.tolist() and got.n == want.n
        assert got.ece == pytest.approx(want.ece, rel=1e-9) and got.mce == pytest.approx(want.mce, rel=1e-9)
        assert got.region == region
    assert cal.reliability[("ovary_unet", "orig", "all")].n == sum(p.size for p in ps) == 3 * 24 * 256 * 256
    # resume: an interrupted run (stopped after 2 cases) finished later writes the same file
    first = (out / "calibration.json").read_text()

    class Stop(Exception):
        pass

    def stop_after_two(done, total, message):
        if done == 2:
            raise Stop

    part = tmp_path / "resumed"
    kw = {"dataset": {"adapter": "ut_endomri_d2", "root": str(root)}}
    with pytest.raises(Stop):
        C.run_cohort(cases, ["ovary_unet"], {"orig": {}}, part, progress=stop_after_two, **kw)
    assert not (part / "calibration.json").exists()
    C.run_cohort(cases, ["ovary_unet"], {"orig": {}}, part, **kw)
    assert (part / "calibration.json").read_text() == first
    assert json.loads(first)["entries"][0]["regions"]["near"]["n"] == want.n


def test_a_run_made_before_cohort_calibration_still_loads(calib_run, tmp_path):
    import shutil

    out, _, _ = calib_run
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    (old / "calibration.json").unlink()
    assert CAL.cohort_calibration(old) is None and CAL.cohort_reliability(old) == {}
    assert len(C.load_run(old).slices) > 0


def test_gallery_calibration_tab_shows_the_librarys_ece(calib_run, monkeypatch, tmp_path):
    import shutil

    from streamlit.testing.v1 import AppTest

    out, _, _ = calib_run
    monkeypatch.setenv("MEDSEG_RUNS", str(out.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    want = CAL.cohort_reliability(out)[("ovary_unet", "orig", "near")]
    assert shown["Expected calibration error"] == f"{want.ece:.3f}"
    assert shown["Maximum calibration error"] == f"{want.mce:.3f}"
    assert shown["Voxels"] == f"{want.n:,}"
    assert any("the model's own probabilities" in c.value for c in at.caption)
    at.radio(key="gal_cal_region").set_value("all").run()
    shown = {m.label: m.value for m in at.metric}
    every = CAL.cohort_reliability(out)[("ovary_unet", "orig", "all")]
    assert shown["Expected calibration error"] == f"{every.ece:.3f}" and shown["Voxels"] == f"{every.n:,}"
    # a run made before cohort calibration: one sentence instead of the diagram
    old = tmp_path / "runs" / "old_run"
    shutil.copytree(out, old)
    (old / "calibration.json").unlink()
    monkeypatch.setenv("MEDSEG_RUNS", str(old.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception, at.exception
    assert any("made before cohort calibration" in i.value for i in at.info)
