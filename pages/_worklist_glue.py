"""Streamlit glue of the worklist (issue 18 item 3): where its cases come from, opening one on Segment &
review, and the "Worklist: case 3 of 12 - Previous / Next" strip that page shows for a case opened here.

The decisions (status, filters, neighbours, exports) are in :mod:`medseg_core.worklist`.

A worklist *source* is a small dict kept in the session: ``{"kind": "run", "path": ...}`` (a cohort
run folder) or ``{"kind": "folder", "root": ..., "adapter": ...}`` (a dataset folder read by one of
:data:`medseg_core.data.datasets.ADAPTERS`). ``ss["worklist_nav"]`` holds the source, the filtered
list of case ids the reviewer moves through and the case key of the case opened from it: the strip
shows only while the session's case is that one (a case loaded on Load case hides it).
"""

from __future__ import annotations

import streamlit as st

from medseg_core import budget as B
from medseg_core import worklist as W
from medseg_core.io.errors import InputError
from pages._shared import cohort_case, open_in_review, set_case


@st.cache_resource(show_spinner=False, max_entries=16)
def folder_cases(root: str, adapter: str) -> dict:
    """case id -> Case of a dataset folder (listed once per process)."""
    from pathlib import Path

    from medseg_core.data import datasets as D

    return {c.case_id: c for c in D.ADAPTERS[adapter](Path(root))}


@st.cache_resource(show_spinner=False, max_entries=32)
def folder_case(root: str, adapter: str, case_id: str):
    """A dataset folder's case (volume and masks), loaded once per process."""
    return folder_cases(root, adapter)[case_id].load()


@st.cache_resource(show_spinner=False)
def _folder_key_cache() -> dict:
    """Content keys of dataset-folder cases, per process (a dataset folder may be read-only)."""
    return {}


def source_ids(src: dict) -> list[str]:
    if src["kind"] == "run":
        from medseg_core.cohort import read_meta

        return [str(c) for c in read_meta(src["path"])["case_ids"]]
    return list(folder_cases(src["root"], src["adapter"]))


def source_keys(src: dict, ids: list[str] | None = None) -> dict[str, str]:
    """case id -> content key (:func:`medseg_core.worklist.case_keys`; a run keeps them in its folder)."""
    if src["kind"] == "run":
        from medseg_core.cohort import dataset_cases, read_meta

        path = src["path"]
        return W.case_keys(
            dataset_cases(read_meta(path)),
            ids,
            cache_file=W.run_key_file(path),
            load=lambda cid: cohort_case(path, cid),
        )
    root, adapter = src["root"], src["adapter"]
    cache = _folder_key_cache().setdefault((root, adapter), {})
    return W.case_keys(folder_cases(root, adapter), ids, cache=cache, load=lambda cid: folder_case(root, adapter, cid))


def source_name(src: dict) -> str:
    from pathlib import Path

    return Path(src["path"] if src["kind"] == "run" else src["root"]).name


def open_case(src: dict, case_id: str, ids: list[str], goto: bool = True) -> None:
    """Button callback: make ``case_id`` of ``src`` the session's case and remember the worklist
    (``ids``: the filtered list Previous / Next move through). A cohort run's case opens as the
    failure gallery opens it (:func:`pages._shared.open_in_review`: the run's first model and option
    set, re-run with the run's exact options); a dataset folder's case opens with the sidebar's model.
    The viewer starts on the slice the page chooses for a new case."""
    ss = st.session_state
    try:
        if src["kind"] == "run":
            from medseg_core.cohort import EXTERNAL_SET, read_meta

            meta = read_meta(src["path"])
            model = meta["models"][0]
            set_name = EXTERNAL_SET if model in (meta.get("predictions") or {}) else next(iter(meta["option_sets"]))
            open_in_review(src["path"], {"case": case_id, "model": model, "set": set_name, "slice": 0})
            ss.pop("slice_axial", None)  # the page picks the slice, as for any new case
            ss.pop("_goto", None)
        else:
            vol, masks = folder_case(src["root"], src["adapter"], case_id)
            label = "ovary" if "ovary" in masks else next(iter(masks), None)
            set_case(vol, masks.get(label), {k: v for k, v in masks.items() if k != label})
            ss["sample_key"] = None
            ss["run_now"] = bool(ss.get("model_name"))
    except (InputError, B.BudgetExceeded, OSError, KeyError, ValueError) as e:
        ss["worklist_error"] = f"Case {case_id} could not be opened: {e}"
        return
    ss["from_gallery"] = False
    ss["worklist_nav"] = {"source": dict(src), "ids": list(ids), "case": case_id, "key": ss.get("case_key")}
    if goto:
        ss["_goto"] = "pages/segment.py"


def nav_strip() -> None:
    """On Segment & review: "Worklist: case 3 of 12 (case id)" with Previous / Next / Back to the
    worklist, only while the session's case is the one opened from the worklist."""
    ss = st.session_state
    nav = ss.get("worklist_nav")
    if not nav or nav.get("key") != ss.get("case_key") or nav.get("case") not in nav.get("ids", []):
        return
    ids, cid = nav["ids"], nav["case"]
    prev_id, next_id = W.neighbour(ids, cid, -1), W.neighbour(ids, cid, +1)
    with st.container(horizontal=True, vertical_alignment="center", key="worklist_strip"):
        st.caption(f"Worklist ({source_name(nav['source'])}): case {ids.index(cid) + 1} of {len(ids)} · {cid}")
        st.button(
            "← Previous",
            key="wl_prev",
            disabled=prev_id is None,
            on_click=open_case,
            args=(nav["source"], prev_id, ids, False),
        )
        st.button(
            "Next →",
            key="wl_next",
            disabled=next_id is None,
            on_click=open_case,
            args=(nav["source"], next_id, ids, False),
        )
        if st.button("Back to the worklist", key="wl_back"):
            st.switch_page("pages/worklist.py")
    err = ss.pop("worklist_error", None)
    if err:
        st.error(err)


def run_model_statuses(run_path: str, case_ids: list[str]) -> dict[tuple[str, str], str]:
    """(case id, model) -> status of the latest whole-case verdict on that model's result, for a cohort
    run's cases (:func:`medseg_core.worklist.statuses_by_case_and_model`)."""
    from pages._access import store

    keys = source_keys({"kind": "run", "path": run_path}, list(dict.fromkeys(map(str, case_ids))))
    return W.statuses_by_case_and_model(keys, store().verdicts_for(list(set(keys.values()))))


def badge(status: str) -> str:
    """A Streamlit markdown badge of a status ("accepted" in green, ...)."""
    return f":{W.STATUS_COLOURS[status]}-badge[{W.STATUS_WORDS[status]}]"
