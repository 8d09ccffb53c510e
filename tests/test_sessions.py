"""Three concurrent browser sessions on different cases: no session sees another's case, prediction
or export, and the server keeps answering while a model runs in one of them."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import nibabel as nib
import pytest
from browser import ARTIFACTS, app_server, browser

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "medseg_core" / "sample_data"


def _upload(page, path: Path):
    page.get_by_role("link", name="Load case").click()
    page.get_by_role("tab", name="Upload").click()
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.locator("[data-testid=stSidebar]").get_by_text(path.name).wait_for(timeout=90_000)


def _sidebar(page) -> str:
    return page.locator("[data-testid=stSidebar]").inner_text()


@pytest.mark.browser
def test_three_concurrent_sessions_are_isolated(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    us = tmp_path / "session_c_us.png"
    us.write_bytes((SAMPLES / "us_benign.png").read_bytes())
    ct = tmp_path / "session_b_ct.nii.gz"
    ct.write_bytes((SAMPLES / "abdomen_ct.nii.gz").read_bytes())
    with app_server() as url, browser() as b:
        pages = {}
        for name in "abc":
            ctx = b.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            pages[name] = ctx.new_page()
            pages[name].goto(url, wait_until="domcontentloaded")
        for p in pages.values():
            p.get_by_text("Research use only").wait_for(timeout=90_000)
        a, bb, c = pages["a"], pages["b"], pages["c"]
        _upload(bb, ct)
        _upload(c, us)
        # each sidebar names its own case only
        names = {"a": "pelvic_t2fs.nii.gz", "b": ct.name, "c": us.name}
        for k, p in pages.items():
            text = _sidebar(p)
            assert names[k] in text and all(names[o] not in text for o in names if o != k), (k, text)
        # session A runs its model; while it runs, B and C keep working
        a.get_by_role("link", name="Segment & review").click()
        a.get_by_role("button", name="Run model").click()
        t0 = time.perf_counter()
        bb.get_by_role("link", name="Models").click()
        bb.get_by_role("heading", name="Models").wait_for(timeout=30_000)
        bb.locator("[data-testid=stMain] [data-testid=stExpander]").nth(5).wait_for(timeout=30_000)
        with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as r:
            assert r.status == 200
        responsive_s = time.perf_counter() - t0
        a.get_by_role("heading", name="Results").wait_for(timeout=180_000)
        # B and C have no prediction: their review pages show the image and wait for their own run
        for p in (bb, c):
            p.get_by_role("link", name="Segment & review").click()
            p.get_by_text("Choose options and press").wait_for(timeout=60_000)
            assert p.get_by_role("heading", name="Results").count() == 0
            assert p.get_by_role("button", name="Export mask (NIfTI, source affine)").count() == 0
        # A's export is A's case: a mask on the pelvic grid (24 slices of 256 x 256)
        with a.expect_download(timeout=60_000) as dl:
            a.get_by_role("button", name="Export mask (NIfTI, source affine)").click()
        path = tmp_path / "a_mask.nii.gz"
        dl.value.save_as(path)
        assert nib.load(path).shape == (256, 256, 24)
        # C runs the ultrasound model and exports its own mask: one 2D image, not A's volume
        c.get_by_role("button", name="Run model").click()
        c.locator(".js-plotly-plot image").first.wait_for(timeout=180_000)
        with c.expect_download(timeout=60_000) as dl:
            c.get_by_role("button", name="Export mask (NIfTI, source affine)").click()
        path_c = tmp_path / "c_mask.nii.gz"
        dl.value.save_as(path_c)
        img_c = nib.load(path_c)
        assert 1 in img_c.shape and img_c.shape != (256, 256, 24)
        for k, p in pages.items():
            assert p.locator("[data-testid=stException]").count() == 0, k
            p.screenshot(path=str(ARTIFACTS / f"session_{k}.png"), full_page=True)
        # after all that, the sidebars still name their own cases
        for k, p in pages.items():
            assert names[k] in _sidebar(p)
        assert responsive_s < 30, responsive_s
