"""Failure gallery: browse a cohort run's slices by failure tag, open one in the review page, export a story."""
import streamlit as st

from medseg_core import analysis as A
from medseg_core import cohort as C
from medseg_core.checkpoints import checkpoint_status
from medseg_core.io.errors import InputError
from medseg_core.labels import display_name, display_rows, set_name
from medseg_core.models import get_spec, list_models
from pages._shared import cohort_case, follow_goto, open_in_review, require_frame

require_frame()
follow_goto()

st.title("Failure gallery")
ss = st.session_state


@st.cache_data(show_spinner=False, max_entries=8)
def _run(path: str, mtime: float):
    return C.load_run(path)


@st.cache_data(show_spinner=False, max_entries=512)
def _thumb(path: str, model: str, set_name: str, case: str, z: int, size: int):
    vol, masks = cohort_case(path, case)
    mask, before = C.read_masks(path, model, set_name, case)
    return C.thumbnail(vol, z, mask[z], masks.get("ovary", next(iter(masks.values())))[z],
                       masks["ovary_other"][z] if "ovary_other" in masks else None, before[z] & ~mask[z], size=size)


# ------------------------------------------------------------------ a new cohort run
ovary_models = [m for m in list_models() if get_spec(m).family == "ovary" and get_spec(m).task == "segmentation"
                and checkpoint_status(m) == "ok"]
runs = C.list_runs()
with st.expander("New cohort run on synthetic pelvic phantoms", expanded=not runs):
    st.caption("Fresh phantoms (seed 7, never seen in training), each model with three option sets: "
               f"{set_name('orig')}, {set_name('masked')} and {set_name('two_pass')} (the deployment that segments "
               "each side separately). The phantom has two look-alike ovaries with one labelled, so side swaps and "
               "double-ovary predictions are expected.")
    f1, f2, f3 = st.columns(3)
    models = f1.multiselect("Models", ovary_models, default=ovary_models[:1], key="coh_models")
    n_cases = f2.slider("Cases", 1, 12, 4, key="coh_n")
    mc = f3.slider("MC-dropout samples (uncertainty)", 0, 16, 6, 2, key="coh_mc")
    if st.button("Run cohort", type="primary", disabled=not models):
        data, synthetic = C.runs_dir().parent / "data" / "pelvic_eval_seed7", "pelvic:12:7"
        from medseg_core.data import datasets as D
        from medseg_core.data.make_synthetic import ensure_synthetic, parse_synthetic

        bar = st.progress(0.0, text="Generating phantoms...")
        try:
            ensure_synthetic(data, parse_synthetic(synthetic))
            out = C.runs_dir() / f"pelvic_{'+'.join(models)}_{n_cases}cases_mc{mc}"
            C.run_cohort(D.ut_endomri_d2(data)[:n_cases], models, C.SIDE_SETS, out, mc_samples=mc,
                         dataset={"adapter": "ut_endomri_d2", "root": str(data), "synthetic": synthetic},
                         progress=lambda d, t, m: bar.progress(d / t, text=f"{d}/{t}: {m}"))
            ss["gallery_run"] = str(out)
        except (InputError, OSError, ValueError) as e:
            st.error(f"The cohort run failed: {e}")
        bar.empty()
        runs = C.list_runs()

if not runs:
    st.info("No cohort run yet. Start one above, or from the command line: "
            "`python -m medseg_core.cohort --help` (runs are read from "
            f"`{C.runs_dir()}`, or `MEDSEG_RUNS`).")
    st.stop()

paths = [str(p) for p in runs]
if ss.get("gallery_run") not in paths:
    ss["gallery_run"] = paths[0]
path = st.selectbox("Cohort run", paths, key="gallery_run", format_func=lambda p: p.rsplit("/", 1)[-1])
try:
    from pathlib import Path

    r = _run(path, Path(path, "slices.csv").stat().st_mtime)
except (OSError, KeyError, ValueError) as e:
    st.error(f"This run folder cannot be read ({e}).")
    st.stop()
m = r.meta
st.caption(f"{len(m['case_ids'])} cases · models {', '.join(m['models'])} · option sets "
           f"{', '.join(set_name(k, v) for k, v in m['option_sets'].items())} · MC-dropout samples {m['mc_samples']} · "
           f"created {m['created']} · {m['seconds']} s")

# ------------------------------------------------------------------ tables
tab_t, tab_g, tab_u = st.tabs(["Side-masking table", "Gallery", "Uncertainty vs Dice"])
with tab_t:
    if (r.path / "table1.csv").exists():
        st.markdown("**Report 000 Table 1 format**: mean per-slice Dice on reference-positive slices, without side "
                    "masking and with oracle side masking.")
        st.dataframe(display_rows(C.read_rows(r.path / "table1.csv")), hide_index=True)
    if (r.path / "comparisons.csv").exists():
        st.markdown(f"**Paired per-slice comparisons** against {set_name(next(iter(m['option_sets'])))} "
                    "(reference-positive slices; Wilcoxon signed-rank p).")
        st.dataframe(display_rows(C.read_rows(r.path / "comparisons.csv")), hide_index=True)
    st.caption("Command line: `python -m medseg_core.cohort` (see `make table1`).")

# ------------------------------------------------------------------ filters
with tab_g:
    counts_all = A.tag_counts(C.filter_slices(r.slices))
    st.markdown("**Slices per tag** (slices with a reference or a prediction; a slice can carry several tags): " +
                " · ".join(f"{display_name(k)} **{v}**" for k, v in counts_all.items() if v))
    g1, g2, g3 = st.columns(3)
    present = [t for t in A.TAGS if counts_all[t]]
    default = [t for t in ("side_swap", "double_ovary") if t in present] or present[:1]
    tags = g1.multiselect("Failure tags", present, default=default, key="gal_tags", format_func=display_name,
                          help="; ".join(f"{display_name(k)}: {v}" for k, v in A.TAG_DESCRIPTIONS.items()))
    models = g2.multiselect("Models", m["models"], default=m["models"], key="gal_models")
    sets = g3.multiselect("Option sets", list(m["option_sets"]), default=list(m["option_sets"])[:1], key="gal_sets",
                          format_func=lambda k: set_name(k, m["option_sets"].get(k)))
    h1, h2, h3, h4 = st.columns(4)
    dice_rng = h1.slider("Dice* range", 0.0, 1.0, (0.0, 1.0), 0.05, key="gal_dice")
    uvals = [x["uncertainty"] for x in r.slices if isinstance(x.get("uncertainty"), float)]
    unc_rng = h2.slider("Uncertainty range (nats)", 0.0, 0.7, (0.0, 0.7), 0.01, key="gal_unc", disabled=not uvals)
    order = h3.selectbox("Sort", list(C.SORT_KEYS), key="gal_sort")
    n_show = h4.slider("Thumbnails", 4, 48, 12, 4, key="gal_n")
    rows = C.sort_slices(C.filter_slices(r.slices, tags, models, sets, dice_rng, unc_rng if uvals else None), order)
    st.caption(f"{len(rows)} slices match; showing {min(len(rows), n_show)}. Orange: prediction · green outline: "
               "reference · pink outline: the other (unlabelled) ovary · blue outline: removed by post-processing. "
               "Radiological orientation (patient's right on the image left).")
    story = []
    cols = st.columns(4)
    for k, row in enumerate(rows[:n_show]):
        with cols[k % 4]:
            th = _thumb(path, row["model"], row["set"], row["case"], int(row["slice"]), 220)
            st.image(th, caption=C.caption(row), width="stretch")
            b1, b2 = st.columns(2)
            b1.button("Open in review", key=f"open_{k}", on_click=open_in_review,
                      args=(path, row, m["option_sets"][row["set"]]))
            if b2.checkbox("Story", key=f"story_{row['model']}_{row['set']}_{row['case']}_{row['slice']}"):
                story.append((th, C.caption(row)))
    if rows:
        st.download_button("Export story (PNG sheet of the ticked examples)" if story else
                           "Export story (tick examples above; until then the first 6 shown)",
                           C.story_png(story or [(_thumb(path, x["model"], x["set"], x["case"], int(x["slice"]), 220),
                                                  C.caption(x)) for x in rows[:6]],
                                       title=f"{', '.join(map(display_name, tags)) or 'all slices'} · {r.name}"),
                           file_name=f"story_{r.name}.png", mime="image/png", key="dl_story")
        st.download_button("Export the matching slices (CSV)", C.rows_csv(rows), file_name=f"slices_{r.name}.csv",
                           mime="text/csv", key="dl_slices")

with tab_u:
    sel = C.filter_slices(r.slices, None, models=st.session_state.get("gal_models"), sets=st.session_state.get("gal_sets"))
    if not any(isinstance(x.get("uncertainty"), float) for x in sel):
        st.info("This run has no uncertainty scores (run it with MC-dropout samples).")
    else:
        fig, au = C.uncertainty_scatter(sel)
        st.plotly_chart(fig, width="stretch", key="gal_scatter")
        st.caption(f"A slice *failed* when its main finding is not {display_name('good')}. {au['n_failed']} failed, "
                   f"{au['n_good']} good; "
                   f"mean uncertainty {au['mean_failed']:.3f} vs {au['mean_good']:.3f} nats. AUROC 0.5 = the score "
                   "does not tell failed slices from good ones.")
