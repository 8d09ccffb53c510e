"""Issue 17 items 4, 5 and 8: what the screen says is for people and agrees with itself.

* one slice numbering: files keep the 0-based ``slice`` column with the 1-based ``slice_number``
  beside it; every page shows slice numbers 1..n;
* words for people: no machine name (``hd95_mm``, ``two_pass``, a dict repr) on any page;
* the uncertainty colour bar: one perceptually uniform sequential map for the pixels and the bar,
  with its unit.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Machine names and Python reprs that must never reach the screen.
FORBIDDEN = (
    "_mm",
    "_ml",
    "mutual_information",
    "two_pass",
    "mc_dropout",
    "dice_star",
    "side_swap",
    "double_ovary",
    "dice_orig",
    "{'",
    "': '",
    "raovseg_sharp",
    "ct_window",
    "gate_model",
    "postprocess ",
)


# ----------------------------------------------------------------------------- the mapping
def test_display_names_for_people():
    from medseg_core.labels import describe, display_name, display_rows, set_name

    assert display_name("hd95_mm") == "HD95 (mm)"
    assert display_name("pred_area_mm2") == "Predicted area (mm²)"
    assert display_name("mutual_information", "map") == "Mutual information (nats)"
    assert display_name("mean", "map") == "Mean probability"
    assert display_name("variance", "map") == "Variance (probability²)"
    assert display_name("two_pass", "set") == set_name("two_pass") == "Two-pass"
    assert set_name("orig") == "Original (no side masking)"
    # an option set the module does not know keeps its author's name, its options in words (no dict repr)
    assert (
        set_name("mine", {"side_masking": "two_pass", "postprocessing": ["largest_2d"]})
        == "mine (side masking two-pass; post-processing largest_2d)"
    )
    # names not in the table: underscores go, a unit spelled in the suffix is kept
    assert display_name("some_new_depth_mm") == "Some new depth (mm)"
    assert describe("hd95_mm", 3.214) == "HD95 3.21 mm"
    assert describe("hd95_mm", float("nan")) == "HD95 n/a"
    assert describe("pred_area_mm2", 1260.4) == "Predicted area 1,260 mm²" and describe("dice", 0.5) == "Dice 0.5"
    rows = display_rows(
        [
            {
                "model": "m",
                "set": "two_pass",
                "case": "c1",
                "slice": 4,
                "dice": 0.5,
                "hd95_mm": 2.0,
                "primary": "side_swap",
                "tags": ["side_swap", "double_ovary"],
                "ref_present": True,
            }
        ]
    )
    assert rows == [
        {
            "Model": "m",
            "Option set": "Two-pass",
            "Case": "c1",
            "Slice": 5,
            "Dice": 0.5,
            "HD95 (mm)": 2.0,
            "Main finding": "Side swap",
            "Findings": "Side swap, Double ovary",
            "Reference present": "yes",
        }
    ]


def test_review_metrics_keep_machine_keys_for_csv_and_show_words():
    """metrics_table / slice_metrics stay machine-keyed (the CSV export); the page shows words."""
    from types import SimpleNamespace

    from medseg_core.labels import describe, display_rows
    from medseg_core.review import metrics_csv, metrics_table, slice_metrics

    ref = np.zeros((3, 16, 16), np.uint8)
    ref[1, 4:10, 4:10] = 1
    pred_mask = np.zeros_like(ref)
    pred_mask[1, 5:11, 4:10] = 1
    pred = SimpleNamespace(masks={"ovary": pred_mask})  # what metrics_table reads of a Prediction
    rows = metrics_table(pred, ref, (4.0, 0.5, 0.5))
    header = next(csv.reader(io.StringIO(metrics_csv(rows).decode())))
    assert "hd95_mm" in header and "pred_volume_ml" in header
    shown = list(display_rows(rows)[0])
    assert "HD95 (mm)" in shown and "Predicted volume (mL)" in shown
    assert not any(f in " ".join(shown) for f in FORBIDDEN)
    sm = slice_metrics(pred_mask, ref, (4.0, 0.5, 0.5), 1)
    assert "pred_area_mm2" in sm
    words = ", ".join(describe(k, v) for k, v in sm.items())
    assert "Predicted area 9 mm²" in words and not any(f in words for f in FORBIDDEN)


# ----------------------------------------------------------------------------- slice numbers in files
def test_csv_files_carry_a_one_based_slice_number_beside_the_index(tmp_path):
    from medseg_core import cohort as C
    from medseg_core.tables import write_csv

    write_csv(
        tmp_path / "new.csv", [{"case": "a", "slice": np.int64(0), "dice": 1.0}, {"case": "a", "slice": 7, "dice": 0.5}]
    )
    with open(tmp_path / "new.csv", newline="") as fh:
        raw = list(csv.DictReader(fh))
    assert list(raw[0])[:3] == ["case", "slice", "slice_number"]
    assert [(r["slice"], r["slice_number"]) for r in raw] == [("0", "1"), ("7", "8")]
    # a run folder written before slice_number existed still reads, with the number derived
    (tmp_path / "old.csv").write_text("case,slice,dice\na,3,0.5\n")
    for name in ("old.csv", "new.csv"):
        for r in C.read_rows(tmp_path / name):
            assert r["slice_number"] == r["slice"] + 1 and isinstance(r["slice"], int)
    old = C.read_rows(tmp_path / "old.csv")[0]
    assert "slice 4 ·" in C.caption({**old, "model": "m", "set": "orig", "primary": "good", "dice_star": 0.5})


# ----------------------------------------------------------------------------- the colour bar
def _bar(fig):
    return [t for t in fig.data if getattr(t, "marker", None) is not None and t.marker.showscale][0]


def test_uncertainty_colour_bar_is_one_sequential_map_with_units():
    from medseg_core import render as R

    lut = R.heat_lut()
    L = R.lightness(lut)
    # perceptually ordered: CIE L* rises from one end to the other (steps below 0.1 L* are uint8 rounding)
    assert np.all(np.diff(L) > -0.1) and np.all(np.diff(L[::8]) > 1.0)
    assert L[-1] - L[0] > 50 and np.abs(lut[0].astype(int) - lut[-1]).sum() > 200
    fig = R.slice_figure(np.zeros((20, 30, 3), np.uint8), "axial", colorbar={"vmin": 0, "vmax": 0.69, "title": "nats"})
    bar = _bar(fig)
    assert bar.marker.colorbar.title.text == "nats"
    stops = [(pos, R._rgb(c)) for pos, c in bar.marker.colorscale]
    # the bar's colours are the overlay's: at alpha 1 a pixel of value v has the bar's colour at v
    grey = np.zeros((1, len(stops)), np.uint8)
    vals = np.array([[max(pos, 1e-3) * 0.69 for pos, _ in stops]])
    px = R.heat_overlay(grey, vals, 0.0, 0.69, alpha=1.0, floor=0.0)[0]
    for (pos, col), got in zip(stops, px, strict=True):
        assert np.abs(np.array(col) - got).max() <= 2, (pos, col, got)
    Ls = R.lightness([c for _, c in stops])
    assert np.all(np.diff(Ls) > 0)
    # Streamlit's plotly theme swaps colours #000001..#000040 for its own (inferno's #000004 became red):
    # the bar must not use any of them
    for _, c in bar.marker.colorscale:
        assert not re.fullmatch(r"#0000[0-3][0-9a-fA-F]|#000040", c.strip()), c


# ----------------------------------------------------------------------------- the pages
def _texts(at) -> list[str]:
    """Every string an AppTest run puts on screen: labels, values, options, captions, help, table
    headers and cells, chart titles, axis titles and hover texts (widget ids and URLs left out)."""
    from google.protobuf.message import Message

    out: list[str] = []

    def walk(msg):
        for field, value in msg.ListFields():
            if field.name in ("id", "form_id", "url", "src", "spec", "config", "theme"):
                continue
            repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            vals = value if repeated else [value]
            for v in vals:
                if isinstance(v, Message):
                    walk(v)
                elif isinstance(v, str):
                    out.append(v)

    def walk_json(obj, key=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k not in ("source", "colorscale", "uid", "template"):
                    walk_json(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk_json(v, key)
        elif isinstance(obj, str) and key in ("text", "title", "name", "hovertemplate", "hovertext", "ticktext"):
            out.append(obj)

    for node in at:
        proto = getattr(node, "proto", None)
        if proto is None:
            continue
        walk(proto)
        if getattr(node, "type", "") in ("dataframe", "arrow_data_frame", "table"):
            df = node.value
            out += [str(c) for c in df.columns]
            out += [str(v) for col in df.columns for v in df[col] if isinstance(v, str)]
        spec = getattr(proto, "spec", None)
        if isinstance(spec, str) and spec.startswith("{"):
            walk_json(json.loads(spec))
    return out


def _assert_words(texts: list[str], page: str) -> None:
    assert texts, page
    for t in texts:
        for f in FORBIDDEN:
            assert f not in t, f"{page}: {f!r} on screen in {t!r}"


@pytest.mark.slow
def test_segment_and_uncertainty_pages_speak_words_and_count_slices_from_one():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.session_state["model_pick"] = "ovary_unet"
    at.session_state["model_name"] = "ovary_unet"
    at.session_state["unc_n"] = 3
    at.run()
    [b for b in at.button if b.label == "Run model"][0].click().run()
    assert not at.exception
    texts = _texts(at)
    _assert_words(texts, "segment")
    n = at.session_state["volume"].shape[0]
    z = at.session_state["slice_axial"]  # the state keeps the 0-based index ...
    slider = at.select_slider[0]
    assert slider.label == "Slice" and slider.proto.options[0] == "1" and slider.proto.options[-1] == str(n)
    assert f"Axial slice {z + 1} of {n}" in texts  # ... people see 1..n, in the slider and the title
    assert any(t.startswith("This slice: Dice ") and "HD95" in t for t in texts)
    assert "HD95 (mm)" in at.dataframe[0].value.columns

    at.switch_page("pages/uncertainty.py").run()
    [b for b in at.button if b.label == "Compute uncertainty"][0].click().run()
    assert not at.exception
    for what in ("entropy", "mutual_information", "mean", "variance"):
        at.radio(key="unc_map").set_value(what).run()
        assert not at.exception
        texts = _texts(at)
        _assert_words(texts, f"uncertainty ({what})")
        fig = json.loads([e for e in at if getattr(e, "type", "") == "plotly_chart"][0].proto.spec)
        bar = [t for t in fig["data"] if t.get("marker", {}).get("showscale")][0]
        unit = {"entropy": "nats", "mutual_information": "nats", "mean": "probability", "variance": "probability²"}[
            what
        ]
        assert bar["marker"]["colorbar"]["title"]["text"] == unit
    assert "Mutual information (nats)" in at.radio(key="unc_map").options
    # the ranking, the title and the chart count slices from 1
    unc = at.session_state["predictions"].get(at.session_state["unc_key"])
    scores = unc.uncertainty_scores["per_slice"]
    ranking = next(t for t in texts if t.startswith("Most uncertain slices: "))
    first = int(ranking.split(": ", 1)[1].split(" ")[0])
    assert first == int(np.argmax(scores)) + 1
    z = at.session_state["unc_slice"]
    assert any(t.endswith(f"axial slice {z + 1} of {n}") for t in texts)
    curve = json.loads([e for e in at if getattr(e, "type", "") == "plotly_chart"][1].proto.spec)
    xs = sorted(x for t in curve["data"] for x, y in zip(t["x"], t["y"], strict=True) if y is not None)
    assert xs == list(range(1, n + 1))
    # a slice without a prediction is scored over the whole slice: drawn as its own, named trace
    on = unc.uncertainty_scores["on_prediction"]
    pred_mask = unc.mask
    assert on == [bool(pred_mask[k].any()) for k in range(n)]
    whole = next(t for t in curve["data"] if "whole slice" in t["name"])
    assert [x for x, y in zip(whole["x"], whole["y"], strict=True) if y is not None] == [
        k + 1 for k in range(n) if not on[k]
    ]
    # the per-slice CSV offered beside it: slice (0-based) and slice_number (1-based, as shown)
    from medseg_core.tables import csv_text

    rows = list(
        csv.DictReader(io.StringIO(csv_text([{"slice": i, "uncertainty_nats": s} for i, s in enumerate(scores)])))
    )
    top = max(rows, key=lambda r: float(r["uncertainty_nats"]))
    assert int(top["slice_number"]) == first == int(top["slice"]) + 1


def test_gallery_speaks_words_and_counts_slices_from_one(pelvic_cohort, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from medseg_core import cohort as C

    monkeypatch.setenv("MEDSEG_RUNS", str(pelvic_cohort.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception
    # show every option set, so two-pass rows reach the thumbnails
    at.multiselect(key="gal_sets").set_value(list(C.SIDE_SETS)).run()
    assert not at.exception
    texts = _texts(at)
    _assert_words(texts, "gallery")
    assert "Two-pass" in at.multiselect(key="gal_sets").options
    assert "Dice, no side masking" in at.dataframe[0].value.columns
    # the file says which numbering it uses: slice (0-based index) and slice_number (1-based) side by side
    with open(pelvic_cohort / "slices.csv", newline="") as fh:
        raw = list(csv.DictReader(fh))
    assert all(int(r["slice_number"]) == int(r["slice"]) + 1 for r in raw)
    # the first thumbnail's caption shows the row's slice_number
    run = C.load_run(pelvic_cohort)
    rows = C.sort_slices(
        C.filter_slices(run.slices, list(at.multiselect(key="gal_tags").value), None, list(C.SIDE_SETS)),
        "Dice (worst first)",
    )
    caption = C.caption(rows[0], run.meta)
    assert caption in texts  # the first thumbnail's
    # models are named by their cards' titles (not the checkpoint's file name) in captions, picker and summary
    from medseg_core.checkpoints import model_spec

    title = model_spec(rows[0]["model"]).title
    assert list(at.dataframe[0].value["Model"]) == [title]  # the side-masking table too
    assert f" · {title} · " in caption and title != rows[0]["model"]
    assert at.multiselect(key="gal_models").format_func(rows[0]["model"]) == title
    summary = C.run_summary(run.meta)
    assert summary in texts and f"models {title}" in summary and "MC-dropout samples 0" not in summary
    assert f"{rows[0]['case']} · slice {rows[0]['slice'] + 1} ·" in caption
    assert f" · slice {rows[0]['slice_number']} ·" in caption


def test_run_summary_and_model_titles_for_every_kind_of_run():
    """A run's one-line summary: card titles for models, "(predictions)" for a folder of them, the
    title recorded at run time even when the checkpoint has gone, and uncertainty in words."""
    from medseg_core import cohort as C

    meta = {
        "case_ids": ["a", "b"],
        "models": ["ovary_unet_gone", "theirs"],
        "model_titles": {"ovary_unet_gone": "Ovary U-Net (retired)"},
        "predictions": {"theirs": "/data/theirs"},
        "option_sets": {"orig": {}},
        "mc_samples": 0,
        "created": "2026-12-07 10:00:00",
        "seconds": 12.5,
    }
    s = C.run_summary(meta)
    assert s.startswith("2 cases · models Ovary U-Net (retired), theirs (predictions) · option sets ")
    assert "no uncertainty (MC dropout off)" in s and s.endswith("12.5 s")
    assert "uncertainty from 6 MC-dropout samples" in C.run_summary({**meta, "mc_samples": 6})
    # a run written before titles were recorded: the card found by name, else the name itself
    old = {k: v for k, v in meta.items() if k != "model_titles"}
    assert C.model_title(old, "ovary_unet_gone") == "ovary_unet_gone"
    from medseg_core.checkpoints import list_checkpoints, model_spec

    shipped = next(c for c in list_checkpoints() if c.shipped).name
    assert C.model_title({**old, "models": [shipped]}, shipped) == model_spec(shipped).title
