"""Streamlit glue shared by the pages: session state, cached model loading, running predictions.

All numerical work is in medseg_core; this module only keeps state and draws progress.
"""

from __future__ import annotations

# pandas is imported here, once, before any session draws: plotly looks it up lazily in sys.modules, and
# with several sessions drawing their first figure at once one of them found it half-imported
# (AttributeError: partially initialized module 'pandas', seen by make loadtest)
import contextlib
import os
import threading

import pandas  # noqa: F401
import streamlit as st

from medseg_core import budget as B
from medseg_core.checkpoints import load_model, model_spec
from medseg_core.inference import PredictOptions, predict
from medseg_core.io.errors import InputError
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


# ------------------------------------------------------------------ server-wide memory budget (issue 21)
#: Session-state entries that hold a session's case and results; released with an idle session.
HEAVY_KEYS = (
    "volume",
    "gt_mask",
    "extra_masks",
    "predictions",
    "external_predictions",
    "us_cache",
    "mask_uploads",
    "current",
    "unc_key",
    "case_key",
    "sample",
    "upload_sig",
    "gt_sig",
    "_corr",
    "_corr_for",
)


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def _release_idle_session(state, minutes: float):
    """The budget's callback for an idle session (runs in another session's thread): drop the
    session's case and results from its state; its next run says so (:func:`ensure_state`)."""

    def release():
        for k in HEAVY_KEYS:
            try:
                del state[k]
            except KeyError:
                pass
        state["_released_idle"] = minutes

    return release


def _alive_probe(sid: str):
    """Whether the session still has a browser connected (Streamlit's runtime; thread-safe)."""

    def alive() -> bool:
        from streamlit.runtime import Runtime

        return not Runtime.exists() or Runtime.instance().is_active_session(sid)

    return alive


def _arrays_bytes(*objs) -> int:
    """Bytes of the arrays in ``objs`` (arrays, dicts / lists of them, predictions), each counted once."""
    from medseg_core.inference import Prediction

    seen, total, stack = set(), 0, list(objs)
    while stack:
        o = stack.pop()
        if o is None or id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, Prediction):
            total += B.prediction_bytes(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif hasattr(o, "array") and hasattr(o, "affine"):  # a Volume
            total += B.array_bytes(o.array)
        elif hasattr(o, "nbytes"):
            total += B.array_bytes(o)
    return total


def case_bytes(volume=None, gt=None, extras=None) -> int:
    """What this session holds besides its cached model results: the volume, the reference and other
    masks, uploaded predictions and mask files, checkpoints uploaded for this session."""
    ss = st.session_state
    models = sum(
        sum(p.numel() * p.element_size() for p in lm.module.parameters())
        for lm in (ss.get("session_models") or {}).values()
    )
    if volume is None:
        volume, gt, extras = ss.get("volume"), ss.get("gt_mask"), ss.get("extra_masks")
    corr = ss.get("_corr")  # Correct mode's working copies and undo history
    return (
        models
        + _arrays_bytes(volume, gt, extras, ss.get("external_predictions"), ss.get("mask_uploads"))
        + (corr.nbytes if corr is not None else 0)
    )


def account_case(volume=None, gt=None, extras=None, what: str = "opening this case", reserve: bool = False) -> None:
    """(Re-)account this session's case in the server budget; with ``reserve`` room is made first and
    :class:`medseg_core.budget.BudgetExceeded` (a sentence) raised when it cannot fit."""
    B.server_budget().hold(
        session_id(), "case", case_bytes(volume, gt, extras), evictable=False, what=what, reserve=reserve
    )


#: Volumes read at once (``MEDSEG_CONCURRENT_LOADS``, default 1). Reading an upload makes transient
#: copies (decompression, float32, reorientation, the auto window's percentiles: about 4 x the volume)
#: that no budget entry holds yet; six reviewers uploading 300 x 512 x 512 CTs at once made 7 GB of them
#: (make loadtest). One at a time bounds them to one volume's worth; reading is CPU-bound anyway.
_LOAD_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("MEDSEG_CONCURRENT_LOADS", "1"))))


@contextlib.contextmanager
def loading_slot():
    """Hold one of the server's volume-reading slots (waits while other sessions read theirs)."""
    with _LOAD_SLOTS:
        yield


def new_prediction_cache(max_items: int = 4):
    """A session's prediction cache, accounted in the server-wide budget (stored compactly)."""
    return PredictionCache(max_items=max_items, budget=B.server_budget(), session=session_id())


def set_case(volume, gt=None, extras=None, sample=None) -> None:
    """Make ``volume`` the session's case; earlier predictions and uploads are dropped. Refused with
    a sentence (:class:`medseg_core.budget.BudgetExceeded`, the current case kept) when the server's
    memory budget cannot hold it."""
    ss = st.session_state
    account_case(volume, gt, extras, reserve=True)
    if "predictions" in ss:
        ss["predictions"].clear()  # their bytes leave the budget
    ss["volume"] = volume
    ss["gt_mask"] = gt
    ss["extra_masks"] = extras or {}
    ss["sample"] = sample
    ss["case_key"] = case_key(volume)
    ss["auto_window"] = auto_window(volume.array)  # once per case, not on every slider move
    ss["predictions"] = new_prediction_cache()
    ss["external_predictions"] = {}  # uploaded predictions belong to the case they were made on
    for k in (
        "current",
        "load_error",
        "us_kind",
        "result_source",
        "from_gallery",
        "show_other",
        "slice_axial",
        "slice_coronal",
        "slice_sagittal",
        "unc_slice",
        "unc_key",
        "_corr",  # a correction in progress belongs to the case it was made on
        "_corr_for",
    ):
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
    budget = B.server_budget()
    minutes = ss.pop("_released_idle", None)
    if "initialised" not in ss or minutes is not None:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None:
            budget.session_started(
                session_id(),
                _release_idle_session(ctx.session_state, budget.idle_seconds / 60),
                alive=_alive_probe(session_id()),
            )
        ss["initialised"] = True
        if minutes is not None:
            st.info(
                f"This session was idle for more than {minutes:g} minutes, so its case and results were released "
                "to free the server's memory for other reviewers. The bundled sample is open; load your case again "
                "on Load case."
            )
        if list_samples():
            try:
                open_sample(DEFAULT_SAMPLE)
            except B.BudgetExceeded as e:
                st.warning(str(e))
    else:
        budget.touch(session_id())
        if ss.get("volume") is not None:
            account_case()  # uploads (reference, masks, predictions, checkpoints) since the last run


def run(model_name: str, options: PredictOptions, reference=None, slot: str = "current"):
    """The cached prediction for (case, model, options), computing it with a progress bar once.
    ``slot`` is the page's own state key for its result (Segment & review: "current"; Uncertainty and
    Compare keep theirs, so running one never replaces another page's result)."""
    ss = st.session_state
    cache: PredictionCache = ss["predictions"]
    key = cache.key(ss["case_key"], model_name, options)
    pred = cache.get(key)
    if pred is None:
        spec, vol = get_spec(model_name), ss["volume"]
        if cache.was_evicted(key):
            st.info(
                "This result had been released to free the server's memory for other reviewers "
                "(least recently used first); it is being recomputed."
            )
        bar = st.progress(0.0, text=f"Running {spec.title}...")
        try:
            # the run's working memory is reserved for as long as it runs (evicting others' old results,
            # or refused with a sentence); the result is then kept compactly (medseg_core.budget)
            with B.server_budget().transient(
                session_id(),
                B.predict_working_bytes(spec, vol.shape, vol.spacing, options)
                + B.compact_bytes_estimate(vol.shape, len(spec.labels)),
                what=f"running {spec.title} on this case",
            ):
                pred = predict(
                    get_model(model_name),
                    vol,
                    options,
                    progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m),
                    reference=reference,
                )
        finally:
            bar.empty()  # never leave a stuck progress bar beside an error
        pred = cache.put(key, pred)
        from pages._access import audit, options_text

        audit("run_model", case_key=ss["case_key"], model=model_name, detail=options_text(options))
    ss[slot] = key
    return pred


def cached_prediction(key):
    """The cached prediction of ``key``; recomputed (the page says why) when the server's memory budget
    had released it."""
    ss = st.session_state
    if not key or "predictions" not in ss:
        return None
    cache = ss["predictions"]
    pred = cache.get(key)
    if pred is None and cache.was_evicted(key) and key[0] == ss.get("case_key"):
        from medseg_core.inference import PredictOptions

        options = PredictOptions(**dict(key[2]))
        try:
            pred = run(key[1], options, reference=ss.get("gt_mask") if options.side_masking == "oracle" else None)
        except InputError as e:
            st.error(str(e))
            return None
    return pred


def current_prediction():
    return cached_prediction(st.session_state.get("current"))


from pages._shell import require_frame  # noqa: E402,F401 (the pages import it from here; see pages/_shell.py)


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
            **meta["option_sets"][set_name],
            "mc_samples": meta.get("mc_samples", 0),
            "seed": meta.get("seed", 0),
        }
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
