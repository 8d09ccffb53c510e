"""Models: every checkpoint the app knows (shipped, your own, uploaded in this session) with its card,
and uploading a checkpoint for this session."""

import streamlit as st

from medseg_core.checkpoints import list_checkpoints, model_dirs
from medseg_core.io.errors import InputError
from medseg_core.review import card_view, loaded_model_summary, model_card_summary
from pages._shared import add_session_model, require_frame

require_frame()

ss = st.session_state
st.title("Models")
st.caption(
    "Every checkpoint in the model folders (" + ", ".join(f"`{d}`" for d in model_dirs()) + "; set "
    "`MEDSEG_MODELS` to change them) and any uploaded in this session. Shipped checkpoints are demo versions "
    "trained on synthetic phantoms: research use only, not validated on patients. A checkpoint's card is "
    "its recipe: it runs exactly as it was trained."
)


def show(s: dict, source: str) -> None:
    status = {"ok": "checkpoint verified (SHA-256)"}.get(s["checkpoint"], s["checkpoint"])
    with st.expander(f"{s['title']}  ·  {s['name']}  ·  {source}  ·  {status}", expanded=False):
        v = card_view(s)
        st.markdown(v["summary"])
        if s["notes"]:
            st.caption(s["notes"])
        cols = st.columns(max(1, len(v["metrics"])))
        for c, (k, val) in zip(cols, v["metrics"].items(), strict=False):
            c.metric(k, val)
        st.markdown(v["training"])
        st.caption(f"Training data envelope: {s['envelope']}.")
        card = s["card"]
        st.caption(card.get("notes", ""))
        st.caption(card.get("notice", ""))
        with st.popover("Full model card (JSON)"):
            st.json({k: v for k, v in card.items() if k != "split"})


tabs = st.tabs(["Available models", "Upload a checkpoint"])
with tabs[0]:
    for c in list_checkpoints():
        try:
            show(model_card_summary(c.ref), "shipped" if c.shipped else f"your model ({c.weights.parent})")
        except InputError as e:
            st.error(f"{c.weights.name}: {e}")
    for lm in (ss.get("session_models") or {}).values():
        show(loaded_model_summary(lm), "uploaded in this session")
with tabs[1]:
    st.caption(
        "A medseg checkpoint: the `.safetensors` weights and the `.json` model card written beside them "
        "(by `python -m medseg_core.train` or `python -m medseg_core.checkpoints import-bundle`). The card "
        "must name a registry architecture; the weights must match its SHA-256. Pickle files (.pt, .pth) "
        "are refused. The model is available to this session only and is forgotten when it ends."
    )
    w = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key="ck_weights")
    c = st.file_uploader("Model card (.json)", type=["json"], key="ck_card")
    if w is not None and c is not None and st.button("Add to this session", key="ck_add"):
        try:
            name = add_session_model(w.getvalue(), c.getvalue())
            st.success(f"'{name}' is available in the sidebar's model picker for this session.")
        except InputError as e:
            st.error(str(e))
