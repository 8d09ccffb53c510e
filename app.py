"""medseg review app: navigation, the sidebar (current case, chosen model) and the research-use notice.

Pages live in ``pages/`` and are thin: widgets plus calls into ``medseg_core``. The sidebar is drawn
before the page runs (a page may stop early); actions that change the case rerun the app.
"""

import streamlit as st

from medseg_core.review import compatible_models
from pages._access import sidebar_identity
from pages._shared import ensure_state
from pages._shell import frame, mirror

st.set_page_config(page_title="medseg review", layout="wide")
pages = [
    st.Page("pages/load_case.py", title="Load case", url_path="load_case"),
    st.Page("pages/segment.py", title="Segment & review", default=True),
    st.Page("pages/viewer3d.py", title="3D viewer", url_path="viewer3d"),
    st.Page("pages/uncertainty.py", title="Uncertainty", url_path="uncertainty"),
    st.Page("pages/compare.py", title="Compare", url_path="compare"),
    st.Page("pages/ultrasound.py", title="Ultrasound", url_path="ultrasound"),
    st.Page("pages/gallery.py", title="Failure gallery", url_path="gallery"),
    st.Page("pages/worklist.py", title="Worklist", url_path="worklist"),
    st.Page("pages/models.py", title="Models", url_path="models"),
]

# Streamlit's legacy multipage mode (the pages/ folder) is worked around in one place: pages/_shell.py.
# frame() runs the sign-in gate (pages/_access.py: with an [auth] section in Streamlit's secrets every run needs a
# signed-in user on the allow-list; everybody else sees one sentence), which calls st.navigation before any widget,
# and marks the run as framed for the pages' require_frame().
page = frame(pages)
ensure_state()
ss = st.session_state

with st.sidebar:
    st.markdown("### medseg")
    sidebar_identity()
    vol = ss.get("volume")
    if vol is not None:
        st.markdown(f"**Case:** {vol.name}")
        st.caption(
            f"{vol.modality} · {' x '.join(map(str, vol.shape))} voxels · "
            f"{' x '.join(f'{s:.3g}' for s in vol.spacing)} mm"
        )
        st.caption("Reference mask loaded" if ss.get("gt_mask") is not None else "No reference mask")
        choices = compatible_models(vol, session_models=ss.get("session_models"), case=ss.get("case_key"))
        runnable = {c.ref: c for c in choices if c.ok}
        if runnable:
            if ss.get("model_name") not in runnable:
                family = getattr(ss.get("sample"), "family", None)
                same = [r for r, c in runnable.items() if c.family == family and not c.warnings]
                ss["model_name"] = (same or list(runnable))[0]  # a bundled case opens with its own family's model
            # ss["model_name"] is the source of truth (the gallery and the worklist set it too); the widget is
            # mirrored from it (pages/_shell.py, point 2: widgets seen under two identities on a fresh server)
            st.selectbox(
                "Model",
                list(runnable),
                key="model_pick",
                format_func=lambda r: runnable[r].label,
                on_change=mirror("model_pick", "model_name"),
                help="Models whose input contract fits this case; those outside their training data are "
                "listed last and marked.",
            )
            chosen = runnable[ss["model_name"]]
            if chosen.outside:
                st.warning("Outside this model's training data; see Segment & review.")
            elif chosen.warnings:
                st.caption("This model's card records no training-data envelope.")
        else:
            ss["model_name"] = None
            st.caption("No model fits this case: it can still be viewed on Segment & review.")
        unfit = [c for c in choices if not c.ok]
        if unfit:
            with st.expander(f"Not available for this case ({len(unfit)})"):
                for c in unfit:
                    who = c.title if c.title == c.name else f"{c.title} ({c.name})"
                    st.markdown(f"<span style='color:#888'>{who}: {c.reason}</span>", unsafe_allow_html=True)
    else:
        st.caption("No case loaded.")
    st.warning("Research use only. Not a medical device; not for diagnosis.")

page.run()
