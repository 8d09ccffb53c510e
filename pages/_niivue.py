"""Glue between the app and the ``niivue-streamlit`` component (issue 18 item 5): the client-side
viewer. The NIfTI bytes come from :mod:`medseg_core.niivue` (geometry, window, label colours); this
module only caches them per session and draws the component.

Used by the 3D viewer page (``pages/viewer3d.py``) and by Segment & review's "Fast viewer (NiiVue)"
toggle, which swaps the server-rendered PNG picture for NiiVue on the same plane; the PNG viewer stays
the default and the source of every export.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from medseg_core import niivue as NV
from medseg_core.render import COMPARE_COLOURS, LABEL_COLOURS

#: The component's view modes (``niivue_viewer(view_mode=...)``), as offered to the user.
VIEWS = {
    "Multiplanar + 3D": "multiplanar",
    "Axial": "axial",
    "Coronal": "coronal",
    "Sagittal": "sagittal",
    "3D render": "3d",
}
#: What differs from the PNG viewer and cannot be set through the component (it passes only the four
#: SETTINGS below to NiiVue): NiiVue draws sagittal slices with the nose on the right (its
#: ``sagittalNoseLeft`` default), the PNG viewer with anterior on the left; its numbers are 0-based voxel
#: indices and raw values.
SAGITTAL_WORDS = (
    "Sagittal in this viewer: anterior (the nose) on the right, as NiiVue draws it; the PNG viewer on "
    "Segment & review puts anterior on the left. The numbers in the picture's lower-left corner are NiiVue's "
    "0-based voxel indices (x x y x z) at the crosshair and the raw voxel value there."
)

#: NiiVue settings shared by every view: radiological convention (patient's right on the screen's left,
#: as the PNG viewer and medseg_core.io.orientation), nearest-neighbour voxels (as the PNG viewer).
SETTINGS = {"radiological": True, "crosshair": True, "interpolation": False, "colorbar": False}


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(np.packbits(a.astype(bool)).tobytes() if a.dtype == bool or a.dtype == np.uint8 else a.tobytes())
    return h.hexdigest()


def _cached(slot: str, key, make):
    """One entry per slot and session: a window change re-encodes the volume, a slice change never does."""
    cache = st.session_state.setdefault("_niivue_cache", {})
    hit = cache.get(slot)
    if hit is None or hit[0] != key:
        hit = (key, make())
        cache[slot] = hit
    return hit[1]


def volume_bytes(vol, window) -> bytes:
    w = tuple(round(float(v), 4) for v in window)
    return _cached("volume", (st.session_state.get("case_key"), id(vol), vol.shape, w), lambda: NV.volume_nifti(vol, w))


def overlay_bytes(vol, layers) -> tuple[bytes, str]:
    """RGBA overlay bytes of ``[(mask_zyx, rgb), ...]`` and a content name (the component reloads an
    overlay when its name, opacity or byte length changes: the digest makes a new mask a new name)."""
    digest = _digest(*[m for m, _ in layers]) + "".join(f"{c[0]:02x}{c[1]:02x}{c[2]:02x}" for _, c in layers)
    data = _cached("overlay", (id(vol), vol.shape, digest), lambda: NV.overlay_nifti(layers, vol))
    return data, f"medseg_{digest[:24]}.nii.gz"


def prediction_layers(pred, shown=None, colours=None) -> tuple[list, list]:
    """Layers and legend of a prediction's masks in the PNG viewer's label colours."""
    layers, legend = [], []
    for k, (lab, m) in enumerate(pred.masks.items()):
        if shown is not None and lab not in shown:
            continue
        col = tuple((colours or {}).get(lab, LABEL_COLOURS[k % len(LABEL_COLOURS)]))
        layers.append((m, col))
        legend.append((lab, col))
    return layers, legend


def compare_layers_3d(primary, gt) -> tuple[list, list]:
    """TP / FP / FN of a prediction against the reference in COMPARE_COLOURS (as the PNG viewer)."""
    p, r = np.asarray(primary).astype(bool), np.asarray(gt).astype(bool)
    return (
        [(p & r, COMPARE_COLOURS["tp"]), (p & ~r, COMPARE_COLOURS["fp"]), (~p & r, COMPARE_COLOURS["fn"])],
        [
            ("TP (both)", COMPARE_COLOURS["tp"]),
            ("FP (prediction only)", COMPARE_COLOURS["fp"]),
            ("FN (reference only)", COMPARE_COLOURS["fn"]),
        ],
    )


def segment_layers(
    pred,
    gt,
    primary,
    shown,
    colours,
    compare: bool,
    show_sides: bool,
    show_removed: bool = False,
    removed_colour=(255, 0, 255),
) -> list:
    """The Segment & review viewer's layers (same choices, same colours) as whole volumes."""
    if compare and gt is not None and primary is not None:
        layers = compare_layers_3d(primary, gt)[0]
    elif primary is None and gt is not None:
        layers = [(gt, COMPARE_COLOURS["tp"])]
    elif show_sides and pred is not None:
        layers = [(pred.sides[s].mask, LABEL_COLOURS[k]) for k, s in enumerate(("left", "right"))]
    elif pred is not None:
        layers = prediction_layers(pred, shown, colours)[0]
    else:
        layers = []
    if show_removed and pred is not None:
        layers += [(pred.removed[lab], removed_colour) for lab in shown if lab in pred.removed]
    return layers


def fast_view(vol, plane: str, window, layers, opacity: float, height: int = 560, slider_words: str = ""):
    """Segment & review's "Fast viewer (NiiVue)": the chosen plane, scrolled in the browser. The component
    takes no slice position, so it opens on the volume's middle slice; the caption says so and which slice
    the page's numbers (``slider_words``, e.g. "slice 12 of 24") are of."""
    show(vol, window, layers, view=plane, opacity=max(opacity, 0.05), height=height, key="nv_segment")
    st.caption(
        "Fast viewer: it opens on the middle slice (the viewer cannot be given the slider's) and the mouse wheel "
        "over the picture scrolls slices in the browser without moving the slider"
        + (f"; the numbers on this page are of the slider's {slider_words}" if slider_words else "")
        + ". Exports use the PNG viewer."
        + (" " + SAGITTAL_WORDS if plane == "sagittal" else "")
    )


def show(
    vol, window, layers, *, view: str = "multiplanar", opacity: float = 0.5, height: int = 620, key: str = "niivue"
):
    """Draw NiiVue with the case volume (window ``(width, level)``) and the coloured ``layers``."""
    from niivue_component import niivue_viewer

    overlays = []
    if layers and any(np.any(m) for m, _ in layers):
        data, name = overlay_bytes(vol, layers)
        overlays.append({"data": data, "name": name, "colormap": "gray", "opacity": float(opacity)})
    grid = NV.sent_grid(vol.shape, vol.affine)
    if grid.reduced:
        st.caption(
            f"Large volume: the fast viewer shows every {grid.stride[1]}th voxel in-plane"
            + (f" and every {grid.stride[0]}th slice" if grid.stride[0] > 1 else "")
            + "; the PNG viewer and all exports use every voxel."
        )
    with st.container(key=f"{key}_box"):
        # update_interval_ms=None: no click events back to Python (nothing reads them), so scrolling and
        # clicking never cause a server round trip (the component's documented low-latency setting)
        niivue_viewer(
            nifti_data=volume_bytes(vol, window),
            filename=f"{key}_volume.nii.gz",
            overlays=overlays or None,
            height=height,
            view_mode=view,
            styled=False,
            settings=dict(SETTINGS),
            update_interval_ms=None,
            key=key,
        )
