"""The app shell (issue 18 item 6): the legacy-multipage workaround lives in pages/_shell.py only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_helper_modules_never_share_a_page_name():
    """Streamlit's legacy mode names pages/_x.py like pages/x.py: such a pair stops the app from starting."""
    pages = {p.stem for p in (ROOT / "pages").glob("*.py") if not p.stem.startswith("_")}
    helpers = {p.stem.lstrip("_") for p in (ROOT / "pages").glob("_*.py")}
    assert pages and helpers and not pages & helpers


def test_every_listed_page_requires_the_frame_and_only_the_shell_marks_it():
    app = (ROOT / "app.py").read_text()
    listed = re.findall(r'st\.Page\("(pages/[a-z0-9_]+\.py)"', app)
    assert "pages/worklist.py" in listed and len(listed) >= 8
    for page in listed + ["pages/audit.py"]:
        text = (ROOT / page).read_text()
        assert "require_frame()" in text.split("\n\n\n")[0] or "\nrequire_frame()\n" in text, page
    marks = [p.name for p in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")] if '["_framed"] = True' in p.read_text()]
    assert marks == ["_shell.py"]


def test_mirror_reseeds_the_widget_and_copies_a_change_back():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(
        "import streamlit as st\n"
        "from pages._shell import mirror\n"
        "ss = st.session_state\n"
        "ss.setdefault('choice', 'b')\n"
        "st.selectbox('x', ['a', 'b', 'c'], key='pick', on_change=mirror('pick', 'choice'))\n",
        default_timeout=30,
    ).run()
    assert at.selectbox(key="pick").value == "b"
    at.selectbox(key="pick").set_value("c").run()
    assert at.session_state["choice"] == "c"
    at.session_state["choice"] = "a"  # another page sets the source of truth
    at.run()
    assert at.selectbox(key="pick").value == "a"
