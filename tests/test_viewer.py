"""Issue 17 item 7 (presenter layout) and the orientation part of item 3, on Segment & review.

* the viewer fits a 1280 x 720 window (and 1024 x 768) after Run model, and is not cut off at 1920 x 1080;
* the mouse wheel over the picture moves the slice, one per notch;
* "Export this view (PNG)" carries the letters, the legend and a scale bar (see also test_render.py);
* orientation letters only where the file states the orientation: a DICOM without Image Orientation /
  Position (Patient), a 2D image file and a NIfTI without qform/sform get none, and say so.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ROOT, open_case
from dicom_factory import axial_series, dicom_slice

from medseg_core.io import load_volume
from medseg_core.io.dicom import ORIENTATION_ASSUMED
from medseg_core.io.orientation import orientation_known

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _strip_geometry(data: bytes) -> bytes:
    """The same DICOM file without ImageOrientationPatient / ImagePositionPatient."""
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.ImageOrientationPatient
    del ds.ImagePositionPatient
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- loaders: is the orientation known?
@pytest.mark.parametrize("name, frames", [("examples_rgb_color.dcm", 1), ("examples_ybr_color.dcm", 30)])
def test_real_ultrasound_dicom_without_orientation_is_flagged(name, frames):
    """pydicom's ultrasound examples carry no Image Orientation / Position (Patient): a single frame
    now gets the warning too (it used to get none), and the volume records that letters are unknown."""
    path = PYDICOM_FILES / name
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "ImageOrientationPatient" not in ds and "ImagePositionPatient" not in ds
    vol = load_volume(path)
    assert vol.shape[0] == frames
    assert ORIENTATION_ASSUMED in vol.warnings and vol.warnings.count(ORIENTATION_ASSUMED) == 1
    assert vol.meta["orientation_known"] is False and not orientation_known(vol.meta)
    assert vol.describe()["source orientation"].startswith("not stated")


def test_built_dicom_without_orientation_single_slice_and_series():
    rng = np.random.default_rng(3)
    pix = rng.integers(0, 1000, (3, 12, 10)).astype(np.uint16)
    with_geometry = axial_series(pix)
    vol = load_volume(with_geometry)
    assert vol.meta["orientation_known"] is True and orientation_known(vol.meta)
    assert ORIENTATION_ASSUMED not in vol.warnings
    one = load_volume(_strip_geometry(dicom_slice(pix[0], (0, 0, 0))), filename="one.dcm")
    assert ORIENTATION_ASSUMED in one.warnings and one.meta["orientation_known"] is False
    assert not any("stacked in acquisition order" in w for w in one.warnings)  # one slice: nothing stacked
    series = load_volume([_strip_geometry(b) for b in with_geometry])
    assert series.shape[0] == 3 and series.meta["orientation_known"] is False
    assert ORIENTATION_ASSUMED in series.warnings and any("stacked in acquisition order" in w for w in series.warnings)


def test_image_files_and_nifti_without_transform_state_no_orientation():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)).save(buf, "PNG")
    png = load_volume(buf.getvalue(), filename="frame.png")
    assert png.meta["orientation_known"] is False and not orientation_known(png.meta)
    img = nib.Nifti1Image(np.zeros((8, 9, 4), np.float32), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    bare = load_volume(img.to_bytes(), filename="bare.nii")
    assert not orientation_known(bare.meta)
    # the Load case table agrees with the warning (it used to print the default order's letters, LAS)
    assert any("stores no orientation" in w for w in bare.warnings)
    assert bare.describe()["source orientation"] == "not stated (default axis order assumed)"
    ok = nib.Nifti1Image(np.zeros((8, 9, 4), np.float32), np.diag([0.8, 0.8, 3, 1]))
    ok_vol = load_volume(ok.to_bytes(), filename="ok.nii")
    assert orientation_known(ok_vol.meta) and ok_vol.describe()["source orientation"] == "RAS"


# ----------------------------------------------------------------------------- the page (AppTest)
def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()


def _viewer_annotations(at) -> list[str]:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return [a["text"] for a in spec["layout"].get("annotations", [])]


def test_page_letters_and_caption_follow_what_the_file_states():
    at = _app()
    assert not at.exception
    texts = _viewer_annotations(at)
    assert {"R", "L", "A", "P"} <= set(texts) and any(t.startswith("Axial slice ") for t in texts)
    assert any("Radiological convention: patient's right on the image left." in c.value for c in at.caption)
    # the options are open before the first run and collapse once a result is shown
    assert at.session_state["opts_open"] is True
    next(b for b in at.button if b.label == "Run model").click().run()
    assert not at.exception and at.session_state["opts_open"] is False
    for key in ("side_mode", "post_mode", "thr", "gate_on", "mc_n", "mc_seed", "plane", "slice_axial", "compare"):
        assert key in at.session_state, key
    # a DICOM ultrasound frame without orientation: no letters, no radiological-convention sentence
    at = open_case(at, load_volume(PYDICOM_FILES / "examples_rgb_color.dcm"))
    assert not at.exception
    texts = _viewer_annotations(at)
    assert not {"R", "L", "A", "P", "S", "I"} & set(texts)
    assert not any("Radiological convention" in c.value for c in at.caption)
    assert any("does not state the patient's orientation" in c.value for c in at.caption)


# ----------------------------------------------------------------------------- the page in Chromium
def _plot_box(page) -> dict:
    """The viewer figure's box (retried: a rerun may redraw it just then)."""
    loc = page.locator(".st-key-seg_image .js-plotly-plot").first
    for _ in range(20):
        loc.wait_for(state="visible")
        box = loc.bounding_box()
        if box:
            return box
        page.wait_for_timeout(250)
    raise AssertionError("the viewer figure has no box")


def _inside(box: dict, w: int, h: int) -> bool:
    return (
        box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= w + 0.5 and box["y"] + box["height"] <= h + 0.5
    )


def _title(page) -> str:
    return next(t for t in page.locator(".st-key-seg_image .annotation-text").all_text_contents() if " slice " in t)


@pytest.mark.browser
def test_browser_viewer_fits_the_window_wheel_moves_the_slice_and_export(tmp_path):
    from browser import ARTIFACTS, app_server, browser, settled
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    with app_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(90_000)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Choose options and press").wait_for()
        page.get_by_role("button", name="Run model").click()
        page.get_by_role("heading", name="Results").wait_for(timeout=120_000)
        page.locator(".st-key-seg_image .js-plotly-plot image").first.wait_for()
        page.wait_for_timeout(1500)  # the picture's height follows the window (checked every 0.4 s)
        assert page.locator("[data-testid=stException]").count() == 0
        # the options collapsed, the picture, its slider and the plane / window controls in the window
        assert not page.get_by_role("button", name="Run model").is_visible()
        for w, h in ((1280, 720), (1024, 768), (1920, 1080), (1600, 1000)):
            page.set_viewport_size({"width": w, "height": h})
            page.wait_for_timeout(1500)
            box = _plot_box(page)
            assert _inside(box, w, h), (w, h, box)
            assert box["height"] >= 360 and box["width"] >= 300, (w, h, box)
            for control in (
                page.get_by_role("slider", name="Slice"),
                page.get_by_text("Plane", exact=True),
                page.get_by_text("Window", exact=True),
            ):
                c = control.bounding_box() if control.count() else None
                assert c is None or c["y"] + c["height"] <= h, (w, h, c)  # (the slider input is visually hidden)
            slider = page.locator(".st-key-seg_slice [data-testid=stSlider]").bounding_box()
            assert _inside(slider, w, h), (w, h, slider)
            if (w, h) in ((1280, 720), (1600, 1000)):
                page.screenshot(path=str(ARTIFACTS / f"viewer_{w}x{h}.png"))
        assert _plot_box(page)["height"] > 600  # 1600 x 1000: the picture grows with the window

        # the mouse wheel over the picture: one slice per notch, both ways, in the slider and the title
        page.set_viewport_size({"width": 1280, "height": 720})
        page.wait_for_timeout(1000)
        slider = page.get_by_role("slider", name="Slice")
        start = int(slider.input_value())
        assert _title(page) == f"Axial slice {start + 1} of 24"
        box = _plot_box(page)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for k in range(1, 4):
            page.mouse.wheel(0, 100)
            page.wait_for_function(
                "(v) => { const t = [...document.querySelectorAll('.st-key-seg_image "
                ".annotation-text')].map(e => e.textContent); return t.includes(v); }",
                arg=f"Axial slice {start + k + 1} of 24",
                timeout=30_000,
            )
            assert int(slider.input_value()) == start + k
        page.mouse.wheel(0, -100)
        page.wait_for_function(
            "(v) => [...document.querySelectorAll('.st-key-seg_image .annotation-text')]"
            ".some(e => e.textContent === v)",
            arg=f"Axial slice {start + 3} of 24",
            timeout=30_000,
        )
        assert int(slider.input_value()) == start + 2
        assert _plot_box(page)["y"] == pytest.approx(box["y"], abs=1)  # the page did not scroll
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "viewer_after_wheel_1280x720.png"))

        # the exported view: larger than the picture, with letters, legend and scale bar (after the
        # wheel's reruns: a download button's file belongs to the run that drew it)
        settled(page)
        with page.expect_download(timeout=60_000) as dl:
            page.get_by_role("button", name="Export this view (PNG)").click()
        path = tmp_path / "view.png"
        dl.value.save_as(path)
        im = Image.open(path)
        assert im.size[0] >= 256 and im.size[1] > 256
        assert im.text["medseg:letters"] == "RLAP" and float(im.text["medseg:scale_bar_mm"]) > 0
        assert dl.value.suggested_filename == f"view_axial_{start + 3}.png"
        im.save(ARTIFACTS / "viewer_export.png")


def test_fit_reason_says_how_many_slices_a_3d_model_needs():
    """Load case's sidebar lists why a model is not offered: a 1-slice CT (pydicom's CT_small.dcm)
    reads "needs a 3D volume of at least 8 slices; this case has 1 slice" (it said "needs a 3D volume")."""
    from medseg_core.models import get_spec
    from medseg_core.review import fit_reason

    ct = load_volume(PYDICOM_FILES / "CT_small.dcm")
    assert ct.shape[0] == 1 and ct.modality == "CT"
    assert fit_reason(get_spec("unet3d"), ct) == "needs a 3D volume of at least 8 slices; this case has 1 slice"
    assert fit_reason(get_spec("ovary_unet"), ct) == "needs MR, case is CT"
