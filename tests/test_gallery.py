"""The failure gallery page: headless (AppTest) and in Chromium, on a real cohort run."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import ARTIFACTS, app_server, browser

ROOT = Path(__file__).resolve().parents[1]


def test_apptest_gallery_counts_filters_story_and_open_in_review(pelvic_cohort, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from medseg_core import cohort as C

    monkeypatch.setenv("MEDSEG_RUNS", str(pelvic_cohort.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception
    assert at.title[0].value == "Failure gallery"
    text = " ".join(m.value for m in at.markdown)
    assert "Side swap **" in text and "Double ovary **" in text  # tags in words (issue 17)
    # the side-masking table is on the page, with the run's numbers
    t1 = C.read_rows(pelvic_cohort / "table1.csv")[0]
    df = at.dataframe[0].value
    assert abs(float(df["Dice, no side masking"][0]) - t1["dice_orig"]) < 1e-9
    # default filter: side swaps and double ovaries of the first option set
    assert list(at.multiselect(key="gal_tags").value) == ["side_swap", "double_ovary"]
    caption = next(c.value for c in at.caption if "slices match" in c.value)
    n_match = int(caption.split()[0])
    run = C.load_run(pelvic_cohort)
    expected = C.filter_slices(run.slices, ["side_swap", "double_ovary"], None, ["orig"])
    assert n_match == len(expected) > 0
    assert len(at.get("image")) >= 1
    # narrowing the filter changes the count
    at.multiselect(key="gal_tags").set_value(["double_ovary"]).run()
    caption = next(c.value for c in at.caption if "slices match" in c.value)
    assert int(caption.split()[0]) == len(C.filter_slices(run.slices, ["double_ovary"], None, ["orig"]))
    # open the first thumbnail in the review page, at its slice, with its prediction
    row = C.sort_slices(C.filter_slices(run.slices, ["double_ovary"], None, ["orig"]), "Dice (worst first)")[0]
    at.button(key="open_0").click().run()
    assert not at.exception
    assert at.title[0].value == "Segment & review"
    assert at.session_state["slice_axial"] == row["slice"]
    assert at.session_state["model_name"] == "ovary_unet" and at.session_state["side_mode"] == "none"
    assert at.session_state["volume"].shape == (24, 256, 256) and at.session_state["gt_mask"] is not None
    assert at.session_state["current"] is not None  # the prediction is ready: no second click
    # issue 17 item 1: review shows exactly the mask the gallery showed (the run's MC-dropout mean,
    # same samples and seed), voxel for voxel, with the other ovary outlined as in the thumbnail
    pred = at.session_state["predictions"].get(at.session_state["current"])
    stored, _ = C.read_masks(pelvic_cohort, row["model"], row["set"], row["case"])
    assert pred.options.mc_samples == 4 and pred.options.seed == 0
    assert int(pred.mask.sum()) == int(stored.sum()) > 0
    assert (pred.mask.astype(bool) == stored).all()
    assert at.session_state["show_other"] is True and "ovary_other" in at.session_state["extra_masks"]
    # back to the gallery: the same tab, filters and sort
    at.button(key="back_gallery").click().run()
    assert not at.exception and at.title[0].value == "Failure gallery"
    assert list(at.multiselect(key="gal_tags").value) == ["double_ovary"]
    caption = next(c.value for c in at.caption if "slices match" in c.value)
    assert int(caption.split()[0]) == len(C.filter_slices(run.slices, ["double_ovary"], None, ["orig"]))


@pytest.mark.browser
def test_browser_gallery(pelvic_cohort):
    ARTIFACTS.mkdir(exist_ok=True)
    with app_server(env={"MEDSEG_RUNS": str(pelvic_cohort.parent)}) as url, browser() as b:
        page = b.new_page(viewport={"width": 1500, "height": 1300})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Research use only").wait_for(timeout=90_000)
        page.get_by_role("link", name="Failure gallery").click()
        page.get_by_text("Side masking, as in report 000").wait_for(timeout=60_000)
        # the Table 1 grid renders after the caption above it (its cells are drawn on a canvas)
        page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=60_000)
        page.get_by_role("tab", name="Gallery").click()
        page.get_by_text("slices match").wait_for(timeout=60_000)
        page.locator("[data-testid=stImage] img").first.wait_for(timeout=60_000)
        assert page.locator("[data-testid=stImage] img").count() >= 1
        assert page.get_by_text("Side swap").count() >= 1
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "gallery.png"), full_page=True)
        page.get_by_role("tab", name="Uncertainty vs Dice").click()
        page.get_by_text("AUROC for failed slices").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "gallery_uncertainty.png"), full_page=True)
        page.get_by_role("tab", name="Gallery").click()
        opener = page.get_by_role("button", name="Open in review").first
        opener.click(timeout=60_000)
        page.get_by_text("chosen in the sidebar").wait_for(timeout=120_000)
        page.locator(".js-plotly-plot image").first.wait_for(timeout=120_000)
        assert page.locator("[data-testid=stException]").count() == 0
        page.get_by_text("other ovary: pink outline").wait_for(timeout=120_000)  # as in the thumbnail
        page.screenshot(path=str(ARTIFACTS / "gallery_opened_in_review.png"), full_page=True)
        for w, h in ((1280, 720), (1600, 1000)):
            page.set_viewport_size({"width": w, "height": h})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / f"gallery_opened_in_review_{w}.png"))
        # back to the gallery: the same run, filters and sort
        page.get_by_role("button", name="Back to the failure gallery").click()
        page.get_by_role("tab", name="Gallery").click(timeout=60_000)
        page.get_by_text("slices match").wait_for(timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
