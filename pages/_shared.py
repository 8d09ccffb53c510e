"""Streamlit glue shared by the pages: session state, cached model loading, running predictions.

All numerical work is in medseg_core; this module only keeps state and draws progress.
"""
from __future__ import annotations

import streamlit as st

from medseg_core.checkpoints import load_model, model_spec
from medseg_core.inference import PredictOptions, predict
from medseg_core.render import auto_window
from medseg_core.review import PredictionCache, case_key
from medseg_core.samples import get_sample, list_samples

DEFAULT_SAMPLE = "pelvic"


@st.cache_resource(show_spinner="Loading model weights...")
def cached_model(ref: str):
    """One loaded model per process, shared read-only by all sessions (predict() locks it)."""
    return load_model(ref)


def get_model(ref: str):
    """The loaded model for a picker reference: a checkpoint uploaded in this session
    (``session:NAME``, kept in this session's state only) or a model folder's checkpoint."""
    if ref.startswith("session:"):
        return st.session_state["session_models"][ref]
    return cached_model(ref)


def get_spec(ref: str):
    """The spec (from the card) of a picker reference, without loading weights."""
    if ref.startswith("session:"):
        return st.session_state["session_models"][ref].spec
    return model_spec(ref)


def set_case(volume, gt=None, extras=None, sample=None) -> None:
    """Make ``volume`` the session's case; earlier predictions and uploads are dropped."""
    ss = st.session_state
    ss["volume"] = volume
    ss["gt_mask"] = gt
    ss["extra_masks"] = extras or {}
    ss["sample"] = sample
    ss["case_key"] = case_key(volume)
    ss["auto_window"] = auto_window(volume.array)  # once per case, not on every slider move
    ss["predictions"] = PredictionCache()
    ss["external_predictions"] = {}  # uploaded predictions belong to the case they were made on
    for k in ("current", "load_error", "us_kind", "result_source", "from_gallery", "show_other", "slice_axial", "slice_coronal", "slice_sagittal", "unc_slice", "unc_key"):
        ss.pop(k, None)  # a new case opens on its own slices
    ss["clinical"] = dict((sample.extra.get("clinical") if sample else None) or {"menopausal": 0, "oncology_center": 0})
    from pages._access import audit  # issue 22: who opened which case (its pseudonymous key, never a name)

    audit("open_case", case_key=ss["case_key"], detail=f"bundled sample {sample.key}" if sample else None)


def open_sample(key: str) -> None:
    s = get_sample(key)
    vol, mask, extras = s.load()
    set_case(vol, mask, extras, s)
    st.session_state["sample_key"] = key


def ensure_state() -> None:
    """First visit of a session: open the default bundled sample so the app is never empty."""
    ss = st.session_state
    if "initialised" not in ss:
        ss["initialised"] = True
        if list_samples():
            open_sample(DEFAULT_SAMPLE)


def run(model_name: str, options: PredictOptions, reference=None, slot: str = "current"):
    """The cached prediction for (case, model, options), computing it with a progress bar once.
    ``slot`` is the page's own state key for its result (Segment & review: "current"; Uncertainty and
    Compare keep theirs, so running one never replaces another page's result)."""
    ss = st.session_state
    cache: PredictionCache = ss["predictions"]
    key = cache.key(ss["case_key"], model_name, options)
    pred = cache.get(key)
    if pred is None:
        bar = st.progress(0.0, text=f"Running {get_spec(model_name).title}...")
        try:
            pred = predict(get_model(model_name), ss["volume"], options,
                           progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m), reference=reference)
        finally:
            bar.empty()  # never leave a stuck progress bar beside an error
        cache.put(key, pred)
        from pages._access import audit, options_text

        audit("run_model", case_key=ss["case_key"], model=model_name, detail=options_text(options))
    ss[slot] = key
    return pred


def current_prediction():
    ss = st.session_state
    key = ss.get("current")
    return ss["predictions"].get(key) if key and "predictions" in ss else None


def require_frame() -> None:
    """Send a page that runs without app.py's frame back through it.

    Streamlit remembers at start-up that a ``pages/`` folder exists and, until some session has
    called ``st.navigation``, runs a deep-linked page file on its own (legacy multipage mode): no
    sidebar, no notice, no case. app.py marks every framed run; an unmarked run switches to it.
    """
    if not st.session_state.get("_framed"):
        st.switch_page("app.py")


@st.cache_resource(show_spinner=False, max_entries=32)
def cohort_case(run_path: str, case_id: str):
    """A cohort run's case (volume and masks) loaded once per process from its dataset folder."""
    from medseg_core.cohort import dataset_cases, read_meta

    return dataset_cases(read_meta(run_path))[case_id].load()


def open_in_review(run_path: str, row: dict) -> None:
    """Button callback (runs before the script, so widget values may be set): make a gallery row's
    case the session's case with exactly what the run showed, and the viewer on that slice. A model
    is re-run with the run's exact options (MC-dropout samples and seed included, so the mask is the
    thumbnail's, voxel for voxel); predictions made elsewhere open as the stored mask itself. The
    unlabelled other ovary comes along as in the thumbnail."""
    from medseg_core import cohort as C
    from medseg_core.inference import prediction_from_masks
    from medseg_core.review import review_state_for

    meta = C.read_meta(run_path)
    vol, masks = cohort_case(run_path, row["case"])
    label = "ovary" if "ovary" in masks else next(iter(masks), None)
    ref = masks.get(label)
    set_case(vol, ref, {k: v for k, v in masks.items() if k != label})
    ss = st.session_state
    ss["sample_key"] = None
    model, set_name = row["model"], row["set"]
    refs = meta.get("model_refs") or {m: m for m in meta["models"]}
    if model in refs:
        ref_model = refs[model]
        kw = ((meta.get("exact_options") or {}).get(model) or {}).get(set_name) or {
            **meta["option_sets"][set_name], "mc_samples": meta.get("mc_samples", 0), "seed": meta.get("seed", 0)}
        ss["model_name"] = ref_model
        ss.update(review_state_for(ref_model, kw))
        ss["run_now"] = True
    else:  # a folder of predictions made elsewhere: the stored mask itself
        mask, _ = C.read_masks(run_path, model, set_name, row["case"])
        ss["external_predictions"] = {model: prediction_from_masks(model, {label or "mask": mask}, vol)}
        ss["result_source"] = f"uploaded:{model}"
    ss["plane"] = "axial"
    ss["slice_axial"] = int(row["slice"])
    ss["compare"] = True
    ss["show_other"] = True
    ss["from_gallery"] = True
    ss["_goto"] = "pages/segment.py"


def keep_state(keys, defaults: dict | None = None) -> None:
    """Widget values that survive a visit to another page (Streamlit forgets the state of widgets
    that were not drawn): call once before the widgets with their defaults, and :func:`remember`
    after them. Widgets must then take their value from the state, not from a default argument."""
    ss = st.session_state
    for k in keys:
        if k not in ss:
            if f"_kept_{k}" in ss:
                ss[k] = ss[f"_kept_{k}"]
            elif defaults and k in defaults:
                ss[k] = defaults[k]


def remember(keys) -> None:
    ss = st.session_state
    for k in keys:
        if k in ss:
            ss[f"_kept_{k}"] = ss[k]


def follow_goto() -> None:
    """Switch page if a callback asked for it (callbacks cannot switch pages themselves)."""
    target = st.session_state.pop("_goto", None)
    if target:
        st.switch_page(target)


def add_session_model(weights: bytes, card_text: bytes) -> str:
    """Verify an uploaded checkpoint (size, SHA-256, registry architecture, never pickle) and make it
    available to this session only, under ``session:NAME``. Returns the model's name."""
    from medseg_core.checkpoints import load_model_bytes

    lm = load_model_bytes(weights, card_text)
    ss = st.session_state
    models = ss.setdefault("session_models", {})
    key = f"session:{lm.spec.name}@{lm.card['sha256'][:12]}"  # another upload under the same name is another model
    models[key] = lm
    ss["model_name"] = key
    return lm.spec.name


def unc_ok(lm) -> bool:
    """Whether MC dropout can run on a loaded model (it has dropout layers that act)."""
    from medseg_core.uncertainty import has_dropout

    return has_dropout(lm.module)
