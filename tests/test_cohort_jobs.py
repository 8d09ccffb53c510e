"""Cohort runs on the user's own data, in the background, resumable (issue 17, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg_core import cohort as C
from medseg_core import jobs
from medseg_core.data import datasets as D
from medseg_core.data.make_synthetic import ensure_synthetic
from medseg_core.io import save_mask_nifti
from medseg_core.io.errors import InputError


@pytest.fixture(scope="module")
def pelvic3(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pelvic3")
    ensure_synthetic(root, {"kind": "pelvic", "n": 3, "seed": 11})
    return root


def _rows(run: Path) -> list[tuple]:
    r = C.load_run(run)
    return sorted(
        (x["model"], x["set"], x["case"], x["slice"], round(float(x["dice"]), 6) if x["dice"] == x["dice"] else None)
        for x in r.slices
    )


def test_interrupted_run_resumes_and_keeps_finished_cases(pelvic3, tmp_path):
    cases = D.ut_endomri_d2(pelvic3)
    sets = {"orig": {}, "two_pass": {"side_masking": "two_pass"}}
    clean = C.run_cohort(
        cases, ["ovary_unet"], sets, tmp_path / "clean", dataset={"adapter": "ut_endomri_d2", "root": str(pelvic3)}
    )

    class Stop(Exception):
        pass

    def stop_after_two(done, total, message):
        if done == 2:
            raise Stop  # the tab closed, the server went down...

    out = tmp_path / "interrupted"
    with pytest.raises(Stop):
        C.run_cohort(
            cases,
            ["ovary_unet"],
            sets,
            out,
            progress=stop_after_two,
            dataset={"adapter": "ut_endomri_d2", "root": str(pelvic3)},
        )
    assert len(list((out / "parts").glob("*.json"))) == 2 and not (out / "cohort.json").exists()
    assert C.read_progress(out)["state"] == "running" and C.read_progress(out)["done"] == 2
    messages = []
    C.run_cohort(
        cases,
        ["ovary_unet"],
        sets,
        out,
        progress=lambda d, t, m: messages.append(m),
        dataset={"adapter": "ut_endomri_d2", "root": str(pelvic3)},
    )
    assert sum("kept from before" in m for m in messages) == 2 and len(messages) == 6
    assert C.read_progress(out) | {"updated": None} == {
        "state": "done",
        "done": 6,
        "total": 6,
        "message": "finished",
        "updated": None,
    }
    assert _rows(out) == _rows(clean)


def test_background_run_on_a_generic_folder(pelvic3, tmp_path):
    """A user's own folder (images/ + masks/ NIfTI) is recognised, run in a background thread and
    readable as a gallery run; a folder without a known layout gives a sentence."""
    root = tmp_path / "mydata"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for c in D.ut_endomri_d2(pelvic3)[:2]:
        vol, masks = c.load()
        save_mask_nifti(masks["ovary"], vol, root / "masks" / f"pt{c.case_id}.nii.gz")
        import shutil

        shutil.copy(c.image, root / "images" / f"pt{c.case_id}.nii.gz")
    adapter = D.detect_adapter(root)
    assert adapter == "generic"
    out = tmp_path / "bg"
    assert jobs.start_cohort(out, root, adapter, ["ovary_unet"], {"orig": {}})
    assert not jobs.start_cohort(out, root, adapter, ["ovary_unet"], {"orig": {}}) or not jobs.is_running(out)
    jobs.wait(out, 300)
    assert C.read_progress(out)["state"] == "done"
    run = C.load_run(out)
    assert {x["case"] for x in run.cases} == {f"pt{c.case_id}" for c in D.ut_endomri_d2(pelvic3)[:2]}
    assert all(0 <= x["dice"] <= 1 for x in run.cases)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No supported dataset layout"):
        D.detect_adapter(tmp_path / "empty")
    jobs.start_cohort(tmp_path / "bad", tmp_path / "empty", "msd_spleen", ["ovary_unet"], {"orig": {}})
    jobs.wait(tmp_path / "bad", 60)
    p = C.read_progress(tmp_path / "bad")
    assert p["state"] == "failed" and p["message"]


def test_gallery_starts_a_background_run_on_a_folder(pelvic3, tmp_path, monkeypatch):
    """The gallery page starts a cohort on the user's own folder (a published layout, detected); the
    run goes on in the server and appears in the gallery when done."""
    from conftest import ROOT
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDSEG_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception
    at.radio(key="coh_src").set_value("A dataset folder on this server").run()
    at.text_input(key="coh_folder").set_value(str(pelvic3)).run()
    at.multiselect(key="coh_models").set_value(["ovary_unet"]).run()
    at.slider(key="coh_n").set_value(2).run()
    at.slider(key="coh_mc").set_value(0).run()
    at.multiselect(key="coh_sets").set_value(["orig", "two_pass"]).run()
    next(b for b in at.button if b.label == "Start the run").click().run()
    assert not at.exception
    assert any("started in the background" in s.value for s in at.success)
    out = next((tmp_path / "runs").iterdir())
    jobs.wait(out, 300)
    assert C.read_progress(out)["state"] == "done"
    at.run()
    assert out.name in at.selectbox(key="gallery_run").value
    meta = C.read_meta(out)
    assert meta["dataset"]["adapter"] == "ut_endomri_d2" and len(meta["case_ids"]) == 2
    assert set(meta["option_sets"]) == {"orig", "two_pass"}


def test_models_that_cannot_run_on_the_cases_are_named_before_a_run_starts(pelvic3):
    """The gallery's new-run form: the CT 3D U-Net and the 2D ultrasound models cannot run on pelvic MR
    phantoms (a run with them failed after some parts, advising to 'load a CT case'); the ovary models
    can. Mixing in a model without side masking says why the side-masking sets are not offered."""
    from medseg_core.review import cohort_option_sets, cohort_unfit, dropped_option_sets, segmentation_checkpoints

    seg = segmentation_checkpoints()
    vol = D.ut_endomri_d2(pelvic3)[0].load()[0]
    unfit = cohort_unfit(seg, vol)
    assert unfit["unet3d"] == "needs CT, case is MR"
    assert all(r not in unfit for r, s in seg.items() if s.family == "ovary")
    assert any(s.modalities == ("US",) for r, s in seg.items() if r in unfit)
    specs = [seg["ovary_unet"], seg["unet3d"]]
    assert list(cohort_option_sets(specs)) == ["orig"]
    why = dropped_option_sets(specs)
    assert why.startswith("Oracle side masking and two-pass need every model") and seg["unet3d"].title in why
    assert dropped_option_sets([seg["ovary_unet"]]) == ""


def test_a_failed_run_can_be_dismissed(tmp_path):
    out = tmp_path / "runs" / "bad"
    (out).mkdir(parents=True)
    (out / "job.json").write_text("{}")
    C.write_progress(out, state="failed", done=2, total=6, message="The run stopped.")
    assert jobs.unfinished(tmp_path / "runs") == [out]
    jobs.dismiss(out)
    assert jobs.unfinished(tmp_path / "runs") == [] and out.is_dir()
    assert C.read_progress(out)["message"] == "The run stopped." and C.read_progress(out)["state"] == "dismissed"
