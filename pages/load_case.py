"""Load case: a bundled sample, or an upload (NIfTI, DICOM files or zip, ultrasound image), plus an
optional reference mask; shows the geometry and any warnings from loading."""
import streamlit as st

from medseg_core.io import InputError, list_series, load_mask, load_volume
from medseg_core.io.orientation import display_aspect, display_slice
from medseg_core.render import apply_window, aspect_correct
from medseg_core.review import initial_slice
from medseg_core.samples import list_samples
from pages._shared import open_sample, set_case
from pages._shared import require_frame

require_frame()

def _is_image(fs) -> bool:
    return all(f.name.lower().rsplit(".", 1)[-1] in ("png", "jpg", "jpeg", "tif", "tiff", "bmp") for f in fs)


st.title("Load case")
ss = st.session_state

samples = list_samples()
tab_sample, tab_upload = st.tabs(["Bundled sample", "Upload"])
with tab_sample:
    titles = {s.title: s for s in samples}
    pick = st.selectbox("Sample case", list(titles), key="sample_pick")
    st.caption(titles[pick].description)
    if st.button("Open sample", key="open_sample"):
        open_sample(titles[pick].key)
        st.rerun()  # redraw the sidebar for the new case

with tab_upload:
    st.caption("NIfTI (.nii, .nii.gz), DICOM (files or a .zip of a series), or an image (PNG, JPEG, TIFF, BMP). "
               "Files are read in memory and never shared with other sessions.")
    files = st.file_uploader("Image file(s)", accept_multiple_files=True, key="upload")
    modality = st.selectbox("Modality of an image file", ["US", "MR", "CT", "OT"], key="img_modality",
                            help="Only used for PNG/JPEG/TIFF/BMP; NIfTI is guessed, DICOM says.")
    if files:
        src = files if len(files) > 1 else files[0]
        sig = tuple((f.name, f.size) for f in files)
        try:
            series = [s for s in list_series(src) if s.has_pixels]
            key = None
            if len(series) > 1:
                labels = {s.label(): s.key for s in series}
                key = labels[st.selectbox("This upload holds several series: choose one", list(labels), key="series")]
            if ss.get("upload_sig") != (sig, key, modality):
                vol = load_volume(src, series=key, modality=modality if _is_image(files) else None)
                set_case(vol)
                ss["upload_sig"] = (sig, key, modality)
                st.rerun()
        except InputError as e:
            ss["load_error"] = str(e)
    gt_file = st.file_uploader("Reference mask (optional, same grid as the image)", key="gt_upload")
    if gt_file is not None and ss.get("volume") is not None and ss.get("gt_sig") != (gt_file.name, gt_file.size, ss.get("case_key")):
        try:
            ss["gt_mask"] = (load_mask(gt_file, like=ss["volume"]) > 0).astype("uint8")
            ss["gt_sig"] = (gt_file.name, gt_file.size, ss.get("case_key"))
            ss["predictions"].clear()
        except InputError as e:
            ss["load_error"] = str(e)


if ss.get("load_error"):
    st.error(ss["load_error"])

vol = ss.get("volume")
if vol is None:
    st.info("Choose a sample or upload a file to begin.")
    st.stop()
for w in vol.warnings:
    st.warning(w)
st.table({k: [v] for k, v in vol.describe().items()})
z = initial_slice(vol.shape, "axial", ss.get("gt_mask"))
pic = apply_window(display_slice(vol.array, "axial", z), *ss["auto_window"])
st.image(aspect_correct(pic, *display_aspect(vol.spacing, "axial")),
         caption=f"Axial slice {z + 1} of {vol.shape[0]} · patient's right on the image left", width=420)
if ss.get("gt_mask") is not None:
    st.caption("A reference mask is loaded: metrics and TP / FP / FN colouring are available on the review page.")
