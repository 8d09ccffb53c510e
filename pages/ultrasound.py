"""Ultrasound: multitask lesion segmentation + p(malignant) with clinical inputs, the cascade beside it,
what the clinical inputs change, and annotation removal (the models then run on the cleaned image).
All numbers come from medseg_core.ultrasound; this page only draws them."""

import streamlit as st

from medseg_core.checkpoints import checkpoint_status
from medseg_core.io.errors import InputError
from medseg_core.models import get_spec
from medseg_core.render import LABEL_COLOURS, slice_picture
from medseg_core.ultrasound import DENOISER, Call, analyse, clinical_table, crop_picture, model_label, second_opinion
from pages._access import audit
from pages._shared import get_model, new_prediction_cache, require_frame

require_frame()

st.title("Ultrasound")
ss = st.session_state
vol = ss.get("volume")
if vol is None or vol.modality != "US" or not vol.is_2d:
    st.info("Open a 2D ultrasound image (for example the bundled ultrasound samples on the Load case page).")
    st.stop()
cl = ss.get("clinical", {"menopausal": 0, "oncology_center": 0})
c1, c2, c3 = st.columns(3)
meno = int(
    c1.toggle(
        "Postmenopausal",
        value=bool(cl.get("menopausal")),
        key="us_meno",
        help="Perimenopausal counts as postmenopausal (report 001).",
    )
)
onco = int(c2.toggle("Oncology (referral) centre", value=bool(cl.get("oncology_center")), key="us_onco"))
thr = c3.slider(
    "Operating threshold on p(malignant)",
    0.05,
    0.95,
    0.5,
    0.05,
    key="us_thr",
    help="The report's public code used 0.2 to favour sensitivity. Moving it never re-runs a model.",
)
ss["clinical"] = {"menopausal": meno, "oncology_center": onco}
models = [m for m in ("us_mtl_effb0", "us_mtl_unet", "us_cascade") if checkpoint_status(m) == "ok"]
if not models:
    st.warning("No ultrasound checkpoint is available.")
    st.stop()
name = st.selectbox("Model", models, format_func=lambda n: get_spec(n).title, key="us_model")
second = second_opinion(name, models)
can_denoise = checkpoint_status(DENOISER) == "ok"
denoise = (
    st.toggle(
        "Remove burned-in annotations first (the models then run on the cleaned image)",
        key="us_denoise",
        disabled=not can_denoise,
    )
    and can_denoise
)
cache = ss.setdefault("us_cache", new_prediction_cache(max_items=32))  # 9 predictions per Run; this page's own
settings = (ss["case_key"], name, second, bool(denoise))
if st.button("Run", type="primary"):
    bar = st.progress(0.0, text="Running...")
    try:
        analyse(
            vol,
            name,
            meno,
            onco,
            denoise=bool(denoise),
            second=second,
            cache=cache,
            load=get_model,
            progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m),
        )
        ss["us_ran"] = settings
        audit(
            "run_model",
            case_key=ss["case_key"],
            model=name,
            detail=f"ultrasound analysis; second opinion {second}; annotation removal {bool(denoise)}",
        )
    except InputError as e:
        st.error(str(e))
    finally:
        bar.empty()
if ss.get("us_ran") != settings:
    st.info(
        "Set the clinical inputs and press **Run**."
        if not ss.get("us_ran")
        else "The model, the case or annotation removal changed since the last run: press **Run**."
    )
    st.stop()
# every clinical combination was computed by Run: changing the inputs reads the cache, never re-runs
try:
    res = analyse(vol, name, meno, onco, denoise=bool(denoise), second=second, cache=cache, load=get_model)
except InputError as e:
    st.error(str(e))
    st.stop()
ss["us_result"] = res

US_WINDOW = (255.0, 127.5)  # 8-bit ultrasound shown as stored
if res.denoised:
    st.info(res.ran_on)
st.subheader(f"p(malignant) at threshold {thr:.2f}")
cols = st.columns([1, 1, 2])
for col, pred in zip(cols[:2], (res.primary, res.second), strict=True):  # the third column holds the note
    if pred is not None:
        call = Call(float(pred.class_probabilities[1]), thr)
        col.metric(model_label(pred.model), f"{call.p:.2f}", call.badge, delta_color=call.colour, delta_arrow="off")
msg = res.disagreement(thr)
if msg:
    cols[2].warning(msg)
elif res.second is not None:
    cols[2].caption(f"Both models call this lesion {Call(res.p, thr).label} at threshold {thr:.2f}.")
for note in res.notes.values():
    st.caption(note)

a, b = st.columns([3, 2])
# the image the models ran on, with the lesion
a.image(
    slice_picture(
        res.volume.array, vol.spacing, "axial", 0, US_WINDOW, layers=[(res.primary.mask, LABEL_COLOURS[0])], alpha=0.3
    ).rgb,
    caption=f"{get_spec(name).title}: lesion" + (" (on the annotation-removed image)" if res.denoised else ""),
    width="stretch",
)
casc = res.cascade()
if casc is not None:
    crop = crop_picture(res.volume, casc.boxes[0] if casc.boxes else None)
    if crop is not None:
        b.image(
            slice_picture(crop, vol.spacing, "axial", None, US_WINDOW).rgb,
            width=260,
            caption="The cascade's crop: largest segmented lesion, 1 % padding (resized to 164 x 164 "
            "for its classifier)",
        )
    else:
        b.caption("The cascade segmented no lesion: it classified the whole image.")
b.caption("Trained on synthetic phantoms; not a diagnosis.")

st.subheader("What the clinical inputs change")
st.dataframe(clinical_table(res), hide_index=True, width="content")
for eff in res.effects.values():
    st.caption(eff.sentence(thr))

if res.denoised:
    st.subheader("Annotation removal")
    d1, d2 = st.columns(2)
    d1.image(slice_picture(vol.array, vol.spacing, "axial", 0, US_WINDOW).rgb, caption="as loaded", width="stretch")
    d2.image(
        slice_picture(res.volume.array, vol.spacing, "axial", 0, US_WINDOW).rgb,
        caption="annotations removed: what the models ran on",
        width="stretch",
    )
