"""Issue 18 item 1: the Compare page on the bundled pelvic case (one model without and with two-pass
side masking): the disagreement it reports is the voxel count of the two cached results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT


@pytest.mark.slow
def test_compare_page_counts_the_disagreeing_voxels_of_the_two_results():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    at.session_state["cmp_src_a"] = "model:ovary_unet"
    at.session_state["cmp_opt_a"] = ""
    at.session_state["cmp_src_b"] = "model:ovary_unet"
    at.session_state["cmp_opt_b"] = "side_masking=two_pass"
    at.session_state["current"] = "the Segment page's result"
    at.run()
    next(b for b in at.button if b.label == "Compare").click().run()
    assert not at.exception, at.exception
    ss = at.session_state
    pa, pb = ss["predictions"].get(ss["cmp_key_a"]), ss["predictions"].get(ss["cmp_key_b"])
    assert pa.options.side_masking == "none" and pb.options.side_masking == "two_pass"
    n = int(np.count_nonzero((pa.mask > 0) != (pb.mask > 0)))
    assert n > 0  # two-pass really changes the pelvic case's mask
    text = " ".join(m.value for m in at.markdown)
    assert f"**{n:,} voxels** where exactly one of them says foreground" in text
    assert len(at.get("plotly_chart")) == 4  # A, B, the disagreement map and the per-slice curve
    table = at.dataframe[0].value
    assert list(table["Comparison"]) == ["A vs reference", "B vs reference", "A vs B"]
    d = 2 * np.count_nonzero((pa.mask > 0) & (pb.mask > 0)) / (pa.mask.sum() + pb.mask.sum())
    assert table["Dice"].iloc[2] == pytest.approx(d)
    # the Segment page's result slot is untouched by the Compare page
    assert ss["current"] == "the Segment page's result"
