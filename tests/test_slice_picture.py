"""Issue 18 item 6: one render helper (medseg_core.render.slice_picture) draws every slice picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_core import render as R
from medseg_core.io import display_slice

ROOT = Path(__file__).resolve().parents[1]


def _case():
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 30, (5, 8, 6)).astype(np.float32)
    mask = np.zeros(arr.shape, np.uint8)
    mask[2, 2:5, 1:4] = 1
    return arr, mask


def test_same_pixels_as_the_chain_it_replaces():
    arr, mask = _case()
    spacing = (3.0, 2.0, 1.0)  # z, y, x: axial rows 2 mm, columns 1 mm -> rows doubled
    for plane in ("axial", "coronal", "sagittal"):
        sp = R.slice_picture(arr, spacing, plane, 2, (120.0, 100.0), layers=[(mask, (230, 159, 0))], alpha=0.4)
        grey = R.apply_window(display_slice(arr, plane, 2), 120.0, 100.0)
        by_hand = R.overlay(grey, [(display_slice(mask, plane, 2), (230, 159, 0))], alpha=0.4)
        assert np.array_equal(sp.picture, by_hand)
        r_mm, c_mm = R.display_aspect(spacing, plane)
        assert (sp.row_mm, sp.col_mm) == (r_mm, c_mm)
        assert np.array_equal(sp.rgb, R.aspect_correct(by_hand, r_mm, c_mm))
    sp = R.slice_picture(arr, spacing, "axial", 2, (120.0, 100.0))
    assert sp.picture.shape == (8, 6, 3) and sp.rgb.shape == (16, 6, 3)  # 2 mm rows shown twice as tall
    assert sp.notice is None


def test_layers_outlines_heat_and_2d_pictures():
    arr, mask = _case()
    # alpha 1: a filled pixel is the label's colour; the outline is drawn opaque
    sp = R.slice_picture(arr, (1, 1, 1), "axial", 2, (1.0, 0.0), layers=[(mask, (10, 20, 30))], alpha=1.0)
    shown = display_slice(mask, "axial", 2).astype(bool)
    assert (sp.rgb[shown] == (10, 20, 30)).all() and (sp.rgb[~shown] == 255).all()  # level 0 width 1: all white
    # outline-only layer: 8 of the 9 pixels of a 3 x 3 square (its centre stays grey)
    sp = R.slice_picture(arr, (1, 1, 1), "axial", 2, (1.0, 0.0), outlines=[(mask, (0, 0, 255))])
    assert int((sp.rgb == (0, 0, 255)).all(-1).sum()) == 8
    # a 2D mask is taken as already displayed; index None: the array is one displayed picture
    two_d = display_slice(mask, "axial", 2)
    a = R.slice_picture(arr, (1, 1, 1), "axial", 2, (100.0, 90.0), layers=[(two_d, (1, 2, 3))])
    b = R.slice_picture(
        display_slice(arr, "axial", 2), (1, 1, 1), "axial", None, (100.0, 90.0), layers=[(two_d, (1, 2, 3))]
    )
    assert np.array_equal(a.rgb, b.rgb)
    # heat: the same pixels as heat_overlay on the windowed slice
    values = np.linspace(0, 0.69, arr.size).reshape(arr.shape)
    sp = R.slice_picture(
        arr,
        (1, 1, 1),
        "axial",
        1,
        (120.0, 100.0),
        alpha=0.6,
        heat={"values": values, "vmin": 0.0, "vmax": 0.69, "floor": 0.01},
    )
    grey = R.apply_window(display_slice(arr, "axial", 1), 120.0, 100.0)
    assert np.array_equal(
        sp.rgb, R.heat_overlay(grey, display_slice(values, "axial", 1), 0.0, 0.69, alpha=0.6, floor=0.01)
    )
    # window None: the slice's own 1-99 % window
    sp = R.slice_picture(arr, (1, 1, 1), "axial", 1)
    assert np.array_equal(
        sp.picture[..., 0],
        R.apply_window(display_slice(arr, "axial", 1), *R.auto_window(display_slice(arr, "axial", 1)[None])),
    )


def test_thumbnail_fit_keeps_spacing_and_one_pixel_outlines():
    arr = np.zeros((1, 40, 20), np.float32)
    ref = np.zeros((1, 40, 20), np.uint8)
    ref[0, 10:30, 5:15] = 1
    sp = R.slice_picture(arr, (1.0, 1.0, 4.0), "axial", 0, (1.0, 0.5), outlines=[(ref, (0, 255, 0))], fit=100)
    # 40 rows x 1 mm, 20 columns x 4 mm = 40 x 80 mm -> 50 x 100 pixels
    assert sp.rgb.shape == (50, 100, 3) and sp.picture is sp.rgb
    green = (sp.rgb == (0, 255, 0)).all(-1)
    rows, cols = np.nonzero(green)
    # the box (rows 10-29 of 40 -> 12.5..37.5 of 50; 10 columns of 20 -> 50 of 100) outlined one pixel wide
    assert green[rows.min() + 1 : rows.max(), cols.min() + 1 : cols.max()].sum() == 0
    assert cols.max() - cols.min() + 1 == 50 and rows.max() - rows.min() + 1 == 25


def test_every_page_draws_through_slice_picture():
    """No page types out the window -> overlay -> aspect chain any more (issue 18 item 6)."""
    for p in sorted((ROOT / "pages").glob("*.py")):
        text = p.read_text()
        for fn in ("apply_window(", "aspect_correct(", "heat_overlay(", "overlay(grey"):
            assert fn not in text, f"{p.name} calls {fn} itself: use medseg_core.render.slice_picture"
    assert not hasattr(R, "grey_frame") and not hasattr(R, "overlay_frame")
