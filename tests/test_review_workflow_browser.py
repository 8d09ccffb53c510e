"""Issue 18 items 1 and 4 in Chromium, checking results rather than the absence of errors.

One server whose model folder holds one checkpoint: the shipped ovary U-Net with a temperature written
into its card (0.5: a synthetic calibration, not fitted to anything). On the bundled pelvic case

* Compare (item 1): the model without and with two-pass side masking; the page's count of voxels where
  exactly one result says foreground equals the count of the same two predictions made here;
* Uncertainty (item 4): test-time augmentation with "Calibrated probabilities" on; the expected
  calibration error the page shows equals the one computed here from the same temperature-scaled
  prediction, and with the calibration switched off the page shows the model's own ECE.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest
from browser import ARTIFACTS, app_server, browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEMPERATURE = 0.5


def _model_folder(tmp_path):
    from medseg_core.checkpoints import find_checkpoint

    src = find_checkpoint("ovary_unet")
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(src.weights, folder / src.weights.name)
    card = json.loads(src.card_path.read_text())
    card["recipe"]["calibration"] = {
        "method": "synthetic (test)",
        "temperature": TEMPERATURE,
        "fitted_on": "nothing: a synthetic temperature for the test",
    }
    (folder / src.card_path.name).write_text(json.dumps(card))
    return folder


def _number_after(page, label: str) -> float:
    text = page.locator("[data-testid=stMetric]").filter(has_text=label).first.inner_text()
    return float(re.findall(r"[-+]?\d*\.\d+|\d+", text.split(label, 1)[1])[0])


def test_compare_counts_and_calibration_in_chromium(tmp_path):
    from medseg_core.calibration import reliability
    from medseg_core.checkpoints import load_model
    from medseg_core.inference import PredictOptions, predict
    from medseg_core.samples import get_sample

    folder = _model_folder(tmp_path)
    lm = load_model(folder / "ovary_unet.safetensors")
    vol, gt, _ = get_sample("pelvic").load()
    pa = predict(lm, vol, PredictOptions())
    pb = predict(lm, vol, PredictOptions(side_masking="two_pass"))
    n_disagree = int(np.count_nonzero((pa.mask > 0) != (pb.mask > 0)))
    assert n_disagree > 0
    tta = {c: predict(lm, vol, PredictOptions(tta=True, seed=0, calibrated=c)) for c in (True, False)}
    ece = {c: reliability(p.probability, gt, region="near", pred=p.mask).ece for c, p in tta.items()}
    assert abs(ece[True] - ece[False]) > 0.02  # the synthetic temperature really changes the calibration

    ARTIFACTS.mkdir(exist_ok=True)
    env = {"MEDSEG_MODELS": str(folder), "MEDSEG_DB": str(tmp_path / "medseg.db")}
    with app_server(env=env) as url, browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(240_000)
        page.goto(url)
        page.get_by_role("button", name="Run model").wait_for()
        # ---- Compare: the only model, defaults against two-pass side masking (the page's default B)
        page.get_by_role("link", name="Compare").click()
        page.get_by_text("Options of B").wait_for()
        assert page.get_by_role("textbox", name="Options of B").input_value() == "side_masking=two_pass"
        page.get_by_role("button", name="Compare", exact=True).click()
        line = page.get_by_text("where exactly one of them says foreground")
        line.wait_for()
        shown = int(re.search(r"([\d,]+) voxels", line.inner_text()).group(1).replace(",", ""))
        assert shown == n_disagree
        time.sleep(2)
        page.screenshot(path=str(ARTIFACTS / "compare_chromium.png"))
        # ---- Uncertainty: TTA, calibrated with the card's temperature
        page.get_by_role("link", name="Uncertainty").click()
        page.get_by_text("Test-time augmentation (flips)").click()
        page.get_by_text("Calibrated probabilities").click()
        page.get_by_role("button", name="Compute uncertainty").click()
        page.get_by_text("Expected calibration error").wait_for()
        got = _number_after(page, "Expected calibration error")
        # stored probabilities are uint8 (at most 1/510 off: README "Memory"), hence the tolerance
        assert got == pytest.approx(ece[True], abs=0.006)
        page.get_by_text("Expected calibration error").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "calibration_chromium.png"))
        page.get_by_text("Calibrated probabilities").click()
        page.get_by_role("button", name="Compute uncertainty").click()
        page.wait_for_function(
            "v => ![...document.querySelectorAll('[data-testid=stMetricValue]')].some(e => e.innerText === v)",
            arg=f"{got:.3f}",
            timeout=240_000,
        )
        assert _number_after(page, "Expected calibration error") == pytest.approx(ece[False], abs=0.006)
