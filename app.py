"""medseg review app: navigation, sidebar (current case) and the research-use notice.

Pages live in ``pages/`` and are thin: widgets plus calls into ``medseg_core``.
"""
import streamlit as st

st.set_page_config(page_title="medseg review", page_icon=None, layout="wide")

pages = [
    st.Page("pages/load_case.py", title="Load case", default=True),
]
nav = st.navigation(pages)
nav.run()

# The sidebar is drawn after the page so it shows the case the page has just loaded.
with st.sidebar:
    st.markdown("### medseg")
    vol = st.session_state.get("volume")
    if vol is not None:
        st.markdown(f"**Case:** {vol.name}")
        st.caption(f"{vol.modality} · {' x '.join(map(str, vol.shape))} voxels")
    else:
        st.caption("No case loaded.")
    st.warning("Research use only. Not a medical device; not for diagnosis.", icon=None)
