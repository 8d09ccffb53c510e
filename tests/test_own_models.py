"""Your own model, end to end (issue 16): a model trained with the project's own training command
under its own name is evaluated, cohort-run and opened in the app by path, and runs exactly as its
card says (here: RAovSeg preprocessing, which is not the registry default of its architecture)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import ROOT

from medseg_core import cohort as C
from medseg_core import evaluate as E
from medseg_core import train as T
from medseg_core.cards import SCHEMA, CardError, migrate
from medseg_core.checkpoints import CheckpointError, find_checkpoint, list_checkpoints, load_model
from medseg_core.data import datasets as D
from medseg_core.inference import PredictOptions, predict
from medseg_core.models import get_spec
from medseg_core.preprocessing import SliceResize, plan_geometry, preprocess


@pytest.fixture(scope="module")
def m3_run(tmp_path_factory):
    """One tiny epoch of configs/reproduce/000_m3.yaml (Attention U-Net + RAovSeg) on synthetic
    pelvic phantoms: the report's config, only smaller and shorter."""
    tmp = tmp_path_factory.mktemp("m3")
    data = tmp / "pelvic"
    T.main(
        [
            "--config",
            str(ROOT / "configs" / "reproduce" / "000_m3.yaml"),
            f"data.root={data}",
            "data.synthetic={kind: pelvic, n: 4, seed: 3}",
            "train.epochs=1",
            "train.max_steps_per_epoch=2",
            "overrides={base: 4}",
            "input_size=[32, 32]",
            f"out={tmp / 'runs' / '000_m3'}",
        ]
    )
    return tmp, data


def test_trained_card_is_the_recipe(m3_run):
    tmp, _ = m3_run
    card = json.loads((tmp / "runs" / "000_m3" / "000_m3.json").read_text())
    assert card["schema"] == SCHEMA and card["name"] == "000_m3"
    r = card["recipe"]
    assert r["architecture"]["builder"] == "ovary_attention_unet" and r["architecture"]["kwargs"]["attention"] is True
    # report 000: RAovSeg with local contrast enhancement, clipped slice-wise, after the 0.35 mm geometry step
    assert r["preprocessing"]["name"] == "raovseg_sharp" != get_spec("ovary_attention_unet").preprocessing
    assert r["preprocessing"]["params"]["clip_scope"] == "slice"
    assert r["geometry"] == {"inplane_mm": 0.35, "crop": "body", "margin_mm": 10.0}
    assert r["input_size"] == [32, 32] and r["side_masking"] is True
    assert card["envelope"]["spacing_mm"][0] == [6.0, 6.0] and card["envelope"]["intensity"]["after"] == "raovseg_sharp"


def test_load_by_path_folder_and_name(m3_run, monkeypatch):
    tmp, _ = m3_run
    run = tmp / "runs" / "000_m3"
    by_path = load_model(run / "000_m3.safetensors")
    by_folder = load_model(run)
    by_card = load_model(str(run / "000_m3.json"))
    assert by_path.name == by_folder.name == by_card.name == "000_m3"
    assert by_path.spec.preprocessing == "raovseg_sharp" and by_path.size == (32, 32)
    monkeypatch.setenv("MEDSEG_MODELS", str(tmp / "runs"))
    assert [c.name for c in list_checkpoints()] == ["000_m3"]
    assert load_model("000_m3").spec.builder_name == "ovary_attention_unet"
    with pytest.raises(CheckpointError, match="No checkpoint named 'nope'"):
        find_checkpoint("nope")


def test_prediction_uses_raovseg_preprocessing(m3_run):
    """Probe what the network is fed: the card's recipe computed independently (0.35 mm geometry step,
    slice-wise clipped and sharpened RAovSeg, resized to the model grid), not z-scores."""
    tmp, data = m3_run
    lm = load_model(tmp / "runs" / "000_m3" / "000_m3.safetensors")
    vol, _ = D.ut_endomri_d2(data)[0].load()
    seen = []
    h = lm.module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().cpu().numpy().copy()))
    try:
        predict(lm, vol, PredictOptions(batch_size=64))
    finally:
        h.remove()
    fed = np.concatenate(seen)[:, 0]
    work = plan_geometry(vol, **lm.spec.geometry).volume(vol)
    assert work.spacing[1] == pytest.approx(0.35) and work.shape != vol.shape
    expected = SliceResize(work.shape[1:], (32, 32)).forward(
        preprocess("raovseg_sharp", work.array, **lm.spec.preprocessing_params)
    )
    np.testing.assert_allclose(fed, expected, atol=1e-5)
    zscore = SliceResize(work.shape[1:], (32, 32)).forward(preprocess("plain", work.array))
    assert np.abs(fed - zscore).max() > 0.5 and fed.min() >= 0.0 and fed.max() <= 1.0


def test_evaluate_and_cohort_by_path(m3_run):
    tmp, data = m3_run
    ck = str(tmp / "runs" / "000_m3" / "000_m3.safetensors")
    out = tmp / "eval"
    summary = E.main(
        [
            "--model",
            ck,
            "--data",
            str(data),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(out),
            "--option",
            "postprocessing=largest_2d",
        ]
    )
    assert summary["model"] == "000_m3" and summary["n_cases"] == 4
    assert summary["options"]["postprocessing"] == ("largest_2d",)
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 4 and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    run = C.run_cohort(
        D.ut_endomri_d2(data)[:2],
        [ck],
        {"orig": {}, "two_pass": {"side_masking": "two_pass"}},
        tmp / "cohort",
        dataset={"adapter": "ut_endomri_d2", "root": str(data)},
    )
    meta = C.read_meta(run)
    assert meta["models"] == ["000_m3"] and meta["model_refs"]["000_m3"] == ck
    r = C.load_run(run)
    assert {x["model"] for x in r.slices} == {"000_m3"} and {x["set"] for x in r.cases} == {"orig", "two_pass"}


def test_opened_in_the_app_by_path(m3_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    tmp, _ = m3_run
    monkeypatch.setenv("MEDSEG_MODELS", f"{ROOT / 'checkpoints'}:{tmp / 'runs'}")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    assert not at.exception
    ref = str(tmp / "runs" / "000_m3" / "000_m3.safetensors")
    pick = at.sidebar.selectbox(key="model_pick")
    assert ref in pick.options or any("000_m3" in o for o in pick.options)
    at.session_state["model_name"] = ref
    at.run()
    at.button[0].click().run()  # Run model
    assert not at.exception
    pred = at.session_state["predictions"].get(at.session_state["current"])
    assert pred.model == "000_m3" and pred.options.preprocessing == "raovseg_sharp"


def test_old_cards_migrate_and_unknown_schemas_are_refused():
    old = {
        "name": "x",
        "model": "ovary_unet",
        "variant": "demo",
        "overrides": {"base": 8},
        "input_size": [64, 64],
        "preprocessing": "plain",
        "postprocessing": [],
        "labels": ["ovary"],
        "sha256": "0",
    }
    card = migrate(old)
    assert card["schema"] == SCHEMA and card["recipe"]["architecture"]["kwargs"]["base"] == 8
    assert card["recipe"]["input_size"] == [64, 64] and card["migrated_from"] == "medseg-1"
    with pytest.raises(CardError, match="cannot read"):
        migrate({**card, "schema": "medseg.card/99"})
    with pytest.raises(CardError, match="registry"):
        migrate({**card, "recipe": {**card["recipe"], "architecture": {"builder": "evil_net"}}})


def test_shipped_cards_are_current_and_unchanged_weights():
    from medseg_core.checkpoints import read_card, sha256_file

    for c in list_checkpoints([ROOT / "checkpoints"]):
        raw = json.loads(c.card_path.read_text())
        assert raw["schema"] == SCHEMA and raw["envelope"]["n_cases"] > 0, c.name
        assert raw["sha256"] == sha256_file(c.weights), c.name
        assert read_card(c.weights)["recipe"]["labels"]


def test_out_of_envelope_warns_for_a_brain(tmp_path):
    """A T1 brain-like volume (1 mm isotropic, 180 mm across slices) given to an ovary model warns;
    the bundled pelvic case does not."""
    from medseg_core.io import Volume
    from medseg_core.samples import get_sample

    lm = load_model("ovary_attention_unet")
    pelvic, _, _ = get_sample("pelvic").load()
    assert predict(lm, pelvic, PredictOptions(batch_size=32)).warnings == []
    rng = np.random.default_rng(0)
    brain = Volume(rng.normal(100, 20, (180, 96, 96)).astype(np.float32), (1.0, 1.0, 1.0), np.eye(4), modality="MR")
    w = predict(lm, brain, PredictOptions(batch_size=64)).warnings
    assert len(w) == 1 and "outside the data" in w[0] and "slice thickness 1 mm (trained on 6 mm)" in w[0]
    from medseg_core.cards import OUTSIDE

    assert w[0].startswith(OUTSIDE)  # what Segment & review's Results section keys its caveat on


def test_slice_classifier_gate_blanks_the_slices_it_rejects():
    """Report 000's RAovSeg first stage as an option of the ovary models: slices with p(ovary
    present) below the classifier's threshold are empty, and what was blanked is shown as removed."""
    from medseg_core.samples import get_sample

    vol, _, _ = get_sample("pelvic").load()
    lm = load_model("ovary_unet")
    plain = predict(lm, vol, PredictOptions(batch_size=32))
    gated = predict(lm, vol, PredictOptions(batch_size=32, gate="ovary_slice_classifier"))
    p = gated.slice_probabilities
    assert p.shape == (vol.shape[0],) and gated.gate["threshold"] == 0.6
    skipped = gated.gate["skipped"]
    assert skipped == [int(z) for z in np.flatnonzero(p < 0.6)] and 0 < len(skipped) < vol.shape[0]
    assert gated.mask[skipped].sum() == 0
    kept = [z for z in range(vol.shape[0]) if z not in skipped]
    np.testing.assert_array_equal(gated.mask[kept], plain.mask[kept])
    np.testing.assert_array_equal(gated.removed["ovary"][skipped], plain.mask[skipped])
    everything = predict(lm, vol, PredictOptions(batch_size=32, gate="ovary_slice_classifier", gate_threshold=0.0))
    np.testing.assert_array_equal(everything.mask, plain.mask)
    with pytest.raises(Exception, match="slice classifier"):
        predict(lm, vol, PredictOptions(gate="ovary_unet"))


def test_predictions_folder_evaluated_and_in_a_cohort(m3_run, tmp_path):
    """Masks made elsewhere, one NIfTI per case (nnU-Net's evaluate_folder convention): the
    references themselves score Dice 1; a copy with one slice erased scores what that slice costs."""
    from medseg_core import metrics as M
    from medseg_core.io import save_mask_nifti

    _, data = m3_run
    cases = D.ut_endomri_d2(data)
    perfect, damaged = tmp_path / "perfect", tmp_path / "damaged"
    perfect.mkdir(), damaged.mkdir()
    expected = {}
    for c in cases:
        vol, masks = c.load()
        save_mask_nifti(masks["ovary"], vol, perfect / f"{c.case_id}.nii.gz")
        worse = masks["ovary"].copy()
        z = int(np.argmax(worse.reshape(worse.shape[0], -1).sum(1)))
        worse[z] = 0
        save_mask_nifti(worse, vol, damaged / f"{c.case_id}_pred.nii.gz")
        expected[c.case_id] = M.dice(worse, masks["ovary"])
    s = E.main(
        [
            "--predictions",
            str(perfect),
            "--data",
            str(data),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(tmp_path / "e1"),
        ]
    )
    assert s["model"] == "perfect" and s["ovary"]["dice"]["mean"] == pytest.approx(1.0)
    E.main(
        [
            "--predictions",
            str(damaged),
            "--data",
            str(data),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(tmp_path / "e2"),
        ]
    )
    rows = {r["case"]: float(r["dice"]) for r in csv.DictReader((tmp_path / "e2" / "per_case.csv").open())}
    assert rows == pytest.approx(expected) and all(v < 1 for v in rows.values())
    run = C.run_cohort(
        cases[:2],
        ["ovary_unet"],
        {"orig": {}},
        tmp_path / "coh",
        predictions={"colleague": damaged},
        dataset={"adapter": "ut_endomri_d2", "root": str(data)},
    )
    r = C.load_run(run)
    assert {(x["model"], x["set"]) for x in r.cases} == {("ovary_unet", "orig"), ("colleague", C.EXTERNAL_SET)}
    got = {x["case"]: x["dice"] for x in r.cases if x["model"] == "colleague"}
    assert got == pytest.approx({k: expected[k] for k in got})


def test_generic_ultrasound_does_not_default_to_the_prostate_model():
    """An ultrasound image of unknown scale (a PNG: 1 mm pixels assumed) is told apart by the
    envelopes: the ovarian models (trained on such images) come first, the micro-US prostate model
    (0.034 mm pixels) is marked outside its training data; the micro-US sample is the other way round."""
    import io

    from PIL import Image

    from medseg_core.io import load_volume
    from medseg_core.review import compatible_models
    from medseg_core.samples import get_sample

    rng = np.random.default_rng(1)
    png = io.BytesIO()
    speckle = np.clip(rng.rayleigh(18.0, (300, 400)), 0, 255).astype(np.uint8)  # dark, speckled, like B-mode
    Image.fromarray(speckle).save(png, format="PNG")
    vol = load_volume(png.getvalue(), filename="scan.png", modality="US")
    choices = [c for c in compatible_models(vol) if c.ok]
    assert choices[0].family == "ultrasound" and not choices[0].outside
    prostate = next(c for c in choices if c.name == "prostate_microus")
    assert prostate.outside and "pixel size not compared" in prostate.warnings[0]
    micro, _, _ = get_sample("microus").load()
    first = [c for c in compatible_models(micro) if c.ok][0]
    assert first.name == "prostate_microus" and not first.warnings


def test_stated_ultrasound_kind_picks_the_model():
    """What the user says the ultrasound shows comes first in the picker and is checked against
    every model's envelope."""
    import io

    from PIL import Image

    from medseg_core.io import load_volume
    from medseg_core.review import compatible_models, state_anatomy, ultrasound_kinds

    png = io.BytesIO()
    Image.fromarray(np.clip(np.random.default_rng(2).rayleigh(18.0, (224, 224)), 0, 255).astype(np.uint8)).save(
        png, format="PNG"
    )
    vol = load_volume(png.getvalue(), filename="probe.png", modality="US")
    kinds = ultrasound_kinds()
    assert state_anatomy(vol, kinds["Prostate (transrectal micro-ultrasound)"])
    first = [c for c in compatible_models(vol) if c.ok][0]
    assert first.name == "prostate_microus"
    ovarian = next(c for c in compatible_models(vol) if c.name == "us_mtl_effb0")
    assert ovarian.outside and "described as prostate" in ovarian.warnings[0]
    assert state_anatomy(vol, kinds["Adnexal lesion (transvaginal ultrasound)"])
    assert [c for c in compatible_models(vol) if c.ok][0].family == "ultrasound"
    assert not state_anatomy(vol, kinds["Adnexal lesion (transvaginal ultrasound)"])
