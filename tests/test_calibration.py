"""Issue 18 item 4: reliability diagrams, ECE and temperature scaling with real numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg_core import calibration as C


def test_ece_by_hand():
    # bins of width 0.5: [0.2, 0.4] with truths [0, 1] -> conf 0.3, freq 0.5 ; [0.9, 0.7] with [1, 1] -> 0.8, 1.0
    rel = C.reliability([0.2, 0.4, 0.9, 0.7], [0, 1, 1, 1], n_bins=2)
    assert rel.counts.tolist() == [2, 2]
    assert rel.confidence.tolist() == pytest.approx([0.3, 0.8])
    assert rel.frequency.tolist() == pytest.approx([0.5, 1.0])
    assert rel.ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.2)
    assert rel.mce == pytest.approx(0.2)
    assert len(rel.rows()) == 2 and rel.rows()[0]["Observed frequency"] == pytest.approx(0.5)


def test_accumulator_over_cases_equals_one_pass_and_p_equal_1_lands_in_the_last_bin():
    rng = np.random.default_rng(0)
    a, b = rng.random(1000), rng.random(500)
    ya, yb = rng.random(1000) < a, rng.random(500) < b
    acc = C.Accumulator(10).add(a, ya).add(b, yb).result()
    one = C.reliability(np.r_[a, b], np.r_[ya, yb], n_bins=10)
    assert acc.ece == pytest.approx(one.ece) and acc.counts.tolist() == one.counts.tolist()
    assert C.reliability([1.0], [1], n_bins=4).counts.tolist() == [0, 0, 0, 1]


def test_a_calibrated_model_has_small_ece_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = rng.random(p.size) < p  # truth drawn from p: calibrated
    assert C.reliability(p, y).ece < 0.01
    sharp = C.apply_temperature(p, 0.3)  # the same ranking, overconfident
    assert C.reliability(sharp, y).ece > 0.1


def test_temperature_scaling_recovers_the_temperature_that_made_a_model_overconfident():
    rng = np.random.default_rng(2)
    p = rng.random(100_000)
    y = rng.random(p.size) < p
    over = C.apply_temperature(p, 0.4)
    t = C.fit_temperature(over, y)
    assert t == pytest.approx(1 / 0.4, rel=0.05)
    fixed = C.apply_temperature(over, t)
    assert C.nll(fixed, y) < C.nll(over, y)
    assert C.reliability(fixed, y).ece < 0.01
    # ranking and the 0.5 mask are unchanged
    assert np.array_equal(fixed >= 0.5, over >= 0.5)
    with pytest.raises(ValueError, match="both classes"):
        C.fit_temperature([0.2, 0.3], [0, 0])


def test_near_region_is_the_box_of_prediction_and_reference_grown_by_the_margin():
    ref = np.zeros((10, 50, 50), np.uint8)
    ref[4:6, 20:25, 20:25] = 1
    pred = np.zeros_like(ref)
    pred[5, 30:32, 30:32] = 1
    box = C.near_region(pred, ref, margin=2)
    assert box == (slice(2, 8), slice(18, 34), slice(18, 34))
    probs = np.where(ref > 0, 0.9, 0.01)
    near = C.reliability(probs, ref, region="near", pred=pred, margin=2)
    assert near.n == 6 * 16 * 16 and near.region == "near"
    assert C.reliability(probs, ref).n == ref.size
    fig = C.reliability_figure(near, "Spleen")
    assert "ECE" in fig.layout.title.text and "near the structure" in fig.layout.title.text
    assert math.isclose(near.ece, abs(0.9 - 1.0) * 50 / near.n + 0.01 * (near.n - 50) / near.n, rel_tol=1e-6)


def test_calibrate_a_checkpoint_writes_the_card_and_the_app_option_rescales_probabilities_not_masks(tmp_path):
    import json
    import shutil

    from medseg_core.checkpoints import find_checkpoint, load_model
    from medseg_core.data import datasets as D
    from medseg_core.data.make_synthetic import ensure_synthetic
    from medseg_core.inference import PredictOptions, predict

    src = find_checkpoint("ovary_unet")
    shutil.copy(src.weights, tmp_path / "mine.safetensors")
    shutil.copy(src.card_path, tmp_path / "mine.json")
    data = ensure_synthetic(tmp_path / "pelvic", {"kind": "pelvic", "n": 3, "seed": 21})
    cases = D.ADAPTERS["ut_endomri_d2"](data)
    ref = str(tmp_path / "mine.safetensors")
    entry = C.main(["--model", ref, "--data", str(data), "--adapter", "ut_endomri_d2", "--split", "all"])
    card = json.loads((tmp_path / "mine.json").read_text())
    assert card["recipe"]["calibration"]["temperature"] == entry["temperature"] > 0
    assert entry["evidence"] == "voxels" and entry["n_cases"] == 3 and entry["n"] > 1000
    assert entry["nll_after"] <= entry["nll_before"] + 1e-9  # the fit minimises NLL; T = 1 is a candidate
    vol, _ = cases[0].load()
    lm = load_model(ref)
    raw = predict(lm, vol, PredictOptions())
    cal = predict(lm, vol, PredictOptions(calibrated=True))
    p0, p1 = raw.probability, cal.probability
    np.testing.assert_allclose(p1, C.apply_temperature(p0, entry["temperature"]), atol=1e-5)
    assert np.array_equal(raw.mask, cal.mask) and cal.calibration == {"temperature": entry["temperature"]}
    # the shipped card has no calibration: asking for it says so instead of pretending
    plain = predict(load_model("ovary_unet"), vol, PredictOptions(calibrated=True))
    assert any("no calibration" in w for w in plain.warnings)


@pytest.mark.slow
def test_uncertainty_page_shows_the_cases_reliability_diagram_and_ece():
    from conftest import ROOT
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/uncertainty.py").run()
    at.session_state["unc_n"] = 3
    at.run()
    assert at.toggle(key="unc_calibrated").disabled  # the shipped card has no temperature
    next(b for b in at.button if b.label == "Compute uncertainty").click().run()
    assert not at.exception, at.exception
    ss = at.session_state
    pred = ss["predictions"].get(ss["unc_key"])
    want = C.reliability(pred.probability, ss["gt_mask"], region="near", pred=pred.mask)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Expected calibration error"] == f"{want.ece:.3f}"
    assert any(f"Over {want.n:,} voxels" in c.value for c in at.caption)
