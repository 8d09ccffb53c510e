"""Ultrasound: multitask lesion segmentation + p(malignant) with clinical inputs, the cascade's crop,
and annotation removal."""
import streamlit as st

from medseg_core.checkpoints import checkpoint_status
from medseg_core.inference import PredictOptions
from medseg_core.io import display_slice
from medseg_core.io.errors import InputError
from medseg_core.io.orientation import display_aspect
from medseg_core.models import get_spec
from medseg_core.render import LABEL_COLOURS, apply_window, aspect_correct, overlay
from pages._shared import run
from pages._shared import require_frame

require_frame()

st.title("Ultrasound")
ss = st.session_state
vol = ss.get("volume")
if vol is None or vol.modality != "US" or not vol.is_2d:
    st.info("Open a 2D ultrasound image (for example the bundled ultrasound samples on the Load case page).")
    st.stop()
cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
c1, c2, c3 = st.columns(3)
meno = int(c1.toggle("Postmenopausal (perimenopausal counts as post)", value=bool(cl.get("menopausal")), key="us_meno"))
onco = int(c2.toggle("Seen at an oncology (referral) centre", value=bool(cl.get("oncology_center")), key="us_onco"))
thr = c3.slider("Operating threshold on p(malignant)", 0.05, 0.95, 0.5, 0.05, key="us_thr",
                help="The report's public code used 0.2 to favour sensitivity.")
ss["clinical"] = {"menopausal": meno, "oncology_center": onco}
models = [m for m in ("us_mtl_effb0", "us_mtl_unet", "us_cascade") if checkpoint_status(m) == "ok"]
if not models:
    st.warning("No ultrasound checkpoint is available.")
    st.stop()
name = st.selectbox("Model", models, format_func=lambda n: get_spec(n).title, key="us_model")
denoise = st.toggle("Remove burned-in annotations first (before / after shown)", key="us_denoise",
                    disabled=checkpoint_status("us_denoiser") != "ok")
opts = PredictOptions(menopausal=meno, oncology_center=onco, class_threshold=thr)
if st.button("Run", type="primary"):
    try:
        if denoise:
            d = run("us_denoiser", PredictOptions())
            ss["us_clean"] = d.restored
        run(name, opts)
        ss["us_key"] = ss["current"]
        if name != "us_cascade" and checkpoint_status("us_cascade") == "ok":
            run("us_cascade", opts)  # shown beside the chosen model
            ss["us_cascade_key"] = ss["current"]
    except InputError as e:
        st.error(str(e))
pred = ss["predictions"].get(ss.get("us_key")) if ss.get("us_key") else None
if pred is None:
    st.info("Set the clinical inputs and press **Run**.")
    st.stop()
r_mm, c_mm = display_aspect(vol.spacing, "axial")
grey = apply_window(display_slice(vol.array, "axial", 0), 255, 127.5)
a, b = st.columns(2)
a.image(aspect_correct(overlay(grey, [(display_slice(pred.mask, "axial", 0), LABEL_COLOURS[0])], 0.3), r_mm, c_mm),
        caption=f"{get_spec(name).title}: lesion", width="stretch")
p = float(pred.class_probabilities[1])
b.metric("p(malignant)", f"{p:.2f}", "above threshold: malignant" if p >= thr else "below threshold: benign",
         delta_color="inverse")
b.progress(p, text=f"threshold {thr:.2f}")
b.caption("Trained on synthetic phantoms; not a diagnosis.")
casc = ss["predictions"].get(ss.get("us_cascade_key")) if ss.get("us_cascade_key") else None
if name == "us_cascade":
    casc = pred
if casc is not None and casc.boxes:
    box = casc.boxes[0]
    st.subheader("Cascade: crop and classification")
    x1, x2 = st.columns(2)
    if box:
        r0, r1, c0, c1_ = box
        crop = display_slice(vol.array, "axial", 0)
        h, w = crop.shape
        # boxes are on the canonical grid; the displayed picture is flipped in both axes
        crop = crop[h - r1:h - r0, w - c1_:w - c0]
        x1.image(apply_window(crop, 255, 127.5), caption="largest lesion, 1 % padding", clamp=True)
    else:
        x1.caption("No lesion segmented: the whole image was classified.")
    x2.metric("Cascade p(malignant)", f"{float(casc.class_probabilities[1]):.2f}")
if denoise and ss.get("us_clean") is not None:
    st.subheader("Annotation removal")
    d1, d2 = st.columns(2)
    d1.image(aspect_correct(grey, r_mm, c_mm), caption="as uploaded", width="stretch")
    d2.image(aspect_correct(apply_window(display_slice(ss["us_clean"], "axial", 0), 255, 127.5), r_mm, c_mm),
             caption="annotations removed", width="stretch")
