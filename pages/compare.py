"""Compare: two results for the current case side by side (two models, a model and a prediction made
elsewhere, or one model under two option sets), with one slice slider and one window for both, the
disagreement map, a per-slice disagreement curve and the slices where they disagree most."""

import streamlit as st

from medseg_core.compare import comparison_table, disagreement_map, most_disagreeing, per_slice_disagreement
from medseg_core.io import display_slice, n_slices
from medseg_core.io.errors import InputError
from medseg_core.io.orientation import orientation_known
from medseg_core.labels import display_rows, slice_words
from medseg_core.options import predict_options
from medseg_core.render import LABEL_COLOURS, disagreement_layers, slice_figure, slice_picture
from medseg_core.review import compatible_models, initial_slice, slice_curve
from pages._shared import get_spec, require_frame, run

require_frame()
st.title("Compare two results")
ss = st.session_state
vol = ss.get("volume")
if vol is None:
    st.info("Load a case first.")
    st.stop()
gt = ss.get("gt_mask")

# what can be compared: every segmentation model that fits the case, and predictions uploaded for it
choices = compatible_models(vol, session_models=ss.get("session_models"), case=ss.get("case_key"))
models = {c.ref: c.label for c in choices if c.ok and c.task in ("segmentation", "multitask")}
uploaded = ss.get("external_predictions") or {}
sources = {f"model:{r}": lab for r, lab in models.items()} | {
    f"uploaded:{k}": f"{k} (uploaded prediction)" for k in uploaded
}
if len(sources) < 1:
    st.warning("No segmentation model fits this case and no prediction was uploaded for it: nothing to compare.")
    st.stop()
keys = list(sources)
default_a = f"model:{ss['model_name']}" if f"model:{ss.get('model_name')}" in sources else keys[0]
default_b = next(
    (k for k in keys if k != default_a and k.startswith("uploaded:")),
    next((k for k in keys if k != default_a), default_a),
)
for side, default in (("a", default_a), ("b", default_b)):
    if ss.get(f"cmp_src_{side}") not in sources:
        ss[f"cmp_src_{side}"] = default
ss.setdefault("cmp_opt_a", "")
ss.setdefault("cmp_opt_b", "" if default_b != default_a else "side_masking=two_pass")

cols = st.columns(2)
picked = {}
for col, side, title in ((cols[0], "a", "A"), (cols[1], "b", "B")):
    with col:
        src = st.selectbox(f"Result {title}", keys, key=f"cmp_src_{side}", format_func=lambda k: sources[k])
        opt = ""
        if src.startswith("model:"):
            opt = st.text_input(
                f"Options of {title}",
                key=f"cmp_opt_{side}",
                placeholder="e.g. side_masking=two_pass, postprocessing=[]",
                help="Prediction options as name=value pairs (the cohort's option-set syntax); "
                "empty = the model's defaults.",
            )
        picked[side] = (src, opt)

if st.button("Compare", type="primary", key="cmp_run"):
    try:
        for side, (src, opt) in picked.items():
            if src.startswith("model:"):
                ref = src.split(":", 1)[1]
                spec = get_spec(ref)
                kw = {}
                if spec.clinical_inputs:
                    cl = ss.get("clinical") or {}
                    kw = {
                        "menopausal": int(cl.get("menopausal", 0)),
                        "oncology_center": int(cl.get("oncology_center", 0)),
                    }
                opts = predict_options(opt or None, **kw)
                run(ref, opts, reference=gt if opts.side_masking == "oracle" else None, slot=f"cmp_key_{side}")
                ss[f"cmp_name_{side}"] = spec.title + (f" ({opt})" if opt else "")
            else:
                ss[f"cmp_key_{side}"] = src
                ss[f"cmp_name_{side}"] = src.split(":", 1)[1]
    except InputError as e:
        st.error(str(e))


def _result(side):
    key = ss.get(f"cmp_key_{side}")
    if key is None:
        return None
    if isinstance(key, str) and key.startswith("uploaded:"):
        return uploaded.get(key.split(":", 1)[1])
    return ss["predictions"].get(key) if "predictions" in ss else None


pa, pb = _result("a"), _result("b")
if pa is None or pb is None or pa.mask is None or pb.mask is None:
    st.info("Choose two results and press **Compare**.")
    st.stop()
name_a, name_b = ss.get("cmp_name_a", "A"), ss.get("cmp_name_b", "B")
a, b = pa.mask, pb.mask
if a.shape != b.shape:
    st.error("The two results are on different grids; they cannot be compared voxel by voxel.")
    st.stop()
dis = disagreement_map(a, b)
n_dis = int(((dis == 1) | (dis == 2)).sum())
curve = per_slice_disagreement(a, b, vol.spacing)
worst = most_disagreeing(a, b, vol.spacing, k=5)
st.markdown(
    f"**{n_dis:,} voxels** where exactly one of them says foreground "
    f"({n_dis * vol.voxel_volume_ml:.2f} mL): {int((dis == 1).sum()):,} only in A, "
    f"{int((dis == 2).sum()):,} only in B."
)

plane = "axial"
n = n_slices(vol.shape, plane)
if "cmp_slice" not in ss or ss["cmp_slice"] >= n:
    ss["cmp_slice"] = worst[0] if worst else initial_slice(vol.shape, plane, a, gt)


def _jump(z):
    ss["cmp_slice"] = z


if worst and n > 1:
    jc = st.columns(len(worst) + 1)
    jc[0].markdown("Most disagreeing slices:")
    for k, z in enumerate(worst):
        jc[k + 1].button(
            f"Slice {z + 1}",
            key=f"cmp_jump_{z}",
            on_click=_jump,
            args=(z,),
            help=f"{curve['disagree_mm2'][z]:.0f} mm² disagree on this slice",
        )
idx = st.select_slider("Slice", list(range(n)), key="cmp_slice", format_func=lambda i: str(i + 1)) if n > 1 else 0
width, level = ss["auto_window"]
letters = orientation_known(vol.meta)
pics = [
    (
        "A",
        slice_picture(vol.array, vol.spacing, plane, idx, (width, level), layers=[(a, LABEL_COLOURS[0])], alpha=0.35),
    ),
    (
        "B",
        slice_picture(vol.array, vol.spacing, plane, idx, (width, level), layers=[(b, LABEL_COLOURS[1])], alpha=0.35),
    ),
    (
        "A vs B",
        slice_picture(
            vol.array,
            vol.spacing,
            plane,
            idx,
            (width, level),
            alpha=0.6,
            layers=disagreement_layers(display_slice(a, plane, idx), display_slice(b, plane, idx)),
        ),
    ),
]
pc = st.columns(3)
for col, (title, pic) in zip(pc, pics, strict=True):
    col.plotly_chart(
        slice_figure(pic.rgb, plane, title=f"{title} · slice {idx + 1}", height=420, letters=letters),
        width="stretch",
        config={"displaylogo": False, "displayModeBar": False},
    )
st.caption(
    f"{slice_words(idx, n).capitalize()}. Disagreement: orange only in A, blue only in B, light grey in both. "
    + (
        "Radiological convention: patient's right on the image left."
        if letters
        else "The file does not state the patient's orientation: shown as stored."
    )
)
if n > 1:
    st.plotly_chart(
        slice_curve(curve["disagree_mm2"], idx, "disagreement (mm²)"),
        width="stretch",
        config={"displaylogo": False, "displayModeBar": False},
        key="cmp_curve",
    )
st.dataframe(
    display_rows(comparison_table(a, b, vol.spacing, ref=gt, name_a="A", name_b="B")),
    hide_index=True,
    column_config={  # one precision per column (the values stay numbers: the table sorts)
        "Dice": st.column_config.NumberColumn(format="%.3f"),
        "IoU": st.column_config.NumberColumn(format="%.3f"),
        "HD95 (mm)": st.column_config.NumberColumn(format="%.2f"),
        "Volume, first named (mL)": st.column_config.NumberColumn(format="%.2f"),
        "Volume, second named (mL)": st.column_config.NumberColumn(format="%.2f"),
    },
)
st.caption(
    f"A = {name_a}; B = {name_b}. Metrics on the foreground with the voxel spacing "
    f"({' x '.join(f'{s:.3g}' for s in vol.spacing)} mm); HD95 is empty where a mask is empty."
    + ("" if gt is not None else " No reference mask: A against B only.")
)
