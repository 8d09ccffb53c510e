"""Failure gallery: browse a cohort run's slices by failure tag, open one in the review page, export a story."""

import time
from pathlib import Path

import numpy as np
import streamlit as st

from medseg_core import analysis as A
from medseg_core import calibration as CAL
from medseg_core import cohort as C
from medseg_core import jobs
from medseg_core import worklist as W
from medseg_core.data import datasets as D
from medseg_core.data.datasets import ADAPTERS
from medseg_core.io.errors import InputError
from medseg_core.labels import display_name, display_rows, set_name
from medseg_core.review import cohort_option_sets, cohort_unfit, dropped_option_sets, segmentation_checkpoints
from pages._access import exported
from pages._shared import cohort_case, follow_goto, keep_state, open_in_review, remember, require_frame
from pages._worklist_glue import badge, run_model_statuses

require_frame()
follow_goto()

st.title("Failure gallery")
ss = st.session_state


@st.cache_resource(show_spinner=False, max_entries=8)
def _run(path: str, mtime: float):
    """The run's columnar tables, loaded once per process and shared read-only (a cache_data copy
    would unpickle the whole table on every rerun)."""
    return C.load_run(path)


@st.cache_data(show_spinner=False, max_entries=512)
@st.cache_resource(show_spinner=False)
def _phantom_like():
    """The bundled pelvic case: the cohort's fresh phantoms are made by the same generator (MR, 3D)."""
    from medseg_core.samples import get_sample

    return get_sample("pelvic").load()[0]


def _thumb(path: str, model: str, set_name: str, case: str, z: int, size: int):
    vol, masks = cohort_case(path, case)
    mask, before = C.read_masks(path, model, set_name, case)
    return C.thumbnail(
        vol,
        z,
        mask[z],
        masks.get("ovary", next(iter(masks.values())))[z],
        masks["ovary_other"][z] if "ovary_other" in masks else None,
        before[z] & ~mask[z],
        size=size,
    )


# ------------------------------------------------------------------ a new cohort run
KEPT = ["gallery_run", "gal_tags", "gal_models", "gal_sets", "gal_dice", "gal_unc", "gal_sort", "gal_n", "gal_verdict"]
keep_state(KEPT)  # "Back to the gallery" finds the same run, tab, filters and sort
runs = C.list_runs()
ss["_runs_seen"] = len(runs)


@st.fragment(run_every=2)
def progress_panel():
    """Runs in progress or interrupted, from any session; refreshed every 2 s."""
    for p in jobs.unfinished():
        prog = C.read_progress(p) or {}
        done, total = prog.get("done", 0), prog.get("total", 0) or 1
        if jobs.is_running(p):
            st.progress(
                min(done / total, 1.0), text=f"{p.name}: {done}/{prog.get('total', '?')} · {prog.get('message', '')}"
            )
        elif prog.get("state") == "failed":
            c1, c2 = st.columns([4, 1])
            c1.error(f"{p.name} failed: {prog.get('message')}")
            if c2.button("Dismiss", key=f"dismiss_{p.name}", help="Hide this message (the run folder is kept)."):
                jobs.dismiss(p)
                st.rerun(scope="fragment")
        else:
            c1, c2 = st.columns([4, 1])
            c1.warning(
                f"{p.name} stopped at {done}/{prog.get('total', '?')} (server restart?); finished cases are kept."
            )
            if c2.button("Resume", key=f"resume_{p.name}"):
                jobs.resume(p)
    if ss.get("_runs_seen") != len(C.list_runs()):
        st.rerun(scope="app")  # a run finished: list it


progress_panel()
with st.expander("New cohort run", expanded=not runs):
    seg = segmentation_checkpoints()
    src = st.radio(
        "Cases", ["Fresh synthetic pelvic phantoms", "A dataset folder on this server"], horizontal=True, key="coh_src"
    )
    folder, adapter, synthetic = None, None, None
    if src.startswith("Fresh"):
        st.caption(
            "Fresh phantoms (seed 7, never seen in training). The phantom has two look-alike ovaries with one "
            "labelled, so side swaps and double-ovary predictions are expected."
        )
    else:
        d1, d2 = st.columns([3, 1])
        folder = d1.text_input(
            "Folder",
            key="coh_folder",
            placeholder="/data/UT-EndoMRI or /data/mycases",
            help="A published layout (MSD Task09, UT-EndoMRI, MMOTU, UW-Madison GI, MicroSegNet) "
            "or images/ + masks/ with matching file names (NIfTI, DICOM or images).",
        )
        adapter = d2.selectbox("Layout", ["detect"] + sorted(ADAPTERS), key="coh_adapter")
    if folder is None:  # the phantoms are pelvic MR volumes like the bundled pelvic case: offer what fits them
        unfit = cohort_unfit(seg, _phantom_like())
        if unfit:
            st.caption(
                f"Not offered for the pelvic MR phantoms ({len(unfit)}): "
                + "; ".join(f"{seg[r].title} ({why})" for r, why in unfit.items())
                + "."
            )
        seg = {r: s_ for r, s_ in seg.items() if r not in unfit}
    f1, f2, f3 = st.columns(3)
    models = f1.multiselect(
        "Models",
        list(seg),
        default=[r for r in seg if seg[r].family == "ovary"][:1],
        key="coh_models",
        format_func=lambda r: seg[r].title + " · " + seg[r].name,
    )
    n_cases = f2.slider("Cases (at most)", 1, 100, 4, key="coh_n")
    mc = f3.slider("MC-dropout samples (uncertainty)", 0, 16, 6, 2, key="coh_mc")
    offered = cohort_option_sets([seg[r] for r in models])
    if why_fewer := dropped_option_sets([seg[r] for r in models]):
        st.caption(why_fewer)
    chosen = st.multiselect(
        "Option sets (the first is the baseline of the comparisons)",
        list(offered),
        default=list(offered)[:3],
        key="coh_sets",
        format_func=lambda k: set_name(k, offered[k]),
    )
    if st.button(
        "Start the run", type="primary", disabled=not models or not chosen or (folder is not None and not folder)
    ):
        try:
            if folder is None:
                root, adapter, synthetic = (
                    C.runs_dir().parent / "data" / "pelvic_eval_seed7",
                    "ut_endomri_d2",
                    {"kind": "pelvic", "n": 12, "seed": 7},
                )
            else:
                root = folder
                adapter = D.detect_adapter(root) if adapter == "detect" else adapter
                first = D.ADAPTERS[adapter](Path(root))[:1]
                if not first:
                    raise InputError(f"The folder '{root}' holds no case in the {adapter} layout.")
                bad = cohort_unfit({r: seg[r] for r in models}, first[0].load()[0])
                if bad:
                    raise InputError(
                        "Not started: "
                        + "; ".join(
                            f"{seg[r].title} cannot run on this dataset's cases ({why})" for r, why in bad.items()
                        )
                        + ". Remove them from Models."
                    )
            out = (
                C.runs_dir()
                / f"{Path(str(root)).name}_{'+'.join(seg[r].name for r in models)}_{time.strftime('%Y%m%d_%H%M%S')}"
            )
            jobs.start_cohort(
                out,
                root,
                adapter,
                models,
                {k: offered[k] for k in chosen},
                mc_samples=mc,
                max_cases=n_cases,
                synthetic=synthetic,
            )
            st.success(
                f"The run '{out.name}' started in the background: it goes on if you leave this page or close "
                "the tab, and finished cases are kept if the server stops."
            )
        except InputError as e:
            st.error(str(e))


runs = C.list_runs()

if not runs:
    st.info(
        "No cohort run yet. Start one above, or from the command line: "
        "`python -m medseg_core.cohort --help` (runs are read from "
        f"`{C.runs_dir()}`, or `MEDSEG_RUNS`)."
    )
    st.stop()

paths = [str(p) for p in runs]
if ss.get("gallery_run") not in paths:
    ss["gallery_run"] = paths[0]
path = st.selectbox("Cohort run", paths, key="gallery_run", format_func=lambda p: p.rsplit("/", 1)[-1])
try:
    r = _run(path, C.run_mtime(path))
except (OSError, KeyError, ValueError) as e:
    st.error(f"This run folder cannot be read ({e}).")
    st.stop()
m = r.meta
st.caption(C.run_summary(m))
if C.references_words(m):
    (st.warning if "deleted" in C.references_words(m) else st.caption)(C.references_words(m))

# ------------------------------------------------------------------ tables
# plain tabs: tracking the open tab (on_change="rerun") made a click during a rerun get lost
tab_t, tab_g, tab_u, tab_c = st.tabs(["Side-masking table", "Gallery", "Uncertainty vs Dice", "Calibration"])
with tab_t:
    if (r.path / "table1.csv").exists():
        st.markdown(
            "**Side masking, as in report 000's Table 1**: mean per-slice Dice on reference-positive slices, "
            "without side masking and with oracle side masking (predictions kept on the labelled ovary's side "
            "only). Its Wilcoxon p treats slices as independent, which is optimistic with few cases."
        )
        st.dataframe(display_rows(C.titled_rows(C.read_rows(r.path / "table1.csv"), m)), hide_index=True)
    if (r.path / "comparisons.csv").exists():
        st.markdown(
            f"**Paired per-slice comparisons** against {set_name(next(iter(m['option_sets'])))} "
            "(reference-positive slices; Wilcoxon signed-rank p). Slices of one case are not independent, so "
            f"with {len(m['case_ids'])} case{'s' if len(m['case_ids']) != 1 else ''} these p-values are optimistic."
        )
        st.dataframe(display_rows(C.titled_rows(C.read_rows(r.path / "comparisons.csv"), m)), hide_index=True)
    st.caption("Command line: `python -m medseg_core.cohort` (see `make table1`).")

# ------------------------------------------------------------------ filters
with tab_g:
    counts_all = C.tag_counts(C.filter_slices(r.slices))
    st.markdown(
        "**Slices per tag** (slices with a reference or a prediction; a slice can carry several tags): "
        + " · ".join(f"{display_name(k)} **{v}**" for k, v in counts_all.items() if v)
    )
    g1, g2, g3 = st.columns(3)
    present = [t for t in A.TAGS if counts_all[t]]
    default = [t for t in ("side_swap", "double_ovary") if t in present] or present[:1]
    ss.setdefault("gal_tags", default)
    ss.setdefault("gal_models", list(m["models"]))
    ss.setdefault("gal_sets", list(m["option_sets"])[:1])
    for k, allowed in (("gal_tags", present), ("gal_models", m["models"]), ("gal_sets", list(m["option_sets"]))):
        ss[k] = [v for v in ss[k] if v in allowed]  # another run may lack some
    tags = g1.multiselect(
        "Failure tags",
        present,
        key="gal_tags",
        format_func=display_name,
        help="; ".join(f"{display_name(k)}: {v}" for k, v in A.TAG_DESCRIPTIONS.items()),
    )
    models = g2.multiselect("Models", m["models"], key="gal_models", format_func=lambda n: C.model_title(m, n))
    sets = g3.multiselect(
        "Option sets",
        list(m["option_sets"]),
        key="gal_sets",
        format_func=lambda k: set_name(k, m["option_sets"].get(k)),
    )
    h1, h2, h3, h4 = st.columns(4)
    ss.setdefault("gal_dice", (0.0, 1.0))
    ss.setdefault("gal_unc", (0.0, 0.7))
    ss.setdefault("gal_n", 12)
    dice_rng = h1.slider(
        "Dice* range",
        0.0,
        1.0,
        step=0.05,
        key="gal_dice",
        help="Dice* is the slice's Dice with an empty prediction on an empty slice counted as 1 (a correct "
        "negative) and a prediction on one side only counted as 0.",
    )
    uvals = C.has_uncertainty(r.slices)
    unc_rng = h2.slider("Uncertainty range (nats)", 0.0, 0.7, step=0.01, key="gal_unc", disabled=not uvals)
    order = h3.selectbox("Sort", list(C.SORT_KEYS), key="gal_sort")
    n_show = h4.slider("Thumbnails", 4, 48, step=4, key="gal_n")
    rows = C.sort_slices(C.filter_slices(r.slices, tags, models, sets, dice_rng, unc_rng if uvals else None), order)
    # issue 18: the reviewers' verdicts beside the automatic tags (matched by the case's content key)
    verdict_pick = st.multiselect(
        "Verdict",
        W.STATUSES,
        key="gal_verdict",
        format_func=W.STATUS_WORDS.get,
        help="The latest whole-case verdict recorded on that model's result (see the Worklist); a verdict on "
        "one model's mask says nothing of another model's.",
    )
    status = {}  # (case, model) -> verdict; every case's only when the filter needs them (keys may load cases)
    if verdict_pick and len(rows):
        status = run_model_statuses(path, m["case_ids"])
        pairs = zip(rows.frame["case"].astype(str), rows.frame["model"].astype(str), strict=True)
        rows = rows.take(np.array([status.get(p, "not_reviewed") in verdict_pick for p in pairs], bool))
    st.caption(
        f"{len(rows)} slices match; showing {min(len(rows), n_show)}. Orange: prediction · green outline: "
        "reference · pink outline: the other (unlabelled) ovary · blue outline: removed by post-processing. "
        "Radiological orientation (patient's right on the image left)."
    )
    story = []
    cols = st.columns(4)
    page_rows = rows[:n_show]
    if page_rows and not verdict_pick:
        status = run_model_statuses(path, [x["case"] for x in page_rows])
    for k, row in enumerate(page_rows):
        with cols[k % 4]:
            th = _thumb(path, row["model"], row["set"], row["case"], int(row["slice"]), 220)
            st.image(th, caption=C.caption(row, m), width="stretch")
            st.markdown(f"Verdict on this model {badge(status.get((str(row['case']), row['model']), 'not_reviewed'))}")
            b1, b2 = st.columns(2)
            b1.button("Open in review", key=f"open_{k}", on_click=open_in_review, args=(path, row))
            if b2.checkbox("Story", key=f"story_{row['model']}_{row['set']}_{row['case']}_{row['slice']}"):
                story.append((th, C.caption(row, m)))
    if rows:
        st.download_button(
            "Export story (PNG sheet of the ticked examples)"
            if story
            else "Export story (tick examples above; until then the first 6 shown)",
            C.story_png(
                story
                or [
                    (_thumb(path, x["model"], x["set"], x["case"], int(x["slice"]), 220), C.caption(x, m))
                    for x in rows[:6]
                ],
                title=f"{', '.join(map(display_name, tags)) or 'all slices'} · {r.name}",
            ),
            file_name=f"story_{r.name}.png",
            mime="image/png",
            key="dl_story",
            on_click=exported(f"failure-gallery story PNG (run {r.name})", with_case=False),
        )
        st.download_button(
            "Export the matching slices (CSV)",
            lambda: C.rows_csv(rows),
            file_name=f"slices_{r.name}.csv",
            mime="text/csv",
            key="dl_slices",
            on_click=exported(f"failure-gallery slices CSV (run {r.name})", with_case=False),
        )

with tab_u:
    sel = C.filter_slices(
        r.slices, None, models=st.session_state.get("gal_models"), sets=st.session_state.get("gal_sets")
    )
    if not C.has_uncertainty(sel):
        st.info("This run has no uncertainty scores (run it with MC-dropout samples).")
    else:
        fig, au = C.uncertainty_scatter(sel, meta=m)
        st.plotly_chart(fig, width="stretch", key="gal_scatter")
        st.caption(
            f"A slice *failed* when its main finding is not {display_name('good')}. {au['n_failed']} failed, "
            f"{au['n_good']} good; "
            f"mean uncertainty {au['mean_failed']:.3f} vs {au['mean_good']:.3f} nats. AUROC 0.5 = the score "
            "does not tell failed slices from good ones."
            + (
                f" The picture draws a random {au['n_drawn']:,} of the {au['n_failed'] + au['n_good']:,} slices; "
                "the counts, means and AUROC are of all of them."
                if au["n_drawn"] < au["n_failed"] + au["n_good"]
                else ""
            )
        )

# ------------------------------------------------------------------ calibration over the cohort (issue 18 item 4)
with tab_c:
    st.markdown("**Calibration over the cohort**")
    cal = CAL.cohort_calibration(path)
    if cal is None:
        st.info(
            "This run was made before cohort calibration existed: re-run the cohort (same models, option sets "
            "and cases) to see its reliability diagrams."
        )
    elif not cal.pairs():
        st.info("No model of this run has probability maps with references (a folder of predictions has none).")
    else:
        pairs = {
            f"{C.model_title(m, mo)} · {set_name(se, m['option_sets'].get(se))}": (mo, se) for mo, se in cal.pairs()
        }
        k1, k2 = st.columns([2, 3])
        pick = pairs[k1.selectbox("Model and option set", list(pairs), key="gal_cal_pair")]
        regions = cal.regions(*pick)
        if ss.get("gal_cal_region") not in regions:
            ss["gal_cal_region"] = "near" if "near" in regions else regions[0]
        region = k2.radio(
            "Evidence",
            regions,
            horizontal=True,
            key="gal_cal_region",
            format_func=lambda x: {
                "near": "Voxels near the structure",
                "all": "All voxels",
                "cases": "Cases: p(malignant)",
            }[x],
            help="Near the structure: per case, the box around prediction and reference, 8 voxels wider. All "
            "voxels are dominated by easy background."
            + (" Cases: the model's p(malignant) against the case label." if "cases" in regions else ""),
        )
        rel = cal.reliability[(*pick, region)]
        cc1, cc2 = st.columns([2, 1])
        cc1.plotly_chart(
            CAL.reliability_figure(rel, f"{C.model_title(m, pick[0])} · {set_name(pick[1])}"),
            width="stretch",
            key="gal_cal_fig",
            config={"displaylogo": False, "displayModeBar": False},
        )
        with cc2:
            st.metric("Expected calibration error", f"{rel.ece:.3f}")
            st.metric("Maximum calibration error", f"{rel.mce:.3f}")
            st.metric("Cases" if region == "cases" else "Voxels", f"{rel.n:,}")
        requested = bool(((m.get("exact_options") or {}).get(pick[0]) or {}).get(pick[1], {}).get("calibrated"))
        st.caption(
            f"Over {cal.n_cases[pick]} cases of this run, 15 bins of the predicted probability. A calibrated model "
            "lies on the diagonal: of the voxels given 0.8, 80 % are foreground. The expected calibration error is "
            "the mean gap between predicted probability and observed frequency, bins weighted by their size; the "
            "maximum is the largest gap in any bin. " + cal.probability_words(*pick, requested=requested)
        )
        with st.expander("Every model and option set"):
            st.dataframe(cal.rows(titles={n: C.model_title(m, n) for n in m["models"]}), hide_index=True)
        with st.expander("Bins"):
            st.dataframe(rel.rows(), hide_index=True)

remember(KEPT)
