"""Load case: upload NIfTI / DICOM / an image, or pick a bundled sample; show geometry."""
import streamlit as st

from medseg_core.io import InputError, display_aspect, list_series, load_volume, n_slices
from medseg_core.render import apply_window, auto_window, aspect_correct
from medseg_core.io.orientation import display_slice
from medseg_core.samples import list_samples

st.title("Load case")
st.caption("NIfTI (.nii, .nii.gz), DICOM (files or a .zip of a series), or an image (PNG, JPEG, TIFF, BMP).")


def _set_case(vol, mask=None):
    st.session_state["volume"] = vol
    st.session_state["gt_mask"] = mask
    st.session_state.pop("load_error", None)


samples = list_samples()
if samples:
    names = {s.title: s for s in samples}
    choice = st.selectbox("Bundled sample", ["(none)"] + list(names))
    if choice != "(none)":
        st.caption(names[choice].description)
    if choice != "(none)" and st.button("Open sample"):
        vol, mask, _extras = names[choice].load()
        _set_case(vol, mask)

files = st.file_uploader("Upload image file(s)", accept_multiple_files=True, key="upload")
if files:
    try:
        series = list_series(files if len(files) > 1 else files[0])
        key = None
        image_series = [s for s in series if s.has_pixels]
        if len(image_series) > 1:
            labels = {s.label(): s.key for s in image_series}
            key = labels[st.selectbox("Series", list(labels))]
        vol = load_volume(files if len(files) > 1 else files[0], series=key)
        _set_case(vol)
    except InputError as e:
        st.session_state["load_error"] = str(e)

if st.session_state.get("load_error"):
    st.error(st.session_state["load_error"])

vol = st.session_state.get("volume")
if vol is None:
    st.info("Choose a sample or upload a file to begin.")
else:
    for w in vol.warnings:
        st.warning(w)
    st.table({k: [v] for k, v in vol.describe().items()})
    width, level = auto_window(vol.array)
    mid = n_slices(vol.shape, "axial") // 2
    pic = apply_window(display_slice(vol.array, "axial", mid), width, level)
    r, c = display_aspect(vol.spacing, "axial")
    st.image(aspect_correct(pic, r, c), caption=f"Axial slice {mid + 1} (R on the left, L on the right)", clamp=True)
