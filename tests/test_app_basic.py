"""The app in a real Chromium (Playwright) and headless (AppTest)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from browser import ARTIFACTS, app_server, browser

ROOT = Path(__file__).resolve().parents[1]


def test_apptest_opens_default_sample_with_notice():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert any("Research use only" in w.value for w in at.sidebar.warning)
    assert at.title[0].value == "Segment & review"
    assert at.session_state["volume"].shape == (24, 256, 256)


def _exceptions(page) -> int:
    return page.locator("[data-testid=stException]").count()


def _image_src(page) -> str:
    return page.locator(".js-plotly-plot image").first.get_attribute("href") or ""


@pytest.mark.browser
def test_browser_review_flow_and_bad_upload(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    data = np.zeros((40, 30, 6), np.int16)
    data[5:15, 10:20, :] = 800
    bad = tmp_path / "broken.nii.gz"
    good = gzip.compress(nib.Nifti1Image(data, np.diag([0.8, 0.8, 4, 1])).to_bytes())
    bad.write_bytes(good[: len(good) // 2])
    with app_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Choose options and press").wait_for(timeout=90_000)
        # choose the ovary U-Net and run it on the default pelvic sample
        page.screenshot(path=str(ARTIFACTS / "review_start.png"), full_page=True)
        # the sidebar defaults to an ovary segmentation model for the pelvic sample
        page.get_by_text("chosen in the sidebar").wait_for(timeout=30_000)
        combo = page.locator("[data-testid=stSidebar]").get_by_role("combobox", name="Model")
        assert "Ovary" in combo.input_value()
        # choosing another model in the sidebar sticks across reruns (button clicks included)
        combo.click()
        page.get_by_role("option").first.wait_for(timeout=30_000)  # the list is open
        page.keyboard.type("ovary_unet", delay=30)
        page.get_by_role("option", name="Ovary U-Net (Model 1) · ovary_unet").wait_for(timeout=30_000)
        page.keyboard.press("Enter")
        page.get_by_text("(ovary_unet, chosen in the sidebar)").wait_for(timeout=30_000)
        page.get_by_role("button", name="Run model").click()
        page.locator(".js-plotly-plot image").first.wait_for(timeout=120_000)
        assert combo.input_value().endswith("· ovary_unet")
        assert page.get_by_text("(ovary_unet, chosen in the sidebar)").count() == 1
        page.wait_for_timeout(1000)
        assert _exceptions(page) == 0
        page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
        before = _image_src(page)
        target = page.get_by_role("slider", name="Slice")
        assert target.get_attribute("max") == "23"  # the axial slider of the 24-slice case
        target.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "(b) => { const i = document.querySelector('.js-plotly-plot image');"
            " return i && i.getAttribute('href') !== b; }",
            arg=before,
            timeout=30_000,
        )
        assert _image_src(page) != before
        assert _exceptions(page) == 0
        page.screenshot(path=str(ARTIFACTS / "review_after_slider.png"), full_page=True)
        for p in ("models", "uncertainty", "load_case"):
            page.goto(f"{url}/{p}", wait_until="domcontentloaded")
            page.wait_for_timeout(2500)
            assert _exceptions(page) == 0
            page.screenshot(path=str(ARTIFACTS / f"page_{p}.png"), full_page=True)
        # a damaged upload gives a message and the app stays usable
        page.get_by_role("tab", name="Upload").click()
        page.locator("input[type=file]").first.set_input_files(str(bad))
        page.get_by_text("cut short").wait_for(timeout=60_000)
        assert _exceptions(page) == 0
        page.screenshot(path=str(ARTIFACTS / "load_error.png"), full_page=True)


@pytest.mark.slow
def test_apptest_review_toggles_and_uncertainty():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert at.session_state["model_name"].startswith("ovary_")
    [b for b in at.button if b.label == "Run model"][0].click().run()
    assert not at.exception
    pred = at.session_state["predictions"].get(at.session_state["current"])
    assert pred.mask.shape == (24, 256, 256)
    assert at.dataframe, "metrics table against the reference"
    n_before = len(at.session_state["predictions"])
    # viewer widgets live in an st.fragment, which AppTest cannot rerun on its own: set them through
    # session state and rerun the whole script (the code paths are the same)
    for key, value in (
        ("ovmode", "outline"),
        ("plane", "coronal"),
        ("show_removed", True),
        ("compare", False),
        ("wl_preset", "Manual"),
        ("plane", "sagittal"),
    ):
        at.session_state[key] = value
        at.run()
        assert not at.exception, key
    assert at.session_state["plane"] == "sagittal" and at.session_state["ovmode"] == "outline"
    assert len(at.session_state["predictions"]) == n_before  # browsing never re-runs the model
    at.switch_page("pages/models.py").run()
    assert not at.exception and at.expander


@pytest.mark.slow
def test_apptest_uncertainty_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.session_state["unc_n"] = 3
    at.switch_page("pages/uncertainty.py").run()
    [b for b in at.button if b.label == "Compute uncertainty"][0].click().run()
    assert not at.exception
    unc = at.session_state["predictions"].get(at.session_state["unc_key"])
    assert unc.uncertainty_method == "mc_dropout" and unc.uncertainty_maps["mutual_information"].shape == (24, 256, 256)
    assert unc.options.mc_samples == 3 and unc.uncertainty_maps["variance"].max() > 0


def test_apptest_load_ultrasound_sample():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/load_case.py").run()
    at.selectbox(key="sample_pick").set_value("Transvaginal ultrasound (synthetic): benign lesion").run()
    [b for b in at.button if b.label == "Open sample"][0].click().run()
    assert not at.exception
    vol = at.session_state["volume"]
    from medseg_core.samples import get_sample

    assert vol.modality == "US" and vol.is_2d
    assert at.session_state["clinical"] == get_sample("us_benign").extra["clinical"]
    assert at.session_state["gt_mask"] is not None


@pytest.mark.browser
def test_first_deep_link_after_start_is_framed():
    # Streamlit runs a deep-linked file from pages/ on its own until some session has called
    # st.navigation; the pages send such a run back through app.py (require_frame).
    with app_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/uncertainty", wait_until="domcontentloaded")
        page.get_by_text("Research use only").wait_for(timeout=90_000)
        assert page.get_by_text("Case:").count() >= 1
        assert page.locator("[data-testid=stException]").count() == 0


def test_apptest_every_run_option_and_the_exports():
    """Each option of Segment & review through its widget: the prediction that results was made
    with that option, and what the option does is visible in it."""
    from streamlit.testing.v1 import AppTest

    from medseg_core.review import POSTPROCESSING_CHOICES

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.session_state["model_pick"] = "ovary_unet"
    at.session_state["model_name"] = "ovary_unet"
    at.run()

    def run():
        [b for b in at.button if b.label == "Run model"][0].click().run()
        assert not at.exception
        return at.session_state["predictions"].get(at.session_state["current"])

    base = run()
    assert base.model == "ovary_unet" and base.options.side_masking == "none"
    # the modes are offered in words for people; the widget's values stay the option names
    assert at.selectbox(key="side_mode").options == [
        "None",
        "Left only",
        "Right only",
        "Two-pass (each side separately)",
        "Oracle (side of the reference)",
    ]
    for side in ("left", "right", "oracle", "two_pass"):
        at.selectbox(key="side_mode").set_value(side).run()
        p = run()
        assert p.options.side_masking == side
        if side == "two_pass":
            assert set(p.sides) == {"left", "right"}
        if side in ("left", "right"):
            assert p.side_info.get("mode") == side
    at.selectbox(key="side_mode").set_value("none").run()
    for label, steps in POSTPROCESSING_CHOICES.items():
        at.selectbox(key="post_mode").set_value(label).run()
        p = run()
        assert p.options.postprocessing == steps
        if steps:  # what was removed plus what is kept is what the model predicted
            before = p.masks_before_postprocessing["ovary"].astype(bool)
            assert ((p.mask.astype(bool) | p.removed["ovary"].astype(bool)) >= before).all()
    at.selectbox(key="post_mode").set_value("none").run()
    at.slider(key="thr").set_value(0.3).run()
    low = run()
    at.slider(key="thr").set_value(0.7).run()
    high = run()
    assert low.options.threshold == 0.3 and high.options.threshold == 0.7 and low.mask.sum() >= high.mask.sum()
    at.selectbox(key="pre_ovary_unet").set_value("minmax").run()
    assert run().options.preprocessing == "minmax"
    at.toggle(key="preview").set_value(True).run()
    assert not at.exception and len(at.get("image")) >= 2  # before / after
    labels = {b.label for b in at.get("download_button")}
    assert {"Export mask (NIfTI, source affine)", "Export metrics (CSV)", "Export this view (PNG)"} <= labels
    assert any("DICOM SEG export needs a DICOM input" in c.value for c in at.caption)
    # every run above is cached: asking again for the first options does not run the model
    n = at.session_state["predictions"].misses
    at.selectbox(key="pre_ovary_unet").set_value("plain").run()
    at.slider(key="thr").set_value(0.7).run()
    run()
    assert at.session_state["predictions"].misses == n
