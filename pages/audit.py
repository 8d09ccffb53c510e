"""Audit (admins only, issue 22 item 3): who opened, ran, exported and decided what, and when; with CSV /
JSON export of the audit trail and of all verdicts. Listed in the navigation only for users on the
admin list (``MEDSEG_ADMINS`` or ``[medseg] admins``); the page checks again itself."""

from datetime import UTC, datetime, timedelta

import streamlit as st

from medseg_core.store import ACTIONS, AUDIT_COLUMNS, export_verdicts, to_csv, to_json
from pages._access import export_pair, identity, store
from pages._shared import require_frame

require_frame()

ident = identity()
if ident is None or not ident.admin:
    st.write("The audit trail is shown to administrators only.")
    st.stop()

st.title("Audit")
st.caption(
    "Every open case, model run, export, verdict, sign-in and refusal, newest first. The table is "
    "append-only: the database refuses to change or delete its rows. Case keys are the app's pseudonymous "
    "content hashes, never patient identifiers; times are UTC."
)
c1, c2, c3 = st.columns(3)
action = c1.selectbox("Action", ["all", *ACTIONS], key="audit_action")
who = c2.text_input("User (name or e-mail)", key="audit_user")
days = c3.number_input("Last days (0 = all)", min_value=0, value=0, step=1, key="audit_days")
since = datetime.now(UTC) - timedelta(days=int(days)) if days else None
rows = store().audit_rows(action=None if action == "all" else action, user=who.strip() or None, since=since)
st.caption(f"{len(rows)} rows.")
st.dataframe(
    [{**r, "time_utc": r["time_utc"].strftime("%Y-%m-%d %H:%M:%S")} for r in rows[:2000]],
    hide_index=True,
    key="audit_table",
    column_order=AUDIT_COLUMNS,
)
e1, e2, e3, e4 = st.columns(4)
stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
export_pair(
    (e1, e2),
    "Export audit",
    lambda fmt: to_csv(rows, AUDIT_COLUMNS) if fmt == "csv" else to_json(rows),
    f"medseg_audit_{stamp}",
    "dl_audit",
    "audit trail {fmt}",
)
export_pair(
    (e3, e4),
    "Export all verdicts",
    lambda fmt: lambda: export_verdicts(store(), fmt),
    f"medseg_verdicts_{stamp}",
    "dl_verdicts",
    "all verdicts {fmt}",
)
