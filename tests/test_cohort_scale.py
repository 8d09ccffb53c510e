"""Cohorts at scale (issue 20 item 4): the typed Parquet store, the columnar gallery operations and
the cohort sharded under torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from medseg_core import analysis as A
from medseg_core import cohort as C
from medseg_core import cohort_store as S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """2 models x 3 option sets x 30 cases x 12 slices = 2 160 rows, with CSV exports."""
    return S.synthetic_run(
        tmp_path_factory.mktemp("tbl") / "small", n_models=2, n_sets=3, n_cases=30, n_slices=12, seed=3, csv_export=True
    )


def test_numeric_looking_case_ids_stay_strings_in_old_csv_runs(tmp_path):
    """The hand-written coercion turned '007' into 7 and '1e3' into 1000.0; the declared schema keeps
    case ids strings, numbers numbers, empty numbers missing, tags a list."""
    (tmp_path / "old.csv").write_text(
        "model,set,case,slice,dice,ref_present,uncertainty,tags\n"
        "m,orig,007,3,0.5,True,,missed;fragmented\n"
        "m,orig,1e3,0,nan,False,0.25,\n"
    )
    rows = C.read_rows(tmp_path / "old.csv")
    assert [r["case"] for r in rows] == ["007", "1e3"]
    assert rows[0]["slice"] == 3 and isinstance(rows[0]["slice"], int) and rows[0]["slice_number"] == 4
    assert rows[0]["dice"] == 0.5 and rows[0]["ref_present"] is True and math.isnan(rows[0]["uncertainty"])
    assert rows[0]["tags"] == ["missed", "fragmented"] and rows[1]["tags"] == []
    assert math.isnan(rows[1]["dice"]) and rows[1]["uncertainty"] == 0.25
    # rows written by the engine carry slice but not slice_number: the store adds it beside slice
    t = S.arrow_table([{"case": "007", "slice": 4, "dice": 1.0}], S.SLICE_SCHEMA)
    assert t.column_names == ["case", "slice", "slice_number", "dice"] and t["slice_number"].to_pylist() == [5]


def test_old_csv_only_run_opens_typed_and_gets_its_parquet(small_run, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(small_run, old)
    (old / "slices.parquet").unlink()
    (old / "cases.parquet").rename(old / "cases_kept.parquet")
    C.write_csv(old / "cases.csv", C.read_rows(old / "cases_kept.parquet"))
    run = C.load_run(old)
    assert (old / "slices.parquet").exists() and (old / "cases.parquet").exists()  # read once, then Parquet
    new = C.load_run(small_run)
    assert len(run.slices) == len(new.slices) == 2 * 3 * 30 * 12
    a, b = run.slices[:50], new.slices[:50]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and x["case"] == y["case"] and isinstance(x["case"], str)
        assert all(x[k] == y[k] or (isinstance(x[k], float) and math.isnan(x[k]) and math.isnan(y[k])) for k in x)
    schema = pq.read_schema(old / "slices.parquet")
    assert str(schema.field("case").type) == "string" and str(schema.field("tags").type) == "list<element: string>"
    assert run.cases[0]["case"] == "0000"


def _reference_filter(rows, tags=None, models=None, sets=None, dice_range=(0.0, 1.0), unc=None):
    """The gallery filter of issue 17, on dict rows, written out by hand."""
    out = []
    for r in rows:
        if not (r["ref_present"] or r["pred_present"]):
            continue
        if tags and not set(tags) & set(r["tags"]):
            continue
        if (models and r["model"] not in models) or (sets and r["set"] not in sets):
            continue
        if not dice_range[0] <= r["dice_star"] <= dice_range[1]:
            continue
        u = r["uncertainty"]
        if unc and not math.isnan(u) and not unc[0] <= u <= unc[1]:
            continue
        out.append(r)
    return out


@pytest.mark.parametrize("how", list(C.SORT_KEYS))
def test_columnar_filter_sort_counts_equal_the_dict_rows(small_run, how):
    run = C.load_run(small_run)
    rows = list(run.slices)
    assert isinstance(run.slices, S.RowTable) and len(rows) == 2160
    for args in (
        (["side_swap", "double_ovary"], None, ["orig"], (0.0, 1.0), None),
        (["under_segmentation"], ["model_1"], ["orig", "masked"], (0.2, 0.7), (0.05, 0.3)),
        (None, None, None, (0.0, 1.0), None),
    ):
        got = C.sort_slices(C.filter_slices(run.slices, *args), how)
        want = sorted(_reference_filter(rows, *args), key=C.SORT_KEYS[how][0], reverse=C.SORT_KEYS[how][1])
        assert len(got) == len(want) > 0
        key = [(r["model"], r["set"], r["case"], r["slice"]) for r in want]
        assert [(r["model"], r["set"], r["case"], r["slice"]) for r in got[:]] == key
        counts = C.tag_counts(got)
        assert counts == A.tag_counts(want)
    # a hand count: rows tagged side_swap in the orig set among informative slices
    n = sum(
        1 for r in rows if "side_swap" in r["tags"] and r["set"] == "orig" and (r["ref_present"] or r["pred_present"])
    )
    assert C.tag_counts(C.filter_slices(run.slices, sets=["orig"]))["side_swap"] == n > 0
    # the CSV export has the rows, tags ';'-joined
    text = C.rows_csv(C.filter_slices(run.slices, ["missed"], None, ["orig"])).decode().splitlines()
    assert len(text) == 1 + len(_reference_filter(rows, ["missed"], None, ["orig"]))
    assert all("missed" in line for line in text[1:])


def test_synthetic_run_has_a_realistic_tag_mix(small_run):
    run = C.load_run(small_run)
    c = C.tag_counts(run.slices)
    n = len(run.slices)
    assert 0.4 < c["good"] / n < 0.95
    assert all(c[t] > 0 for t in ("missed", "false_positive_empty", "side_swap", "double_ovary", "under_segmentation"))
    # side masking (oracle) removes double ovaries, as in real runs
    assert C.tag_counts(C.filter_slices(run.slices, sets=["masked"], informative_only=False))["double_ovary"] == 0
    for r in run.slices[:200]:
        assert r["primary"] == next(t for t in A.PRIMARY_ORDER if t in r["tags"])


def _slice_key(run: Path) -> list[tuple]:
    r = C.load_run(run)
    return sorted(
        (
            x["model"],
            x["set"],
            x["case"],
            x["slice"],
            x["primary"],
            tuple(x["tags"]),
            None if math.isnan(x["dice"]) else round(x["dice"], 9),
            None if math.isnan(x["hd95_mm"]) else round(x["hd95_mm"], 6),
        )
        for x in r.slices
    )


@pytest.mark.skipif(
    not shutil.which("torchrun", path=str(Path(sys.executable).parent))
    and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_sharded_cohort_under_torchrun_equals_one_process_and_resumes(tmp_path):
    """Two CPU processes (torchrun, gloo) on a folder where one (model, set, case) was already
    finished: that part is kept, not recomputed; the other cases are shared between the ranks; rank 0
    merges; the rows equal one process's (up to order, in fact in the same order)."""
    from medseg_core.checkpoints import checkpoint_status
    from medseg_core.data import datasets as D
    from medseg_core.data.make_synthetic import ensure_synthetic

    if checkpoint_status("ovary_unet") != "ok":
        pytest.skip("ovary_unet checkpoint not shipped")
    data = tmp_path / "pelvic"
    ensure_synthetic(data, {"kind": "pelvic", "n": 3, "seed": 5})
    cases = D.ut_endomri_d2(data)
    sets = {"orig": {}, "masked": {"side_masking": "oracle"}}
    one = C.run_cohort(
        cases[:3], ["ovary_unet"], sets, tmp_path / "one", dataset={"adapter": "ut_endomri_d2", "root": str(data)}
    )
    two = tmp_path / "two"
    (two / "parts").mkdir(parents=True)
    (two / "masks").mkdir()
    first = cases[0].case_id
    kept = C.part_file(two, "ovary_unet", "orig", first)
    shutil.copy(C.part_file(one, "ovary_unet", "orig", first), kept)  # finished before the interruption
    shutil.copy(C.mask_file(one, "ovary_unet", "orig", first), C.mask_file(two, "ovary_unet", "orig", first))
    before = kept.stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "medseg_core.cohort",
        "--models",
        "ovary_unet",
        "--data",
        str(data),
        "--adapter",
        "ut_endomri_d2",
        "--set",
        "orig:",
        "--set",
        "masked:side_masking=oracle",
        "--max-cases",
        "3",
        "--out",
        str(two),
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert kept.stat().st_mtime_ns == before  # not recomputed
    assert "kept from before" in p.stdout
    meta = C.read_meta(two)
    assert meta["processes"] == 2 and meta["case_ids"] == [c.case_id for c in cases[:3]]
    assert C.read_progress(two)["state"] == "done" and C.read_progress(two)["done"] == 6
    assert _slice_key(two) == _slice_key(one) and len(_slice_key(one)) == 2 * 3 * 24
    # in the same order too: rank 0 merges in the canonical order
    assert [(x["set"], x["case"], x["slice"]) for x in C.load_run(two).slices] == [
        (x["set"], x["case"], x["slice"]) for x in C.load_run(one).slices
    ]
    for c in cases[:3]:
        for s in sets:
            a, _ = C.read_masks(one, "ovary_unet", s, c.case_id)
            b, _ = C.read_masks(two, "ovary_unet", s, c.case_id)
            assert (a == b).all()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert json.dumps(strip(C.load_run(two).cases[:]), default=str) == json.dumps(
        strip(C.load_run(one).cases[:]), default=str
    )
    # every column the cohort writes is declared (none falls back to a string by default)
    assert S.undeclared(pq.read_schema(two / "slices.parquet").names) == []
    assert S.undeclared(pq.read_schema(two / "cases.parquet").names) == []
    assert str(pq.read_schema(two / "slices.parquet").field("case").type) == "string"
    assert C.load_run(two).slices[5]["slice_number"] == C.load_run(two).slices[5]["slice"] + 1
    assert np.all([isinstance(x["case"], str) for x in C.load_run(two).cases])
    # cohort calibration merged by rank 0 equals one process's (issue 18 item 4); probabilities made
    # with other thread counts may differ in the last bits, so ECE to 1e-6, not the file's bytes
    from medseg_core.calibration import cohort_reliability

    cal_one, cal_two = cohort_reliability(one), cohort_reliability(two)
    assert list(cal_two) == list(cal_one) and len(cal_one) == 2 * 2
    for k, rel in cal_one.items():
        assert cal_two[k].n == rel.n and abs(cal_two[k].ece - rel.ece) < 1e-6


def test_uncertainty_scatter_scores_every_slice_and_draws_a_fixed_sample(tmp_path):
    """A 300 000-row run: the AUROC and counts are of every informative slice (equal to
    analysis.uncertainty_auroc on the dict rows), the picture draws at most SCATTER_POINTS of them, the
    same ones on every call, both groups in the legend with their totals."""
    run = C.load_run(S.synthetic_run(tmp_path / "big", n_cases=500, n_slices=50))
    table = run.slices
    assert len(table) == 300_000
    fig, au = C.uncertainty_scatter(table)
    ref = A.uncertainty_auroc(table.records())
    assert au["n_failed"] == ref["n_failed"] and au["n_good"] == ref["n_good"]
    assert au["auroc"] == pytest.approx(ref["auroc"], abs=1e-12) and 0.5 < au["auroc"] < 1.0
    assert au["n_drawn"] == C.SCATTER_POINTS == sum(len(t.x) for t in fig.data)
    assert [t.name for t in fig.data] == [
        f"good ({sum(1 for _ in fig.data[0].x):,} of {au['n_good']:,} drawn)",
        f"failed ({sum(1 for _ in fig.data[1].x):,} of {au['n_failed']:,} drawn)",
    ]
    again, _ = C.uncertainty_scatter(table)
    assert list(again.data[1].x) == list(fig.data[1].x)
    # a small selection is drawn whole, from dict rows as well
    few = table.records(0, 500)
    fig_few, au_few = C.uncertainty_scatter(few)
    assert au_few["n_drawn"] == au_few["n_failed"] + au_few["n_good"] == sum(len(t.x) for t in fig_few.data)
    assert au_few["auroc"] == pytest.approx(A.uncertainty_auroc(few)["auroc"], abs=1e-12) or math.isnan(au_few["auroc"])
