"""Worklist (issue 18 item 3): the cases of a cohort run or a dataset folder with their review status
(not reviewed / accepted / needs correction / rejected), filters, Open and Previous / Next on Segment &
review, and the export of the verdicts (this list's or all of them) for every reviewer, each export
recorded in the audit trail. Verdicts are matched to cases by their content key
(:mod:`medseg_core.worklist`)."""

from datetime import UTC, datetime

import streamlit as st

from medseg_core import cohort as C
from medseg_core import worklist as W
from medseg_core.data.datasets import ADAPTERS, detect_adapter
from medseg_core.store import export_verdicts
from pages._access import export_pair, store
from pages._shared import follow_goto, keep_state, remember, require_frame
from pages._worklist_glue import open_case, source_ids, source_keys

require_frame()
follow_goto()

st.title("Worklist")
ss = st.session_state
KEPT = ["wl_kind", "wl_run", "wl_folder", "wl_adapter", "wl_status", "wl_models", "wl_reviewers", "wl_pick"]
keep_state(KEPT)

err = ss.pop("worklist_error", None)
if err:
    st.error(err)

kind = st.radio("Cases of", ["A cohort run", "A dataset folder on this server"], horizontal=True, key="wl_kind")
src = None
if kind == "A cohort run":
    runs = [str(p) for p in C.list_runs()]
    if not runs:
        st.info("No cohort run yet (start one on the Failure gallery page), or choose a dataset folder.")
    else:
        if ss.get("wl_run") not in runs:
            ss["wl_run"] = runs[0]
        path = st.selectbox("Cohort run", runs, key="wl_run", format_func=lambda p: p.rsplit("/", 1)[-1])
        src = {"kind": "run", "path": path}
else:
    d1, d2 = st.columns([3, 1])
    folder = d1.text_input("Folder", key="wl_folder", placeholder="/data/UT-EndoMRI or /data/mycases")
    adapter = d2.selectbox("Layout", ["detect"] + sorted(ADAPTERS), key="wl_adapter")
    if folder.strip():
        try:
            src = {
                "kind": "folder",
                "root": folder.strip(),
                "adapter": detect_adapter(folder.strip()) if adapter == "detect" else adapter,
            }
        except (OSError, ValueError) as e:
            st.error(f"This folder cannot be read as a dataset ({e}).")

if src is None:
    remember(KEPT)
    st.stop()
try:
    ids = source_ids(src)
    with st.spinner("Reading each case once to find its verdicts (kept for next time)..."):
        keys = source_keys(src, ids)
except (OSError, KeyError, ValueError, FileNotFoundError) as e:
    st.error(f"The cases cannot be read ({e}).")
    remember(KEPT)
    st.stop()

verdict_rows = store().verdicts_for(list(set(keys.values())))
rows = W.status_rows(ids, keys, verdict_rows)
counts = {s: sum(r["status"] == s for r in rows) for s in W.STATUSES}
st.markdown(f"**{len(rows)} cases:** " + " · ".join(f"{W.STATUS_WORDS[s]} **{counts[s]}**" for s in W.STATUSES))

f1, f2, f3 = st.columns(3)
models = sorted({m for r in rows for m in r["models_seen"]})
reviewers = sorted({x for r in rows for x in r["reviewers_seen"]})
for k, allowed in (("wl_status", W.STATUSES), ("wl_models", models), ("wl_reviewers", reviewers)):
    ss[k] = [v for v in ss.get(k, []) if v in allowed]
statuses = f1.multiselect(
    "Status",
    W.STATUSES,
    key="wl_status",
    format_func=W.STATUS_WORDS.get,
    help="The verdict of the case's latest whole-case decision.",
)
titles = {mo: C.model_title({}, mo) for mo in models}  # verdicts record the model's name; people read titles
pick_models = f2.multiselect(
    "Model",
    models,
    key="wl_models",
    format_func=lambda mo: titles.get(mo, mo),
    help="Cases with a verdict recorded with this model.",
)
pick_reviewers = f3.multiselect(
    "Reviewer", reviewers, key="wl_reviewers", help="Cases with a verdict by this reviewer."
)
shown = W.filter_rows(rows, statuses, pick_models, pick_reviewers)
st.caption(
    f"{len(shown)} of {len(rows)} cases match. Status: the latest whole-case verdict; slice verdicts are "
    "counted beside it; reviewer, time and model are those of the latest verdict."
)
st.dataframe(W.table(shown, titles), hide_index=True, key="worklist_table")

shown_ids = [r["case"] for r in shown]
if shown_ids:
    if ss.get("wl_pick") not in shown_ids:
        ss["wl_pick"] = next((r["case"] for r in shown if r["status"] == "not_reviewed"), shown_ids[0])
    o1, o2 = st.columns([3, 1], vertical_alignment="bottom")
    pick = o1.selectbox(
        "Case",
        shown_ids,
        key="wl_pick",
        format_func=lambda c: f"{c} · {W.STATUS_WORDS[next(r['status'] for r in shown if r['case'] == c)]}",
    )
    o2.button(
        "Open on Segment & review",
        type="primary",
        key="wl_open",
        on_click=open_case,
        args=(src, pick, shown_ids),
        help="Previous / Next on Segment & review then move through this filtered list.",
    )

stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
name = (src.get("path") or src.get("root")).rstrip("/").rsplit("/", 1)[-1]
st.markdown("**Export verdicts**")
e1, e2, e3, e4 = st.columns(4)
run_rows = lambda: W.case_verdicts(store(), keys)  # noqa: E731 (evaluated on click only)
export_pair(
    (e1, e2),
    "This list's verdicts",
    lambda fmt: lambda: W.export_bytes(run_rows(), fmt),
    f"verdicts_{name}_{stamp}",
    "wl_dl",
    f"worklist verdicts {{fmt}} ({name})",
)
export_pair(
    (e3, e4),
    "All verdicts",
    lambda fmt: lambda: export_verdicts(store(), fmt),
    f"medseg_verdicts_{stamp}",
    "wl_dl_all",
    "all verdicts {fmt} (worklist)",
)
st.caption(
    "This list's export adds the dataset's case id to each verdict; times are UTC. Every export is "
    "recorded in the audit trail."
)
remember(KEPT)
