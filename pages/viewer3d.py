"""3D viewer (issue 18 item 5): the case in NiiVue, in the browser. Multiplanar views with a 3D rendering of
the mask over the volume; the mouse wheel scrolls slices without a server round trip (drag: move the
crosshair; right-drag: window; in the 3D tile, drag to rotate). Same radiological convention, window presets
and label colours as the PNG viewer on Segment & review, which stays the fallback and the source of exports.
"""

import streamlit as st

from medseg_core.render import CT_PRESETS
from pages import _niivue as NVS
from pages._shared import current_prediction, get_spec, require_frame

require_frame()

st.title("3D viewer")
ss = st.session_state
vol = ss.get("volume")
if vol is None:
    st.info("Load a case first (Load case page).")
    st.stop()
gt = ss.get("gt_mask")

# the result under review on Segment & review: an uploaded prediction chosen there, else the model's last run
pred, source_words = None, ""
src = str(ss.get("result_source") or "")
if src.startswith("uploaded:") and src.split(":", 1)[1] in (ss.get("external_predictions") or {}):
    pred = ss["external_predictions"][src.split(":", 1)[1]]
    source_words = f"uploaded prediction **{pred.model}**"
else:
    pred = current_prediction()
    if pred is not None:
        try:
            source_words = f"model **{get_spec(pred.model).title}**"
        except Exception:  # a session checkpoint or a correction: its own name
            source_words = f"**{pred.model}**"
primary = next(iter(pred.masks.values()), None) if pred is not None else None

col_view, col_ctl = st.columns([3, 1], gap="small")
with col_ctl:
    views = ["Axial"] if vol.is_2d else list(NVS.VIEWS)
    view = st.radio("View", views, key="nv_view")
    presets = (["Auto (1-99 %)"] + list(CT_PRESETS)) if vol.modality == "CT" else ["Auto (1-99 %)"]
    if ss.get("nv_preset") not in presets:  # start from the PNG viewer's choice
        ss["nv_preset"] = ss.get("wl_preset") if ss.get("wl_preset") in presets else presets[0]
    preset = st.selectbox(
        "Window",
        presets,
        key="nv_preset",
        help="Written into the NIfTI header (cal_min / cal_max); right-drag on a slice to adjust.",
    )
    window = CT_PRESETS[preset] if preset in CT_PRESETS else ss["auto_window"]
    shows = []
    if pred is not None:
        shows.append("Prediction")
    if gt is not None:
        shows.append("Reference")
    if pred is not None and gt is not None and primary is not None:
        shows.append("Prediction vs reference (TP / FP / FN)")
    shows.append("None")
    if ss.get("nv_show") not in shows:
        ss["nv_show"] = shows[0]
    what = st.radio("Overlay", shows, key="nv_show")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="nv_opacity")

if what == "Prediction":
    layers, legend = NVS.prediction_layers(pred)
elif what == "Reference":
    layers, legend = [(gt, NVS.COMPARE_COLOURS["tp"])], [("reference mask", NVS.COMPARE_COLOURS["tp"])]
elif what.startswith("Prediction vs"):
    layers, legend = NVS.compare_layers_3d(primary, gt)
else:
    layers, legend = [], []

with col_view:
    NVS.show(vol, window, layers, view=NVS.VIEWS[view], opacity=opacity, height=620, key="nv3d")
    words = " · ".join(f"<span style='color:rgb{tuple(c)}'>■</span> {lab}" for lab, c in legend)
    st.caption(
        (f"{words}. " if words else "")
        + "Radiological convention: patient's right on the image left. Mouse wheel: next / previous slice. "
        + NVS.SAGITTAL_WORDS,
        unsafe_allow_html=True,
    )
with col_ctl:
    if pred is None:
        st.info("No result yet: press **Run model** on Segment & review; it appears here.")
    else:
        st.caption(f"Showing the {source_words} from Segment & review.")
    st.caption("Exports (PNG view, NIfTI, DICOM SEG) are on Segment & review.")
