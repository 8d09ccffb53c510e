"""Segment & review without dead ends (issue 17 item 3): a case no model fits can still be viewed,
a 2D image has one plane, and the slice classifier shows what it computed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import ROOT, open_case

from medseg_core.io import load_volume


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()


def test_no_model_fits_but_the_image_is_viewable():
    """A single CT slice (pydicom's CT_small.dcm): the 3D spleen models need a volume, nothing else
    takes CT. The page says so, offers no Run button, and still shows the image with windowing."""
    ct = load_volume(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    at = open_case(_app(), ct)
    assert not at.exception
    assert at.session_state["model_name"] is None
    assert any("No model fits this case" in w.value for w in at.warning)
    assert not any(b.label == "Run model" for b in at.button)
    assert not any("chosen in the sidebar" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1  # the viewer
    assert "Abdomen" in at.selectbox(key="wl_preset").options or len(at.selectbox(key="wl_preset").options) > 2


def test_a_2d_image_has_one_plane():
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.clip(np.random.default_rng(0).rayleigh(18.0, (256, 336)), 0, 255).astype(np.uint8)).save(
        png, "PNG"
    )
    us = load_volume(png.getvalue(), filename="probe.png", modality="US")
    at = open_case(_app(), us)
    assert not at.exception
    assert not [r for r in at.radio if r.key == "plane"]  # no coronal / sagittal strip of one pixel
    assert not [s for s in at.get("select_slider") if s.key and s.key.startswith("slice_")]


@pytest.mark.slow
def test_slice_classifier_shows_its_curve():
    at = _app()
    at.session_state["model_name"] = "ovary_slice_classifier"
    at.run()
    next(b for b in at.button if b.label == "Run model").click().run()
    assert not at.exception
    pred = at.session_state["predictions"].get(at.session_state["current"])
    assert pred.slice_probabilities is not None and pred.slice_probabilities.shape == (24,)
    assert len(at.get("plotly_chart")) == 2  # the viewer and the p(ovary present) curve under it
    assert any("p(ovary present) per slice" in c.value for c in at.caption)


@pytest.mark.browser
def test_browser_no_model_fits_and_2d_image(tmp_path):
    """In Chromium: a single CT slice opens, the page says no model fits and shows the image; a 2D
    ultrasound PNG has one plane and no anatomical letters it cannot know."""
    from browser import ARTIFACTS, app_server, browser
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    png = tmp_path / "probe.png"
    Image.fromarray(np.clip(np.random.default_rng(0).rayleigh(18.0, (256, 336)), 0, 255).astype(np.uint8)).save(png)
    with app_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(90_000)
        page.goto(url)
        page.get_by_role("button", name="Run model").wait_for()
        page.get_by_role("link", name="Load case").click()
        page.get_by_role("tab", name="Upload").click()
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
            str(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
        )
        page.get_by_text("DICOM CT series (1 slice)").first.wait_for()  # the sidebar names the new case
        page.get_by_role("link", name="Segment & review").click()
        page.locator("[data-testid=stMain]").get_by_text("No model fits this case").first.wait_for()
        page.locator(".js-plotly-plot image").first.wait_for()
        assert page.get_by_role("button", name="Run model").count() == 0
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "no_model_fits_1280.png"))
        page.set_viewport_size({"width": 1600, "height": 1000})
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "no_model_fits_1600.png"))
        page.get_by_role("link", name="Load case").click()
        page.get_by_role("tab", name="Upload").click()
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(png))
        page.locator("[data-testid=stSidebar]").get_by_text("probe.png").first.wait_for()
        page.get_by_role("link", name="Segment & review").click()
        page.get_by_role("button", name="Run model").wait_for()
        page.locator(".js-plotly-plot image").first.wait_for()
        assert (
            page.get_by_text("coronal", exact=True).count() == 0
            and page.get_by_text("sagittal", exact=True).count() == 0
        )
        page.screenshot(path=str(ARTIFACTS / "us_png_one_plane_1600.png"))
