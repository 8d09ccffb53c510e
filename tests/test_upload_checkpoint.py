"""Uploading a checkpoint in the app (issue 16 item 3): safetensors + card, size-limited, SHA-256
checked, registry architecture only, never pickle; available to that session only."""

from __future__ import annotations

import json
import pickle
import time

import pytest
import torch

from medseg_core.cards import new_card, recipe_from_spec
from medseg_core.checkpoints import CheckpointError, load_model_bytes, save_checkpoint
from medseg_core.models import build_model, get_spec


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A small ovary U-Net under the user's own name ('my_ovary_net', base 4, 64 x 64 input)."""
    d = tmp_path_factory.mktemp("upload")
    torch.manual_seed(0)
    m = build_model("ovary_unet", "demo", base=4).eval()
    recipe = recipe_from_spec(get_spec("ovary_unet"), "demo", {"base": 4}, input_size=[64, 64])
    save_checkpoint(m, "my_ovary_net", new_card("my_ovary_net", recipe, None, title="My ovary net"), d)
    return d / "my_ovary_net.safetensors", d / "my_ovary_net.json", m


def test_upload_checks(tiny_checkpoint, tmp_path):
    w, c, m = tiny_checkpoint
    lm = load_model_bytes(w.read_bytes(), c.read_text())
    assert lm.name == "my_ovary_net" and lm.spec.builder_name == "ovary_unet" and lm.size == (64, 64)
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(lm.module(x), m(x))
    with pytest.raises(CheckpointError, match="at most"):
        load_model_bytes(w.read_bytes(), c.read_text(), max_bytes=1000)
    bad = bytearray(w.read_bytes())
    bad[-5] ^= 0xFF
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model_bytes(bytes(bad), c.read_text())
    with pytest.raises(CheckpointError, match="pickle"):
        load_model_bytes(pickle.dumps({"w": 1}), c.read_text())
    card = json.loads(c.read_text())
    card["recipe"]["architecture"]["builder"] = "my_custom_net"
    with pytest.raises(Exception, match="registry"):
        load_model_bytes(w.read_bytes(), json.dumps(card))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_bytes(w.read_bytes(), "{not json")


@pytest.mark.browser
def test_browser_upload_checkpoint_is_this_sessions_only(tiny_checkpoint, tmp_path):
    from browser import ARTIFACTS, app_server, browser

    w, c, _ = tiny_checkpoint
    ARTIFACTS.mkdir(exist_ok=True)
    with app_server() as url, browser() as b:
        a = b.new_page(viewport={"width": 1280, "height": 720})
        a.set_default_timeout(90_000)
        a.goto(url)
        a.get_by_role("button", name="Run model").wait_for(timeout=120_000)
        a.get_by_role("link", name="Models").click()
        a.get_by_role("tab", name="Upload a checkpoint").click(timeout=90_000)
        inputs = a.locator("[data-testid=stFileUploaderDropzoneInput]")
        inputs.nth(0).set_input_files(str(w))
        inputs.nth(1).set_input_files(str(c))
        a.get_by_role("button", name="Add to this session").click()
        a.get_by_text("is available in the sidebar's model picker").wait_for(timeout=60_000)
        a.screenshot(path=str(ARTIFACTS / "upload_checkpoint_1280.png"))
        a.get_by_role("link", name="Segment & review").click()
        a.get_by_role("button", name="Run model").wait_for(timeout=60_000)
        a.get_by_text("My ovary net (my_ovary_net, chosen in the sidebar)").wait_for(timeout=30_000)
        a.get_by_text("The card of My ovary net records no training-data envelope").wait_for(timeout=30_000)
        a.get_by_role("button", name="Run model").click()
        a.get_by_role("heading", name="Results").wait_for(timeout=120_000)
        a.set_viewport_size({"width": 1600, "height": 1000})
        time.sleep(1)
        a.screenshot(path=str(ARTIFACTS / "upload_checkpoint_review_1600.png"))
        # another browser session does not see it
        other = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
        other.goto(url)
        other.get_by_role("button", name="Run model").wait_for(timeout=60_000)
        assert other.get_by_text("My ovary net").count() == 0
        other.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
        options = other.get_by_role("option").all_inner_texts()
        assert options and not any("My ovary net" in o for o in options), options
