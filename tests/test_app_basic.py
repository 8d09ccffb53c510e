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
        assert "Ovary" in page.locator("[data-testid=stSidebar]").get_by_role("combobox", name="Model").input_value()
        page.get_by_role("button", name="Run model").click()
        page.locator(".js-plotly-plot image").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1000)
        assert _exceptions(page) == 0
        page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
        before = _image_src(page)
        target = page.get_by_role("slider", name="Slice")
        assert target.get_attribute("max") == "23"  # the axial slider of the 24-slice case
        target.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("(b) => { const i = document.querySelector('.js-plotly-plot image');"
                               " return i && i.getAttribute('href') !== b; }", arg=before, timeout=30_000)
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
