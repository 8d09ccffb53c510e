"""Segment & review: choose a model and options, run once, then browse overlays and metrics."""
import streamlit as st

from medseg_core.export import dicom_seg_available, dicom_seg_bytes
from medseg_core.inference import PredictOptions
from medseg_core.io import display_slice, mask_nifti_bytes, n_slices
from medseg_core.io.errors import InputError
from medseg_core.preprocessing import PREPROCESSING
from medseg_core.render import (COMPARE_COLOURS, OTHER_OVARY_COLOUR, CT_PRESETS, LABEL_COLOURS, apply_window, aspect_correct, auto_window, display_notice, hex_to_rgb, rgb_to_hex,
                                compare_layers, frame_png, overlay, slice_figure)
from medseg_core.io.orientation import display_aspect
from medseg_core.labels import describe, display_rows, slice_words
from medseg_core.review import (POSTPROCESSING_CHOICES, SIDE_LABELS, contract_of, envelope_warnings, gate_choices, initial_slice,
                                slice_curve, metrics_csv, metrics_table, preprocessing_preview,
                                slice_metrics)
from pages._shared import current_prediction, get_model, get_spec, run, unc_ok
from pages._shared import require_frame

require_frame()

st.title("Segment & review")
ss = st.session_state
if ss.get("from_gallery") and st.button("← Back to the failure gallery", key="back_gallery",
                                        help="Returns to the same run, tab, filters and sort."):
    st.switch_page("pages/gallery.py")
vol = ss.get("volume")
if vol is None:
    st.info("Load a case first (Load case page).")
    st.stop()
gt = ss.get("gt_mask")

# ------------------------------------------------------------------ what to review
name = ss.get("model_name")
externals = ss.get("external_predictions") or {}
sources = ([f"model:{name}"] if name else []) + [f"uploaded:{k}" for k in externals]
source = None
if len(sources) > 1:
    source = st.radio("Result to review", sources, horizontal=True, key="result_source",
                      format_func=lambda s: f"Model: {get_spec(name).title}" if s.startswith("model:")
                      else f"Uploaded prediction: {s.split(':', 1)[1]}")
elif sources:
    source = sources[0]
pred = None
if source is None:
    st.warning("No model fits this case (see the sidebar for why), and no prediction was uploaded. "
               "You can still view the image and the reference mask below.")
elif source.startswith("uploaded:"):
    pred = externals[source.split(":", 1)[1]]
    st.caption(f"Uploaded prediction **{pred.model}** (made outside medseg; reviewed as a model's output).")
    for w in pred.warnings:
        st.warning(w)
else:
    spec = get_spec(name)
    st.caption(f"Model: **{spec.title}** ({spec.name}, chosen in the sidebar) · {contract_of(spec)}")
    envelope = envelope_warnings(spec, get_model(name).card, vol, ss.get("case_key"))
    for w in envelope:
        st.warning(w)
    c1, c2, c3 = st.columns(3)
    pre_names = list(PREPROCESSING)
    ss.setdefault(f"pre_{name}", spec.preprocessing)  # defaults via state: the gallery may preset them
    ss.setdefault("thr", float(spec.threshold))
    pre = c1.selectbox("Preprocessing", pre_names, key=f"pre_{name}",
                       help=f"The model was trained with '{spec.preprocessing}' (its card); others show how "
                            "sensitive it is.")
    side_modes = ["none"]
    if spec.side_masking:
        side_modes = ["none", "left", "right", "two_pass"] + (["oracle"] if gt is not None else [])
    side = c2.selectbox("Ovary-side masking", side_modes, key="side_mode", format_func=lambda m: SIDE_LABELS[m],
                        help="Sides are the patient's (from the file's orientation). 'Oracle' uses the reference "
                             "mask: evaluation only.") if len(side_modes) > 1 else "none"
    post_label = c3.selectbox("Post-processing", list(POSTPROCESSING_CHOICES), key="post_mode")
    c4, c5 = st.columns(2)
    thr = c4.slider("Threshold", 0.05, 0.95, step=0.05, key="thr")
    clin = {}
    if spec.clinical_inputs:
        cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
        clin["menopausal"] = int(c5.toggle("Postmenopausal", value=bool(cl.get("menopausal")), key="meno"))
        clin["oncology_center"] = int(c5.toggle("Oncology centre", value=bool(cl.get("oncology_center")), key="onco"))

    gates = gate_choices(spec)
    gate = None
    if gates and c5.toggle("Skip slices the slice classifier calls ovary-free", key="gate_on",
                           help="Report 000's RAovSeg first stage: a slice classifier decides which slices may hold "
                                "an ovary; the others are left empty (shown as removed)."):
        gate = gates[0]
    mc = {}
    if unc_ok(get_model(name)):
        with st.expander("MC-dropout average (as in cohort runs)", expanded=bool(ss.get("mc_n"))):
            m1, m2 = st.columns(2)
            mc["mc_samples"] = int(m1.number_input("MC-dropout samples averaged (0 = one deterministic pass)", 0, 30,
                                                   key="mc_n", help="The mask is the mean of this many dropout "
                                                   "samples; a cohort run with MC dropout stores exactly this."))
            mc["seed"] = int(m2.number_input("Seed", 0, 10_000, key="mc_seed"))
    options = PredictOptions(preprocessing=pre, side_masking=side, postprocessing=POSTPROCESSING_CHOICES[post_label],
                             threshold=thr, gate=gate, **mc, **clin)

    if st.toggle("Preprocessing preview (before / after)", key="preview"):
        z0 = initial_slice(vol.shape, "axial", gt)
        r_mm, c_mm = display_aspect(vol.spacing, "axial")
        before, after = preprocessing_preview(vol, pre, z0, spec.preprocessing_params if pre == spec.preprocessing else {})
        p1, p2 = st.columns(2)
        p1.image(aspect_correct(apply_window(before, *auto_window(before[None])), r_mm, c_mm), caption="before", clamp=True)
        p2.image(aspect_correct(apply_window(after, *auto_window(after[None])), r_mm, c_mm), caption=f"after: {pre}", clamp=True)

    if st.button("Run model", type="primary") or ss.pop("run_now", False):
        try:
            run(name, options, reference=gt if side == "oracle" else None)
        except InputError as e:
            st.error(str(e))

    current = ss.get("current")
    pred = current_prediction() if current and current[1] == name else None
    if pred is None:
        st.info("Choose options and press **Run model**. Results are cached: browsing never re-runs the model.")
    else:
        if pred.options != options:
            st.caption("Showing the last run; the options above have changed since. Press Run model to apply them.")
        for w in pred.warnings:
            if w not in envelope:  # already shown above the options
                st.warning(w)
masks = pred.masks if pred is not None else {}
primary = next(iter(masks.values()), None)
removed_any = pred is not None and any(r.any() for r in pred.removed.values())  # once per run, not per slider move


# ------------------------------------------------------------------ viewer
@st.fragment
def viewer():
    col_img, col_ctl = st.columns([3, 1])
    with col_ctl:
        planes = ["axial"] if vol.is_2d else ["axial", "coronal", "sagittal"]  # a 2D image has one plane
        if ss.get("plane") not in planes:
            ss["plane"] = "axial"
        plane = st.radio("Plane", planes, horizontal=True, key="plane") if len(planes) > 1 else "axial"
        presets = (["Auto (1-99 %)"] + list(CT_PRESETS)) if vol.modality == "CT" else ["Auto (1-99 %)"]
        preset = st.selectbox("Window", presets + ["Manual"], key="wl_preset")
        if preset in CT_PRESETS:
            width, level = CT_PRESETS[preset]
        else:
            width, level = ss["auto_window"]
        if preset == "Manual":
            lo, hi = float(vol.array.min()), float(vol.array.max())
            width = st.slider("Width", 1.0, max(hi - lo, 2.0), float(width), key="wl_w")
            level = st.slider("Level", lo, hi, float(level), key="wl_l")
        alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.35, 0.05, key="alpha")
        mode = st.radio("Overlay", ["fill", "outline"], horizontal=True, key="ovmode")
        shown, colours = [], {}
        for k, lab in enumerate(masks):
            cb, cp = st.columns([3, 1])
            if cb.checkbox(lab, True, key=f"show_{lab}"):
                shown.append(lab)
            colours[lab] = hex_to_rgb(cp.color_picker(f"{lab} colour", rgb_to_hex(LABEL_COLOURS[k % len(LABEL_COLOURS)]),
                                                      key=f"colour_{lab}", label_visibility="collapsed"))
        compare = st.toggle("Compare with reference (TP / FP / FN)", value=gt is not None,
                            disabled=gt is None or primary is None, key="compare") and primary is not None
        show_removed = removed_any and st.toggle(
            "Show what post-processing removed", value=False, key="show_removed")
        show_sides = pred is not None and bool(pred.sides) and st.toggle("Colour two-pass sides", value=True, key="sides")
        other = (ss.get("extra_masks") or {}).get("ovary_other")
        show_other = other is not None and st.toggle("Outline the other (unlabelled) ovary in pink", key="show_other",
                                                    help="The dataset marks one ovary; the other is shown as in "
                                                         "the gallery's thumbnails.")
    n = n_slices(vol.shape, plane)
    if f"slice_{plane}" not in st.session_state:
        st.session_state[f"slice_{plane}"] = initial_slice(vol.shape, plane, primary, gt)
    with col_img:
        idx = st.select_slider("Slice", list(range(n)), key=f"slice_{plane}", format_func=lambda i: str(i + 1)) if n > 1 else 0  # state: 0-based index; shown: 1..n
        layers = []
        if compare and gt is not None:
            layers = compare_layers(display_slice(primary, plane, idx), display_slice(gt, plane, idx))
        elif primary is None and gt is not None:  # no result yet: the reference alone
            layers = [(display_slice(gt, plane, idx), COMPARE_COLOURS["tp"])]
        elif show_sides:
            layers = [(display_slice(pred.sides[s]["mask"], plane, idx), LABEL_COLOURS[k]) for k, s in enumerate(("left", "right"))]
        else:
            for lab in masks:
                if lab in shown:
                    layers.append((display_slice(pred.masks[lab], plane, idx), colours[lab]))
        if show_removed:
            for lab in shown:
                layers.append((display_slice(pred.removed[lab], plane, idx), (255, 0, 255)))
        grey = apply_window(display_slice(vol.array, plane, idx), width, level)
        rgb = overlay(grey, layers, alpha=alpha, mode=mode)
        if show_other:
            rgb = overlay(rgb, [(display_slice(other, plane, idx), OTHER_OVARY_COLOUR)], mode="outline")
        r_mm, c_mm = display_aspect(vol.spacing, plane)
        notice = display_notice(rgb.shape, r_mm, c_mm)
        rgb = aspect_correct(rgb, r_mm, c_mm)
        if notice:
            st.caption(notice)
        st.plotly_chart(slice_figure(rgb, plane, title=f"{plane.capitalize()} {slice_words(idx, n)}"), width="stretch",
                        config={"displaylogo": False}, key="viewer_fig")
        if pred is not None and pred.slice_probabilities is not None and plane == "axial" and n > 1:
            thr_g = pred.gate.get("threshold") if pred.gate else get_spec(name).threshold
            st.plotly_chart(slice_curve(pred.slice_probabilities, idx, "p(ovary present)", thr_g,
                                        pred.gate.get("skipped", []) if pred.gate else
                                        [int(z) for z, v in enumerate(pred.slice_probabilities) if v < thr_g]),
                            width="stretch", config={"displaylogo": False, "displayModeBar": False}, key="gate_curve")
            st.caption("Slice classifier: p(ovary present) per slice; shaded slices fall below its threshold and are "
                       + ("left empty by the gate." if pred.gate else "the ones a gate would skip."))
        legend = ("TP green · FP red · FN blue" if compare and gt is not None else
                  "reference mask green" if primary is None and gt is not None else
                  "left side orange · right side blue" if show_sides else
                  " · ".join(f"{lab}" for lab in shown))
        st.caption(f"{legend}{' · removed by post-processing: magenta' if show_removed else ''}"
                   f"{' · other ovary: pink outline' if show_other else ''}. "
                   "Radiological convention: patient's right on the image left.")
        if gt is not None and plane == "axial" and primary is not None:
            sm = slice_metrics(primary, gt, vol.spacing, idx)
            st.caption("This slice: " + ", ".join(describe(k, v) for k, v in sm.items()))
        st.download_button("Export this view (PNG)", lambda: frame_png(rgb), file_name=f"view_{plane}_{idx + 1}.png",
                           mime="image/png", key="dl_png")


viewer()

# ------------------------------------------------------------------ results, metrics, export
if pred is None:
    st.stop()
result_name = pred.model
st.subheader("Results")
cols = st.columns(4)
vox_ml = vol.voxel_volume_ml
for k, (lab, m) in enumerate(pred.masks.items()):
    cols[k % 4].metric(f"{lab} {'area' if vol.is_2d else 'volume'}", f"{m.sum() * vox_ml:.2f} mL" if not vol.is_2d else f"{m.sum() * vol.spacing[1] * vol.spacing[2]:.0f} mm²")
if pred.class_probabilities is not None:
    cols[-1].metric("p(malignant)", f"{pred.class_probabilities[1]:.2f}", "malignant" if pred.malignant else "benign")
if pred.sides:
    st.caption("Two-pass: " + "; ".join(f"{s}: confidence {v['confidence']:.2f}, {v['volume_ml']:.2f} mL"
                                         for s, v in pred.sides.items()))
removed = {lab: int(r.sum()) for lab, r in pred.removed.items() if r.any()}
if pred.gate:
    st.caption(f"The slice-classifier gate ({pred.gate['model']}, threshold {pred.gate['threshold']:g}) left "
               f"{len(pred.gate['skipped'])} of {vol.shape[0]} slices empty.")
if removed:
    st.caption(("Post-processing and the gate removed " if pred.gate else "Post-processing removed ")
               + ", ".join(f"{v} voxels of {k}" for k, v in removed.items()) + ".")
rows = []
if gt is not None and pred.mask is not None:
    rows = metrics_table(pred, gt, vol.spacing)
    st.dataframe(display_rows(rows), hide_index=True)
if pred.timings:
    timing = ", ".join(f"{k.replace('_s', '')} {v:.2f} s" for k, v in pred.timings.items() if k.endswith("_s"))
    st.caption(f"Timings: {timing}.")
e1, e2, e3 = st.columns(3)
if pred.mask is not None:
    e1.download_button("Export mask (NIfTI, source affine)", lambda: mask_nifti_bytes(pred.mask, vol),
                       file_name=f"{result_name}_mask.nii.gz", mime="application/gzip", key="dl_nii")
    seg_reason = dicom_seg_available(vol)
    if seg_reason is None:
        e3.download_button("Export DICOM SEG", lambda: dicom_seg_bytes(pred.masks, vol, result_name),
                           file_name=f"{result_name}_seg.dcm", mime="application/dicom", key="dl_seg",
                           help="A binary DICOM Segmentation referencing the source series; no patient data.")
    else:
        e3.caption(seg_reason)
if rows:
    e2.download_button("Export metrics (CSV)", metrics_csv(rows, {"model": result_name}), file_name=f"{result_name}_metrics.csv",
                       mime="text/csv", key="dl_csv")
