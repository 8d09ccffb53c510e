"""Streamlit glue for correcting a mask on Segment & review (issue 18 item 2).

The numbers and the geometry are in :mod:`medseg_core.correct`; this module draws
``streamlit-drawable-canvas`` (fabric.js) over the viewer's own picture of the current slice (same
plane, window, orientation and aspect correction) and hands what was drawn to the library:

- every stroke (brush / eraser: the canvas's freehand tool) or click (fill: its point tool) is applied
  as soon as the canvas sends it (on mouse-up), in the canvas's ``on_change`` callback; the canvas is then
  drawn afresh (a new key) over the updated picture, so what is shown is always the working mask;
- undo / redo are the library's (:class:`medseg_core.correct.History`), not the canvas's own toolbar
  (whose undo only removes not-yet-applied drawings, of which there are none);
- "Save correction" writes the file, the verdict and the audit row
  (:func:`medseg_core.correct.save_correction`) and makes the corrected masks a named result, as an
  uploaded prediction (:func:`medseg_core.inference.prediction_from_masks`), chosen on the page:
  viewer, metrics, failure tags and the NIfTI / DICOM SEG exports then use it.
"""

from __future__ import annotations

import re

import numpy as np
import streamlit as st

from medseg_core import correct as K
from medseg_core.inference import prediction_from_masks
from medseg_core.render import slice_picture

#: The canvas's largest size on the page (px); the picture is scaled to fit, keeping its aspect.
CANVAS_MAX_W, CANVAS_MAX_H = 720, 560
TOOL_WORDS = {"brush": "Brush", "eraser": "Eraser", "fill": "Fill (click inside an outline)"}
ERASER_COLOUR = "rgba(255, 255, 255, 0.75)"
_CORRECTED = re.compile(r" \(corrected by [^()]*\)$")  # medseg_core.correct.corrected_name


def is_correction(name: str | None) -> bool:
    return bool(name) and name in (st.session_state.get("corrections") or {})


def info(name: str) -> dict:
    return (st.session_state.get("corrections") or {}).get(name, {})


def source_words(name: str) -> str:
    """How the page's result choice names an uploaded or corrected result (from the name alone: a
    format_func must not depend on the session, AppTest calls it outside one)."""
    return f"Corrected: {name}" if _CORRECTED.search(name) else f"Uploaded prediction: {name}"


def audit_name(name: str) -> str:
    """The corrected result in audit rows: its base model (the reviewer is the row's user)."""
    return f"{info(name).get('base', 'prediction')} (corrected)"


def caption(name: str) -> str:
    i = info(name)
    cmp = i.get("compare") or {}
    first = next(iter(cmp), None)
    words = (
        f"; corrected vs model ({first}): Dice {cmp[first]['dice']:.3f}, volume change "
        f"{cmp[first]['volume_change_ml']:+.2f} mL"
        if first
        else ""
    )
    return (
        f"Corrected mask **{name}** of {i.get('base', 'a result')}, saved as `{i.get('file', '')}` with a "
        f"'needs correction' verdict{words}."
    )


def toggle(pred) -> bool:
    """The Correct mode switch (viewer controls); off while there is no result to correct. After a save
    (a button inside the viewer's fragment) the whole page reruns: its result choice has changed."""
    if st.session_state.pop("_corr_rerun_app", False):
        st.rerun(scope="app")
    return (
        st.toggle(
            "Correct the mask (brush, eraser, fill)",
            key="correct_on",
            disabled=pred is None or not pred.masks,
            help="Paint on the current slice of any plane; undo / redo; save as a named result.",
        )
        and pred is not None
        and bool(pred.masks)
    )


def _correction(pred, case_key: str) -> K.Correction | None:
    """This result's correction in progress, made on first use. Its working copies count in the server's
    memory budget with the session's case; when they cannot fit, the page says so and there is none."""
    from medseg_core.budget import BudgetExceeded
    from pages._shared import account_case

    ss = st.session_state
    key = (case_key, pred.model, repr(pred.options))  # a cached result may come back as a new object
    if ss.get("_corr_for") != key or ss.get("_corr") is None:
        ss["_corr"] = K.Correction(pred.model, pred.masks, pred.spacing)
        ss["_corr_for"] = key
        ss["_corr_gen"] = ss.get("_corr_gen", 0) + 1
        try:
            account_case(what="correcting this mask", reserve=True)
        except BudgetExceeded as e:
            ss["_corr"] = ss["_corr_for"] = None
            st.warning(str(e))
            return None
    else:
        account_case(what="correcting this mask")  # its undo history grows with every edit
    return ss["_corr"]


def editing(pred) -> np.ndarray | None:
    """The first label's mask as it is being corrected (unsaved edits included), or None when
    Correct mode has no correction for this result yet."""
    ss = st.session_state
    corr = ss.get("_corr")
    if corr is None or ss.get("_corr_for") != (ss.get("case_key"), pred.model, repr(pred.options)):
        return None
    return next(iter(corr.masks.values()), None)


def _apply_canvas(key: str, label: str, plane: str, index: int, size: tuple[int, int], tool: str, brush_mm: float):
    """The canvas's on_change: apply what it sent, then start a fresh canvas over the new picture."""
    ss = st.session_state
    corr = ss.get("_corr")
    state = ss.get(key)
    drawing = (state.get("drawing") if hasattr(state, "get") else None) or {}
    marks = K.canvas_marks(drawing.get("raw") if hasattr(drawing, "get") else None)
    if corr is None or not marks:
        return
    try:
        edits = corr.apply_marks(label, plane, index, marks, size, tool, brush_mm)
        ss["_corr_msg"] = None if edits else "That changed nothing on this slice."
    except K.FillRefused as e:
        ss["_corr_msg"] = str(e)
    ss["_corr_gen"] = ss.get("_corr_gen", 0) + 1


def _undo():
    if st.session_state.get("_corr") is not None:
        st.session_state["_corr"].undo()
        st.session_state["_corr_gen"] += 1


def _redo():
    if st.session_state.get("_corr") is not None:
        st.session_state["_corr"].redo()
        st.session_state["_corr_gen"] += 1


def _fill_holes(label: str, plane: str, index: int):
    corr = st.session_state.get("_corr")
    if corr is not None:
        e = corr.fill_holes(label, plane, index)
        st.session_state["_corr_msg"] = None if e else "This slice's mask has no holes."
        st.session_state["_corr_gen"] += 1


def _save(vol, pred):
    from pages._access import _options_dict, identity, store

    ss = st.session_state
    corr = ss.get("_corr")
    ident = identity()
    name = ident.name if ident else (ss.get("corr_reviewer") or "").strip()
    if corr is None:
        return
    if not name:
        ss["_corr_msg"] = "Type your name to save the correction."
        return
    try:
        saved = K.save_correction(
            corr,
            vol,
            ss["case_key"],
            name,
            reviewer_email=ident.email if ident else None,
            signed_in=ident is not None,
            options=_options_dict(pred.options),
            store=store(),
        )
    except (OSError, ValueError) as e:
        ss["_corr_msg"] = f"The correction could not be saved: {e}"
        return
    result = prediction_from_masks(saved.name, corr.masks, vol)
    ss.setdefault("external_predictions", {})[saved.name] = result
    ss.setdefault("corrections", {})[saved.name] = {
        "path": str(saved.path),
        "file": saved.path.name,
        "base": corr.base_name,
        "verdict_id": saved.verdict_id,
        "compare": saved.record["corrected_vs_model"],
    }
    ss["result_source"] = f"uploaded:{saved.name}"
    ss["correct_on"] = False
    ss["_corr"] = None
    ss["_corr_saved"] = saved.name
    ss["_corr_rerun_app"] = True  # the page's result choice, metrics and exports change: rerun the whole page


def panel(
    vol, pred, plane: str, index: int, width: float, level: float, alpha: float, mode: str, colours: dict
) -> None:
    """The canvas over the current slice's picture, the tools and the corrected-vs-model numbers."""
    from streamlit_drawable_canvas import st_canvas

    ss = st.session_state
    corr = _correction(pred, ss["case_key"])
    if corr is None:
        return
    labels = list(corr.masks)
    t1, t2, t3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    tool = t1.radio("Tool", list(TOOL_WORDS), format_func=TOOL_WORDS.get, horizontal=True, key="corr_tool")
    brush_mm = t2.slider(
        "Brush size (mm)",
        0.5,
        40.0,
        5.0,
        0.5,
        key="corr_brush_mm",
        help="The brush's diameter in millimetres, in this plane's own pixel spacing.",
    )
    label = t3.selectbox("Label", labels, key="corr_label") if len(labels) > 1 else labels[0]
    geom = corr.geometry(plane)
    colour = colours.get(label, (230, 159, 0))
    picture = slice_picture(
        vol.array,
        vol.spacing,
        plane,
        index,
        (width, level),
        layers=[(corr.masks[label], colour)],
        alpha=max(alpha, 0.25),
        mode=mode,
    ).rgb  # the viewer's own chain (medseg_core.render)
    scale = min(CANVAS_MAX_W / geom.pic_w, CANVAS_MAX_H / geom.pic_h)
    cw, ch = max(1, int(round(geom.pic_w * scale))), max(1, int(round(geom.pic_h * scale)))
    px_per_mm = cw / (geom.w * geom.col_mm)
    key = f"corr_canvas_{ss.get('_corr_gen', 0)}"
    from PIL import Image

    with st.container(key="corr_canvas_box"):
        result = st_canvas(
            fill_color="rgba(0, 0, 0, 0)",
            background_image=Image.fromarray(picture),
            width=cw,
            height=ch,
            drawing_mode="point" if tool == "fill" else "freedraw",
            stroke_width=max(1, int(round(brush_mm * px_per_mm))) if tool != "fill" else 2,
            stroke_color=ERASER_COLOUR if tool == "eraser" else "rgba({}, {}, {}, 0.6)".format(*colour),
            point_display_radius=3,
            key=key,
            update_streamlit=True,
            on_change=lambda: _apply_canvas(key, label, plane, index, (cw, ch), tool, brush_mm),
        )
    if K.canvas_marks(result.json_data):  # the callback did not take them (should not happen): apply here
        _apply_canvas(key, label, plane, index, (cw, ch), tool, brush_mm)
        st.rerun(scope="app")
    if ss.get("_corr_msg"):
        st.warning(ss["_corr_msg"])
    b = st.columns(5)
    b[0].button("Undo", on_click=_undo, disabled=not corr.history.can_undo, key="corr_undo", width="stretch")
    b[1].button("Redo", on_click=_redo, disabled=not corr.history.can_redo, key="corr_redo", width="stretch")
    b[2].button(
        "Fill holes (slice)",
        on_click=_fill_holes,
        args=(label, plane, index),
        key="corr_holes",
        width="stretch",
        help="Fills every hole of the mask on this slice (scipy binary_fill_holes).",
    )
    from pages._access import identity

    ident = identity()
    if ident is None:
        ss.setdefault("corr_reviewer", ss.get("reviewer_name") or "")
        b[3].text_input(
            "Your name",
            key="corr_reviewer",
            label_visibility="collapsed",
            placeholder="Your name",
            help="Sign-in is off on this server: the correction is recorded under this name.",
        )
    b[4].button(
        "Save correction",
        type="primary",
        on_click=_save,
        args=(vol, pred),
        key="corr_save",
        disabled=not corr.changed,
        width="stretch",
    )
    c = corr.compare()[label]
    st.caption(
        f"Corrected vs model ({label}): Dice {c['dice']:.3f} · volume {c['model_ml']:.2f} → "
        f"{c['corrected_ml']:.2f} mL ({c['volume_change_ml']:+.2f} mL) · {c['voxels_added']} voxels added, "
        f"{c['voxels_removed']} removed · {len(corr.history)} edit(s). Brush {brush_mm:g} mm = "
        f"{brush_mm / geom.row_mm:.1f} x {brush_mm / geom.col_mm:.1f} voxels on this {plane} slice."
    )
