"""NiiVue in Chromium (issue 18 item 5): the 3D viewer page on the bundled CT with the model's prediction.

Checks results in the canvas pixels (iframe screenshots, software WebGL: tests/browser.py WEBGL_ARGS):
the spleen mask in its label colour, on the image's right in the axial view (the spleen is on the
patient's left: radiological convention), in the 3D render too, a repaint after a mouse-wheel scroll
(pixels change, and the scrolled-to slice no longer shows the mask), and Segment & review's
"Fast viewer (NiiVue)" toggle drawing the same mask.
"""

from __future__ import annotations

import numpy as np
import pytest
from browser import ARTIFACTS, app_server, browser
from niivue_steps import NIIVUE_IFRAME, canvas_rgb, colour_pixels, open_ct_and_run, wait_for_colour

from medseg_core.render import LABEL_COLOURS

SPLEEN = LABEL_COLOURS[0]  # the first label's colour in the PNG viewer
OPACITY = 0.6  # the 3D viewer's default overlay opacity


def _pick(page, label: str, option: str):
    page.get_by_role("radiogroup", name=label).get_by_text(option, exact=True).click()


@pytest.mark.browser
def test_niivue_draws_the_mask_radiologically_and_repaints_after_a_scroll():
    ARTIFACTS.mkdir(exist_ok=True)
    with app_server(timeout=120) as url, browser(webgl=True) as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        open_ct_and_run(page, url)
        page.locator("[data-testid=stSidebar]").get_by_role("link", name="3D viewer").click()
        page.get_by_text("Radiological convention").wait_for(timeout=60_000)
        _pick(page, "View", "Axial")
        page.wait_for_timeout(500)
        _, rgb, hit = wait_for_colour(page, SPLEEN, OPACITY)
        page.screenshot(path=str(ARTIFACTS / "niivue_axial.png"))
        # radiological: the spleen (patient's left) lies right of the body's centre in the axial picture
        body = rgb.max(axis=-1) > 60
        body_x = np.nonzero(body)[1].mean()
        spleen_x = np.nonzero(hit)[1].mean()
        width = rgb.shape[1]
        assert spleen_x > body_x + 0.05 * width, (spleen_x, body_x, width)
        # the mask's colour is the PNG viewer's: R > G > B as (230, 159, 0) over grey
        mean = rgb[hit].mean(axis=0)
        assert mean[0] > mean[1] + 20 and mean[1] > mean[2] + 40, mean

        # scroll: the mouse wheel over the picture moves the slice in the browser
        box = page.locator(NIIVUE_IFRAME).first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        before, n_before = rgb, int(hit.sum())
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(800)
        after = canvas_rgb(page)
        changed = np.abs(after - before).max(axis=-1) > 8
        assert changed.sum() > 200, int(changed.sum())  # repainted: a different slice
        # far enough (20 slices up: above the spleen) the mask is gone from the picture
        for _ in range(30):
            page.mouse.wheel(0, -100)
            page.wait_for_timeout(60)
        page.wait_for_timeout(800)
        far = canvas_rgb(page)
        n_far = int(colour_pixels(far, SPLEEN, OPACITY).sum())
        assert n_far < n_before / 4, (n_far, n_before)
        page.screenshot(path=str(ARTIFACTS / "niivue_axial_scrolled.png"))

        # 3D rendering: the mask over the volume
        _pick(page, "View", "3D render")
        page.wait_for_timeout(800)
        wait_for_colour(page, SPLEEN, OPACITY, min_pixels=50, timeout_s=60)
        _pick(page, "View", "Multiplanar + 3D")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "niivue_multiplanar.png"))

        # reference vs prediction: TP in the PNG viewer's green
        _pick(page, "Overlay", "Prediction vs reference (TP / FP / FN)")
        wait_for_colour(page, (0, 200, 120), OPACITY, min_pixels=50, timeout_s=60)

        # Segment & review: the toggle swaps the PNG picture for NiiVue (plane axial, the page's opacity 0.35,
        # "Compare with reference" on by default with a reference: TP green as in the PNG picture)
        page.locator("[data-testid=stSidebar]").get_by_role("link", name="Segment & review").click()
        page.get_by_text("Fast viewer (NiiVue)").click()
        _, rgb, hit = wait_for_colour(page, (0, 200, 120), 0.35, min_pixels=50, timeout_s=60)
        page.screenshot(path=str(ARTIFACTS / "niivue_segment_fast_viewer.png"))
        assert page.locator("[data-testid=stException]").count() == 0
        page.close()
