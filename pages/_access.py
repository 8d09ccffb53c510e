"""Streamlit glue for sign-in, identity, verdicts and the audit trail (issue 22).

The decisions are in :mod:`medseg_core.auth` (who gets in) and :mod:`medseg_core.store` (what is
recorded); this module reads ``st.user`` / ``st.secrets`` and draws. ``app.py`` calls
:func:`gate` on every run before anything else is drawn, so every page passes through it (a page
run outside app.py's frame is sent back through it by ``pages._shared.require_frame``).
"""

from __future__ import annotations

import dataclasses
import logging

import streamlit as st

from medseg_core import auth
from medseg_core.store import VERDICTS, Store

_LOG = logging.getLogger("medseg.access")
VERDICT_WORDS = {"accept": "Accept", "needs_correction": "Needs correction", "reject": "Reject"}


def auth_configured() -> bool:
    """Whether an OpenID Connect provider is configured (an ``[auth]`` section in Streamlit's secrets)."""
    try:
        return bool(st.secrets.load_if_toml_exists() and "auth" in st.secrets)
    except Exception:  # an unreadable secrets file: Streamlit reports it; without [auth] there is no sign-in
        return False


def current_access() -> auth.Access:
    configured = auth_configured()
    section = st.secrets.get("medseg") if configured else None
    return auth.decide(
        st.user.to_dict() if configured else {}, configured, auth.access_config(dict(section) if section else None)
    )


def identity() -> auth.Identity | None:
    """The signed-in user (None when sign-in is off)."""
    return st.session_state.get("_access").identity if st.session_state.get("_access") else None


def store() -> Store:
    return Store()


def audit(action: str, case_key: str | None = None, model: str | None = None, detail: str | None = None) -> None:
    """Append an audit row for this session's user. With sign-in on, a failure to record stops the
    action (an unrecorded action must not happen on a hospital server); on a laptop it is logged."""
    acc = st.session_state.get("_access")
    ident = acc.identity if acc else None
    user = ident.name if ident else (st.session_state.get("reviewer_name") or "local user")
    try:
        store().add_audit(action, user, ident.email if ident else None, case_key=case_key, model=model, detail=detail)
    except Exception:
        if acc is not None and acc.state != "open":
            raise
        _LOG.warning("could not write the audit row (%s)", action, exc_info=True)


def exported(what: str, model: str | None = None, with_case: bool = True):
    """An ``on_click`` callback for a download button: records the export with the case and model."""
    return lambda: audit(
        "export", case_key=st.session_state.get("case_key") if with_case else None, model=model, detail=what
    )


FORMATS = {"csv": ("CSV", "text/csv"), "json": ("JSON", "application/json")}


def export_pair(columns, label: str, data, file_stem: str, key: str, what: str) -> None:
    """A CSV and a JSON download button in two ``columns``: ``label (CSV)``, ``data(fmt)`` (bytes or a
    callable evaluated on click), ``<file_stem>.<fmt>``, keys ``<key>_<fmt>``; each click is audited
    as an export ``what`` with ``{fmt}`` replaced by CSV or JSON (e.g. "all verdicts {fmt}")."""
    for col, fmt in zip(columns, FORMATS, strict=True):
        words, mime = FORMATS[fmt]
        col.download_button(
            f"{label} ({words})",
            data(fmt),
            file_name=f"{file_stem}.{fmt}",
            mime=mime,
            key=f"{key}_{fmt}",
            on_click=exported(what.replace("{fmt}", words), with_case=False),
        )


def gate(pages: list) -> st.navigation:
    """Decide access for this run; return the navigation when the user may proceed, else draw the sign-in
    prompt or the refusal (one sentence) and stop. Pages are registered hidden for everybody else, so
    not even their names show."""
    ss = st.session_state
    acc = current_access()
    ss["_access"] = acc
    if acc.allowed:
        if acc.admin:  # the audit trail is listed (and reachable) for admins only
            pages = [*pages, st.Page("pages/audit.py", title="Audit", url_path="audit")]
        if acc.signed_in and ss.get("_audited_sign_in") != acc.identity.email:
            audit("sign_in", detail=acc.reason)
            ss["_audited_sign_in"] = acc.identity.email
        return st.navigation(pages)
    st.navigation(pages, position="hidden")
    if acc.state == "sign_in":
        st.markdown("### medseg review")
        st.write(auth.SIGN_IN)
        if st.button("Sign in", type="primary", key="_sign_in"):
            st.login()
    else:  # refused: the sentence, and a way to sign in with another account
        if ss.get("_audited_refusal") != acc.email:
            store().add_audit(
                "refused",
                acc.email or "(no e-mail)",
                acc.email if acc.email and "@" in acc.email else None,
                detail=acc.reason,
            )
            ss["_audited_refusal"] = acc.email
        st.write(auth.REFUSED)
        if st.button("Sign out", key="_sign_out_refused"):
            st.logout()
    st.stop()


def sidebar_identity() -> None:
    """Name and e-mail of the signed-in user, and Sign out (nothing when sign-in is off)."""
    ident = identity()
    if ident is None:
        return
    st.markdown(f"**Signed in:** {ident.name}")
    st.caption(ident.email + (" · admin" if ident.admin else ""))
    if st.button("Sign out", key="_sign_out"):
        st.logout()


def options_text(options) -> str | None:
    """A prediction's options as compact JSON for an audit row's detail."""
    import json

    d = _options_dict(options)
    return None if d is None else json.dumps(d, sort_keys=True, default=str)[:2000]


def _options_dict(options) -> dict | None:
    if options is None:
        return None
    if dataclasses.is_dataclass(options):
        return dataclasses.asdict(options)
    try:
        return dict(options)
    except (TypeError, ValueError):
        return {"options": str(options)}


def verdict_control(
    case_key: str,
    model: str | None,
    options=None,
    plane: str | None = None,
    slice_index: int | None = None,
    corrected_mask: str | None = None,
) -> None:
    """Accept / needs correction / reject with a note, saved with the reviewer's identity (the signed-in
    user; a typed name only when sign-in is off), the model and its options; the case's verdicts below.
    ``corrected_mask``: the saved correction being reviewed (issue 18), recorded with the verdict."""
    ident = identity()
    with st.expander("Verdict", expanded=False):
        with st.form("verdict_form", clear_on_submit=True):
            choice = st.radio(
                "Decision", VERDICTS, format_func=VERDICT_WORDS.get, horizontal=True, key="verdict_choice"
            )
            note = st.text_input("Note", key="verdict_note", max_chars=2000)
            this_slice = False
            if plane is not None and slice_index is not None:
                this_slice = st.checkbox(f"This slice only ({plane} {slice_index + 1})", key="verdict_slice")
            if ident is None:
                st.text_input("Your name", key="reviewer_name", help="Sign-in is off on this server: type your name.")
            else:
                st.caption(f"Recorded as {ident.label}.")
            saved = st.form_submit_button("Save verdict", type="primary")
        if saved:
            name = ident.name if ident else (st.session_state.get("reviewer_name") or "").strip()
            if not name:
                st.error("Type your name to save a verdict.")
            else:
                store().add_verdict(
                    case_key,
                    choice,
                    name,
                    ident.email if ident else None,
                    signed_in=ident is not None,
                    note=note,
                    model=model,
                    options=_options_dict(options),
                    plane=plane if this_slice else None,
                    slice=slice_index if this_slice else None,
                    corrected_mask=corrected_mask,
                )
                audit(
                    "verdict",
                    case_key=case_key,
                    model=model,
                    detail=choice + (f" ({plane} slice {slice_index + 1})" if this_slice else ""),
                )
                st.success(f"Saved: {VERDICT_WORDS[choice]} by {ident.label if ident else name}.")
        rows = store().verdicts(case_key, limit=10)
        if rows:
            st.dataframe(
                [
                    {
                        "time (UTC)": r["time_utc"].strftime("%Y-%m-%d %H:%M:%S"),
                        "verdict": VERDICT_WORDS.get(r["verdict"], r["verdict"]),
                        "slice": "" if r["slice"] is None else f"{r['plane']} {r['slice'] + 1}",
                        "reviewer": r["reviewer_name"]
                        + (f" <{r['reviewer_email']}>" if r["reviewer_email"] else " (typed)"),
                        "model": r["model"] or "",
                        "note": r["note"],
                    }
                    for r in rows
                ],
                hide_index=True,
                key="verdict_rows",
            )
