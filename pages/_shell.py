"""The app shell: the one place that works around Streamlit's legacy multipage mode (issue 18 item 6).

**Why there is anything to work around.** The product keeps its pages in a ``pages/`` folder next to
``app.py``. Streamlit gives such a folder a meaning of its own (the "legacy" multipage mode, before
``st.navigation``): at start-up it lists every ``pages/*.py`` file as a page, and until some session
has called ``st.navigation`` it may run a file from that list by itself. Three things follow, each
handled here and nowhere else:

1. **A page run without the frame.** A deep link (``/worklist``) to a freshly started server, or a
   page's own rerun before the first ``st.navigation`` call, runs the page file alone: no sidebar,
   no sign-in gate, no research-use notice, no case. :func:`frame` marks every run that went through
   ``app.py`` (``ss["_framed"]``); :func:`require_frame`, the first call of every page, sends an
   unmarked run back through ``app.py``.
2. **Widgets seen under two identities.** On a freshly started server the first run registers
   widgets while Streamlit still treats ``pages/`` as legacy pages; the next run (under
   ``st.navigation``) sees the same keyed widget under another identity and drops its value. So
   :func:`frame` calls ``st.navigation`` (through the sign-in gate,
   :func:`pages._access.gate`) before any widget is drawn, and a sidebar widget whose value must
   survive is *mirrored* (:func:`mirror`): its state is re-seeded from a plain session key on every
   run and copied back by its callback.
3. **Helper modules are listed as pages too.** Legacy mode strips the leading underscore and the
   extension to name a page, so a helper ``pages/_worklist.py`` collides with the page
   ``pages/worklist.py`` ("Two pages resolve to the URL pathname /worklist") and the app does not
   start. Helpers are named so that they never match a page (``_worklist_glue.py``, ``_shared.py``);
   ``tests/test_shell.py`` checks it.
"""

from __future__ import annotations

import streamlit as st


def frame(pages: list):
    """The navigation of this run: the sign-in gate decides access and calls ``st.navigation`` (before
    any widget, point 2 above); the run is marked as framed (point 1). Returns the page to run."""
    from pages._access import gate

    page = gate(pages)
    st.session_state["_framed"] = True
    return page


def require_frame() -> None:
    """First call of every page: a run without app.py's frame (point 1 above) switches to it."""
    if not st.session_state.get("_framed"):
        st.switch_page("app.py")


def mirror(widget_key: str, source_key: str):
    """Re-seed widget ``widget_key`` from the session key ``source_key`` (the source of truth, which
    other pages may set too) and return the ``on_change`` callback that copies a change back (point 2)."""
    ss = st.session_state
    if ss.get(widget_key) != ss.get(source_key):
        ss[widget_key] = ss.get(source_key)
    return lambda: ss.__setitem__(source_key, ss[widget_key])
