"""Segment & review: choose a model and options, run once, then browse overlays and metrics.

Presenter layout: the viewer (picture, slice slider, plane, window) fits a 1280 x 720 window without
scrolling once a result exists. The run options live in the "Model and options" expander (open
before the first run, collapsed once a result is shown); warnings are one line each with their
details on demand; the mouse wheel over the picture moves the slice (a small script drives the
slice slider, see ``_VIEWER_JS``).
"""

import streamlit as st

from medseg_core.cards import OUTSIDE
from medseg_core.export import dicom_seg_available, dicom_seg_bytes
from medseg_core.inference import PredictOptions
from medseg_core.io import display_slice, mask_nifti_bytes, n_slices
from medseg_core.io.errors import InputError
from medseg_core.io.orientation import orientation_known
from medseg_core.labels import describe, display_name, display_rows, slice_words, timings_words
from medseg_core.preprocessing import PREPROCESSING
from medseg_core.render import (
    COMPARE_COLOURS,
    CT_PRESETS,
    LABEL_COLOURS,
    OTHER_OVARY_COLOUR,
    compare_layers,
    hex_to_rgb,
    rgb_to_hex,
    slice_figure,
    slice_picture,
    view_png,
)
from medseg_core.review import (
    POSTPROCESSING_CHOICES,
    SIDE_LABELS,
    contract_of,
    envelope_warnings,
    gate_choices,
    initial_slice,
    metrics_csv,
    metrics_table,
    preprocessing_preview,
    slice_curve,
    slice_metrics,
)
from pages import _correct as CORR
from pages import _niivue as NVS
from pages._access import exported, verdict_control
from pages._shared import current_prediction, get_model, get_spec, require_frame, run, unc_ok
from pages._worklist_glue import nav_strip

require_frame()

#: Height (px) of the viewer's picture when the browser does not size it (no JavaScript, first paint):
#: with the page's compact header, the picture, the slice slider and the plane/window controls fit a
#: 1280 x 720 browser window (and 1024 x 768) without scrolling. In a browser, ``_VIEWER_JS`` sets it
#: to the window's height below the picture's top, less room for the legend line under it.
VIEWER_HEIGHT = 450
#: Removed-by-post-processing colour (magenta), as in the legend.
REMOVED_COLOUR = (255, 0, 255)

# Page-scoped styling (every rule is keyed to this page's containers, so other pages keep theirs):
# less empty space above the title, a smaller title, tighter gaps, one-line warnings.
_CSS = (
    """<style>
[data-testid="stMainBlockContainer"]:has(.st-key-seg_head) {padding-top: 2.75rem; padding-bottom: 3rem;
  padding-left: 1.5rem; padding-right: 1.5rem;}
[data-testid="stMainBlockContainer"]:has(.st-key-seg_head) [data-testid="stVerticalBlock"] {gap: 0.5rem;}
.st-key-seg_head h1 {font-size: 1.55rem; padding: 0.1rem 0 0 0; line-height: 1.3;}
.st-key-seg_head [data-testid="stCaptionContainer"] p {margin-bottom: 0;}
.st-key-seg_warn [data-testid="stAlert"] > div {padding: 0.35rem 0.75rem; min-height: 0;}
.st-key-seg_warn [data-testid="stAlert"] p {font-size: 0.9rem; line-height: 1.35;}
.st-key-seg_warn [data-testid="stPopover"] button {min-height: 2.1rem; padding: 0.1rem 0.6rem;}
.st-key-seg_controls [data-testid="stWidgetLabel"] {min-height: 1rem; margin-bottom: 0;}
.st-key-seg_controls [data-testid="stSlider"] {padding-bottom: 0;}
.st-key-seg_view [data-testid="stCaptionContainer"] p {margin-bottom: 0;}
.st-key-seg_image {height: var(--seg-fit, %dpx) !important; flex: 0 0 auto !important; overflow: hidden !important;}
div:has(> .st-key-seg_image) {height: auto !important;}
</style>"""  # noqa: UP031 (CSS braces: %-formatting spares doubling every brace)
    % VIEWER_HEIGHT
)

# Installed once per browser tab (guarded), run in the page itself (st.html with JavaScript):
# 1. Mouse wheel over the picture = next / previous slice (OHIF, 3D Slicer): one slice per notch.
#    Streamlit has no wheel event, so the listener presses ArrowRight / ArrowLeft on the slice
#    slider's thumb, which the slider handles as a keyboard step and commits on key-up (one rerun of
#    the viewer fragment). Trackpads' small deltas are summed to a notch. Plotly's own scroll-zoom is
#    off (config scrollZoom False) so the two never fight.
# 2. The picture's height follows the window (Streamlit cannot read it): the CSS variable --seg-fit
#    is the window height below the picture's top, less FIT_RESERVE px for the legend line, within
#    [FIT_MIN, FIT_MAX]; the plotly chart stretches to its container.
# 3. Correct mode: the drawable canvas's own toolbar is hidden (see hideCanvasToolbar).
FIT_RESERVE, FIT_MIN, FIT_MAX = 56, 360, 1100
_VIEWER_JS = """<script>
(function () {
  if (window.__medsegViewer) { return; }
  window.__medsegViewer = true;
  function scroller(el) {
    for (var p = el.parentElement; p; p = p.parentElement) {
      var o = getComputedStyle(p).overflowY;
      if ((o === "auto" || o === "scroll") && p.scrollHeight > p.clientHeight) { return p; }
    }
    return document.scrollingElement;
  }
  var last = "";
  function fit() {
    var box = document.querySelector(".st-key-seg_image");
    if (!box) { return; }
    var sc = scroller(box);
    var top = box.getBoundingClientRect().top - (sc === document.scrollingElement ? 0 :
              sc.getBoundingClientRect().top) + (sc ? sc.scrollTop : 0);
    var h = Math.round(Math.min(%(max)d, Math.max(%(min)d, window.innerHeight - top - %(reserve)d))) + "px";
    if (h !== last) { last = h; document.documentElement.style.setProperty("--seg-fit", h); }
  }
  function hideCanvasToolbar() {  // 3. Correct mode: the drawing canvas's own undo / redo / edit bar acts on
    // its strokes, which the page has already applied to the mask (the page's Undo / Redo act on the mask):
    // hidden inside the component's shadow root, where page CSS cannot reach
    document.querySelectorAll(".st-key-corr_canvas_box *").forEach(function (el) {
      var root = el.shadowRoot;
      if (root && !root.querySelector("style[data-medseg]")) {
        var st = document.createElement("style");
        st.setAttribute("data-medseg", "1");
        st.textContent = ".dc-toolbar { display: none !important; }";
        root.appendChild(st);
      }
    });
  }
  window.addEventListener("resize", fit);
  setInterval(function () { fit(); hideCanvasToolbar(); }, 400);
  fit();
  var acc = 0;
  document.addEventListener("wheel", function (e) {
    var over = e.target && e.target.closest && e.target.closest(".st-key-seg_image");
    if (!over) { return; }
    var thumb = document.querySelector(".st-key-seg_slice input[type=range]");
    if (!thumb) { return; }
    e.preventDefault();
    e.stopPropagation();
    var step = 0;
    if (e.deltaMode !== 0 || Math.abs(e.deltaY) >= 50) { step = Math.sign(e.deltaY); acc = 0; }
    else { acc += e.deltaY; if (Math.abs(acc) >= 100) { step = Math.sign(acc); acc = 0; } }
    if (!step) { return; }
    var key = step > 0 ? "ArrowRight" : "ArrowLeft";
    var init = {key: key, code: key, keyCode: step > 0 ? 39 : 37, which: step > 0 ? 39 : 37,
                bubbles: true, cancelable: true};
    thumb.dispatchEvent(new KeyboardEvent("keydown", init));
    thumb.dispatchEvent(new KeyboardEvent("keyup", init));
  }, {passive: false, capture: true});
})();
</script>""" % {"max": FIT_MAX, "min": FIT_MIN, "reserve": FIT_RESERVE}  # noqa: UP031 (JS braces, as above)


def _drop_trailing_parenthesis(text: str) -> str:
    """'X was trained on (a (b), c)' -> 'X was trained on'."""
    if not text.endswith(")"):
        return text
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return text[:i].rstrip()
    return text


def compact_warning(text: str, limit: int = 110) -> tuple[str, str | None]:
    """(headline, details or None) of a warning, so that it takes one line: a long warning is cut
    at its first colon, ', so' or full stop (a trailing parenthesis dropped from the headline when
    still too long) and keeps its closing verdict when that is short ('Its output here is not to
    be trusted.'); the whole warning is the details, offered on demand."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text, None
    verdict = ""
    body = text
    if ". " in text.rstrip(".")[:-1]:
        last = text.rstrip(".").rsplit(". ", 1)[1] + "."
        if len(last) <= 60:
            verdict, body = " " + last, text[: len(text) - len(last)].rstrip()
    cut = None
    trained = body.find(" was trained on (")
    if body.startswith(OUTSIDE) and trained > 0:  # cards.check_envelope: the model's title may hold a colon
        cut = body[: trained + len(" was trained on")]
    for sep in () if cut else (": ", ", so ", ". "):
        i = body.find(sep)
        if i >= 20:
            cut = body[:i]
            break
    if cut is None:
        return body[: limit - len(verdict)].rsplit(" ", 1)[0] + " …" + verdict, text
    if len(cut) + len(verdict) > limit:
        cut = _drop_trailing_parenthesis(cut)
    return cut.rstrip(".,;") + "." + verdict, text


def warnings_block(items: list[str]) -> None:
    """Each warning on one line; its details behind a 'Details' button beside it."""
    for w in items:
        head, rest = compact_warning(w)
        if rest is None:
            st.warning(head)
            continue
        with st.container(horizontal=True, vertical_alignment="center", wrap=False, gap="small"):
            st.warning(head)
            with st.popover("Details", help="The whole warning", width="content"):
                st.markdown(rest)


st.html(_CSS)
ss = st.session_state
with st.container(key="seg_head"):
    if ss.get("from_gallery"):
        h1, h2 = st.columns([3, 1], vertical_alignment="center")
        with h1:
            st.title("Segment & review")
        if h2.button(
            "← Back to the failure gallery", key="back_gallery", help="Returns to the same run, tab, filters and sort."
        ):
            st.switch_page("pages/gallery.py")
    else:
        st.title("Segment & review")
nav_strip()  # "Worklist: case 3 of 12 - Previous / Next", only for a case opened from the worklist
vol = ss.get("volume")
if vol is None:
    st.info("Load a case first (Load case page).")
    st.stop()
gt = ss.get("gt_mask")
letters = orientation_known(vol.meta)

# ------------------------------------------------------------------ what to review
name = ss.get("model_name")
externals = ss.get("external_predictions") or {}
sources = ([f"model:{name}"] if name else []) + [f"uploaded:{k}" for k in externals]
source = None
head = st.container(key="seg_warn")
if len(sources) > 1:
    source = head.radio(
        "Result to review",
        sources,
        horizontal=True,
        key="result_source",
        format_func=lambda s: (
            f"Model: {get_spec(name).title}" if s.startswith("model:") else CORR.source_words(s.split(":", 1)[1])
        ),
    )
elif sources:
    source = sources[0]
pred = None
if source is None:
    head.warning(
        "No model fits this case (see the sidebar for why), and no prediction was uploaded. "
        + (
            "You can still view the image and the reference mask below."
            if ss.get("gt_mask") is not None
            else "You can still view the image below."
        )
    )
elif source.startswith("uploaded:"):
    pred = externals[source.split(":", 1)[1]]
    head.caption(
        CORR.caption(pred.model)
        if CORR.is_correction(pred.model)
        else f"Uploaded prediction **{pred.model}** (made outside medseg; reviewed as a model's output)."
    )
    with head:
        warnings_block(pred.warnings)
else:
    spec = get_spec(name)
    head.caption(f"Model: **{spec.title}** ({spec.name}, chosen in the sidebar) · {contract_of(spec)}")
    envelope = envelope_warnings(spec, get_model(name).card, vol, ss.get("case_key"))
    with head:
        warnings_block(envelope)
    current = ss.get("current")
    has_result = bool(current and current[1] == name and current_prediction() is not None)
    # the options expander: open until there is a result, then collapsed (the viewer fits the window)
    run_requested = bool(ss.pop("_seg_run", False) or ss.pop("run_now", False))  # Run model, or the gallery
    if run_requested:
        ss["opts_open"] = False
    elif not has_result:
        ss["opts_open"] = True
    pre_names = list(PREPROCESSING)
    ss.setdefault(f"pre_{name}", spec.preprocessing)  # defaults via state: the gallery may preset them
    ss.setdefault("thr", float(spec.threshold))
    with st.expander("Model and options", expanded=True, key="opts_open", on_change="rerun"):
        c1, c2, c3 = st.columns(3)
        pre = c1.selectbox(
            "Preprocessing",
            pre_names,
            key=f"pre_{name}",
            format_func=lambda n: display_name(n, "pre") + (" (trained with)" if n == spec.preprocessing else ""),
            help="The model was trained with the step marked 'trained with' (its card); others "
            "show how sensitive it is.",
        )
        side_modes = ["none"]
        if spec.side_masking:
            side_modes = ["none", "left", "right", "two_pass"] + (["oracle"] if gt is not None else [])
        side = (
            c2.selectbox(
                "Ovary-side masking",
                side_modes,
                key="side_mode",
                format_func=lambda m: SIDE_LABELS[m],
                help="Sides are the patient's (from the file's orientation). 'Oracle' uses the reference "
                "mask: evaluation only."
                + ("" if letters else " This file does not state its orientation: left and right are assumed."),
            )
            if len(side_modes) > 1
            else "none"
        )
        post_label = c3.selectbox("Post-processing", list(POSTPROCESSING_CHOICES), key="post_mode")
        c4, c5 = st.columns(2)
        thr = c4.slider("Threshold", 0.05, 0.95, step=0.05, key="thr")
        clin = {}
        if spec.clinical_inputs:
            cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
            clin["menopausal"] = int(c5.toggle("Postmenopausal", value=bool(cl.get("menopausal")), key="meno"))
            clin["oncology_center"] = int(
                c5.toggle("Oncology centre", value=bool(cl.get("oncology_center")), key="onco")
            )

        gates = gate_choices(spec)
        gate = None
        if gates and c5.toggle(
            "Skip slices the slice classifier calls ovary-free",
            key="gate_on",
            help="Report 000's RAovSeg first stage: a slice classifier decides which slices may "
            "hold an ovary; the others are left empty (shown as removed).",
        ):
            gate = gates[0]
        mc = {}
        if unc_ok(get_model(name)):
            m1, m2 = st.columns(2)  # no expander here: expanders cannot be nested
            mc["mc_samples"] = int(
                m1.number_input(
                    "MC-dropout samples averaged (0 = one deterministic pass)",
                    0,
                    30,
                    key="mc_n",
                    help="MC-dropout average, as in cohort runs: the mask "
                    "is the mean of this many dropout samples; a cohort run with MC "
                    "dropout stores exactly this.",
                )
            )
            mc["seed"] = int(m2.number_input("Seed", 0, 10_000, key="mc_seed"))
        options = PredictOptions(
            preprocessing=pre,
            side_masking=side,
            postprocessing=POSTPROCESSING_CHOICES[post_label],
            threshold=thr,
            gate=gate,
            **mc,
            **clin,
        )

        if st.toggle("Preprocessing preview (before / after)", key="preview"):
            z0 = initial_slice(vol.shape, "axial", gt)
            before, after = preprocessing_preview(
                vol, pre, z0, spec.preprocessing_params if pre == spec.preprocessing else {}
            )
            p1, p2 = st.columns(2)
            p1.image(slice_picture(before, vol.spacing, "axial", None).rgb, caption="before", clamp=True)
            p2.image(
                slice_picture(after, vol.spacing, "axial", None).rgb,
                caption=f"after: {display_name(pre, 'pre')}",
                clamp=True,
            )
        st.button(
            "Run model",
            type="primary",
            on_click=lambda: ss.__setitem__("_seg_run", True),
            help="Results are cached: browsing never re-runs the model.",
        )

    # outside the expander, so its progress bar and any error stay visible when it is collapsed
    if run_requested:
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
            st.caption(
                "Showing the last run; the options have changed since. Press Run model (in Model and options) "
                "to apply them."
            )
        with head:
            warnings_block([w for w in pred.warnings if w not in envelope])  # the envelope is shown once
masks = pred.masks if pred is not None else {}
# issue 22: exports and verdicts are recorded with the model; a prediction uploaded for review is recorded as such
# (its name may be a file name, and the audit trail holds no free text that could identify a patient)
audit_model = (
    "uploaded prediction"
    if str(ss.get("result_source") or "").startswith("uploaded:")
    else getattr(pred, "model", None)
)
if pred is not None and CORR.is_correction(pred.model):  # issue 18: a saved correction is recorded with its base model
    audit_model = CORR.audit_name(pred.model)
primary = next(iter(masks.values()), None)
removed_any = pred is not None and any(r.any() for r in pred.removed.values())  # once per run, not per slider move


# ------------------------------------------------------------------ viewer
@st.fragment
def viewer():
    with st.container(key="seg_view"):
        col_img, col_ctl = st.columns([3, 1], gap="small")
    controls = col_ctl.container(key="seg_controls")
    with controls:
        planes = ["axial"] if vol.is_2d else ["axial", "coronal", "sagittal"]  # a 2D image has one plane
        if ss.get("plane") not in planes:
            ss["plane"] = "axial"
        slice_box = st.container(key="seg_slice")  # the slider goes first; the plane decides which one
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
        compare = (
            st.toggle(
                "Compare with reference (TP / FP / FN)",
                value=gt is not None,
                disabled=gt is None or primary is None,
                key="compare",
            )
            and primary is not None
        )
        show_removed = removed_any and st.toggle("Show what post-processing removed", value=False, key="show_removed")
        show_sides = (
            pred is not None and bool(pred.sides) and st.toggle("Colour two-pass sides", value=True, key="sides")
        )
        other = (ss.get("extra_masks") or {}).get("ovary_other")
        show_other = other is not None and st.toggle(
            "Outline the other (unlabelled) ovary in pink",
            key="show_other",
            help="The dataset marks one ovary; the other is shown as in the gallery's thumbnails.",
        )
        correcting = CORR.toggle(pred)  # issue 18: the drawable canvas replaces the picture (pages/_correct.py)
        # issue 18 item 5: NiiVue in the browser instead of the PNG picture (pages/_niivue.py); PNG stays the default
        fast = (
            not vol.is_2d
            and not correcting
            and st.toggle(
                "Fast viewer (NiiVue)",
                value=False,
                key="fast_viewer",
                help="Slices drawn in the browser (WebGL): the mouse wheel scrolls without a server round trip. "
                "Exports use the PNG viewer. All planes and a 3D rendering: the 3D viewer page.",
            )
        )
        shown, colours = [], {}
        for k, lab in enumerate(masks):
            cb, cp = st.columns([3, 1], vertical_alignment="center")
            if cb.checkbox(lab, True, key=f"show_{lab}"):
                shown.append(lab)
            colours[lab] = hex_to_rgb(
                cp.color_picker(
                    f"{lab} colour",
                    rgb_to_hex(LABEL_COLOURS[k % len(LABEL_COLOURS)]),
                    key=f"colour_{lab}",
                    label_visibility="collapsed",
                    # the swatch is the overlay's colour only when no other colouring replaces it
                    disabled=bool((compare and gt is not None) or show_sides),
                    help="Not used while TP / FP / FN or two-pass side colours are shown."
                    if (compare and gt is not None) or show_sides
                    else None,
                )
            )
    n = n_slices(vol.shape, plane)
    if f"slice_{plane}" not in st.session_state:
        st.session_state[f"slice_{plane}"] = initial_slice(vol.shape, plane, primary, gt)
    # state: the 0-based index; shown: 1..n (mouse wheel over the picture moves it, see _VIEWER_JS)
    idx = (
        slice_box.select_slider(
            "Slice",
            list(range(n)),
            key=f"slice_{plane}",
            format_func=lambda i: str(i + 1),
            help="Or turn the mouse wheel over the picture: one slice per notch.",
        )
        if n > 1
        else 0
    )
    layers, legend = [], []
    if compare and gt is not None:
        layers = compare_layers(display_slice(primary, plane, idx), display_slice(gt, plane, idx))
        legend = [
            ("TP (both)", COMPARE_COLOURS["tp"]),
            ("FP (prediction only)", COMPARE_COLOURS["fp"]),
            ("FN (reference only)", COMPARE_COLOURS["fn"]),
        ]
    elif primary is None and gt is not None:  # no result yet: the reference alone
        layers = [(gt, COMPARE_COLOURS["tp"])]
        legend = [("reference mask", COMPARE_COLOURS["tp"])]
    elif show_sides:
        layers = [(pred.sides[s].mask, LABEL_COLOURS[k]) for k, s in enumerate(("left", "right"))]
        legend = [("left side", LABEL_COLOURS[0]), ("right side", LABEL_COLOURS[1])]
    else:
        for lab in masks:
            if lab in shown:
                layers.append((pred.masks[lab], colours[lab]))
                legend.append((lab, colours[lab]))
    if show_removed:
        for lab in shown:
            layers.append((pred.removed[lab], REMOVED_COLOUR))
        legend.append(("removed by post-processing", REMOVED_COLOUR))
    if show_other:
        legend.append(("other ovary (outline)", OTHER_OVARY_COLOUR))
    sp = slice_picture(
        vol.array,
        vol.spacing,
        plane,
        idx,
        (width, level),
        layers=layers,
        alpha=alpha,
        mode=mode,
        outlines=[(other, OTHER_OVARY_COLOUR)] if show_other else (),
    )
    picture, rgb, notice, (r_mm, c_mm) = sp.picture, sp.rgb, sp.notice, sp.aspect
    title = "2D image" if vol.is_2d else f"{plane.capitalize()} {slice_words(idx, n)}"
    with col_img:
        if correcting:
            CORR.panel(vol, pred, plane, idx, width, level, alpha, mode, colours)
        elif fast:
            NVS.fast_view(
                vol,
                plane,
                (width, level),
                NVS.segment_layers(
                    pred, gt, primary, shown, colours, compare, show_sides, show_removed, REMOVED_COLOUR
                ),
                alpha,
                slider_words=f"{plane} {slice_words(idx, n)}",
            )
        else:
            with st.container(key="seg_image", height=VIEWER_HEIGHT, border=False):
                st.plotly_chart(
                    slice_figure(rgb, plane, title=title, height=None, letters=letters, title_inside=True),
                    width="stretch",
                    height="stretch",
                    key="viewer_fig",
                    config={"displaylogo": False, "scrollZoom": False, "responsive": True},
                )
        edited = CORR.editing(pred) if correcting else None
        legend_words = (
            "The mask being corrected, in its label colour (TP / FP / FN colouring returns after saving)"
            if correcting
            else "TP green · FP red · FN blue"
            if compare and gt is not None
            else "reference mask green"
            if primary is None and gt is not None
            else "left side orange · right side blue"
            if show_sides
            else " · ".join(f"{lab}" for lab in shown)
        )
        legend_parts = [
            legend_words,
            "removed by post-processing: magenta" if show_removed else "",
            "other ovary: pink outline" if show_other else "",
        ]
        st.caption(
            (" · ".join(p for p in legend_parts if p) or "No overlay")
            + ". "
            + (
                "Radiological convention: patient's right on the image left."
                if letters
                else "The file does not state the patient's orientation: shown as stored, without R/L/A/P letters."
            )
        )
        if notice:
            st.caption(notice)
        if gt is not None and plane == "axial" and primary is not None:
            scored = edited if edited is not None else primary  # the numbers are of the mask on screen
            sm = slice_metrics(scored, gt, vol.spacing, idx)
            st.caption(
                ("This slice, with your edits (not saved yet): " if edited is not None else "This slice: ")
                + ", ".join(describe(k, v) for k, v in sm.items())
            )
        if pred is not None and pred.slice_probabilities is not None and plane == "axial" and n > 1:
            thr_g = pred.gate.get("threshold") if pred.gate else get_spec(name).threshold
            st.plotly_chart(
                slice_curve(
                    pred.slice_probabilities,
                    idx,
                    "p(ovary present)",
                    thr_g,
                    pred.gate.get("skipped", [])
                    if pred.gate
                    else [int(z) for z, v in enumerate(pred.slice_probabilities) if v < thr_g],
                ),
                width="stretch",
                config={"displaylogo": False, "displayModeBar": False},
                key="gate_curve",
            )
            st.caption(
                "Slice classifier: p(ovary present) per slice; shaded slices fall below its threshold and are "
                + ("left empty by the gate." if pred.gate else "the ones a gate would skip.")
            )
    controls.download_button(
        "Export this view (PNG)",
        lambda: view_png(
            picture,
            r_mm,
            c_mm,
            plane,
            letters=letters,
            legend=legend,
            title=title,
            pixel_size_known=vol.meta.get("spacing_source") != "assumed",
        ),
        file_name=f"view_{plane}_{idx + 1}.png",
        mime="image/png",
        key="dl_png",
        on_click=exported(f"view PNG ({plane} {idx + 1})", audit_model),
        help="The picture at full resolution with its orientation letters (where the file "
        "states them), the legend and a scale bar.",
    )


viewer()
st.html(_VIEWER_JS, unsafe_allow_javascript=True)

# ------------------------------------------------------------------ results, metrics, export
if pred is None:
    st.stop()
result_name = pred.model
st.subheader("Results")
if any(w.startswith(OUTSIDE) for w in pred.warnings):
    st.warning(
        "The case lies outside this model's training data (see above): the volumes and the class below measure "
        "what the model drew here, not necessarily the structure they are named after."
    )
cols = st.columns(4)
vox_ml = vol.voxel_volume_ml
for k, (lab, m) in enumerate(pred.masks.items()):
    cols[k % 4].metric(
        f"{lab} {'area' if vol.is_2d else 'volume'}",
        f"{m.sum() * vox_ml:.2f} mL" if not vol.is_2d else f"{m.sum() * vol.spacing[1] * vol.spacing[2]:.0f} mm²",
    )
if pred.class_probabilities is not None:
    cols[-1].metric("p(malignant)", f"{pred.class_probabilities[1]:.2f}", "malignant" if pred.malignant else "benign")
if pred.sides:
    st.caption(
        "Two-pass: "
        + "; ".join(f"{s}: confidence {v.confidence:.2f}, {v.volume_ml:.2f} mL" for s, v in pred.sides.items())
    )
removed = {lab: int(r.sum()) for lab, r in pred.removed.items() if r.any()}
if pred.gate:
    st.caption(
        f"The slice-classifier gate ({pred.gate['model']}, threshold {pred.gate['threshold']:g}) left "
        f"{len(pred.gate['skipped'])} of {vol.shape[0]} slices empty."
    )
if removed:
    st.caption(
        ("Post-processing and the gate removed " if pred.gate else "Post-processing removed ")
        + ", ".join(
            f"{v:,} voxels of {k} ({v * vox_ml:.2f} mL)" if not vol.is_2d else f"{v:,} pixels of {k}"
            for k, v in removed.items()
        )
        + "."
    )
rows = []
if gt is not None and pred.mask is not None:
    rows = metrics_table(pred, gt, vol.spacing)
    if st.session_state.get("correct_on"):  # Correct mode (the viewer's switch)
        st.caption("Case metrics of the mask before your edits; saving the correction makes it the result scored here.")
    st.dataframe(display_rows(rows), hide_index=True)
if pred.timings:
    st.caption(f"Timings: {timings_words(pred.timings)}.")
e1, e2, e3 = st.columns(3)
if pred.mask is not None:
    e1.download_button(
        "Export mask (NIfTI, source affine)",
        lambda: mask_nifti_bytes(pred.mask, vol),
        file_name=f"{result_name}_mask.nii.gz",
        mime="application/gzip",
        key="dl_nii",
        on_click=exported("mask NIfTI", audit_model),
    )
    seg_reason = dicom_seg_available(vol)
    if seg_reason is None:
        e3.download_button(
            "Export DICOM SEG",
            lambda: dicom_seg_bytes(pred.masks, vol, result_name),
            file_name=f"{result_name}_seg.dcm",
            mime="application/dicom",
            key="dl_seg",
            on_click=exported("DICOM SEG", audit_model),
            help="A binary DICOM Segmentation referencing the source series; no patient data.",
        )
    else:
        e3.caption(seg_reason)
if rows:
    e2.download_button(
        "Export metrics (CSV)",
        metrics_csv(rows, {"model": result_name}),
        file_name=f"{result_name}_metrics.csv",
        mime="text/csv",
        key="dl_csv",
        on_click=exported("metrics CSV", audit_model),
    )
# issue 22: the reviewer's decision on this result, recorded with their identity (issue 18 builds the worklist on it)
_vplane = ss.get("plane") or "axial"
verdict_control(
    ss["case_key"],
    audit_model,
    pred.options,
    _vplane,
    ss.get(f"slice_{_vplane}"),
    corrected_mask=CORR.info(pred.model).get("path"),
)
