"""Issue 19: the rows tables of the five reports, their configs, and each report's evaluation protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg_core import protocols as P
from medseg_core import reproduce as R
from medseg_core.train import load_config


# ----------------------------------------------------------------------------- the rows tables
def test_every_report_has_a_rows_table_and_every_row_a_config_that_matches_the_report():
    assert R.reports() == ["000", "001", "002", "003", "004"]
    findings = R.check()
    assert findings == [], "\n".join(findings)
    for rep in R.reports():
        rows = R.rows_of(rep)
        assert rows and all(r.config and not math.isnan(r.value) for r in rows)


def test_rows_cover_the_reports_tables():
    """Counts of numbers in the reports' result tables (read off the reports): a row dropped from a
    table file fails here."""
    n = {rep: len(R.rows_of(rep)) for rep in R.reports()}
    # report 000 Table 1: 7 models x (orig, masked); report 003 Table I: 3 models x 6 metrics
    assert n["000"] >= 14 and n["003"] >= 18
    assert n["001"] >= 35 and n["004"] >= 6 and n["002"] >= 5


def test_compare_finds_what_differs_from_the_report():
    cfg = load_config(R.CONFIG_DIR / "003_unet3d.yaml")
    have = R.settings_of(cfg)
    assert R.compare({"lr": have["lr"], "loss": have["loss"].upper()}, cfg) == []
    found = R.compare({"lr": 0.5, "augmentation": {"flip": not cfg["augment"].get("flip")}, "data.no_such_key": 1}, cfg)
    assert len(found) == 3
    assert "lr: the report states 0.5" in found[0] and "augmentation" in found[1] and "no_such_key" in found[2]
    # a dict states a subset; a list must match element by element; booleans are not numbers
    assert R._same({"a": 1}, {"a": 1.0, "b": 2}) and not R._same([1, 2], [1, 2, 3]) and not R._same(True, 1)


def test_listing_a_report_prints_one_train_command_per_config(capsys):
    table = R.run("003")
    out = capsys.readouterr().out
    configs = {r["config"] for r in table}
    assert out.count("medseg train --config") == len(configs)
    assert out.count("medseg evaluate") == len(table) and "--protocol report003" in out
    assert all(math.isnan(t["reproduced"]) for t in table)


# ----------------------------------------------------------------------------- protocols
def _pair():
    """Four axial slices: 0 reference only, 1 both (a 4x4 square vs the same shifted by one column),
    2 prediction only, 3 both empty."""
    ref = np.zeros((4, 12, 12), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 2:6, 2:6] = 1
    ref[1, 4:8, 4:8] = 1
    pred[1, 4:8, 5:9] = 1
    pred[2, 1:3, 1:3] = 1
    return pred, ref


def test_protocol_units_follow_each_report():
    pred, ref = _pair()
    sp = (6.0, 0.5, 0.5)
    units = {
        name: P.score_case(P.get_protocol(name), {"x": pred}, {"x": ref}, sp)
        for name in ("report000", "report002", "report003", "report004")
    }
    assert [u["slice"] for u in units["report000"]] == [0, 1]  # ovary-positive slices
    assert [u["slice"] for u in units["report004"]] == [1]  # both non-empty
    assert [u["slice"] for u in units["report002"]] == [0, 1, 2, 3]  # every slice
    assert [u["slice"] for u in units["report003"]] == [None]  # the whole case
    # slice 1: |A|=|B|=16, overlap 12 -> Dice 0.75; report 002 adds epsilon 0.001
    assert units["report004"][0]["dice"] == pytest.approx(0.75)
    assert units["report002"][1]["dice"] == pytest.approx((24 + 0.001) / (32 + 0.001))
    assert units["report002"][3]["dice"] == pytest.approx(1.0)  # both empty = 1 in report 002
    assert units["report002"][2]["dice"] == pytest.approx(0.001 / (4 + 0.001))
    # report 004 scores at the public code's pixel spacing, not the file's: a one-column shift
    # -> every directed distance is 0 or 1 pixel = 0.033586 mm
    assert units["report004"][0]["hd95_mm"] == pytest.approx(0.033586)
    # the 3D case: Dice over the volume 2*12 / (32 + 4 + 16)
    assert units["report003"][0]["dice"] == pytest.approx(24 / 52)


def test_protocol_averages_per_case_then_over_cases_or_over_pooled_units():
    cases = {
        "a": [{"label": "x", "dice": 1.0}, {"label": "x", "dice": 0.0}, {"label": "x", "dice": 0.5}],
        "b": [{"label": "x", "dice": 0.9}],
    }
    for us in cases.values():
        for u in us:
            u.update({k: math.nan for k in P.SCORED if k != "dice"})
    pooled = P.aggregate(P.get_protocol("report000"), cases)
    per_case = P.aggregate(P.get_protocol("report004"), cases)
    assert pooled["x"]["dice"]["mean"] == pytest.approx((1 + 0 + 0.5 + 0.9) / 4) and pooled["x"]["dice"]["n"] == 4
    assert per_case["x"]["dice"]["mean"] == pytest.approx((0.5 + 0.9) / 2) and per_case["x"]["dice"]["n"] == 2
    assert math.isnan(pooled["x"]["hd95_mm"]["mean"]) and pooled["n_units"] == 4
    with pytest.raises(Exception, match="no evaluation protocol 'report999'"):
        P.get_protocol("report999")


def test_evaluate_with_a_protocol_scores_the_same_predictions_the_reports_way(tmp_path):
    """Predictions made elsewhere (the reference with its first labelled slice erased): medseg's protocol
    sees the missed slice; report 004's skips it (both masks must be non-empty) and scores 1.0."""
    from medseg_core.data.make_synthetic import ensure_synthetic
    from medseg_core.evaluate import main as evaluate
    from medseg_core.io import load_mask, load_volume, save_mask_nifti

    data = tmp_path / "microus"
    ensure_synthetic(data, {"kind": "microus", "n": 2, "seed": 3})
    preds = tmp_path / "preds"
    preds.mkdir()
    for f in sorted((data / "train" / "expert_annotations").glob("*.nii.gz")):
        nn = f.name.split("_")[-1].split(".")[0]
        vol = load_volume(str(data / "train" / "micro_ultrasound_scans" / f"microUS_train_{nn}.nii.gz"))
        m = load_mask(str(f), vol)
        first = int(np.flatnonzero(m.reshape(m.shape[0], -1).any(1))[0])
        m[first] = 0  # medseg arrays are (z, y, x): erase the first labelled axial slice
        save_mask_nifti(m, vol, preds / f"microUS_train_{nn}.nii.gz")
    common = [
        "--predictions",
        str(preds),
        "--data",
        str(data),
        "--adapter",
        "microsegnet",
        "--prediction-labels",
        "{1: prostate}",
        "--label-map",
        "{prostate: expert}",
    ]
    own = evaluate(common + ["--out", str(tmp_path / "own")])
    r004 = evaluate(common + ["--out", str(tmp_path / "r004"), "--protocol", "report004"])
    assert own["prostate"]["dice"]["mean"] < 0.999
    assert r004["protocol_scores"]["prostate"]["dice"]["mean"] == pytest.approx(1.0)
    assert r004["protocol_scores"]["prostate"]["hd95_mm"]["mean"] == pytest.approx(0.0)
    assert r004["protocol"]["name"] == "report004"
    assert (tmp_path / "r004" / "protocol.csv").read_text().count("\n") > 2
    assert "Report 004" in (tmp_path / "r004" / "summary.md").read_text()
    assert json.loads((tmp_path / "r004" / "summary.json").read_text())["protocol_scores"]["n_units"] > 2


def test_runs_that_build_on_other_runs_are_trained_after_them_from_this_runs_folder(capsys, tmp_path):
    """Report 001: the primary-data models start from their MMOTU counterparts and the denoised rows
    clean their inputs with the annotation-removal run; the listing trains those first and points the
    later configs at this run's checkpoints."""
    names = [p.stem for p in R.CONFIG_DIR.glob("001_*.yaml")]
    deps = {n: R.dependencies(load_config(R.CONFIG_DIR / f"{n}.yaml")) for n in names}
    denoised = [n for n, d in deps.items() if ("denoiser", "001_denoiser") in d]
    assert denoised and any(k == "init_from" for d in deps.values() for k, _ in d)
    R.run("001", out=tmp_path)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("medseg train")]
    order = [ln.split("configs/reproduce/")[1].split(".yaml")[0] for ln in lines]
    assert len(order) == len(set(order))  # each config trained once
    for n, d in deps.items():
        for key, dep in d:
            assert order.index(dep) < order.index(n)
            line = lines[order.index(n)]
            assert f"{key}={tmp_path / dep / dep}.safetensors" in line


@pytest.mark.slow
def test_smoke_run_of_report_002_trains_every_config_and_prints_the_table(tmp_path, capsys):
    """make reproduce-002 SMOKE=1 in the suite (about a minute here): every row trained on GI phantoms,
    scored with report 002's protocol on the part of the split the report scored, and tabulated."""
    table = R.run("002", execute=True, smoke=True, out=tmp_path)
    rows = R.rows_of("002")
    assert len(table) == len(rows) == 5
    for t, r in zip(table, rows, strict=True):
        assert t["report"] == r.value and 0.0 <= t["reproduced"] <= 1.0, t
    md = (tmp_path / "table.md").read_text()
    assert "**Smoke run**" in md and md.count("| report002 |") == 5
    assert "0.8248" in md  # the report's UNet++ number beside its reproduction
    evals = sorted(p.name for p in (tmp_path / "evaluations").iterdir())
    assert sum(e.endswith("__val") for e in evals) == 3 and sum(e.endswith("__test") for e in evals) == 2
    assert "Report 002: the report's numbers and the reproduced ones" in capsys.readouterr().out
