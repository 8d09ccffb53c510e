"""The app starts, loads a case in a real Chromium, and shows no Streamlit exception."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from browser import ARTIFACTS, app_server, browser

ROOT = Path(__file__).resolve().parents[1]


def test_apptest_load_page_bad_file_shows_message():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Research use only" in w.value for w in at.sidebar.warning)


@pytest.mark.browser
def test_browser_upload_nifti(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    data = np.zeros((40, 30, 6), np.int16)
    data[5:15, 10:20, :] = 800
    f = tmp_path / "phantom.nii.gz"
    f.write_bytes(gzip.compress(nib.Nifti1Image(data, np.diag([0.8, 0.8, 4, 1])).to_bytes()))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with app_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Load case").first.wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(f))
        page.get_by_text("shape (Z, Y, X)").wait_for(timeout=60_000)
        page.get_by_text("6 x 30 x 40").first.wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "load_case.png"), full_page=True)
        assert page.locator("[data-testid=stException]").count() == 0
        page.get_by_text("phantom.nii.gz").first.wait_for(timeout=10_000)  # sidebar shows the case
        # a damaged file (in a fresh session) gives a message and the app stays usable
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Load case").first.wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(bad))
        page.get_by_text("cut short").wait_for(timeout=60_000)
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "load_case_error.png"), full_page=True)
