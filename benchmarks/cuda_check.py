"""``python benchmarks/cuda_check.py``: the CUDA path gives the CPU's answers.

For several registry models (seeded random weights), ``predict`` runs on the CPU and on the GPU and
the probability maps are compared; MC dropout and TTA run on the GPU; a tiny model trains on the GPU
through the training CLI. Prints one JSON line per check and exits non-zero on a mismatch. Needs a
CUDA device (not part of ``make test``: CI has none).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg_core.checkpoints import LoadedModel  # noqa: E402
from medseg_core.data import synthetic as syn  # noqa: E402
from medseg_core.inference import PredictOptions, predict  # noqa: E402
from medseg_core.models import build_model, get_spec  # noqa: E402


def run(name, vol, size, opts, **over):
    out = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        m = build_model(name, "demo", **over).eval().to(dev)
        lm = LoadedModel(get_spec(name), m, {}, dev, size)
        t = time.perf_counter()
        out[dev] = (predict(lm, vol, opts), time.perf_counter() - t)
    a, b = out["cpu"][0], out["cuda"][0]
    diff = float(np.abs(a.probability - b.probability).max()) if a.probability is not None else 0.0
    cls = (
        float(np.abs(a.class_probabilities - b.class_probabilities).max()) if a.class_probabilities is not None else 0.0
    )
    return {
        "model": name,
        "max_abs_prob_diff": diff,
        "max_abs_class_diff": cls,
        "cpu_s": round(out["cpu"][1], 3),
        "cuda_s": round(out["cuda"][1], 3),
        "ok": diff < 2e-3 and cls < 2e-3,
    }


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    results = []
    ct = syn.abdominal_ct(0).volume
    pel = syn.pelvic_mri(0).volume
    us = syn.ultrasound(0).volume
    results.append(run("unet3d", ct, (64, 64, 64), PredictOptions()))
    results.append(run("unetr3d", ct, (64, 64, 64), PredictOptions()))
    results.append(run("ovary_unet", pel, (96, 96), PredictOptions()))
    results.append(run("ovary_tl5", pel, (96, 96), PredictOptions(side_masking="two_pass")))
    results.append(run("us_mtl_effb0", us, (168, 272), PredictOptions(menopausal=1, oncology_center=0)))
    results.append(run("us_cascade", us, (168, 272), PredictOptions(menopausal=0, oncology_center=1)))
    results.append(run("gi_unetpp_effb3", syn.gi_mri(0).volume, (128, 128), PredictOptions()))
    # MC dropout and TTA on the GPU
    torch.manual_seed(0)
    lm = LoadedModel(get_spec("ovary_unet"), build_model("ovary_unet", "demo").eval().cuda(), {}, "cuda", (96, 96))
    p = predict(lm, pel, PredictOptions(mc_samples=8, seed=1))
    q = predict(lm, pel, PredictOptions(mc_samples=8, seed=1))
    results.append(
        {
            "check": "mc_dropout_cuda",
            "variance_max": float(p.uncertainty_maps["variance"].max()),
            "deterministic": bool(np.array_equal(p.uncertainty_maps["entropy"], q.uncertainty_maps["entropy"])),
            "ok": float(p.uncertainty_maps["variance"].max()) > 0,
        }
    )
    t = predict(lm, pel, PredictOptions(tta=True))
    results.append(
        {
            "check": "tta_cuda",
            "entropy_max": float(t.uncertainty_maps["entropy"].max()),
            "ok": t.uncertainty_method == "tta",
        }
    )
    # training on the GPU through the CLI
    import yaml

    from medseg_core import train as T

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "model": "ovary_unet",
            "variant": "demo",
            "input_size": [96, 96],
            "data": {
                "adapter": "ut_endomri_d2",
                "root": f"{tmp}/pelvic",
                "synthetic": {"kind": "pelvic", "n": 8, "seed": 3},
                "positive_slices_only": True,
            },
            "loss": {"name": "focal_tversky"},
            "optim": {"name": "adam", "lr": 0.002},
            "train": {"epochs": 2, "batch_size": 8, "patience": 5, "select_by": "val_dice", "seed": 0},
            "out": f"{tmp}/ck",
        }
        Path(f"{tmp}/c.yaml").write_text(yaml.safe_dump(cfg))
        t0 = time.perf_counter()
        T.main(["--config", f"{tmp}/c.yaml"])
        card = json.loads(Path(f"{tmp}/ck/ovary_unet.json").read_text())
        results.append(
            {
                "check": "train_cuda",
                "device": card["device"],
                "seconds": round(time.perf_counter() - t0, 1),
                "test": card["test"],
                "ok": card["device"].startswith("cuda"),
            }
        )
    for r in results:
        print(json.dumps(r))
    bad = [r for r in results if not r["ok"]]
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "torch": torch.__version__,
                "checks": len(results),
                "failed": len(bad),
            }
        )
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
