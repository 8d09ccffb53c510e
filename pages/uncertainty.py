"""Uncertainty: MC dropout or test-time augmentation; mean, entropy, mutual information maps."""
import streamlit as st

from medseg_core.inference import PredictOptions
from medseg_core.io import display_slice, n_slices
from medseg_core.io.errors import InputError
from medseg_core.io.orientation import display_aspect
from pages._shared import get_spec
from medseg_core.render import apply_window, aspect_correct, heat_overlay, slice_figure
from medseg_core.review import initial_slice
from medseg_core.uncertainty import LN2
from pages._shared import run
from pages._shared import require_frame

require_frame()

st.title("Uncertainty")
ss = st.session_state
vol = ss.get("volume")
if vol is None:
    st.info("Load a case first.")
    st.stop()
name = ss.get("model_name")
if name is None or get_spec(name).task == "restoration":
    st.warning("Choose a segmentation model in the sidebar.")
    st.stop()
c1, c2, c3 = st.columns(3)
c1.markdown(f"**Model** {get_spec(name).title}")
method = c2.radio("Method", ["MC dropout", "Test-time augmentation (flips)"], key="unc_method")
n = c3.slider("MC samples", 2, 30, 10, key="unc_n", disabled=method != "MC dropout")
spec = get_spec(name)
st.caption(f"Dropout in this model: {spec.dropout}.")
clin = {}
if spec.clinical_inputs:
    cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
    clin = {"menopausal": int(cl.get("menopausal", 0)), "oncology_center": int(cl.get("oncology_center", 0))}
opts = PredictOptions(mc_samples=n if method == "MC dropout" else 0, tta=method != "MC dropout", seed=0, **clin)
if st.button("Compute uncertainty", type="primary"):
    try:
        run(name, opts)
        ss["unc_key"] = ss["current"]
    except InputError as e:
        st.error(str(e))
pred = ss["predictions"].get(ss.get("unc_key")) if ss.get("unc_key") else None
if pred is None or not pred.uncertainty:
    st.info("Press **Compute uncertainty**. Maps are computed from probabilities (never logits).")
    st.stop()


@st.fragment
def unc_viewer():
    a, b = st.columns([3, 1])
    with b:
        what = st.radio("Map", ["entropy", "mutual_information", "mean", "variance"], key="unc_map")
        alpha = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="unc_alpha")
    m = pred.uncertainty[what]
    vmax = {"entropy": LN2, "mutual_information": LN2, "mean": 1.0}.get(what, float(m.max()) or 1.0)
    nz = n_slices(vol.shape, "axial")
    if "unc_slice" not in st.session_state:
        st.session_state["unc_slice"] = initial_slice(vol.shape, "axial", pred.mask)
    with a:
        z = st.slider("Slice", 0, nz - 1, key="unc_slice") if nz > 1 else 0
        grey = apply_window(display_slice(vol.array, "axial", z), *st.session_state["auto_window"])
        rgb = heat_overlay(grey, display_slice(m, "axial", z), 0.0, vmax, alpha=alpha, floor=vmax * 0.02)
        rgb = aspect_correct(rgb, *display_aspect(vol.spacing, "axial"))
        st.plotly_chart(slice_figure(rgb, "axial", title=f"{what} (slice {z + 1}/{nz})",
                                     colorbar={"title": "nats" if what in ("entropy", "mutual_information") else "",
                                               "vmin": 0.0, "vmax": vmax}),
                        width="stretch", key="unc_fig")
    scores = pred.uncertainty_scores.get("per_slice", [])
    if len(scores) > 1:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(y=scores, x=list(range(len(scores))), mode="lines+markers"))
        fig.add_vline(x=z, line_color="#ffd54f")
        fig.update_layout(height=220, margin=dict(l=0, r=0, t=24, b=0), title="Per-slice uncertainty (mean entropy, mask + 2 px band)",
                          xaxis_title="slice", yaxis_title="nats")
        st.plotly_chart(fig, width="stretch", key="unc_curve")
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[:8]
        st.caption("Most uncertain slices: " + ", ".join(f"{i + 1} ({scores[i]:.3f})" for i in ranked))


unc_viewer()
st.caption(f"Case uncertainty score: {pred.uncertainty_scores.get('case', float('nan')):.4f} nats "
           f"({pred.uncertainty_method}).")
