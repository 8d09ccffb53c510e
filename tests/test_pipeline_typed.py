"""The typed pipeline (issue 20 items 2 and 5): stage dataclasses, the one MC / TTA sampler that
predict() runs, batched-decoder MC sampling, channels-last 3D weights on the CPU, and the exact
speed-ups of post-processing and the envelope check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg_core import inference as I
from medseg_core import postprocess as P
from medseg_core import runtime as R
from medseg_core import uncertainty as U
from medseg_core.cards import check_envelope
from medseg_core.checkpoints import LoadedModel, load_model
from medseg_core.data.synthetic import abdominal_ct
from medseg_core.inference import PredictOptions, predict
from medseg_core.io import Volume
from medseg_core.models import build_model, get_spec
from medseg_core.preprocessing import ELEMENTWISE, preprocess
from medseg_core.results import GridMaps, LabelResult, ModelOutput, Prediction

torch.set_num_threads(2)


def _loaded(name: str) -> LoadedModel:
    return LoadedModel(get_spec(name), build_model(name, "demo").eval(), input_size=(32, 32))


# ------------------------------------------------------------------ the sampler predict() runs
@pytest.mark.parametrize("name", ["ovary_unet", "us_mtl_unet"])
def test_predicts_mc_batch_is_the_tested_sampler_sample_for_sample(name):
    """_batch_probs (what predict runs per 2D batch) returns exactly the naive full passes."""
    lm = _loaded(name)
    opts = PredictOptions(mc_samples=4, seed=5, menopausal=1, oncology_center=0)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    mean, samples = I._batch_probs(lm, x, opts)
    assert isinstance(mean, ModelOutput) and mean.seg is not None and mean.seg.shape == (3, 1, 32, 32)
    naive = U.mc_samples_naive(
        lambda t: I._outputs_to_probs(lm.spec, I._forward(lm, t, opts)).seg[:, 0], lm.module, x, 4, 5
    )
    torch.testing.assert_close(samples, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean.seg[:, 0], naive.mean(0), rtol=1e-5, atol=1e-6)
    if name == "us_mtl_unet":  # the classification head is sampled with the same masks and averaged
        assert mean.cls is not None and mean.cls.shape == (3, 2)
        torch.testing.assert_close(mean.cls.sum(1), torch.ones(3))


def test_batched_decoder_samples_differ_but_come_from_the_same_distribution():
    m = build_model("ovary_unet", "demo").eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    seq = U.mc_samples_prefix(m, x, 200, seed=1)
    bat = U.mc_samples_prefix(m, x, 200, seed=1, batched=True)
    again = U.mc_samples_prefix(m, x, 200, seed=1, batched=True)
    assert bat.shape == seq.shape == (200, 2, 1, 32, 32)
    torch.testing.assert_close(bat, again)  # reproducible with its seed
    assert not torch.allclose(bat, seq)  # other masks than the sequential passes ...
    assert float((bat[0] - bat[1]).abs().max()) > 0  # ... and different masks per sample
    # ... drawn from the same distribution: the per-pixel means of 200 samples agree to within a few
    # standard errors (the sample standard deviation / sqrt(200) bounds the expected gap)
    se = torch.sqrt(seq.var(0) / 200 + bat.var(0) / 200) + 1e-6
    z = ((seq.mean(0) - bat.mean(0)).abs() / se).flatten()
    assert float((z < 4).float().mean()) > 0.99
    assert m.training is False and all(not d.training for d in U.dropout_layers(m))


def test_batched_option_reaches_predict_and_keeps_the_maps_consistent():
    lm = _loaded("ovary_unet")
    rng = np.random.default_rng(0)
    v = Volume(rng.random((3, 40, 36)).astype(np.float32) * 100, (5.0, 0.8, 0.8), np.diag([0.8, 0.8, 5, 1]), "MR")
    p = predict(lm, v, PredictOptions(mc_samples=6, mc_batched=True, seed=3))
    q = predict(lm, v, PredictOptions(mc_samples=6, mc_batched=True, seed=3))
    r = predict(lm, v, PredictOptions(mc_samples=6, seed=3))
    assert p.uncertainty is not None and p.uncertainty.n_samples == 6 and p.uncertainty.method == "mc_dropout"
    np.testing.assert_array_equal(p.uncertainty.maps["entropy"], q.uncertainty_maps["entropy"])
    assert not np.array_equal(p.uncertainty_maps["variance"], r.uncertainty_maps["variance"])
    np.testing.assert_allclose(p.probability, p.uncertainty_maps["mean"], atol=1e-5)


def test_tta_runs_through_the_one_flip_loop_for_model_outputs():
    lm = _loaded("us_mtl_unet")
    opts = PredictOptions(tta=True, menopausal=0, oncology_center=1)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    mean, samples = I._batch_probs(lm, x, opts)
    want = U.tta_samples(lambda t: I._outputs_to_probs(lm.spec, I._forward(lm, t, opts)).seg[:, 0], x, 2)
    torch.testing.assert_close(samples, want)
    # the class probabilities are averaged over the flipped passes, not flipped
    with torch.inference_mode():
        cls = [
            I._outputs_to_probs(lm.spec, I._forward(lm, torch.flip(x, a) if a else x, opts)).cls for a in U.flip_axes(2)
        ]
    torch.testing.assert_close(mean.cls, torch.stack(cls).mean(0))


# ------------------------------------------------------------------ typed results
def test_prediction_is_organised_by_what_it_holds_and_its_flat_names_are_read_only_views():
    lm = _loaded("us_mtl_unet")
    v = Volume(np.random.default_rng(1).random((1, 40, 50)).astype(np.float32) * 255, (1, 0.2, 0.2), np.eye(4), "US")
    p = predict(lm, v, PredictOptions(menopausal=1, oncology_center=1, class_threshold=0.5))
    assert isinstance(p, Prediction) and list(p.per_label) == list(lm.spec.labels)
    r = p.per_label[lm.spec.labels[0]]
    assert isinstance(r, LabelResult) and r.probability is not None and r.mask.shape == (1, 40, 50)
    assert p.masks[lm.spec.labels[0]] is r.mask and p.probability is r.probability
    assert p.classification is not None and p.class_probabilities is p.classification.probabilities
    assert p.malignant == (p.classification.probabilities[1] >= 0.5)
    assert p.shape == p.geometry.shape == (1, 40, 50) and p.restoration is None and p.uncertainty is None
    with pytest.raises(TypeError):
        p.masks["x"] = r.mask  # type: ignore[index]  # views: write through per_label
    assert p.runtime == R.CHANNELS_LAST_2D_WORDS and p.timings["total_s"] > 0


def test_grid_maps_go_back_through_the_pelvis_geometry_typed():
    g = GridMaps(seg=np.zeros((1, 2, 3, 3), np.float32))
    assert g.replace(runtime=R.CHANNELS_LAST).runtime == R.CHANNELS_LAST and g.runtime == R.CONTIGUOUS


# ------------------------------------------------------------------ channels-last 3D on the CPU
def test_unet3d_with_channels_last_weights_gives_the_same_segmentation(monkeypatch):
    vol = abdominal_ct(3).volume
    monkeypatch.setenv("MEDSEG_CHANNELS_LAST", "0")
    ref = predict(load_model("unet3d"), vol)
    monkeypatch.setenv("MEDSEG_CHANNELS_LAST", "1")
    lm = load_model("unet3d")
    fast = predict(lm, vol)
    assert ref.runtime == R.CONTIGUOUS and fast.runtime == R.CHANNELS_LAST
    conv = next(p for p in lm.module.parameters() if p.dim() == 5 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    assert float(np.abs(fast.probability - ref.probability).max()) < 1e-5
    assert int((fast.mask != ref.mask).sum()) <= 2  # a voxel exactly at the threshold may tip
    assert int(ref.mask.sum()) > 1000  # a real segmentation, not two empty masks
    # MC dropout runs the same (channels-last) module
    assert predict(lm, vol, PredictOptions(mc_samples=2)).runtime == R.CHANNELS_LAST


def test_2d_models_take_channels_last_where_it_was_measured_faster_with_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(4)
    v = Volume(rng.random((4, 80, 70)).astype(np.float32) * 100, (5.0, 0.8, 0.8), np.diag([0.8, 0.8, 5, 1]), "MR")
    monkeypatch.setenv("MEDSEG_CHANNELS_LAST", "0")
    ref = predict(load_model("ovary_unet"), v)
    monkeypatch.setenv("MEDSEG_CHANNELS_LAST", "1")
    lm = load_model("ovary_unet")
    fast = predict(lm, v)
    assert ref.runtime == R.CONTIGUOUS and fast.runtime == R.CHANNELS_LAST_2D_WORDS
    conv = next(p for p in lm.module.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert float(np.abs(fast.probability - ref.probability).max()) < 1e-5
    tl5 = load_model("ovary_tl5")  # measured slower in channels-last: stays contiguous
    assert predict(tl5, v).runtime == R.CONTIGUOUS and all(p.is_contiguous() for p in tl5.module.parameters())


@pytest.mark.parametrize("name", ["vnet3d", "unetr3d"])
def test_every_3d_architecture_takes_the_channels_last_layout_with_the_same_numbers(name, monkeypatch):
    kw = {"img_size": (32, 32, 32)} if name == "unetr3d" else {}
    m = build_model(name, "demo", **kw).eval()
    lm = LoadedModel(get_spec(name), m, input_size=(32, 32, 32))
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = m(x)
        assert R.prepare(lm) == R.CHANNELS_LAST
        got = m(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("MEDSEG_CHANNELS_LAST", "0")
    assert R.prepare(lm) == R.CONTIGUOUS
    assert all(p.is_contiguous() for p in m.parameters())


# ------------------------------------------------------------------ exact speed-ups
def test_largest_component_in_its_bounding_box_equals_labelling_the_whole_volume():
    rng = np.random.default_rng(7)
    for _ in range(20):
        m = np.zeros((30, 40, 50), bool)
        for _ in range(rng.integers(0, 5)):
            z, y, x = rng.integers(0, 25), rng.integers(0, 35), rng.integers(0, 45)
            m[z : z + rng.integers(1, 6), y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
        lab, n = ndimage.label(m)
        want = m.copy() if n <= 1 else lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        kept, removed = P.largest_component_3d(m.astype(np.uint8))
        np.testing.assert_array_equal(kept.astype(bool), want)
        np.testing.assert_array_equal(removed.astype(bool), m & ~want)
    assert P.bounding_box(np.zeros((3, 3), bool)) is None
    box = P.bounding_box(np.pad(np.ones((2, 3), bool), ((4, 1), (0, 5))))
    assert box == (slice(4, 6), slice(0, 3))


def test_envelope_check_samples_before_an_elementwise_preprocessing_and_gets_the_same_percentiles():
    vol = abdominal_ct(1).volume
    x = vol.array.ravel()
    step = max(1, x.size // 2_000_000)
    assert "ct_window" in ELEMENTWISE
    np.testing.assert_array_equal(
        preprocess("ct_window", x[::step]), preprocess("ct_window", vol.array).ravel()[::step]
    )
    lm = load_model("unet3d")
    assert check_envelope(lm.spec, lm.envelope, vol) == []  # a case like its training data passes


def test_a_denoised_models_input_is_cleaned_once_even_when_the_page_cleaned_it_first(monkeypatch):
    """Report 001's denoised models: predict cleans the input with the card's denoiser, unless the
    image says that denoiser already removed its annotations (the Ultrasound page's switch)."""
    from medseg_core import denoise as DN

    lm = LoadedModel(
        get_spec("us_mtl_unet"), build_model("us_mtl_unet", "demo").eval(), card={"denoiser": "us_denoiser"}
    )
    rng = np.random.default_rng(2)
    v = Volume((rng.random((1, 60, 80)) * 255).astype(np.float32), (1, 0.2, 0.2), np.eye(4), "US")
    calls = []
    real = DN.apply_denoiser
    monkeypatch.setattr(DN, "apply_denoiser", lambda vol, ref: (calls.append(vol.name), real(vol, ref))[1])
    opts = PredictOptions(menopausal=1, oncology_center=0)
    raw = predict(lm, v, opts)
    assert len(calls) == 1 and not any("annotations were removed" in w for w in raw.warnings)
    cleaned = real(v, "us_denoiser")
    assert cleaned.meta["annotation_removed"] == "us_denoiser"
    again = predict(lm, cleaned, opts)
    assert len(calls) == 1  # not cleaned a second time
    np.testing.assert_allclose(again.probability, raw.probability, atol=1e-6)
    other = v.with_array(v.array, meta=dict(v.meta, annotation_removed="another_denoiser"))
    p = predict(lm, other, opts)
    assert len(calls) == 2 and any("another_denoiser" in w for w in p.warnings)
