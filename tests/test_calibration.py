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
