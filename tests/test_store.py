"""medseg_core.store: verdicts, the append-only audit table, exports, WAL concurrency, PostgreSQL (issue 22;
issues 18 item 3 and 21 item 4 build on it)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ArgumentError, DBAPIError

from medseg_core import store as S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def db(tmp_path):
    return S.Store(str(tmp_path / "m.db"))


def test_db_url_from_path_url_and_default(tmp_path, monkeypatch):
    # a plain path becomes an absolute SQLite URL and its folder is created
    assert S.db_url(str(tmp_path / "a" / "b.db")) == f"sqlite:///{tmp_path / 'a' / 'b.db'}"
    assert (tmp_path / "a").is_dir()
    # a URL is taken as it is (and checked)
    assert S.db_url("postgresql+psycopg://u@h:5/x") == "postgresql+psycopg://u@h:5/x"
    with pytest.raises(ArgumentError):
        S.db_url("not a url://")
    # MEDSEG_DB unset: XDG_DATA_HOME/medseg/medseg.db, outside the repository
    monkeypatch.delenv("MEDSEG_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert S.db_url() == f"sqlite:///{tmp_path / 'xdg' / 'medseg' / 'medseg.db'}"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert S.default_path() == Path.home() / ".local" / "share" / "medseg" / "medseg.db"
    assert not str(S.default_path()).startswith(str(ROOT))
    monkeypatch.setenv("MEDSEG_DB", str(tmp_path / "env.db"))
    S.Store().add_audit("sign_in", "x")
    assert (tmp_path / "env.db").exists()


def test_verdicts_round_trip_status_and_validation(db):
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    i1 = db.add_verdict(
        "ef3581c0ab0996f2f9449bd3",
        "needs_correction",
        "Alice R",
        "alice@hospital.example",
        signed_in=True,
        note="misses the left ovary",
        model="ovary_unet",
        options={"threshold": 0.5, "side_masking": "two_pass"},
        time=t0,
    )
    i2 = db.add_verdict(
        "ef3581c0ab0996f2f9449bd3",
        "accept",
        "Bob",
        None,
        signed_in=False,
        plane="axial",
        slice=11,
        time=t0 + timedelta(minutes=1),
    )
    i3 = db.add_verdict("other_case", "reject", "Bob", None, signed_in=False)
    assert (i1, i2, i3) == (1, 2, 3)
    rows = db.verdicts("ef3581c0ab0996f2f9449bd3")
    assert [r["id"] for r in rows] == [2, 1]  # newest first
    r1 = rows[1]
    assert r1["reviewer_name"] == "Alice R" and r1["reviewer_email"] == "alice@hospital.example" and r1["signed_in"]
    assert r1["options"] == {"threshold": 0.5, "side_masking": "two_pass"} and r1["note"] == "misses the left ovary"
    assert r1["time_utc"] == t0 and r1["time_utc"].tzinfo is not None  # stored and returned as UTC
    assert rows[0]["plane"] == "axial" and rows[0]["slice"] == 11 and rows[0]["signed_in"] is False
    # the case's status is its latest whole-case verdict (a slice verdict does not change it)
    assert db.status("ef3581c0ab0996f2f9449bd3") == "needs_correction"
    assert db.status("other_case") == "reject" and db.status("never_seen") is None
    assert len(db.verdicts()) == 3 and len(db.verdicts(limit=2)) == 2
    with pytest.raises(ValueError, match="accept"):
        db.add_verdict("k1", "maybe", "A", signed_in=False)
    with pytest.raises(ValueError, match="name"):
        db.add_verdict("k1", "accept", "  ", signed_in=False)
    with pytest.raises(ValueError, match="plane"):
        db.add_verdict("k1", "accept", "A", signed_in=False, slice=3)
    # a case key is a token, never free text such as a patient's name
    with pytest.raises(ValueError, match="token"):
        db.add_verdict("Smith, John (1950-01-01)", "accept", "A", signed_in=False)
    assert len(db.verdicts()) == 3
    # the database itself refuses a verdict kind outside the three
    with pytest.raises(DBAPIError), db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO verdicts (case_key, verdict, note, reviewer_name, signed_in, time_utc) "
                "VALUES ('k', 'maybe', '', 'A', 0, '2026-01-01 00:00:00')"
            )
        )


def test_audit_is_append_only(db):
    for k, action in enumerate(["sign_in", "open_case", "run_model", "export", "verdict"]):
        db.add_audit(
            action,
            "Alice R",
            "alice@hospital.example",
            case_key="abc" if k else None,
            model="ovary_unet" if k > 1 else None,
            detail=f"row {k}",
        )
    db.add_audit("refused", "eve@evil.example", "eve@evil.example", detail="not on the allow-list")
    before = db.audit_rows()
    assert [r["action"] for r in before] == ["refused", "verdict", "export", "run_model", "open_case", "sign_in"]
    # no API to change it: Store offers add and read only
    assert not [m for m in dir(S.Store) if any(w in m.lower() for w in ("update", "delete", "remove", "clear", "edit"))]
    # and the database refuses a hand-written UPDATE / DELETE (triggers), leaving every row as it was
    for stmt in (
        "UPDATE audit SET user = 'someone else' WHERE id = 1",
        "DELETE FROM audit WHERE id = 2",
        "DELETE FROM audit",
    ):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as c:
            c.execute(text(stmt))
    assert db.audit_rows() == before
    # also from a plain sqlite3 connection that knows nothing of SQLAlchemy
    con = sqlite3.connect(db.url.removeprefix("sqlite:///"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM audit")
    con.close()
    assert len(db.audit_rows()) == 6
    with pytest.raises(ValueError, match="open_case"):
        db.add_audit("download", "Alice")
    # filters
    assert [r["detail"] for r in db.audit_rows(action="export")] == ["row 3"]
    assert len(db.audit_rows(user="alice@hospital.example")) == 5 and len(db.audit_rows(user="Alice R")) == 5
    assert len(db.audit_rows(since=datetime.now(UTC) + timedelta(hours=1))) == 0


def test_exports_csv_and_json(db):
    t = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    db.add_verdict(
        "abc",
        "accept",
        "Alice R",
        "alice@hospital.example",
        signed_in=True,
        note='says "fine", ok',
        model="m",
        options={"b": 1, "a": [1, 2]},
        time=t,
    )
    db.add_audit("export", "Alice R", "alice@hospital.example", case_key="abc", model="m", detail="mask NIfTI", time=t)
    rows = list(csv.DictReader(io.StringIO(S.export_verdicts(db, "csv").decode())))
    assert list(rows[0]) == S.VERDICT_COLUMNS and len(rows) == 1
    assert rows[0]["note"] == 'says "fine", ok' and rows[0]["time_utc"] == "2026-05-06T07:08:09.123+00:00"
    assert json.loads(rows[0]["options"]) == {"a": [1, 2], "b": 1} and rows[0]["slice"] == ""
    js = json.loads(S.export_verdicts(db, "json"))
    assert js[0]["reviewer_email"] == "alice@hospital.example" and js[0]["time_utc"] == "2026-05-06T07:08:09.123+00:00"
    a = list(csv.DictReader(io.StringIO(S.export_audit(db, "csv").decode())))
    assert [(r["user"], r["action"], r["case_key"], r["detail"]) for r in a] == [
        ("Alice R", "export", "abc", "mask NIfTI")
    ]
    assert json.loads(S.export_audit(db, "json"))[0]["email"] == "alice@hospital.example"
    # the command line prints the same table
    out = subprocess.run(
        [sys.executable, "-m", "medseg_core.store", "audit", "--db", db.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    ).stdout
    assert out.encode() == S.export_audit(db, "csv")


_WRITER = """
import sys
from medseg_core.store import Store
s = Store(sys.argv[1])
for i in range(int(sys.argv[3])):
    s.add_audit("open_case", "writer" + sys.argv[2], case_key=f"w{sys.argv[2]}_{i}")
    s.add_verdict(f"w{sys.argv[2]}_{i}", "accept", "writer" + sys.argv[2], signed_in=False)
"""


def test_sqlite_wal_and_concurrent_writers(tmp_path):
    """Three processes write at once (as three server processes or busy sessions would): every row
    arrives, none fails with 'database is locked'."""
    path = tmp_path / "c.db"
    S.Store(str(path))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    n = 40
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(k), str(n)], env=env, stderr=subprocess.PIPE, text=True
        )
        for k in range(3)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    s = S.Store(str(path))
    assert len(s.audit_rows()) == 3 * n and len(s.verdicts()) == 3 * n
    assert {r["user"] for r in s.audit_rows()} == {"writer0", "writer1", "writer2"}


# ---------------------------------------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL from Debian's package, started in a temporary folder for this module (as the
    'postgres' system user when the tests run as root: initdb refuses root); skipped with the reason
    when it is not installed or does not start within 30 s."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (requirements.txt pins psycopg[binary])")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed here (Debian: apt-get install postgresql); the SQLite tests cover the store"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="medseg-pg-"))
    data = base / "data"
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    if as_user:
        shutil.chown(base, "postgres")
    try:
        r = subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "medseg", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode:
            pytest.skip(f"initdb failed here: {r.stderr.strip()[-300:]}")
        r = subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "30",
                "-l",
                str(base / "log"),
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode:
            pytest.skip(f"PostgreSQL did not start within 30 s: {r.stderr.strip()[-300:]}")
    except subprocess.TimeoutExpired:
        pytest.skip("PostgreSQL did not start within 60 s")
    try:
        yield f"postgresql+psycopg://medseg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_store(postgres_url, monkeypatch):
    """The same store on a real PostgreSQL through MEDSEG_DB (several replicas share one database):
    verdicts round-trip with UTC times and JSON options, and the audit table refuses UPDATE, DELETE and
    TRUNCATE."""
    monkeypatch.setenv("MEDSEG_DB", postgres_url)
    db = S.Store()
    assert db.engine.dialect.name == "postgresql"
    t = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    db.add_verdict(
        "abc",
        "needs_correction",
        "Alice R",
        "alice@hospital.example",
        signed_in=True,
        options={"threshold": 0.4},
        plane="axial",
        slice=3,
        time=t,
    )
    db.add_audit("verdict", "Alice R", "alice@hospital.example", case_key="abc", model="m", detail="needs_correction")
    v = db.verdicts("abc")[0]
    assert (v["verdict"], v["reviewer_email"], v["options"], v["slice"], v["time_utc"]) == (
        "needs_correction",
        "alice@hospital.example",
        {"threshold": 0.4},
        3,
        t,
    )
    assert db.status("abc") is None  # a slice verdict is not the case's status
    for stmt in ("UPDATE audit SET \"user\" = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as c:
            c.execute(text(stmt))
    assert [r["user"] for r in db.audit_rows()] == ["Alice R"]
    # a second process-level store (another replica) sees the same rows, and creating the schema again is harmless
    S._engines.pop(postgres_url)
    assert S.Store(postgres_url).audit_rows()[0]["detail"] == "needs_correction"
