"""Does a model's confidence mean anything? Reliability diagrams, expected calibration error and
temperature scaling, for segmentation (voxel level) and classification (case level).

Binary calibration throughout: a prediction is a probability ``p`` of the positive class (foreground
voxel, malignant case) and the truth is 0/1. Probabilities are grouped into ``n_bins`` equal-width
bins on [0, 1]; in each bin the *confidence* is the mean ``p`` and the *observed frequency* is the
fraction of positives. A calibrated model has frequency = confidence in every bin.

* ECE (expected calibration error) = sum over bins of (n_b / N) * |frequency_b - confidence_b|
  (Naeini et al. 2015; Guo et al. 2017 use the same binning on the top-class confidence, which for a
  binary problem is the same diagram folded at 0.5, so the numbers differ: this module uses p of the
  positive class, the form that reliability diagrams of segmentation maps use);
* MCE = the largest |frequency_b - confidence_b| over non-empty bins.

Voxel-level ECE over a whole CT is dominated by millions of confidently-right background voxels and
says little; ``region="near"`` restricts the voxels to the bounding box of prediction and reference
together, grown by ``margin`` voxels (default 8), which is where a reviewer looks. Both are offered and
the region is always named with the number.

Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` applied to the logits,
``p' = sigmoid(logit(p) / T)``, fitted on a validation split by minimising the negative
log-likelihood (a bounded 1-D search on log T); it changes confidence, never the ranking of
voxels, so at threshold 0.5 the mask is unchanged. :class:`Accumulator` gathers bin counts case by
case so a cohort never holds all voxels at once; :func:`fit_temperature` subsamples voxels
(``max_samples``, seeded) for the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .checkpoints import LoadedModel
    from .data.datasets import Case
    from .inference import PredictOptions


EPS = 1e-6


@dataclass
class Reliability:
    """One reliability diagram: per bin the count, mean confidence and observed frequency."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray  # NaN in empty bins
    frequency: np.ndarray  # NaN in empty bins
    ece: float
    mce: float
    n: int
    region: str = "all"

    def rows(self) -> list[dict]:
        """One row per non-empty bin, in words for a table."""
        return [
            {
                "Bin": f"{self.edges[i]:.2f}-{self.edges[i + 1]:.2f}",
                "Voxels or cases": int(self.counts[i]),
                "Mean predicted probability": float(self.confidence[i]),
                "Observed frequency": float(self.frequency[i]),
            }
            for i in range(len(self.counts))
            if self.counts[i]
        ]


@dataclass
class Accumulator:
    """Bin sums over many cases (a cohort): add probabilities and truths case by case."""

    n_bins: int = 15
    counts: np.ndarray = field(init=False)
    sum_p: np.ndarray = field(init=False)
    sum_y: np.ndarray = field(init=False)
    region: str = "all"

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.n_bins, np.int64)
        self.sum_p = np.zeros(self.n_bins, np.float64)
        self.sum_y = np.zeros(self.n_bins, np.float64)

    def add(self, probs: ArrayLike, truth: ArrayLike) -> Accumulator:
        p = np.clip(np.asarray(probs, np.float64).ravel(), 0.0, 1.0)
        y = (np.asarray(truth).ravel() > 0).astype(np.float64)
        if p.shape != y.shape:
            raise ValueError(f"probabilities ({p.size}) and truth ({y.size}) differ in size")
        b = np.minimum((p * self.n_bins).astype(np.int64), self.n_bins - 1)
        self.counts += np.bincount(b, minlength=self.n_bins)
        self.sum_p += np.bincount(b, weights=p, minlength=self.n_bins)
        self.sum_y += np.bincount(b, weights=y, minlength=self.n_bins)
        return self

    def result(self) -> Reliability:
        n = int(self.counts.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(self.counts > 0, self.sum_p / np.maximum(self.counts, 1), np.nan)
            freq = np.where(self.counts > 0, self.sum_y / np.maximum(self.counts, 1), np.nan)
        gap = np.abs(freq - conf)
        ece = float(np.nansum(self.counts / max(n, 1) * gap)) if n else math.nan
        mce = float(np.nanmax(gap)) if n else math.nan
        return Reliability(
            np.linspace(0.0, 1.0, self.n_bins + 1), self.counts.copy(), conf, freq, ece, mce, n, self.region
        )


def near_region(pred: ArrayLike, ref: ArrayLike, margin: int = 8) -> tuple[slice, ...]:
    """The bounding box of prediction and reference together, grown by ``margin`` voxels per side
    (clipped to the array); the whole array when both are empty."""
    u = (np.asarray(pred) > 0) | (np.asarray(ref) > 0)
    if not u.any():
        return tuple(slice(0, s) for s in u.shape)
    idx = np.nonzero(u)
    return tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, s))
        for i, s in zip(idx, u.shape, strict=True)
    )


def reliability(
    probs: ArrayLike,
    truth: ArrayLike,
    n_bins: int = 15,
    region: str = "all",
    pred: ArrayLike | None = None,
    margin: int = 8,
) -> Reliability:
    """The reliability diagram and ECE of one probability map (or a vector of case probabilities)
    against its truth. ``region="near"`` uses :func:`near_region` of ``pred`` (default: ``probs >= 0.5``)
    and the truth."""
    probs, truth = np.asarray(probs), np.asarray(truth)
    if region == "near":
        box = near_region(probs >= 0.5 if pred is None else pred, truth, margin)
        probs, truth = probs[box], truth[box]
    elif region != "all":
        raise ValueError(f"region must be 'all' or 'near', not {region!r}")
    return Accumulator(n_bins, region=region).add(probs, truth).result()


# ----------------------------------------------------------------------------- temperature scaling
def logit(p: ArrayLike) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs: ArrayLike, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` in float32 (T = 1 returns the probabilities unchanged)."""
    if temperature == 1.0:
        return np.asarray(probs, np.float32)
    z = logit(probs) / float(temperature)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def nll(probs: ArrayLike, truth: ArrayLike) -> float:
    """Mean binary negative log-likelihood (cross-entropy) in nats."""
    p = np.clip(np.asarray(probs, np.float64).ravel(), EPS, 1 - EPS)
    y = np.asarray(truth).ravel() > 0
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def fit_temperature(
    probs: ArrayLike,
    truth: ArrayLike,
    max_samples: int = 2_000_000,
    seed: int = 0,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """The temperature minimising the NLL of ``sigmoid(logit(p) / T)`` on (a seeded subsample of) the
    given validation probabilities and truths."""
    from scipy.optimize import minimize_scalar

    z = logit(probs).ravel()
    y = (np.asarray(truth).ravel() > 0).astype(np.float64)
    if z.size != y.size:
        raise ValueError("probabilities and truth differ in size")
    if z.size > max_samples:
        keep = np.random.default_rng(seed).choice(z.size, max_samples, replace=False)
        z, y = z[keep], y[keep]
    if y.min() == y.max():
        raise ValueError("temperature scaling needs both classes in the validation data")

    def f(log_t: float) -> float:
        s = z / math.exp(log_t)
        # log(1 + exp(-s)) for y=1 and log(1 + exp(s)) for y=0, stably
        return float(np.mean(np.logaddexp(0.0, -s) * y + np.logaddexp(0.0, s) * (1 - y)))

    res = minimize_scalar(
        f, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(res.x))


def reliability_figure(rel: Reliability, title: str = "", height: int = 360) -> go.Figure:
    """A plotly reliability diagram: observed frequency against mean predicted probability per bin
    (marker size by count), the diagonal of perfect calibration, ECE in the title."""
    import plotly.graph_objects as go

    ok = rel.counts > 0
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(dash="dash", color="#888"),
            name="Perfect calibration",
            hoverinfo="skip",
        )
    )
    size = 6 + 14 * np.sqrt(rel.counts[ok] / max(rel.counts.max(), 1))
    fig.add_trace(
        go.Scatter(
            x=rel.confidence[ok],
            y=rel.frequency[ok],
            mode="lines+markers",
            marker=dict(size=size),
            name="Model",
            customdata=rel.counts[ok],
            hovertemplate="Mean predicted %{x:.2f}<br>Observed %{y:.2f}<br>n = %{customdata}",
        )
    )
    where = "all voxels" if rel.region == "all" else "voxels near the structure"
    fig.update_layout(
        title=(title + ": " if title else "") + f"ECE {rel.ece:.3f}<br><sup>{where}, n = {rel.n:,}</sup>",
        xaxis_title="Mean predicted probability",
        yaxis_title="Observed frequency",
        xaxis=dict(range=[0, 1]),
        yaxis=dict(range=[0, 1]),
        height=height,
        margin=dict(l=50, r=10, t=50, b=45),
        showlegend=False,
    )
    return fig


# ----------------------------------------------------------------------------- fitting a checkpoint
def collect(
    lm: LoadedModel,
    cases: Sequence[Case],
    options: PredictOptions | None = None,
    region: str = "near",
    margin: int = 8,
    per_case: int = 200_000,
    seed: int = 0,
    label_map: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Validation evidence of a model through the one engine: for segmentation a seeded subsample of
    (probability, truth) voxels per case (``region`` as in :func:`reliability`), for a benign/malignant
    classifier the cases' (p(malignant), truth). Returns ``(probs, truth, n_cases, kind)``."""
    from .engine import evaluate_cases

    rng = np.random.default_rng(seed)

    def voxels(case, pred, refs, volume):
        out = []
        for lab, ref in refs.items():
            p = pred.probabilities.get(lab)
            if p is None:
                continue
            box = (
                near_region(pred.masks_before_postprocessing.get(lab, p >= 0.5), ref, margin)
                if region == "near"
                else tuple(slice(0, s) for s in p.shape)
            )
            pv, yv = p[box].ravel(), (np.asarray(ref)[box] > 0).ravel()
            if pv.size > per_case:
                keep = rng.choice(pv.size, per_case, replace=False)
                pv, yv = pv[keep], yv[keep]
            out.append({"p": pv.astype(np.float32), "y": yv})
        return out

    ps, ys, n, kind = [], [], 0, "voxels"
    for res in evaluate_cases(lm, cases, options, label_map, per_slice=False, scorer=voxels):
        n += 1
        if res.p_malignant is not None and res.malignant is not None:
            kind = "cases"
            ps.append(np.array([res.p_malignant], np.float32))
            ys.append(np.array([res.malignant > 0]))
        else:
            for u in res.units or []:
                ps.append(u["p"])
                ys.append(u["y"])
    if not ps:
        raise ValueError("no validation evidence: the cases have no reference masks or class labels")
    return np.concatenate(ps), np.concatenate(ys), n, kind


def calibrate_checkpoint(
    ref: str, cases: Sequence[Case], source: str, region: str = "near", write: bool = True, n_bins: int = 15
) -> dict:
    """Fit a temperature for checkpoint ``ref`` on ``cases`` (its validation data) and store it in the
    card's ``recipe.calibration`` (with ECE before and after on the same evidence, the region, the
    number of cases and voxels, and ``source``: what the cases were). Returns that entry."""
    import datetime
    import json

    from .checkpoints import find_checkpoint, load_model

    lm = load_model(ref)
    probs, truth, n_cases, kind = collect(lm, cases, region=region)
    t = fit_temperature(probs, truth)
    before = Accumulator(n_bins, region=region).add(probs, truth).result()
    after = Accumulator(n_bins, region=region).add(apply_temperature(probs, t), truth).result()
    entry = {
        "method": "temperature scaling (NLL)",
        "temperature": round(t, 6),
        "evidence": kind,
        "region": region if kind == "voxels" else "cases",
        "n_cases": n_cases,
        "n": int(probs.size),
        "ece_before": before.ece,
        "ece_after": after.ece,
        "nll_before": nll(probs, truth),
        "nll_after": nll(apply_temperature(probs, t), truth),
        "fitted_on": source,
        "date": datetime.date.today().isoformat(),
    }
    if write:
        cref = find_checkpoint(ref)
        card = json.loads(cref.card_path.read_text())
        card.setdefault("recipe", {})["calibration"] = entry
        cref.card_path.write_text(json.dumps(card, indent=1, default=str))
    return entry


def main(argv: list[str] | None = None) -> dict:
    """``medseg calibrate --model REF --data DIR --adapter A [--split val] [--region near|all] [--dry-run]``"""
    import argparse

    from .data import datasets as D
    from .evaluate import split_part
    from .io.errors import InputError

    ap = argparse.ArgumentParser(
        description="Fit temperature scaling for a checkpoint on validation data and store "
        "it in its card (the app's 'Calibrated probabilities' switch uses it)."
    )
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--adapter", required=True, choices=sorted(D.ADAPTERS))
    ap.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test", "all"),
        help="which part of the checkpoint's recorded split to fit on (default val; all = every case)",
    )
    ap.add_argument("--region", default="near", choices=("near", "all"))
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--dry-run", action="store_true", help="print the fit, leave the card unchanged")
    a = ap.parse_args(argv)
    from pathlib import Path

    if not Path(a.data).is_dir():
        raise InputError(f"The dataset folder '{a.data}' does not exist.")
    cases = D.ADAPTERS[a.adapter](a.data)
    if a.split != "all":
        cases = split_part(cases, a.model, a.split)
    cases = cases[: a.max_cases] if a.max_cases else cases
    entry = calibrate_checkpoint(
        a.model, cases, f"{a.adapter}:{a.data} ({a.split}, {len(cases)} cases)", region=a.region, write=not a.dry_run
    )
    print(
        f"temperature {entry['temperature']:.3f}: ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f}, "
        f"NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f} over {entry['n']:,} {entry['evidence']} of "
        f"{entry['n_cases']} cases" + (" (card unchanged)" if a.dry_run else " (written to the card)")
    )
    return entry


if __name__ == "__main__":
    from .cli import guarded

    guarded(main)


def card_calibration(card: dict | None) -> dict | None:
    """A card's ``recipe.calibration`` entry (temperature, where it was fitted, ECE before/after), or
    None when the model was never calibrated."""
    cal = ((card or {}).get("recipe") or {}).get("calibration")
    return dict(cal) if cal and cal.get("temperature") is not None else None
