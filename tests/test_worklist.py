"""Issue 18 item 3: the worklist (statuses from stored verdicts, filters, Open / Previous / Next, exports
recorded in the audit trail), the gallery's verdict badge and filter, and a verdict that survives a server
restart (Chromium)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import ARTIFACTS, app_server, browser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fresh_db(tmp_path, monkeypatch):
    from medseg_core.store import Store

    monkeypatch.setenv("MEDSEG_DB", str(tmp_path / "medseg.db"))
    return Store()


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    """The shipped ovary U-Net on 3 synthetic pelvic cases, one option set, no MC dropout."""
    from medseg_core import cohort as C
    from medseg_core.checkpoints import checkpoint_status
    from medseg_core.data import datasets as D
    from medseg_core.data.make_synthetic import ensure_synthetic

    if checkpoint_status("ovary_unet") != "ok":
        pytest.skip("ovary_unet checkpoint not shipped")
    root = tmp_path_factory.mktemp("wl_pelvic")
    ensure_synthetic(root, {"kind": "pelvic", "n": 3, "seed": 7})
    out = tmp_path_factory.mktemp("wl_runs") / "pelvic_small"
    C.run_cohort(
        D.ut_endomri_d2(root),
        ["ovary_unet"],
        {"orig": {"side_masking": "none"}},
        out,
        dataset={"adapter": "ut_endomri_d2", "root": str(root)},
    )
    return out


def _t(h: int) -> datetime:
    return datetime(2025, 3, 1, h, 0, tzinfo=UTC)


def test_status_rows_latest_case_verdict_slice_counts_and_filters(fresh_db):
    from medseg_core import worklist as W

    keys = {"c1": "k1", "c2": "k2", "c3": "k3"}
    s = fresh_db
    s.add_verdict("k1", "accept", "Dr A", "a@h.org", signed_in=True, model="m1", time=_t(8))
    s.add_verdict("k1", "reject", "Dr B", None, signed_in=False, model="m1", plane="axial", slice=4, time=_t(9))
    s.add_verdict("k1", "needs_correction", "Dr B", None, signed_in=False, model="m2", note="fix", time=_t(10))
    s.add_verdict("k2", "reject", "Dr A", "a@h.org", signed_in=True, model="m1", plane="axial", slice=1, time=_t(11))
    s.add_verdict("other", "accept", "Dr C", None, signed_in=False, time=_t(12))  # not a case of this list
    rows = W.status_rows(["c1", "c2", "c3"], keys, s.verdicts_for(list(keys.values())))
    got = [(r["case"], r["status"], r["slice_verdicts"], r["verdicts"], r["reviewer"], r["model"]) for r in rows]
    assert got == [
        ("c1", "needs_correction", 1, 3, "Dr B", "m2"),
        ("c2", "not_reviewed", 1, 1, "Dr A", "m1"),  # a slice verdict alone is no case status
        ("c3", "not_reviewed", 0, 0, "", ""),
    ]
    assert rows[0]["time_utc"] == _t(10) and rows[0]["note"] == "fix"
    assert [r["case"] for r in W.filter_rows(rows, statuses=["not_reviewed"])] == ["c2", "c3"]
    assert [r["case"] for r in W.filter_rows(rows, reviewers=["Dr A"])] == ["c1", "c2"]  # any verdict by Dr A
    assert [r["case"] for r in W.filter_rows(rows, reviewers=["a@h.org"], models=["m2"])] == ["c1"]
    assert W.filter_rows(rows, statuses=["accept"]) == []
    assert [W.neighbour(["c1", "c2", "c3"], "c2", k) for k in (-1, 1)] == ["c1", "c3"]
    assert W.neighbour(["c1", "c2"], "c2", 1) is None and W.neighbour(["c1"], "cX", 1) is None
    assert W.table(rows)[0]["status"] == "needs correction" and W.table(rows)[0]["time (UTC)"] == "2025-03-01 10:00"
    # the gallery's badge is per model: m2's 'needs correction' is not m1's verdict, and c2's slice verdict
    # on m1 is no whole-case verdict
    per_model = W.statuses_by_case_and_model(keys, s.verdicts_for(list(keys.values())))
    assert per_model == {("c1", "m1"): "accept", ("c1", "m2"): "needs_correction"}
    # the run's export: its cases' verdicts only, with the dataset's case id in front
    out = list(csv.DictReader(io.StringIO(W.export_bytes(W.case_verdicts(s, keys), "csv").decode())))
    assert [(r["case"], r["verdict"]) for r in out] == [
        ("c2", "reject"),
        ("c1", "needs_correction"),
        ("c1", "reject"),
        ("c1", "accept"),
    ]
    assert list(out[0])[:3] == ["case", "id", "case_key"]
    js = json.loads(W.export_bytes(W.case_verdicts(s, keys), "json"))
    assert len(js) == 4 and js[0]["case"] == "c2" and js[0]["time_utc"].startswith("2025-03-01T11:00")


def test_case_keys_are_the_review_key_and_cached_in_the_run(small_cohort):
    from medseg_core import cohort as C
    from medseg_core import worklist as W
    from medseg_core.review import case_key

    cases = C.dataset_cases(C.read_meta(small_cohort))
    assert len(cases) == 3
    f = W.run_key_file(small_cohort)

    def no_load(cid):
        raise AssertionError("a cached key must not load the case")

    # the cohort run wrote the keys while it had each volume loaded: the worklist's first open loads nothing
    from_run = W.case_keys(cases, cache_file=f, load=no_load)
    assert from_run == {cid: case_key(case.load()[0]) for cid, case in cases.items()}
    f.unlink()
    keys = W.case_keys(cases, cache_file=f)
    for cid, case in cases.items():
        assert keys[cid] == case_key(case.load()[0])  # what Segment & review records a verdict under
    assert len(set(keys.values())) == 3 and f.exists()
    assert keys == from_run
    assert W.case_keys(cases, cache_file=f, load=no_load) == keys
    # a changed image file (size / time) is hashed again
    first = next(iter(cases))
    p = Path(cases[first].image)
    p.touch()
    seen = []
    W.case_keys(cases, cache_file=f, load=lambda cid: (seen.append(cid), cases[cid].load())[1])
    assert seen == [first]


def test_apptest_worklist_open_verdict_next_filter_export(small_cohort, fresh_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from medseg_core import cohort as C

    monkeypatch.setenv("MEDSEG_RUNS", str(small_cohort.parent))
    ids = [str(c) for c in C.read_meta(small_cohort)["case_ids"]]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/worklist.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Worklist"
    df = at.dataframe[0].value
    assert list(df["case"]) == ids and set(df["status"]) == {"not reviewed"}
    # open the first case: Segment & review with the run's model, and the worklist strip
    at.selectbox(key="wl_pick").set_value(ids[0]).run()
    at.button(key="wl_open").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Segment & review"
    at.switch_page("pages/segment.py").run()  # AppTest reruns the page it was told, not where st.switch_page went
    strip = [c.value for c in at.caption if c.value.startswith("Worklist")]
    assert strip and f"case 1 of 3 · {ids[0]}" in strip[0]
    assert at.session_state["current"] is not None and at.session_state["model_name"] == "ovary_unet"
    assert at.button(key="wl_prev").disabled and not at.button(key="wl_next").disabled
    key1 = at.session_state["case_key"]
    # a verdict on this case (sign-in is off here: a typed name)
    at.radio(key="verdict_choice").set_value("accept")
    at.text_input(key="reviewer_name").set_value("Dr Worklist")
    [b for b in at.button if b.label == "Save verdict"][0].click().run()
    assert fresh_db.status(key1) == "accept", (
        fresh_db.verdicts(),
        [e.value for e in at.error],
        at.exception,
        [s.value for s in at.success],
    )
    # Next: the second case of the list, on the same page
    at.button(key="wl_next").click().run()
    assert not at.exception, at.exception
    strip = [c.value for c in at.caption if c.value.startswith("Worklist")]
    assert f"case 2 of 3 · {ids[1]}" in strip[0] and at.session_state["case_key"] != key1
    # back on the worklist: the first case is accepted, by whom, with the model
    at.button(key="wl_back").click().run()
    assert at.title[0].value == "Worklist"
    at.switch_page("pages/worklist.py").run()
    df = at.dataframe[0].value
    assert list(df["status"]) == ["accepted", "not reviewed", "not reviewed"]
    from medseg_core.checkpoints import model_spec

    assert df["reviewer"][0] == "Dr Worklist" and df["model"][0] == model_spec("ovary_unet").title
    assert any("accepted **1**" in m.value for m in at.markdown)
    # filters: status and reviewer
    at.multiselect(key="wl_status").set_value(["not_reviewed"]).run()
    assert list(at.dataframe[0].value["case"]) == ids[1:]
    at.multiselect(key="wl_status").set_value([]).run()
    at.multiselect(key="wl_reviewers").set_value(["Dr Worklist"]).run()
    assert list(at.dataframe[0].value["case"]) == ids[:1]
    # exports for any reviewer, recorded in the audit trail
    labels = [b.label for b in at.get("download_button")]
    assert {"This list's verdicts (CSV)", "All verdicts (JSON)"} <= set(labels)
    # the gallery: the verdict beside the tags, and its filter
    at.switch_page("pages/gallery.py").run()
    assert not at.exception, at.exception
    at.multiselect(key="gal_tags").set_value([]).run()
    badges = [m.value for m in at.markdown if m.value.startswith("Verdict ")]
    assert badges and any("accepted" in b for b in badges)
    at.multiselect(key="gal_verdict").set_value(["accept"]).run()
    run = C.load_run(small_cohort)
    n_case1 = len(C.filter_slices(run.slices, None, None, ["orig"]).frame.query("case == @ids[0]"))
    caption = next(c.value for c in at.caption if "slices match" in c.value)
    assert int(caption.split()[0]) == n_case1 > 0
    assert all("accepted" in m.value for m in at.markdown if m.value.startswith("Verdict "))


def test_worklist_export_is_audited(fresh_db):
    """The export buttons' callbacks record who exported what (pages._access.exported)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(
        "import streamlit as st\n"
        "from pages._access import exported\n"
        "st.session_state['reviewer_name'] = 'Dr Export'\n"
        "exported('worklist verdicts CSV (run x)', with_case=False)()\n",
        default_timeout=30,
    ).run()
    assert not at.exception
    rows = fresh_db.audit_rows(action="export")
    assert [(r["user"], r["detail"], r["case_key"]) for r in rows] == [
        ("Dr Export", "worklist verdicts CSV (run x)", None)
    ]


def _wait(fn, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    return fn()


@pytest.mark.browser
def test_browser_verdict_survives_server_restart(small_cohort, tmp_path):
    """Save a verdict in Chromium on a case opened from the worklist, stop the server, start a new one
    on the same MEDSEG_DB: the worklist shows the case as accepted."""
    from medseg_core.store import Store

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "restart.db"
    env = {"MEDSEG_RUNS": str(small_cohort.parent), "MEDSEG_DB": str(db)}
    with app_server(env=env) as url, browser() as b:
        page = b.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Research use only").wait_for(timeout=120_000)
        page.get_by_role("link", name="Worklist").click()
        page.get_by_text("cases match").wait_for(timeout=120_000)
        page.get_by_role("button", name="Open on Segment & review").click()
        page.get_by_text("case 1 of 3").wait_for(timeout=180_000)
        page.get_by_text("Verdict", exact=True).click()
        page.get_by_text("Accept", exact=True).click()
        page.get_by_role("textbox", name="Your name").fill("Dr Restart")
        page.get_by_role("button", name="Save verdict").click()
        page.get_by_text("Saved: Accept by Dr Restart").wait_for(
            state="attached", timeout=60_000
        )  # the expander may fold
    assert _wait(lambda: Store(str(db)).verdicts())[0]["verdict"] == "accept"
    with app_server(env=env) as url, browser() as b:  # a new server process, the same database
        page = b.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Research use only").wait_for(timeout=120_000)
        page.get_by_role("link", name="Worklist").click()
        page.get_by_text("accepted **1**".replace("**", "")).wait_for(timeout=120_000)
        page.get_by_text("cases match").wait_for(timeout=60_000)
        text = page.locator("[data-testid=stMarkdown]").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "worklist_after_restart.png"), full_page=True)
        assert any("accepted 1" in t and "not reviewed 2" in t for t in text), text
