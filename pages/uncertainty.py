"""Uncertainty: MC dropout or test-time augmentation; mean, entropy, mutual information maps."""

import streamlit as st

from medseg_core.calibration import card_calibration, reliability, reliability_figure
from medseg_core.inference import PredictOptions
from medseg_core.io import n_slices
from medseg_core.io.errors import InputError
from medseg_core.io.orientation import orientation_known
from medseg_core.labels import display_name, name_and_unit, slice_words
from medseg_core.render import slice_figure, slice_picture
from medseg_core.review import initial_slice
from medseg_core.tables import csv_text, with_slice_numbers
from medseg_core.uncertainty import LN2
from pages._access import exported
from pages._shared import cached_prediction, get_model, get_spec, require_frame, run

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


def calibration_of(ref: str):
    """The card's calibration entry of the chosen model (None when it was never calibrated)."""
    if ref.startswith("session:"):
        return card_calibration(get_model(ref).card)
    from medseg_core.checkpoints import read_card

    return card_calibration(read_card(ref))


clin = {}
if spec.clinical_inputs:
    cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
    clin = {"menopausal": int(cl.get("menopausal", 0)), "oncology_center": int(cl.get("oncology_center", 0))}
cal = calibration_of(name)
calibrated = st.toggle(
    "Calibrated probabilities",
    key="unc_calibrated",
    disabled=cal is None,
    help=(
        f"Temperature {cal['temperature']:.3g} from this model's card ({cal.get('fitted_on', '')})"
        if cal
        else "This model's card has no calibration; fit one with 'medseg calibrate'."
    ),
)
opts = PredictOptions(
    mc_samples=n if method == "MC dropout" else 0,
    tta=method != "MC dropout",
    seed=0,
    calibrated=bool(calibrated and cal),
    **clin,
)
if st.button("Compute uncertainty", type="primary"):
    try:
        run(name, opts, slot="unc_key")
    except InputError as e:
        st.error(str(e))
pred = cached_prediction(ss.get("unc_key"))  # recomputed if the memory budget released it
if pred is None or not pred.uncertainty:
    st.info("Press **Compute uncertainty**. Maps are computed from probabilities (never logits).")
    st.stop()


#: What each map is, in words, for the caption under the viewer.
MAP_HELP = {
    "entropy": "predictive entropy of the mean probability (total uncertainty; at most ln 2 = 0.693 nats)",
    "mutual_information": "mutual information between prediction and model weights (the model's own "
    "uncertainty; at most ln 2 = 0.693 nats)",
    "mean": "mean foreground probability over the samples",
    "variance": "variance of the foreground probability over the samples (the bar ends at this "
    "case's largest variance)",
}


@st.fragment
def unc_viewer():
    a, b = st.columns([3, 1])
    with b:
        what = st.radio(
            "Map",
            ["entropy", "mutual_information", "mean", "variance"],
            key="unc_map",
            format_func=lambda k: display_name(k, "map"),
        )
        alpha = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="unc_alpha")
    m = pred.uncertainty_maps[what]
    # entropy and MI of a binary prediction are at most ln 2 nats, a probability at most 1; the
    # variance (at most 1/4) is shown up to the case's largest value so that it stays visible
    vmax = {"entropy": LN2, "mutual_information": LN2, "mean": 1.0}.get(what, float(m.max()) or 1.0)
    nz = n_slices(vol.shape, "axial")
    if "unc_slice" not in st.session_state:
        st.session_state["unc_slice"] = initial_slice(vol.shape, "axial", pred.mask)
    with a:
        # the state holds the 0-based array index; people see slice numbers 1..n
        z = (
            st.select_slider("Slice", list(range(nz)), key="unc_slice", format_func=lambda i: str(i + 1))
            if nz > 1
            else 0
        )
        rgb = slice_picture(
            vol.array,
            vol.spacing,
            "axial",
            z,
            st.session_state["auto_window"],
            alpha=alpha,
            heat={"values": m, "vmin": 0.0, "vmax": vmax, "floor": vmax * 0.02},
        ).rgb
        words, unit = name_and_unit(what, "map")
        st.plotly_chart(
            slice_figure(
                rgb,
                "axial",
                title=f"{words}: axial {slice_words(z, nz)}",
                colorbar={"title": unit, "vmin": 0.0, "vmax": vmax},
                letters=orientation_known(vol.meta),
            ),
            width="stretch",
            key="unc_fig",
        )
        st.caption(
            f"{words} ({unit}): {MAP_HELP[what]}. Colour bar: viridis, dark purple = low, yellow = high; "
            "pixels below 2 % of the bar's top stay grey, the others are blended with the image at the "
            "chosen opacity (opacity 1 shows the bar's colours exactly)."
        )
    scores = pred.uncertainty_scores.get("per_slice", [])
    if len(scores) > 1:
        import plotly.graph_objects as go

        # a slice with a prediction scores the prediction and its band; one without scores the whole
        # slice (mostly easy background): two traces, so the low values are not read as confident contours
        on = pred.uncertainty_scores.get("on_prediction") or [True] * len(scores)
        fig = go.Figure()
        for kind, colour, words in (
            (True, "#1f77b4", "over the prediction and a 2-pixel band"),
            (False, "#9e9e9e", "whole slice (no prediction on it)"),
        ):
            fig.add_trace(
                go.Scatter(  # every slice number (as people count them), None where the other kind is drawn:
                    x=list(range(1, len(scores) + 1)),  # the line breaks there instead of bridging it
                    y=[v if on[i] is kind else None for i, v in enumerate(scores)],
                    connectgaps=False,
                    mode="markers" if not kind else "lines+markers",
                    name=f"Mean entropy {words}",
                    marker=dict(color=colour, size=5),
                    line=dict(color=colour),
                    hovertemplate=f"slice %{{x}}: %{{y:.3f}} nats ({words})<extra></extra>",
                )
            )
        fig.add_vline(x=z + 1, line_color="#ffd54f")
        fig.update_layout(
            height=260,
            margin=dict(l=0, r=0, t=24, b=0),
            title="Per-slice uncertainty",
            xaxis_title="slice",
            yaxis_title="nats",
            xaxis_range=[0.5, len(scores) + 0.5],
            legend=dict(orientation="h", yanchor="top", y=-0.3),
        )
        st.plotly_chart(fig, width="stretch", key="unc_curve")
        rows = per_slice_rows(scores, on)
        ranked = sorted(rows, key=lambda r: -r["uncertainty_nats"])[:8]
        st.caption(
            "Most uncertain slices: "
            + ", ".join(f"{r['slice_number']} ({r['uncertainty_nats']:.3f} nats)" for r in ranked)
        )
        st.download_button(
            "Per-slice uncertainty (CSV)",
            csv_text(rows).encode(),
            file_name="per_slice_uncertainty.csv",
            mime="text/csv",
            key="dl_unc_csv",
            on_click=exported("per-slice uncertainty CSV", name),
            help="Columns: slice (0-based array index), slice_number (1-based, as shown here), "
            "uncertainty_nats (mean entropy), measured_over (the prediction and its band, or the whole slice "
            "where nothing was predicted).",
        )


def per_slice_rows(scores, on_prediction) -> list[dict]:
    """The per-slice scores as rows: ``slice`` is the 0-based array index, ``slice_number`` the
    number shown on screen (the CSV convention of :mod:`medseg_core.tables`), ``measured_over`` what
    the mean entropy was taken over."""
    return [
        with_slice_numbers(
            {
                "slice": z,
                "uncertainty_nats": float(v),
                "measured_over": "prediction+band" if on_prediction[z] else "whole slice",
            }
        )
        for z, v in enumerate(scores)
    ]


unc_viewer()
method_words = (
    f"MC dropout, {pred.options.mc_samples} samples"
    if pred.uncertainty_method == "mc_dropout"
    else "test-time augmentation (flips)"
    if pred.uncertainty_method == "tta"
    else display_name(pred.uncertainty_method or "unknown method")
)
st.caption(
    f"Case uncertainty score: {pred.uncertainty_scores.get('case', float('nan')):.4f} nats "
    f"(mean entropy over the prediction and a 2-pixel band; {method_words})."
)


# ------------------------------------------------------------------ calibration
st.subheader("Calibration")
gt = ss.get("gt_mask")
if gt is None or pred.probability is None or gt.shape != pred.probability.shape:
    st.caption("A reliability diagram needs this case's reference mask (Load case).")
else:
    region = st.radio(
        "Voxels",
        ["near", "all"],
        horizontal=True,
        key="cal_region",
        format_func=lambda r: {"near": "Near the structure", "all": "Whole volume"}[r],
        help="Near the structure: the box around prediction and reference, 8 voxels wider. The whole "
        "volume is dominated by easy background voxels.",
    )
    rel = reliability(pred.probability, gt, region=region, pred=pred.mask)
    cc1, cc2 = st.columns([2, 1])
    cc1.plotly_chart(
        reliability_figure(rel, spec.title),
        width="stretch",
        key="cal_fig",
        config={"displaylogo": False, "displayModeBar": False},
    )
    with cc2:
        st.metric("Expected calibration error", f"{rel.ece:.3f}")
        st.metric(
            "Maximum calibration error",
            f"{rel.mce:.3f}",
            help="The largest gap between predicted probability and observed frequency in any bin.",
        )
        st.caption(
            f"Over {rel.n:,} voxels of this case in 15 bins of the foreground probability "
            + ("(temperature-scaled)" if pred.calibration else "(the model's own)")
            + ". A calibrated model lies on the diagonal: of the voxels given 0.8, 80 % are foreground. "
            "One case is a small sample; 'medseg calibrate' measures a validation split."
        )
    with st.expander("Bins"):
        st.dataframe(rel.rows(), hide_index=True)
