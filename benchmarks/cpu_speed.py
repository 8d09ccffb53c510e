"""``make bench`` section "cpu": 3D inference speed on the CPU (issue 20 item 5).

1. One batch of sliding-window inputs (4 x 1 x 64^3) through the shipped ``unet3d``, every way
   tried: PyTorch float32 (contiguous), channels-last-3d (kept, :mod:`medseg_core.runtime`),
   bfloat16 autocast, ``torch.compile`` (first call and steady state) and ONNX Runtime (only when
   installed: it is not a dependency). Largest logit difference to float32 PyTorch for each, and
   for bfloat16 the voxels whose mask changes in a whole ``predict`` of the CT phantom.
2. ``predict`` with ``unet3d`` on a 300 x 512 x 512 CT (random HU, 1.5 x 0.8 x 0.8 mm, as the memory
   rows), with ``MEDSEG_CHANNELS_LAST=0`` and with the default: seconds and stage timings.
3. ``predict`` / bare MONAI sliding window on a CT phantom large enough for the ratio to be stable
   (128 x 256 x 256): the bare call with the PyTorch module as loaded (what a user would write), and
   with the same channels-last module as predict (what predict adds around the same windows).
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from medseg_core import runtime as RT
from medseg_core.checkpoints import load_model
from medseg_core.data.synthetic import abdominal_ct
from medseg_core.inference import predict
from medseg_core.io import Volume
from medseg_core.preprocessing import preprocess


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls (every section of make bench uses it)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


class _ChannelsLast:
    """``MEDSEG_CHANNELS_LAST`` set for a block, restored afterwards."""

    def __init__(self, value: str) -> None:
        self.value, self.old = value, None

    def __enter__(self):
        self.old = os.environ.get("MEDSEG_CHANNELS_LAST")
        os.environ["MEDSEG_CHANNELS_LAST"] = self.value

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("MEDSEG_CHANNELS_LAST", None)
        else:
            os.environ["MEDSEG_CHANNELS_LAST"] = self.old


def window_rows(quick: bool) -> list[dict]:
    lm = load_model("unet3d")
    m = lm.module.eval()
    x = torch.randn(4, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    reps = 3 if quick else 7
    rows = []
    with torch.inference_mode():
        ref = m(x)

        def row(way, fn, out=None, note="", **extra):
            ms = median_time(fn, reps) * 1000
            got = fn() if out is None else out
            rows.append(
                {
                    "way": way,
                    "ms": round(ms, 1),
                    "max_logit_diff": float((got.float() - ref).abs().max()),
                    "note": note,
                    **extra,
                }
            )
            print(rows[-1], flush=True)

        row("PyTorch float32", lambda: m(x))
        mc = copy.deepcopy(m).to(memory_format=torch.channels_last_3d)
        xc = x.to(memory_format=torch.channels_last_3d)
        row("PyTorch channels-last-3d (kept)", lambda: mc(xc))

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m(x)

        row("PyTorch bfloat16 autocast", bf16, **_bf16_effect(lm))
        if not quick:
            comp = torch.compile(copy.deepcopy(m))
            t = time.perf_counter()
            comp(x)
            first = time.perf_counter() - t
            row("torch.compile (inductor)", lambda: comp(x), note=f"first call {first:.0f} s (compilation)")
        ort_forward = _onnxruntime(m, x)
        if ort_forward is None:
            rows.append({"way": "ONNX Runtime", "ms": None, "note": "not installed (not a dependency; see runtime.py)"})
        else:
            row("ONNX Runtime", ort_forward)
    return rows


def _onnxruntime(m, x):
    """The module exported to ONNX and run by ONNX Runtime, when onnx and onnxruntime are installed."""
    try:
        import tempfile

        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.onnx"
        torch.onnx.export(m, (x,), path, input_names=["x"], dynamic_axes={"x": {0: "b"}}, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    arr = x.numpy()
    return lambda: torch.from_numpy(sess.run(None, {"x": arr})[0])


def _bf16_effect(lm) -> dict:
    """Voxels whose mask changes when a whole predict on the CT phantom runs under bfloat16 autocast."""
    vol = abdominal_ct(3).volume
    with _ChannelsLast("0"):
        a = predict(lm, vol)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = predict(lm, vol)
    ma, mb = a.mask.astype(bool), b.mask.astype(bool)
    dice = 2 * (ma & mb).sum() / max(ma.sum() + mb.sum(), 1)
    return {"bf16_changed_voxels": int((ma != mb).sum()), "bf16_mask_voxels": int(ma.sum()), "bf16_dice": float(dice)}


def big_ct_rows(quick: bool) -> list[dict]:
    lm = load_model("unet3d")
    rng = np.random.default_rng(0)
    shape = (300, 512, 512)
    arr = rng.normal(40, 20, shape).astype(np.float32)
    vol = Volume(arr, (1.5, 0.8, 0.8), np.diag([0.8, 0.8, 1.5, 1.0]), modality="CT")
    rows = []
    for flag in ("0", "1"):
        with _ChannelsLast(flag):
            predict(lm, vol)  # warm-up (and, for ONNX Runtime, the one-time export)
            runs = []
            for _ in range(1 if quick else 3):
                t = time.perf_counter()
                p = predict(lm, vol)
                runs.append((time.perf_counter() - t, p.timings, p.runtime))
        runs.sort(key=lambda r: r[0])
        sec, timings, name = runs[len(runs) // 2]
        rows.append(
            {
                "runtime": name,
                "seconds": round(sec, 2),
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "volume": " x ".join(map(str, shape)),
            }
        )
        print(rows[-1], flush=True)
    return rows


def predict_vs_monai(quick: bool) -> dict:
    from monai.inferers import sliding_window_inference

    lm = load_model("unet3d")
    spec = lm.spec
    small = abdominal_ct(11).volume
    big = F.interpolate(torch.from_numpy(small.array)[None, None], scale_factor=2, mode="trilinear")[0, 0].numpy()
    sp = tuple(s / 2 for s in small.spacing)
    vol = Volume(big, sp, np.diag([sp[2], sp[1], sp[0], 1.0]), modality="CT")
    x = torch.from_numpy(preprocess(spec.preprocessing, vol.array, **spec.preprocessing_params))[None, None]
    new_shape = tuple(
        max(1, int(round(n * s / ts))) for n, s, ts in zip(vol.shape, vol.spacing, spec.target_spacing, strict=True)
    )
    x = F.interpolate(x, size=new_shape, mode="trilinear", align_corners=False)
    # a copy of the module as loaded (contiguous: what a user's bare call runs), and the module itself
    # in the layout predict gives it
    plain = copy.deepcopy(lm.module)
    name = RT.prepare(lm)

    def bare(net):
        with torch.inference_mode():
            return sliding_window_inference(
                x,
                roi_size=tuple(lm.size),
                sw_batch_size=spec.sw_batch_size,
                predictor=net,
                overlap=spec.sw_overlap,
                mode="gaussian",
            )

    reps = 2 if quick else 9
    pred = predict(lm, vol)
    bare(plain)
    bare(lm.module)
    ours, base, same = [], [], []
    for _ in range(reps):  # interleaved, so drifts in machine load hit all three alike
        t = time.perf_counter()
        predict(lm, vol)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare(plain)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare(lm.module)
        same.append(time.perf_counter() - t)
    t_ours, t_bare, t_same = (statistics.median(v) for v in (ours, base, same))
    return {
        "volume": " x ".join(map(str, vol.shape)),
        "spacing_mm": " x ".join(f"{s:g}" for s in vol.spacing),
        "model_grid": " x ".join(map(str, new_shape)),
        "runtime": name,
        "predict_s": round(t_ours, 3),
        "bare_monai_s": round(t_bare, 3),
        "bare_same_runtime_s": round(t_same, 3),
        "ratio": round(t_ours / t_bare, 3),
        "ratio_same_runtime": round(t_ours / t_same, 3),
        "predict_timings": {k: round(v, 3) for k, v in pred.timings.items()},
    }


def layout_2d_rows(quick: bool) -> list[dict]:
    """Every shipped 2D checkpoint: one batch of 8 at its input size, contiguous vs channels-last
    weights (interleaved), and whether :data:`medseg_core.runtime.CHANNELS_LAST_2D` uses it."""
    from medseg_core.checkpoints import checkpoint_status
    from medseg_core.models import get_spec, list_models

    rows = []
    reps = 3 if quick else 7
    for name in list_models():
        spec = get_spec(name)
        if spec.dims != "2d" or checkpoint_status(name) != "ok":
            continue
        m = load_model(name).module.eval()
        h, w = load_model(name).size[-2:]
        x = torch.randn(8, spec.in_channels, h, w, generator=torch.Generator().manual_seed(0))
        args = (x, torch.zeros(8, 2)) if spec.clinical_inputs else (x,)
        cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            a = median_time(lambda m=m, args=args: m(*args), reps)
            b = median_time(lambda cl=cl, args=args: cl(*args), reps)
            a = min(a, median_time(lambda m=m, args=args: m(*args), reps))
        rows.append(
            {
                "model": name,
                "input": f"8 x {h} x {w}",
                "contiguous_ms": round(a * 1000, 1),
                "channels_last_ms": round(b * 1000, 1),
                "ratio": round(b / a, 2),
                "used": name in RT.CHANNELS_LAST_2D,
            }
        )
        print(rows[-1], flush=True)
    return rows


def cpu_speed(quick: bool) -> dict:
    return {"windows": window_rows(quick), "big_ct": big_ct_rows(quick), "layout_2d": layout_2d_rows(quick)}
