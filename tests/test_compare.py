"""Issue 18 item 1 (library): two results side by side, with hand-counted numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg_core import compare as K


def _ab():
    a = np.zeros((3, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[0, 0:4, 0:4] = 1  # 16 px
    b[0, 0:4, 0:2] = 1  # 8 px, inside a
    a[1, 5:7, 5:7] = 1  # 4 px, b empty on slice 1
    return a, b  # slice 2: both empty


def test_disagreement_map_codes():
    a, b = _ab()
    d = K.disagreement_map(a, b)
    assert (d == K.AGREE_FOREGROUND).sum() == 8 and (d == K.ONLY_A).sum() == 8 + 4 and (d == K.ONLY_B).sum() == 0
    assert (d == K.AGREE_BACKGROUND).sum() == a.size - 20
    with pytest.raises(ValueError, match="different shapes"):
        K.disagreement_map(a, b[:2])


def test_per_slice_curve_and_the_slices_to_look_at_first():
    a, b = _ab()
    s = K.per_slice_disagreement(a, b, (5.0, 0.5, 2.0))  # 1 mm^2 pixels
    assert s["disagree_mm2"].tolist() == [8.0, 4.0, 0.0]
    assert s["only_a_mm2"].tolist() == [8.0, 4.0, 0.0] and s["only_b_mm2"].tolist() == [0.0, 0.0, 0.0]
    assert s["dice"][0] == pytest.approx(2 * 8 / 24) and s["dice"][1] == 0.0 and math.isnan(s["dice"][2])
    assert K.most_disagreeing(a, b, (5.0, 0.5, 2.0)) == [0, 1]
    assert K.most_disagreeing(a, b, (5.0, 0.5, 2.0), k=1) == [0]


def test_comparison_table_against_reference_and_each_other():
    a, b = _ab()
    rows = K.comparison_table(a, b, (1.0, 1.0, 1.0), ref=a, name_a="U-Net", name_b="Attention U-Net")
    assert [r["Comparison"] for r in rows] == [
        "U-Net vs reference",
        "Attention U-Net vs reference",
        "U-Net vs Attention U-Net",
    ]
    assert rows[0]["Dice"] == 1.0 and rows[1]["Dice"] == pytest.approx(2 * 8 / 28)
    assert rows[2]["Volume, first named (mL)"] == pytest.approx(20 / 1000)
