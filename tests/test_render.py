"""Rendering helpers: window/level, aspect, overlays, colour maps (no Streamlit)."""
import numpy as np
import pytest

from medseg_core import render as R


def test_window_level_maps_ends_to_black_and_white():
    img = np.array([[-1000.0, 40.0 - 200, 40.0, 40.0 + 200, 3000.0]])
    out = R.apply_window(img, 400, 40)
    assert out.tolist() == [[0, 0, 127, 255, 255]]
    assert R.CT_PRESETS["Lung"] == (1500.0, -600.0) and R.CT_PRESETS["Bone"] == (1800.0, 400.0)


def test_auto_window_spans_percentiles():
    a = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    w, l = R.auto_window(a)
    assert l == pytest.approx(499.5, abs=1) and w == pytest.approx(980, abs=2)


def test_aspect_correct_makes_square_pixels():
    pic = np.zeros((10, 20), np.uint8)
    out = R.aspect_correct(pic, 6.0, 0.7)
    assert out.shape == (86, 20)  # 10 rows of 6 mm at 0.7 mm per pixel
    assert R.aspect_correct(pic, 1.0, 1.0) is pic


def test_overlay_keeps_background_grey_and_outlines():
    grey = np.full((8, 8), 100, np.uint8)
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    rgb = R.overlay(grey, [(m, (255, 0, 0))], alpha=0.5, mode="fill")
    assert rgb[0, 0].tolist() == [100, 100, 100]
    assert rgb[2, 2].tolist() == [255, 0, 0]  # outline opaque
    assert rgb[3, 3].tolist() == [178, 50, 50]  # interior blended: 100 * 0.5 + 255 * 0.5, rounded
    out = R.overlay(grey, [(m, (255, 0, 0))], mode="outline")
    assert out[3, 3].tolist() == [100, 100, 100] and R.outline(m).sum() == 12


def test_compare_layers_tp_fp_fn():
    p = np.array([[1, 1, 0]], bool)
    r = np.array([[1, 0, 1]], bool)
    (tp, c1), (fp, c2), (fn, c3) = R.compare_layers(p, r)
    assert tp.tolist() == [[True, False, False]] and fp.tolist() == [[False, True, False]]
    assert fn.tolist() == [[False, False, True]] and c1 == R.COMPARE_COLOURS["tp"]


def test_heat_overlay_leaves_low_values_untinted():
    grey = np.full((4, 4), 80, np.uint8)
    v = np.zeros((4, 4))
    v[1, 1] = 0.69
    rgb = R.heat_overlay(grey, v, 0.0, 0.693, alpha=1.0)
    assert rgb[0, 0].tolist() == [80, 80, 80] and rgb[1, 1].tolist() != [80, 80, 80]


def test_colour_round_trip_and_figure():
    assert R.hex_to_rgb(R.rgb_to_hex((230, 159, 0))) == (230, 159, 0)
    fig = R.slice_figure(np.zeros((20, 30, 3), np.uint8), "axial", colorbar={"vmin": 0, "vmax": 1})
    texts = {a.text for a in fig.layout.annotations}
    assert {"R", "L", "A", "P"} <= texts
    assert fig.data[0].source.startswith("data:image/png;base64")  # sent as a compressed image


def test_large_slices_are_displayed_downsampled_with_a_notice():
    # a 2048 x 2048 slice (e.g. a large radiograph-sized image) is sent at 1024 px, square pixels kept
    pic = np.zeros((2048, 2048, 3), np.uint8)
    out = R.aspect_correct(pic, 0.2, 0.2)
    assert out.shape[:2] == (1024, 1024)
    assert "1/2.0" in R.display_notice(pic.shape, 0.2, 0.2)
    # extreme anisotropy: 12 slices of 50 mm over 0.1 mm pixels would be 6000 rows; capped, still square
    h, w, f = R.display_size((12, 512), 50.0, 0.1)
    assert max(h, w) == 1024 and abs((h / w) / ((12 * 50.0) / (512 * 0.1)) - 1) < 0.01 and f > 5
    assert R.display_notice((256, 256), 1.0, 1.0) is None
    assert R.aspect_correct(np.zeros((300, 200, 3), np.uint8), 1.0, 1.0).shape == (300, 200, 3)


@pytest.mark.parametrize("shape", [(37, 53, 3), (20, 31), (9, 8, 4)])
def test_fast_png_is_lossless_and_standard(shape):
    import io

    from PIL import Image

    pic = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(R.fast_png(pic))))
    np.testing.assert_array_equal(back, pic)
    assert R.png_data_uri(pic).startswith("data:image/png;base64,")
