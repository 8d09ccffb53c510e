"""``python benchmarks/mc_prefix.py``: what computing the encoder once saves in MC dropout.

For each model with decoder-only dropout (``spec.mc_prefix``), times N = 10 MC samples computed
naively (N full passes, what report 003 did), with the cached encoder (the default of predict: equal
to the naive passes sample for sample, checked) and with the cached encoder and the N decoder passes
batched into one (``PredictOptions(mc_batched=True)``: other dropout masks, same distribution), and
prints the median of 3 runs and the ratios to the naive time.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg_core import uncertainty as U  # noqa: E402
from medseg_core.models import build_model, get_spec, list_models  # noqa: E402

SIZES = {
    "ovary_unet": (24, 96, 96),
    "ovary_attention_unet": (24, 96, 96),
    "ovary_tl5": (24, 96, 96),
    "us_mtl_effb0": (1, 168, 272),
    "us_mtl_unet": (1, 168, 272),
}


def _forwards(model, clin, size) -> tuple[Callable, Callable | None]:
    """The full forward and the decoder-only head (None without clinical inputs) as sigmoid probabilities."""
    if clin is None:
        return (lambda t: torch.sigmoid(model(t))), None

    def full(t):
        return torch.sigmoid(model(t, clin)["seg"])

    def head(s):  # clinical rows for however many items the state holds (batched: N copies)
        c = clin[:1].expand(U._batch_size(s), -1)
        return torch.sigmoid(model.decode(s, c, size=size)["seg"])

    return full, head


def main(n: int = 10, repeats: int = 3) -> list[dict]:
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for name in [m for m in list_models() if get_spec(m).mc_prefix and m in SIZES]:
        spec = get_spec(name)
        torch.manual_seed(0)
        model = build_model(name, "demo").eval()
        b, h, w = SIZES[name]
        x = torch.randn(b, 1, h, w)
        clin = torch.tensor([[1.0, 0.0]] * b)
        full, head = _forwards(model, clin if spec.clinical_inputs else None, (h, w))
        t_naive, t_prefix, t_batched = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a = U.mc_samples_naive(full, model, x, n, seed=1)
            t_naive.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = U.mc_samples_prefix(model, x, n, seed=1, head=head)
            t_prefix.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            U.mc_samples_prefix(model, x, n, seed=1, head=head, batched=True)
            t_batched.append(time.perf_counter() - t0)
        equal = bool(torch.allclose(a, c, atol=1e-5))
        rows.append(
            {
                "model": name,
                "input": f"{b} x {h} x {w}",
                "samples": n,
                "naive_s": round(statistics.median(t_naive), 3),
                "cached_encoder_s": round(statistics.median(t_prefix), 3),
                "ratio": round(statistics.median(t_prefix) / statistics.median(t_naive), 3),
                "batched_s": round(statistics.median(t_batched), 3),
                "batched_ratio": round(statistics.median(t_batched) / statistics.median(t_naive), 3),
                "equal": equal,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
