"""Slice pictures for the app (no Streamlit here): window/level, aspect-correct RGB frames.

All pictures come from :func:`medseg_core.io.display_slice`, so they are in radiological
convention; :func:`aspect_correct` resamples a picture so that each screen pixel is square in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .io.orientation import display_aspect, display_slice, edge_letters

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: Window presets as (width, level). CT values are HU.
CT_PRESETS = {
    "Soft tissue": (400.0, 40.0),
    "Abdomen (liver/spleen)": (350.0, 50.0),
    "Lung": (1500.0, -600.0),
    "Bone": (1800.0, 400.0),
    "Brain": (80.0, 40.0),
}


def auto_window(array: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[float, float]:
    """(width, level) spanning the ``lo_pct``..``hi_pct`` percentiles of the non-constant voxels."""
    sample = array[:: max(1, array.shape[0] // 16)].ravel()
    if sample.size > 2_000_000:
        sample = sample[:: sample.size // 2_000_000]
    lo, hi = np.percentile(sample, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return float(hi - lo), float((hi + lo) / 2)


def apply_window(img: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map intensities to uint8 grey: ``level - width/2`` is black, ``level + width/2`` white."""
    width = max(float(width), 1e-6)
    lo = level - width / 2.0
    out = (np.asarray(img, np.float32) - lo) * (255.0 / width)
    return np.clip(out, 0, 255).astype(np.uint8)


#: Longest side, in screen pixels, of a slice picture sent to the browser (larger ones are shown
#: downsampled with a notice; the data and the exports keep full resolution).
MAX_DISPLAY_SIDE = 1024


def display_size(
    shape: Sequence[int], row_mm: float, col_mm: float, max_side: int | None = MAX_DISPLAY_SIDE
) -> tuple[int, int, float]:
    """(height, width, factor) of the displayed picture: square pixels at the finer spacing, then
    shrunk by ``factor`` (>= 1) so the longer side is at most ``max_side``."""
    h, w = shape[:2]
    px = min(row_mm, col_mm)
    new_h, new_w = h * row_mm / px, w * col_mm / px
    factor = max(1.0, max(new_h, new_w) / max_side) if max_side else 1.0
    return max(1, int(round(new_h / factor))), max(1, int(round(new_w / factor))), factor


def aspect_correct(
    picture: np.ndarray, row_mm: float, col_mm: float, order: int = 0, max_side: int | None = MAX_DISPLAY_SIDE
) -> np.ndarray:
    """Resample rows or columns so that one output pixel is square (the finer spacing is kept), and
    shrink the result if its longer side exceeds ``max_side`` (see :func:`display_size`).

    ``order`` 0 (nearest) is used for labels and for grey pictures alike so nothing is invented.
    """
    h, w = picture.shape[:2]
    new_h, new_w, _ = display_size((h, w), row_mm, col_mm, max_side)
    if (new_h, new_w) == (h, w):
        return picture
    ri = np.minimum((np.arange(new_h) + 0.5) * h / new_h, h - 1).astype(int)
    ci = np.minimum((np.arange(new_w) + 0.5) * w / new_w, w - 1).astype(int)
    return picture[ri][:, ci]


def display_notice(shape: Sequence[int], row_mm: float, col_mm: float) -> str | None:
    """A sentence for the viewer when a slice is shown downsampled, else None."""
    _, _, f = display_size(shape, row_mm, col_mm)
    if f <= 1.0:
        return None
    return (
        f"This slice is shown at 1/{f:.1f} of its resolution to keep the viewer responsive; metrics and "
        "exports use the full resolution."
    )


def edge_labels(plane: str, known: bool = True) -> dict[str, str]:
    """Orientation letters for the picture's edges (e.g. axial: left 'R', right 'L'); empty when
    the file does not state the orientation (see :func:`medseg_core.io.orientation.orientation_known`)."""
    return edge_letters(plane, known)


#: Default label colours (RGB), distinguishable for the common colour-vision deficiencies
#: (Okabe-Ito palette).
LABEL_COLOURS = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
]
#: The unlabelled other ovary (outline), as in the failure gallery's thumbnails.
OTHER_OVARY_COLOUR = (204, 121, 167)
#: TP / FP / FN colours for comparing a prediction with the reference.
COMPARE_COLOURS = {"tp": (0, 200, 120), "fp": (235, 60, 60), "fn": (70, 140, 255)}


def outline(mask2d: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a binary picture."""
    m = mask2d.astype(bool)
    if not m.any():
        return m
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(
    grey: np.ndarray, layers: list[tuple[np.ndarray, tuple[int, int, int]]], alpha: float = 0.4, mode: str = "fill"
) -> np.ndarray:
    """Blend binary layers onto a uint8 grey picture; returns uint8 RGB.

    ``mode`` "fill" tints each label with opacity ``alpha`` and draws its outline opaque;
    "outline" draws only the outline (the anatomy stays fully visible). Background stays grey.
    An RGB picture may be given instead of grey (to add layers to an overlay already drawn).
    """
    g = np.asarray(grey, np.uint8)
    rgb = g.copy() if g.ndim == 3 else np.repeat(g[..., None], 3, axis=2)
    for mask, colour in layers:
        m = mask.astype(bool)
        if not m.any():
            continue
        col = np.array(colour, np.float32)
        if mode == "fill" and alpha > 0:  # blend only the labelled pixels (float work on few pixels)
            rgb[m] = np.clip(rgb[m] * (1 - alpha) + col * alpha + 0.5, 0, 255).astype(np.uint8)
        rgb[outline(m)] = np.asarray(colour, np.uint8)
    return rgb


def compare_layers(pred2d: np.ndarray, ref2d: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """TP / FP / FN layers of a prediction against a reference, in :data:`COMPARE_COLOURS`."""
    p, r = pred2d.astype(bool), ref2d.astype(bool)
    return [(p & r, COMPARE_COLOURS["tp"]), (p & ~r, COMPARE_COLOURS["fp"]), (~p & r, COMPARE_COLOURS["fn"])]


#: Two results compared (issue 18): where only A or only B says foreground; agreement is outlined.
DISAGREE_COLOURS = {"only_a": (230, 159, 0), "only_b": (86, 180, 233), "both": (235, 235, 235)}


def disagreement_layers(a2d: np.ndarray, b2d: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Layers of two results on one slice: only A, only B (filled) and both (in light grey)."""
    a, b = a2d.astype(bool), b2d.astype(bool)
    return [
        (a & b, DISAGREE_COLOURS["both"]),
        (a & ~b, DISAGREE_COLOURS["only_a"]),
        (b & ~a, DISAGREE_COLOURS["only_b"]),
    ]


@dataclass
class SlicePicture:
    """One slice as the app draws it (:func:`slice_picture`).

    ``rgb``: the aspect-correct uint8 RGB picture the viewer shows (square screen pixels in mm,
    longer side at most ``max_side``; a thumbnail's size with ``fit``). ``picture``: the same layers
    one pixel per voxel, before aspect correction (the input of :func:`export_view`). ``row_mm`` /
    ``col_mm``: the displayed rows' and columns' spacing. ``notice``: the viewer's sentence when the
    picture is shown downsampled, else None."""

    rgb: np.ndarray
    picture: np.ndarray
    row_mm: float
    col_mm: float
    notice: str | None = None

    @property
    def aspect(self) -> tuple[float, float]:
        return self.row_mm, self.col_mm


def _layer_slice(mask: np.ndarray, plane: str, index: int | None) -> np.ndarray:
    """A layer's displayed 2D slice: a (Z, Y, X) mask is sliced like the image; a 2D mask is taken as
    already displayed (e.g. :func:`compare_layers`' output)."""
    m = np.asarray(mask)
    return m if (m.ndim == 2 or index is None) else display_slice(m, plane, index)


def slice_picture(
    array: np.ndarray,
    spacing: tuple[float, float, float],
    plane: str = "axial",
    index: int | None = 0,
    window: tuple[float, float] | None = None,
    *,
    layers: Sequence[tuple[np.ndarray | None, tuple[int, int, int]]] = (),
    outlines: Sequence[tuple[np.ndarray | None, tuple[int, int, int]]] = (),
    heat: dict | None = None,
    alpha: float = 0.4,
    mode: str = "fill",
    fit: int | None = None,
    max_side: int | None = MAX_DISPLAY_SIDE,
) -> SlicePicture:
    """The one drawing chain of every slice picture in the app: display orientation -> window ->
    heat map -> label layers -> outlines -> aspect correction (issue 18 item 6).

    ``array``: a (Z, Y, X) volume and ``index`` the slice of ``plane`` (radiological convention,
    :func:`medseg_core.io.display_slice`); with ``index`` None, ``array`` is one picture already in
    display orientation (a preprocessing preview, an ultrasound crop). ``spacing``: the volume's
    (z, y, x) mm. ``window``: (width, level); None = :func:`auto_window` of this slice.
    ``heat``: {"values": map like ``array``, "vmin", "vmax", optional "floor", "colorscale"} blended
    first (:func:`heat_overlay`, opacity ``alpha``). ``layers``: [(mask, RGB colour)] drawn with
    :func:`overlay` in ``mode`` ("fill" = tint with ``alpha`` plus outline, "outline"); ``outlines``:
    [(mask, colour)] always outline-only, drawn after the layers (the other ovary, what
    post-processing removed on a thumbnail). A mask is a volume like ``array`` or an already
    displayed 2D slice.

    ``fit`` (thumbnails): the picture is resized so its longer side is ``fit`` pixels with the
    spacing respected, the image bilinear and the masks nearest, and layers and outlines are drawn at
    that size so they stay one crisp pixel wide; ``picture`` is then the thumbnail too.
    """
    row_mm, col_mm = display_aspect(spacing, plane)
    img = np.asarray(array) if index is None else display_slice(array, plane, index)
    if window is None:
        window = auto_window(np.asarray(img)[None])
    grey = apply_window(img, *window)
    fills = [(_layer_slice(m, plane, index), c) for m, c in layers if m is not None]
    lines = [(_layer_slice(m, plane, index), c) for m, c in outlines if m is not None]
    heat_2d = None if heat is None else _layer_slice(heat["values"], plane, index)
    if fit:
        from PIL import Image

        h_mm, w_mm = grey.shape[0] * row_mm, grey.shape[1] * col_mm
        scale = fit / max(h_mm, w_mm)
        out_wh = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))

        def resize(a, resample):
            return np.asarray(Image.fromarray(a).resize(out_wh, resample))

        def resize_mask(m):
            return resize((np.asarray(m) > 0).astype(np.uint8) * 255, Image.Resampling.NEAREST) > 0

        grey = resize(grey, Image.Resampling.BILINEAR)
        fills = [(resize_mask(m), c) for m, c in fills]
        lines = [(resize_mask(m), c) for m, c in lines]
        if heat_2d is not None:
            heat_2d = resize(np.asarray(heat_2d, np.float32), Image.Resampling.NEAREST)
    rgb = grey
    if heat is not None and heat_2d is not None:
        rgb = heat_overlay(
            grey,
            heat_2d,
            heat["vmin"],
            heat["vmax"],
            alpha=alpha,
            floor=heat.get("floor"),
            colorscale=heat.get("colorscale", HEAT_COLOURSCALE),
        )
    rgb = overlay(rgb, fills, alpha=alpha, mode=mode)
    for m, c in lines:
        if m.any():
            rgb[outline(m)] = np.asarray(c, np.uint8)
    if fit:
        return SlicePicture(rgb, rgb, row_mm, col_mm, None)
    return SlicePicture(
        aspect_correct(rgb, row_mm, col_mm, max_side=max_side),
        rgb,
        row_mm,
        col_mm,
        display_notice(rgb.shape, row_mm, col_mm),
    )


#: The colour map of every uncertainty/probability overlay and its colour bar: viridis, perceptually
#: uniform and sequential (CIE L* rises monotonically from dark purple to yellow), so equal steps in
#: the value look like equal steps in colour and the low end is not confused with the black image
#: background. These are plotly's ``Viridis`` stops (matplotlib's viridis at 10 points).
HEAT_COLOURSCALE = "Viridis"


def heat_lut(colorscale: str = HEAT_COLOURSCALE, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB colours of ``colorscale`` from its low end to its high end, interpolated
    between the scale's stops exactly as plotly draws its colour bar."""
    from plotly.colors import get_colorscale, sample_colorscale

    cols = sample_colorscale(get_colorscale(colorscale), list(np.linspace(0, 1, n)))
    return np.rint(np.array([_rgb(c) for c in cols], np.float64)).astype(np.uint8)


def heat_colorscale(colorscale: str = HEAT_COLOURSCALE) -> list[list]:
    """The colour bar's colourscale: the scale's own stops written as ``rgb(r, g, b)`` strings, so the
    bar and :func:`heat_overlay`'s pixels are the same colours. (Hex stops such as inferno's
    ``#000004`` collide with the placeholder colours that Streamlit's plotly theme replaces by its
    own, which turned the bottom of the bar red.)"""
    from plotly.colors import get_colorscale

    return [
        [float(pos), "rgb({}, {}, {})".format(*(int(round(x)) for x in _rgb(c)))]
        for pos, c in get_colorscale(colorscale)
    ]


def lightness(rgb: ArrayLike) -> np.ndarray:
    """CIE L* (0 black .. 100 white, D65) of sRGB uint8 colours, shape (..., 3) -> (...)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = lin @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def heat_overlay(
    grey: np.ndarray,
    values: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.6,
    floor: float | None = None,
    colorscale: str = HEAT_COLOURSCALE,
) -> np.ndarray:
    """Blend a scalar map (probability, entropy, MI) onto a grey picture with :func:`heat_lut`
    (``vmin`` -> the low end, ``vmax`` -> the high end; the colour bar of :func:`slice_figure` uses
    the same colours). ``alpha`` 1 shows the bar's colours exactly.

    Pixels at or below ``floor`` (default ``vmin``) stay grey, so the background is not tinted."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    v = np.clip((np.asarray(values, np.float32) - vmin) / max(vmax - vmin, 1e-9), 0, 1)
    show = np.asarray(values) > (vmin if floor is None else floor)
    if show.any():
        lut = heat_lut(colorscale).astype(np.float32)
        cols = lut[np.rint(v[show] * 255).astype(int)]
        rgb[show] = rgb[show] * (1 - alpha) + cols * alpha
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _rgb(s: str) -> tuple[float, float, float]:
    s = s.strip()
    if s.startswith("#"):
        return int(s[1:3], 16), int(s[3:5], 16), int(s[5:7], 16)
    r, g, b = (float(x) for x in s[s.index("(") + 1 : s.index(")")].split(",")[:3])
    return r, g, b


#: Colour of the orientation letters (viewer and PNG export).
LETTER_COLOUR = (255, 213, 79)


def slice_figure(
    rgb: np.ndarray,
    plane: str,
    title: str | None = None,
    height: int | None = 620,
    colorbar: dict | None = None,
    letters: bool = True,
    title_inside: bool = False,
) -> go.Figure:
    """A plotly figure of an aspect-correct RGB picture sent as a compressed image
    (``binary_string``), square pixels, orientation letters on the edges.

    ``height`` None leaves the height to the container (``st.plotly_chart(..., height="stretch")``).
    ``letters`` False leaves the R/L/A/P/S/I letters out (the file does not state the orientation).
    ``title_inside`` draws the title in the picture's top-left corner, as radiology viewers do,
    instead of a title line above it (the figure keeps all of ``height`` for the picture).
    ``colorbar`` = {"title", "vmin", "vmax", "colorscale"} adds a colour bar for heat overlays, in the
    colours of :func:`heat_overlay` (``title``: the unit, e.g. "nats")."""
    import plotly.graph_objects as go

    h, w = rgb.shape[:2]
    # The picture travels as a PNG data URI (lossless), encoded with zlib level 1: plotly's own
    # px.imshow(binary_string=True) encoder took ~55 ms for a 512 x 512 slice here, this ~10 ms.
    labels = edge_labels(plane, letters)
    style = dict(font=dict(color=rgb_to_hex(LETTER_COLOUR), size=18), showarrow=False, xref="x", yref="y")
    where = {
        "left": dict(x=4, y=h / 2, xanchor="left"),
        "right": dict(x=w - 4, y=h / 2, xanchor="right"),
        "top": dict(x=w / 2, y=4, yanchor="top"),
        "bottom": dict(x=w / 2, y=h - 4, yanchor="bottom"),
    }
    annotations = [
        dict(text=labels[edge], **where[edge], **style) for edge in ("left", "right", "top", "bottom") if edge in labels
    ]
    if title and title_inside:
        annotations.append(
            dict(
                text=title,
                x=0,
                y=1,
                xref="paper",
                yref="paper",
                xanchor="left",
                yanchor="top",
                showarrow=False,
                align="left",
                font=dict(color="#f0f0f0", size=14),
                bgcolor="rgba(0,0,0,0.55)",
                borderpad=3,
            )
        )
    data = [go.Image(source=png_data_uri(rgb), hoverinfo="skip")]
    if colorbar:
        data.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                showlegend=False,
                hoverinfo="skip",
                marker=dict(
                    colorscale=heat_colorscale(colorbar.get("colorscale", HEAT_COLOURSCALE)),
                    cmin=colorbar["vmin"],
                    cmax=colorbar["vmax"],
                    color=[colorbar["vmin"]],
                    showscale=True,
                    colorbar=dict(title=dict(text=colorbar.get("title", ""), side="right"), thickness=14),
                ),
            )
        )  # title beside the bar: the picture keeps its width
    top = 30 if title and not title_inside else 0
    # one constructor call: plotly validates each update_* call separately (~15 ms for three here)
    fig = go.Figure(
        data=data,
        layout=dict(
            xaxis=dict(visible=False, range=[-0.5, w - 0.5]),
            yaxis=dict(visible=False, range=[h - 0.5, -0.5], scaleanchor="x", scaleratio=1),
            annotations=annotations,
            height=height,
            margin=dict(l=0, r=0, t=top, b=0),
            title=None if title_inside else title,
            paper_bgcolor="rgba(0,0,0,0)",
            plot_bgcolor="black",
            dragmode="pan",
        ),
    )
    return fig


def frame_png(rgb: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of a picture (the "export current view" download; level 1 for the live viewer)."""
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


#: Scale-bar lengths (mm) the export chooses from: the longest that spans at most a quarter of the picture.
SCALE_BAR_STEPS_MM = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
#: Exports smaller than this (longer side, px) are enlarged by a whole factor (nearest neighbour)
#: so that the letters, legend and scale bar stay legible beside the picture.
EXPORT_MIN_SIDE = 640
#: Longest side of the exported picture (px): full resolution up to this size.
EXPORT_MAX_SIDE = 4096
FONT_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _font(size: int, bold: bool = False):
    """DejaVu Sans (Debian's fonts-dejavu-core), else Pillow's own scalable default font."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(FONT_BOLD_PATH if bold else FONT_PATH, size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: a fixed bitmap font
            return ImageFont.load_default()


def scale_bar_mm(width_mm: float) -> float:
    """The scale bar's length: the longest of :data:`SCALE_BAR_STEPS_MM` spanning at most a quarter
    of ``width_mm`` (the picture's physical width), at least the shortest step."""
    fits = [v for v in SCALE_BAR_STEPS_MM if v <= width_mm / 4.0]
    return float(fits[-1] if fits else SCALE_BAR_STEPS_MM[0])


def export_view(
    picture: np.ndarray,
    row_mm: float,
    col_mm: float,
    plane: str,
    *,
    letters: bool = True,
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
    title: str | None = None,
    pixel_size_known: bool = True,
    note: str | None = None,
) -> tuple[np.ndarray, dict]:
    """The "Export this view" picture: the slice (RGB, as :func:`overlay` drew it, *before* aspect
    correction) at full resolution with square pixels, the orientation letters that are known on its
    edges, its title in the top-left corner, and a band under it with the legend (colour swatches and
    names) and a scale bar.

    Returns ``(rgb, info)``: the uint8 RGB export and facts about it, ``info["pixel_mm"]`` (mm per
    exported pixel, horizontally), ``info["scale_bar_mm"]``, ``info["scale_bar_px"]`` (its drawn
    length; equals scale_bar_mm / pixel_mm rounded), ``info["scale_bar_box"]`` (x0, y0, x1, y1) of the
    bar, ``info["picture_box"]`` and ``info["letters"]`` (edge -> letter drawn).
    ``pixel_size_known`` False (an image file without a pixel size: 1 mm assumed) labels the bar in
    source pixels instead of mm."""
    from PIL import Image, ImageDraw

    pic = np.asarray(picture)
    if pic.ndim == 2:
        pic = np.repeat(pic[..., None], 3, axis=2)
    pic = np.ascontiguousarray(pic[..., :3], dtype=np.uint8)
    h0, w0 = pic.shape[:2]
    pic = aspect_correct(pic, row_mm, col_mm, max_side=EXPORT_MAX_SIDE)
    h1, w1 = pic.shape[:2]
    k = max(1, min(8, int(np.ceil(EXPORT_MIN_SIDE / max(h1, w1)))))
    if k > 1:
        pic = np.repeat(np.repeat(pic, k, axis=0), k, axis=1)
    ph, pw = pic.shape[:2]
    pixel_mm = w0 * col_mm / pw  # exact: the picture spans w0 * col_mm millimetres in pw pixels

    base = max(12, min(28, int(round(max(ph, pw) / 45))))  # font size follows the picture's size
    f_letter, f_text, f_small = _font(int(base * 1.3), bold=True), _font(base), _font(max(10, int(base * 0.8)))
    pad = max(6, base // 2)
    legend = list(legend or [])
    canvas_w = max(pw, 420)
    # lay the legend out in lines across the band's width, leaving room for the scale bar on the right
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bar_mm = scale_bar_mm(pw * pixel_mm)
    bar_px = int(round(bar_mm / pixel_mm))
    bar_label = f"{bar_mm:g} mm" if pixel_size_known else f"{bar_mm:g} px (pixel size not stated)"
    label_w = probe.textlength(bar_label, font=f_text)
    right_w = int(max(bar_px, label_w)) + 2 * pad
    sw = base  # swatch size
    lines: list[list[tuple[float, str, tuple[int, int, int]]]] = []
    line: list[tuple[float, str, tuple[int, int, int]]] = []
    x: float = pad
    for text, colour in legend:
        item_w = sw + pad // 2 + probe.textlength(text, font=f_text) + 2 * pad
        if line and x + item_w > canvas_w - right_w:
            lines.append(line)
            line, x = [], pad
        line.append((x, text, colour))
        x += item_w
    if line:
        lines.append(line)
    line_h = int(base * 1.5)
    band_h = max(len(lines), 1) * line_h + 2 * pad + (line_h if note else 0)
    band_h = max(band_h, int(base * 1.3) + 6 + 3 * pad + max(4, base // 4))  # room for the scale bar and its label
    out = Image.new("RGB", (canvas_w, ph + band_h), (17, 17, 17))
    x0 = (canvas_w - pw) // 2
    out.paste(Image.fromarray(pic), (x0, 0))
    d = ImageDraw.Draw(out)

    # orientation letters (only those known), outlined so they read on any anatomy
    labels = edge_labels(plane, letters)
    m = pad
    pos = {
        "left": (x0 + m, ph / 2, "lm"),
        "right": (x0 + pw - m, ph / 2, "rm"),
        "top": (x0 + pw / 2, m, "mt"),
        "bottom": (x0 + pw / 2, ph - m, "mb"),
    }
    for edge, letter in labels.items():
        px_, py_, anchor = pos[edge]
        d.text(
            (px_, py_),
            letter,
            font=f_letter,
            fill=LETTER_COLOUR,
            anchor=anchor,
            stroke_width=max(1, base // 8),
            stroke_fill=(0, 0, 0),
        )
    if title:
        d.text(
            (x0 + m, m),
            title,
            font=f_text,
            fill=(240, 240, 240),
            anchor="lt",
            stroke_width=max(1, base // 10),
            stroke_fill=(0, 0, 0),
        )

    # legend: a swatch and a name per item
    y = ph + pad
    for ln in lines:
        for lx, text, colour in ln:
            d.rectangle(
                [lx, y + (line_h - sw) // 2 - 2, lx + sw, y + (line_h - sw) // 2 - 2 + sw],
                fill=tuple(colour),
                outline=(220, 220, 220),
            )
            d.text((lx + sw + pad // 2, y + line_h // 2 - 2), text, font=f_text, fill=(235, 235, 235), anchor="lm")
        y += line_h
    if note:
        d.text((pad, y + line_h // 2 - 2), note, font=f_small, fill=(170, 170, 170), anchor="lm")

    # scale bar: bottom right of the band, pure white, its label above it
    bar_h = max(4, base // 4)
    bx1 = canvas_w - pad
    bx0 = bx1 - bar_px
    by1 = ph + band_h - pad
    by0 = by1 - bar_h
    d.rectangle([bx0, by0, bx1 - 1, by1 - 1], fill=(255, 255, 255))
    d.text(((bx0 + bx1) / 2, by0 - 4), bar_label, font=f_text, fill=(235, 235, 235), anchor="md")
    info = {
        "pixel_mm": pixel_mm,
        "scale_bar_mm": bar_mm,
        "scale_bar_px": bar_px,
        "scale_bar_box": (bx0, by0, bx1, by1),
        "picture_box": (x0, 0, x0 + pw, ph),
        "letters": labels,
        "pixel_size_known": pixel_size_known,
    }
    return np.asarray(out), info


def view_png(picture: np.ndarray, row_mm: float, col_mm: float, plane: str, **kw: Any) -> bytes:
    """PNG bytes of :func:`export_view`; its facts (pixel size, scale bar) are also written as PNG
    text chunks (``medseg:pixel_mm``, ``medseg:scale_bar_mm``, ``medseg:letters``)."""
    import io as _io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    rgb, info = export_view(picture, row_mm, col_mm, plane, **kw)
    meta = PngInfo()
    meta.add_text("medseg:pixel_mm", f"{info['pixel_mm']:.6g}")
    meta.add_text("medseg:scale_bar_mm", f"{info['scale_bar_mm']:g}")
    meta.add_text(
        "medseg:letters",
        "".join(info["letters"].get(e, "") for e in ("left", "right", "top", "bottom")) or "not stated",
    )
    meta.add_text("Software", "medseg (research use only; not for diagnosis)")
    buf = _io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=meta, compress_level=6)
    return buf.getvalue()


def fast_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 RGB (or grey) picture for the live viewer: every row gets PNG's "Up"
    filter (a vectorised difference) and zlib level 1. About twice as fast as Pillow's encoder on a
    512 x 512 slice here (Pillow tries filters row by row); any PNG decoder reads it (tested)."""
    import struct
    import zlib

    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 2  # filter type Up
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    colour = {1: 0, 3: 2, 4: 6}[c]
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def png_data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of a uint8 picture, fast-compressed (lossless)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(fast_png(rgb)).decode("ascii")


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    """'#e69f00' -> (230, 159, 0)."""
    v = value.lstrip("#")
    return tuple(int(v[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def rgb_to_hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])
