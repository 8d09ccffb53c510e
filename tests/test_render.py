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
    w, level = R.auto_window(a)
    assert level == pytest.approx(499.5, abs=1) and w == pytest.approx(980, abs=2)


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


# ----------------------------------------------------------------------------- viewer: letters, PNG export
def _png(data: bytes):
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGB")), dict(im.text)


def _longest_white_run(band: np.ndarray) -> tuple[int, int]:
    """(length, row) of the longest horizontal run of pure white pixels in an RGB picture."""
    white = (band == 255).all(axis=2)
    best = (0, -1)
    for r, row in enumerate(white):
        run = 0
        for v in row:
            run = run + 1 if v else 0
            if run > best[0]:
                best = (run, r)
    return best


def _letter_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where the orientation-letter colour (amber) is drawn."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 200) & (g > 150) & (g < 235) & (b < 140)


@pytest.mark.parametrize(
    "rows, cols, row_mm, col_mm, plane",
    [
        (96, 128, 0.7, 0.7, "axial"),  # small square pixels: enlarged for legibility
        (24, 256, 6.0, 0.7, "coronal"),  # thick slices: aspect-corrected rows
        (700, 900, 0.25, 0.25, "axial"),  # a large picture: full resolution, no enlargement
    ],
)
def test_export_png_has_letters_legend_and_a_true_scale_bar(rows, cols, row_mm, col_mm, plane):
    pic = np.full((rows, cols, 3), 100, np.uint8)
    legend = [
        ("TP (both)", R.COMPARE_COLOURS["tp"]),
        ("FP (prediction only)", R.COMPARE_COLOURS["fp"]),
        ("FN (reference only)", R.COMPARE_COLOURS["fn"]),
    ]
    data = R.view_png(pic, row_mm, col_mm, plane, legend=legend, title="Axial slice 5 of 24")
    rgb, text = _png(data)
    bare = R.aspect_correct(pic, row_mm, col_mm)
    assert rgb.shape[0] > bare.shape[0] and rgb.shape[0] * rgb.shape[1] > bare.shape[0] * bare.shape[1]
    # the picture: measured where the grey is (a row a quarter up from the bottom holds no letter)
    grey = (rgb == 100).all(axis=2)  # (anti-aliased legend text holds a few such pixels too)
    counts = grey.sum(axis=1)
    pic_h = int(np.nonzero(counts >= counts.max() / 2)[0].max()) + 1
    pic_w = int(grey[int(pic_h * 0.75)].sum())
    # square pixels: the picture's shape is the physical field of view's
    assert abs((pic_h / pic_w) / ((rows * row_mm) / (cols * col_mm)) - 1) < 0.02
    pixel_mm = cols * col_mm / pic_w  # from the measured picture alone
    assert float(text["medseg:pixel_mm"]) == pytest.approx(pixel_mm, rel=1e-3)
    # the scale bar: the longest pure-white run under the picture, its length = stated mm / pixel size
    length, row = _longest_white_run(rgb[pic_h:])
    bar_mm = float(text["medseg:scale_bar_mm"])
    assert bar_mm in R.SCALE_BAR_STEPS_MM and length >= 20
    assert abs(length - bar_mm / pixel_mm) <= 1.0, (length, bar_mm, pixel_mm)
    assert bar_mm <= pic_w * pixel_mm / 4  # at most a quarter of the picture's width
    # the letters of the plane on its edges, in the letter colour; the legend's colours in the band
    letters = R.edge_labels(plane)
    assert text["medseg:letters"] == "".join(letters[e] for e in ("left", "right", "top", "bottom"))
    amber = _letter_pixels(rgb[:pic_h])
    mid = pic_h // 2
    assert amber[mid - 20 : mid + 20, : pic_w // 8].any() and amber[mid - 20 : mid + 20, -pic_w // 8 :].any()
    assert amber[: pic_h // 8, pic_w // 2 - 30 : pic_w // 2 + 30].any()
    band = rgb[pic_h:]
    for _, colour in legend:
        assert (band == np.array(colour, np.uint8)).all(axis=2).sum() >= 25, colour


def test_export_png_leaves_out_letters_that_are_not_known():
    pic = np.full((96, 128, 3), 100, np.uint8)
    rgb_known, _ = R.export_view(pic, 0.7, 0.7, "axial", letters=True)
    rgb, info = R.export_view(pic, 0.7, 0.7, "axial", letters=False, title=None)
    x0, y0, x1, y1 = info["picture_box"]
    assert info["letters"] == {} and not _letter_pixels(rgb[y0:y1, x0:x1]).any()
    assert _letter_pixels(rgb_known[y0:y1, x0:x1]).any()
    _, text = _png(R.view_png(pic, 0.7, 0.7, "axial", letters=False))
    assert text["medseg:letters"] == "not stated"
    # an image file without a pixel size: the bar is labelled in pixels, and still measures what it says
    rgb, info = R.export_view(pic, 1.0, 1.0, "axial", pixel_size_known=False)
    bx0, by0, bx1, by1 = info["scale_bar_box"]
    assert bx1 - bx0 == info["scale_bar_px"] == round(info["scale_bar_mm"] / info["pixel_mm"])


def test_export_png_without_dejavu_uses_pillows_font(monkeypatch):
    monkeypatch.setattr(R, "FONT_PATH", "/nonexistent/font.ttf")
    monkeypatch.setattr(R, "FONT_BOLD_PATH", "/nonexistent/font-bold.ttf")
    rgb, info = R.export_view(np.zeros((64, 64), np.uint8), 1.0, 1.0, "axial", legend=[("ovary", (230, 159, 0))])
    assert rgb.shape[0] > info["picture_box"][3] and info["letters"]


def test_slice_figure_letters_only_when_known_and_title_in_the_corner():
    pic = np.zeros((20, 30, 3), np.uint8)
    known = R.slice_figure(pic, "sagittal", title="Sagittal slice 3 of 9", title_inside=True)
    texts = [a.text for a in known.layout.annotations]
    assert {"A", "P", "S", "I"} <= set(texts) and "Sagittal slice 3 of 9" in texts
    assert known.layout.title.text is None and known.layout.margin.t == 0
    unknown = R.slice_figure(pic, "axial", title="Axial slice 1 of 1", letters=False, title_inside=True, height=None)
    assert [a.text for a in unknown.layout.annotations] == ["Axial slice 1 of 1"]
    assert unknown.layout.height is None
    assert R.edge_labels("coronal", known=False) == {} and R.edge_labels("coronal")["top"] == "S"
