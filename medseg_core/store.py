"""The embedded database: review verdicts and the append-only audit trail (issue 22; issues 18 and 21 build on it).

``MEDSEG_DB`` names the database: a SQLAlchemy URL (``sqlite:////srv/medseg/medseg.db``,
``postgresql+psycopg://medseg@db.hospital.org/medseg`` for several app replicas sharing one
database, issue 21 item 4) or a plain file path (an SQLite file). Unset, it is
``$XDG_DATA_HOME/medseg/medseg.db`` (``~/.local/share/medseg/medseg.db``): outside the repository,
created with its folder on first use, so verdicts survive a server restart and a ``git clean``.

SQLite runs in WAL mode with a busy timeout, so concurrent sessions (and several server processes on
one machine) write safely: readers never block the writer and a second writer waits instead of
failing with "database is locked".

Two tables, written through SQLAlchemy Core (no ORM):

- ``verdicts``: one row per decision: case key, plane and slice (null = the whole case), verdict
  (accept | needs_correction | reject), note, the reviewer's name and e-mail (from sign-in; a typed
  name only when sign-in is off, ``signed_in`` says which), time (UTC), model, the prediction's
  options as JSON and a reference to a corrected mask (the NIfTI file written by
  :func:`medseg_core.correct.save_correction`; null for a decision without one). A
  new decision is a new row; the latest row of a case (and slice) is its status.
- ``audit``: append-only: id, time (UTC), user, e-mail, action (open_case | run_model | export |
  verdict | sign_in | refused | correction), case key, model, detail. This module has no update or delete
  function for it, and the database itself refuses UPDATE, DELETE (and, on PostgreSQL, TRUNCATE)
  on the table through triggers, so not even a hand-written statement can rewrite history.

Never patient identifiers: a case key is the app's pseudonymous key (``medseg_core.review.case_key``,
a content hash) or a dataset's case id, never PatientName / PatientID / a file name; keys are
checked to be short tokens. Callers put no identifiers in ``detail``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url

VERDICTS = ("accept", "needs_correction", "reject")
ACTIONS = ("open_case", "run_model", "export", "verdict", "sign_in", "refused", "correction")
#: the database's own check of ``audit.action`` (a database made before an action was added is migrated, see
#: :func:`_migrate_audit_actions`)
_ACTION_CHECK = "action IN (" + ", ".join(f"'{a}'" for a in ACTIONS) + ")"
#: a case key is a token (hash, dataset case id), never free text that could hold a name
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,128}$")

metadata = MetaData()

verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_key", String(128), nullable=False, index=True),
    Column("plane", String(16)),
    Column("slice", Integer),
    Column("verdict", String(32), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("reviewer_name", String(256), nullable=False),
    Column("reviewer_email", String(320)),
    Column("signed_in", Boolean, nullable=False),
    Column("time_utc", DateTime(timezone=True), nullable=False),
    Column("model", String(256)),
    Column("options", JSON),
    Column("corrected_mask", String(1024)),
    CheckConstraint("verdict IN ('accept', 'needs_correction', 'reject')", name="ck_verdict_kind"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time_utc", DateTime(timezone=True), nullable=False, index=True),
    Column("user", String(256), nullable=False),
    Column("email", String(320)),
    Column("action", String(32), nullable=False),
    Column("case_key", String(128)),
    Column("model", String(256)),
    Column("detail", Text),
    CheckConstraint(_ACTION_CHECK, name="ck_audit_action"),
)

VERDICT_COLUMNS = [c.name for c in verdicts.columns]
AUDIT_COLUMNS = [c.name for c in audit.columns]

# The database refuses to rewrite the audit table (append-only), whatever client connects.
_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END",
]
_PG_GUARDS = [
    "CREATE OR REPLACE FUNCTION medseg_audit_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'the audit table is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS audit_no_change ON audit",
    "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION medseg_audit_append_only()",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON audit",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION medseg_audit_append_only()",
]


def default_path() -> Path:
    """``$XDG_DATA_HOME/medseg/medseg.db`` (default ``~/.local/share/medseg/medseg.db``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "medseg" / "medseg.db"


def _inserted_id(result: Any) -> int:
    """The primary key of the row an INSERT made."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


def db_url(value: str | None = None) -> str:
    """The SQLAlchemy URL of ``value`` (else ``MEDSEG_DB``, else :func:`default_path`).

    Anything with ``://`` is a URL; anything else is a file path made absolute (its folder is
    created, so the database file appears on first use)."""
    value = value if value is not None else os.environ.get("MEDSEG_DB", "").strip()
    if value and "://" in value:
        make_url(value)  # raises on a malformed URL
        return value
    path = Path(value).expanduser() if value else default_path()
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # concurrent readers + one writer, no reader blocks
    cur.execute("PRAGMA busy_timeout=30000")  # a second writer waits up to 30 s instead of failing
    cur.close()


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine (connection pool) per URL and process, with the schema and the audit guards created."""
    with _engines_lock:
        eng = _engines.get(url)
        if eng is not None:
            return eng
        if url.startswith("sqlite"):
            eng = create_engine(url, connect_args={"timeout": 30})
            event.listen(eng, "connect", _sqlite_pragmas)
        else:
            eng = create_engine(url, pool_pre_ping=True)
        metadata.create_all(eng)
        _migrate_audit_actions(eng)
        guards = (
            _SQLITE_GUARDS if eng.dialect.name == "sqlite" else _PG_GUARDS if eng.dialect.name == "postgresql" else []
        )
        with eng.begin() as conn:
            for stmt in guards:
                conn.execute(text(stmt))
        _engines[url] = eng
        return eng


def _migrate_audit_actions(eng: Engine) -> None:
    """A database created before an audit action existed (issue 18's ``correction``) still checks the old
    list: widen its check constraint. SQLite cannot alter a constraint, so the table is rebuilt in one
    transaction (rows copied unchanged; ``DROP TABLE`` drops the old table's triggers without firing them
    and :func:`engine_for` puts the append-only guards back); PostgreSQL replaces the constraint."""
    with eng.begin() as conn:
        if eng.dialect.name == "sqlite":
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type='table' AND name='audit'")).scalar()
            if not sql or all(f"'{a}'" in sql for a in ACTIONS):
                return
            conn.execute(text("ALTER TABLE audit RENAME TO audit_before_migration"))
            for ix in audit.indexes:
                conn.execute(text(f"DROP INDEX IF EXISTS {ix.name}"))
            audit.create(conn)
            cols = ", ".join(f'"{c}"' for c in AUDIT_COLUMNS)
            conn.execute(text(f"INSERT INTO audit ({cols}) SELECT {cols} FROM audit_before_migration"))
            conn.execute(text("DROP TABLE audit_before_migration"))
        elif eng.dialect.name == "postgresql":
            have = conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_audit_action'")
            ).scalar()
            if have is not None and not all(f"'{a}'" in have for a in ACTIONS):
                conn.execute(text("ALTER TABLE audit DROP CONSTRAINT ck_audit_action"))
                conn.execute(text(f"ALTER TABLE audit ADD CONSTRAINT ck_audit_action CHECK ({_ACTION_CHECK})"))


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: every stored time is UTC, so say so."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _check_key(key: str | None, what: str = "case key") -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"A {what} must be a short token (a hash or a dataset case id), not {key!r}.")
    return key


def _row(mapping: Mapping[Any, Any]) -> dict:
    d = dict(mapping)
    d["time_utc"] = _utc(d["time_utc"])
    return d


class Store:
    """Verdicts and audit rows in the database named by ``url`` (default: ``MEDSEG_DB``)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = db_url(url)
        self.engine = engine_for(self.url)

    # ---------------------------------------------------------------- verdicts
    def add_verdict(
        self,
        case_key: str,
        verdict: str,
        reviewer_name: str,
        reviewer_email: str | None = None,
        *,
        signed_in: bool,
        note: str = "",
        model: str | None = None,
        options: dict | None = None,
        plane: str | None = None,
        slice: int | None = None,
        corrected_mask: str | None = None,
        time: datetime | None = None,
    ) -> int:
        """Record one decision; returns its id. ``slice`` None = the whole case."""
        if verdict not in VERDICTS:
            raise ValueError(f"A verdict is one of {', '.join(VERDICTS)}, not {verdict!r}.")
        if not (reviewer_name or "").strip():
            raise ValueError("A verdict needs the reviewer's name.")
        if slice is not None and (int(slice) < 0 or plane is None):
            raise ValueError("A slice verdict needs its plane and a slice index >= 0.")
        row = dict(
            case_key=_check_key(case_key),
            plane=plane,
            slice=None if slice is None else int(slice),
            verdict=verdict,
            note=note or "",
            reviewer_name=reviewer_name.strip(),
            reviewer_email=reviewer_email or None,
            signed_in=bool(signed_in),
            time_utc=_utc(time) or _now(),
            model=model,
            options=json.loads(json.dumps(options, default=str)) if options is not None else None,
            corrected_mask=corrected_mask,
        )
        with self.engine.begin() as conn:
            return _inserted_id(conn.execute(insert(verdicts).values(**row)))

    def verdicts(self, case_key: str | None = None, limit: int | None = None) -> list[dict]:
        """Verdict rows, newest first (all cases, or one)."""
        q = select(verdicts).order_by(verdicts.c.id.desc())
        if case_key is not None:
            q = q.where(verdicts.c.case_key == case_key)
        if limit:
            q = q.limit(int(limit))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def verdicts_for(self, case_keys: list[str]) -> list[dict]:
        """Verdict rows of these cases, newest first (the worklist's query; chunked IN lists)."""
        keys, out = sorted(set(case_keys)), []
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                q = select(verdicts).where(verdicts.c.case_key.in_(keys[i : i + 500]))
                out += [_row(r) for r in conn.execute(q).mappings()]
        return sorted(out, key=lambda r: r["id"], reverse=True)

    def status(self, case_key: str) -> str | None:
        """The case's current status: the verdict of its latest whole-case row (None = not reviewed)."""
        q = (
            select(verdicts.c.verdict)
            .where(verdicts.c.case_key == case_key, verdicts.c.slice.is_(None))
            .order_by(verdicts.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    # ---------------------------------------------------------------- audit (append-only: add and read, nothing else)
    def add_audit(
        self,
        action: str,
        user: str,
        email: str | None = None,
        *,
        case_key: str | None = None,
        model: str | None = None,
        detail: str | None = None,
        time: datetime | None = None,
    ) -> int:
        """Append one audit row; returns its id."""
        if action not in ACTIONS:
            raise ValueError(f"An audit action is one of {', '.join(ACTIONS)}, not {action!r}.")
        row = dict(
            time_utc=_utc(time) or _now(),
            user=(user or "").strip() or "(anonymous)",
            email=email or None,
            action=action,
            case_key=_check_key(case_key),
            model=model,
            detail=detail,
        )
        with self.engine.begin() as conn:
            return _inserted_id(conn.execute(insert(audit).values(**row)))

    def audit_rows(
        self,
        *,
        action: str | None = None,
        user: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Audit rows, newest first, optionally filtered by action, user (name or e-mail) and time."""
        q = select(audit).order_by(audit.c.id.desc())
        if action:
            q = q.where(audit.c.action == action)
        if user:
            q = q.where((audit.c.user == user) | (audit.c.email == user))
        if since is not None:
            q = q.where(audit.c.time_utc >= _utc(since))
        if limit:
            q = q.limit(int(limit))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]


def _cell(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat(timespec="milliseconds")
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else v


def to_csv(rows: Iterable[dict], columns: list[str]) -> bytes:
    """Rows as CSV (UTF-8, a header line, times in ISO 8601 UTC, options as JSON)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def to_json(rows: Iterable[dict]) -> bytes:
    """Rows as a JSON list (times in ISO 8601 UTC)."""
    return json.dumps(
        [
            {k: (v.isoformat(timespec="milliseconds") if isinstance(v, datetime) else v) for k, v in r.items()}
            for r in rows
        ],
        indent=1,
    ).encode("utf-8")


def export_verdicts(store: Store, fmt: str = "csv", case_key: str | None = None) -> bytes:
    rows = store.verdicts(case_key)
    return to_csv(rows, VERDICT_COLUMNS) if fmt == "csv" else to_json(rows)


def export_audit(store: Store, fmt: str = "csv", **filters: Any) -> bytes:
    rows = store.audit_rows(**filters)
    return to_csv(rows, AUDIT_COLUMNS) if fmt == "csv" else to_json(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m medseg_core.store {verdicts,audit} [--json]``: print a table as CSV or JSON (the
    laptop's way to read the store; on a server with sign-in, admins use the app's Audit page)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m medseg_core.store", description=main.__doc__)
    p.add_argument("table", choices=["verdicts", "audit"])
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--db", default=None, help="database URL or file (default: MEDSEG_DB, else the default file)")
    a = p.parse_args(argv)
    s = Store(a.db)
    fmt = "json" if a.json else "csv"
    sys.stdout.write((export_verdicts(s, fmt) if a.table == "verdicts" else export_audit(s, fmt)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
