"""Load case: a bundled sample, or an upload (NIfTI, DICOM files or zip, ultrasound image), plus an
optional reference mask and predictions made elsewhere (label maps, DICOM SEG, RT Structure Sets; each
reviewed on Segment & review under its name); shows the geometry and any warnings from loading."""

import re

import streamlit as st

from medseg_core.inference import prediction_from_masks
from medseg_core.io import InputError, list_series, load_label_masks, load_volume, union_mask
from medseg_core.io.orientation import orientation_known
from medseg_core.io.segmentation import file_stem, unique_name
from medseg_core.render import slice_picture
from medseg_core.review import initial_slice, state_anatomy, ultrasound_kinds
from medseg_core.samples import list_samples
from pages._shared import loading_slot, open_sample, require_frame, set_case

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
        try:
            open_sample(titles[pick].key)
            st.rerun()  # redraw the sidebar for the new case
        except InputError as e:  # e.g. the server's memory budget cannot hold it: the current case stays
            ss["load_error"] = str(e)

with tab_upload:
    st.caption(
        "NIfTI (.nii, .nii.gz), DICOM (files or a .zip of a series), or an image (PNG, JPEG, TIFF, BMP). "
        "Files are read in memory and never shared with other sessions."
    )
    files = st.file_uploader("Image file(s)", accept_multiple_files=True, key="upload")
    modality = None  # NIfTI: guessed from the intensities; DICOM: the file says
    if files and _is_image(files):  # a picture file says nothing of its modality: the user does
        modality = st.selectbox(
            "Modality of this image",
            ["US", "MR", "CT", "OT"],
            key="img_modality",
            help="A PNG/JPEG/TIFF/BMP file does not say what it shows; ultrasound (US) is the usual case. "
            "NIfTI modality is guessed from its intensities and DICOM states its own.",
        )
    if files:
        src = files if len(files) > 1 else files[0]
        sig = tuple((f.name, f.size) for f in files)
        try:
            size_mb = sum(f.size for f in files) / 1e6
            with st.spinner(f"Reading {len(files)} file{'s' if len(files) > 1 else ''} ({size_mb:,.1f} MB)..."):
                series = [s for s in list_series(src) if s.has_pixels]
            key = None
            if len(series) > 1:
                labels = {s.label(): s.key for s in series}
                key = labels[st.selectbox("This upload holds several series: choose one", list(labels), key="series")]
            if ss.get("upload_sig") != (sig, key, modality):
                with (
                    st.spinner("Loading the volume (waits while another session loads one)..."),
                    loading_slot(),  # one volume read at a time on this server (transient copies)
                ):
                    vol = load_volume(src, series=key, modality=modality)
                    set_case(vol)
                ss["upload_sig"] = (sig, key, modality)
                st.rerun()
        except InputError as e:
            ss["load_error"] = str(e)


if ss.get("load_error"):
    st.error(ss["load_error"])
    if ss.get("volume") is not None:  # the refused upload replaced nothing
        st.caption(f"Nothing from this upload was loaded: the case below is still **{ss['volume'].name}**.")

vol = ss.get("volume")
if vol is None:
    st.info("Choose a sample or upload a file to begin.")
    st.stop()

if vol.modality == "US":
    kinds = ultrasound_kinds()
    stated = st.selectbox(
        "What does this ultrasound show?",
        list(kinds),
        key="us_kind",
        index=list(kinds.values()).index(vol.meta.get("anatomy")) if vol.meta.get("anatomy") in kinds.values() else 0,
        help="Ovarian (transvaginal) and micro-ultrasound prostate models are told apart by their "
        "training data and by what you say here; the model picker puts the fitting ones first.",
    )
    if state_anatomy(vol, kinds[stated]):
        ss["predictions"].clear()  # their warnings were made for the other statement
        st.rerun()

# ------------------------------------------------------------------ masks for the current case
MASK_HELP = (
    "NIfTI or an image label map (every non-zero value is a label), a DICOM SEG or a DICOM RT Structure Set, "
    "made on this image: the same size, voxel size, orientation and position (nothing is resampled)."
)
UNION = "All labels (union)"


def _masks_of(f) -> dict:
    """The labels of an uploaded mask file on this case's grid, read once per file and case."""
    cache = ss.setdefault("mask_uploads", {})
    key = (f.file_id, ss.get("case_key"))
    if key not in cache:
        try:
            cache[key] = load_label_masks(f, like=vol)
        except InputError as e:
            cache[key] = e
    if isinstance(cache[key], InputError):
        raise cache[key]
    return cache[key]


def _md(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def _label_list(labels) -> str:
    labels = list(labels)
    return ", ".join(labels[:6]) + (f" and {len(labels) - 6} more" if len(labels) > 6 else "")


st.subheader("Masks for this case")
gt_file = st.file_uploader("Reference mask (optional, same grid as the image)", key="gt_upload", help=MASK_HELP)
if gt_file is not None:
    try:
        labels = _masks_of(gt_file)
        pick = UNION
        if len(labels) > 1:
            pick = st.selectbox(
                f"The reference file holds {len(labels)} labels: use",
                [UNION, *labels],
                key=f"gt_label_{gt_file.file_id}",
            )
        sig = (gt_file.file_id, ss.get("case_key"), pick)
        if ss.get("gt_sig") != sig:
            ss["gt_mask"] = union_mask(labels if pick == UNION else {pick: labels[pick]})
            ss["gt_sig"] = sig
            ss["predictions"].clear()  # oracle side masking used the old reference
            st.rerun()  # the sidebar was drawn before this page: redraw it with the reference
    except InputError as e:
        st.error(str(e))

externals = ss.setdefault("external_predictions", {})
handled = ss.setdefault("pred_handled", set())
pred_files = st.file_uploader(
    "Prediction masks to review (optional)",
    accept_multiple_files=True,
    key="pred_upload",
    help=MASK_HELP + " Each file becomes one result on Segment & review, under the name you give it here.",
)
pending, taken = [], set(externals)
for f in pred_files or []:
    if (f.file_id, ss.get("case_key")) in handled:
        continue
    try:
        labels = _masks_of(f)
    except InputError as e:
        st.error(f"{f.name}: {e}")
        continue
    default = unique_name(file_stem(f.name), taken)
    taken.add(default)
    c1, c2 = st.columns(2)
    name = c1.text_input(f"Name for {f.name}", value=default, max_chars=64, key=f"pred_name_{f.file_id}")
    first = next(iter(labels))
    if len(labels) > 1:
        first = c2.selectbox(
            f"Label compared with the reference ({len(labels)} labels)", list(labels), key=f"pred_label_{f.file_id}"
        )
    else:
        c2.caption(f"One label: {_md(first)}.")
    pending.append((f, name.strip(), labels, first))
if pending and st.button(
    f"Add {len(pending)} prediction{'s' if len(pending) > 1 else ''} for review", type="primary", key="add_predictions"
):
    names = [p[1] for p in pending]
    clash = sorted({n for n in names if n in externals or names.count(n) > 1})
    if not all(names):
        st.error("Give every prediction a name.")
    elif clash:
        st.error(f"The name {', '.join(repr(n) for n in clash)} is already used; give every prediction its own name.")
    else:
        for f, name, labels, first in pending:
            ordered = {first: labels[first], **{k: m for k, m in labels.items() if k != first}}
            externals[name] = prediction_from_masks(name, ordered, vol)
            handled.add((f.file_id, ss.get("case_key")))
        st.rerun()  # the review page and the sidebar see the new results
if externals:
    st.markdown("**Predictions to review** (on Segment & review, under *Result to review*):")
    for name, p in list(externals.items()):
        c1, c2 = st.columns([5, 1])
        c1.markdown(
            f"{_md(name)} · {len(p.masks)} label{'s' if len(p.masks) != 1 else ''}: {_md(_label_list(p.masks))}"
        )
        if c2.button("Remove", key=f"remove_prediction_{name}"):
            del externals[name]
            ss.pop("result_source", None)
            st.rerun()
# keep only what the uploaders still hold and is not yet stored elsewhere
live = {f.file_id for f in ([gt_file] if gt_file is not None else []) + list(pred_files or [])}
cache = ss.get("mask_uploads", {})
for key in [k for k in cache if k[0] not in live or k[1] != ss.get("case_key") or k in handled]:
    del cache[key]

st.subheader("Image")
for w in vol.warnings:
    st.warning(w)
st.table({k: [v] for k, v in vol.describe().items()})
z = initial_slice(vol.shape, "axial", ss.get("gt_mask"))
st.image(
    slice_picture(vol.array, vol.spacing, "axial", z, ss["auto_window"]).rgb,
    caption=("2D image · " if vol.is_2d else f"Axial slice {z + 1} of {vol.shape[0]} · ")
    + ("patient's right on the image left" if orientation_known(vol.meta) else "left and right not stated in the file"),
    width=420,
)
if ss.get("gt_mask") is not None:
    st.caption("A reference mask is loaded: metrics and TP / FP / FN colouring are available on the review page.")
