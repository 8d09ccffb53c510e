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

Over a cohort (issue 18 item 4): a cohort run keeps each case's bin sums (:func:`case_bins`,
:func:`prediction_bins`) and merges them per model and option set into ``calibration.json``
(:func:`cohort_entries`); :func:`cohort_calibration` / :func:`cohort_reliability` read it back for
the failure gallery's Calibration tab. Bin sums add exactly, so the cohort's diagram is the one of
all its cases' voxels together, without holding them at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .checkpoints import LoadedModel
    from .data.datasets import Case
    from .inference import Prediction, PredictOptions


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


#: A reliability diagram's region in words (figure subtitles, the gallery's calibration tab).
REGION_WORDS = {"all": "all voxels", "near": "voxels near the structure", "cases": "cases, p(malignant)"}


# ----------------------------------------------------------------------------- cohorts
def case_bins(
    probs: ArrayLike,
    truth: ArrayLike,
    pred: ArrayLike | None = None,
    n_bins: int = 15,
    margin: int = 8,
) -> dict[str, dict[str, list]]:
    """One case's bin sums (:class:`Accumulator`: counts, sum of p, sum of truth per bin) for region
    "all" and region "near" (:func:`near_region` of ``pred``, default ``probs >= 0.5``, and the truth),
    as JSON-ready lists: ``{"all": {"counts", "sum_p", "sum_y"}, "near": {...}}``. Summed over cases
    by :func:`merge_bins` they give the cohort's diagram exactly (bin sums add; issue 18 item 4)."""
    p, y = np.asarray(probs), np.asarray(truth)
    box = near_region(p >= 0.5 if pred is None else pred, y, margin)
    out = {}
    for region, (pp, yy) in (("all", (p, y)), ("near", (p[box], y[box]))):
        acc = Accumulator(n_bins, region=region).add(pp, yy)
        out[region] = {"counts": acc.counts.tolist(), "sum_p": acc.sum_p.tolist(), "sum_y": acc.sum_y.tolist()}
    return out


def merge_bins(parts: Sequence[dict], n_bins: int = 15, region: str = "all") -> Reliability:
    """The reliability diagram of several cases from their :func:`case_bins` entries for ``region``
    (summed in the order given, so the same parts in the same order give the same floats)."""
    return _accumulate(parts, n_bins, region).result()


def _accumulate(parts: Sequence[dict], n_bins: int, region: str) -> Accumulator:
    acc = Accumulator(n_bins, region=region)
    for b in parts:
        acc.counts += np.asarray(b["counts"], np.int64)
        acc.sum_p += np.asarray(b["sum_p"], np.float64)
        acc.sum_y += np.asarray(b["sum_y"], np.float64)
    return acc


def prediction_bins(pred: Prediction, refs: dict, n_bins: int = 15, margin: int = 8) -> dict | None:
    """A cohort part's calibration evidence from one engine prediction (``pred``, a
    :class:`~medseg_core.inference.Prediction`) and its references (``refs``, label -> mask, as
    :func:`medseg_core.engine.evaluate_cases` hands them to a scorer): :func:`case_bins` of the first
    label's probability map against its reference (near the first label's mask), the case-level pair
    ``case: [p(malignant), label]`` when the prediction has a benign/malignant head and the case a
    label (``malignant``, filled in by the caller), and ``temperature`` (the card temperature applied,
    None for the model's own probabilities). None when there is nothing to measure (a folder of
    predictions has no probabilities)."""
    out: dict = {"temperature": (pred.calibration or {}).get("temperature")}
    first = next(iter(pred.masks), None)
    if first is not None:
        probs, ref = pred.probabilities.get(first), refs.get(first)
        if probs is not None and ref is not None and np.shape(probs) == np.shape(ref):
            out.update(case_bins(probs, ref, pred.masks[first], n_bins, margin))
    cp = pred.class_probabilities
    if cp is not None and len(cp) == 2:
        out["p_malignant"] = float(cp[1])
    return out if set(out) - {"temperature"} else None


def cohort_entries(parts: Sequence[tuple[str, str, dict | None]], n_bins: int = 15, margin: int = 8) -> dict:
    """``calibration.json`` of a cohort run from its parts' calibration evidence, given as
    (model, option set, :func:`prediction_bins` + ``malignant``) in the run's canonical order: per
    model and set, for each region ("all", "near" voxels; "cases" for p(malignant) against the
    case label) the bin counts and sums, ECE, MCE and n, plus the number of cases measured and the
    temperatures applied."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for model, set_name, ev in parts:
        groups.setdefault((model, set_name), [])
        if ev:
            groups[(model, set_name)].append(ev)
    entries = []
    for (model, set_name), evs in groups.items():
        regions = {}
        for region in ("all", "near"):
            have = [e[region] for e in evs if region in e]
            if have:
                regions[region] = _entry(_accumulate(have, n_bins, region))
        pairs = [(e["p_malignant"], e["malignant"]) for e in evs if e.get("malignant") is not None]
        if pairs:
            acc = Accumulator(n_bins, region="cases").add([p for p, _ in pairs], [y for _, y in pairs])
            regions["cases"] = _entry(acc)
        if regions:
            temps = sorted({e.get("temperature") for e in evs}, key=lambda t: (t is None, t or 0.0))
            entries.append(
                {
                    "model": model,
                    "set": set_name,
                    "n_cases": sum(1 for e in evs if "all" in e),
                    "temperatures": temps,
                    "regions": regions,
                }
            )
    return {"n_bins": n_bins, "margin": margin, "entries": entries}


def _entry(acc: Accumulator) -> dict:
    """One region of ``calibration.json``: the bin counts and sums, and their ECE, MCE and n."""
    rel = acc.result()
    return {
        "counts": acc.counts.tolist(),
        "sum_p": acc.sum_p.tolist(),
        "sum_y": acc.sum_y.tolist(),
        "ece": rel.ece,
        "mce": rel.mce,
        "n": rel.n,
    }


@dataclass
class CohortCalibration:
    """A cohort run's ``calibration.json`` read back: ``reliability[(model, set, region)]`` the
    diagram (region "all" or "near" voxels, "cases" for p(malignant)), ``n_cases[(model, set)]`` the
    cases measured and ``temperatures[(model, set)]`` the card temperatures applied to those
    probabilities (``[None]``: the model's own probabilities; a number: temperature-scaled, the
    option set asked for ``calibrated=True`` and the card had one)."""

    reliability: dict[tuple[str, str, str], Reliability]
    n_cases: dict[tuple[str, str], int]
    temperatures: dict[tuple[str, str], list]

    def regions(self, model: str, set_name: str) -> list[str]:
        return [r for (m, s, r) in self.reliability if (m, s) == (model, set_name)]

    def pairs(self) -> list[tuple[str, str]]:
        """The (model, option set) pairs measured, in the run's order."""
        return list(self.n_cases)

    def rows(self, titles: dict[str, str] | None = None) -> list[dict]:
        """Every model, option set and region side by side, in words for a table (``titles``: model
        name -> the title to show)."""
        from .labels import set_name

        return [
            {
                "Model": (titles or {}).get(m, m),
                "Option set": set_name(s),
                "Evidence": REGION_WORDS.get(r, r),
                "Expected calibration error": rel.ece,
                "Maximum calibration error": rel.mce,
                "Voxels or cases": rel.n,
            }
            for (m, s, r), rel in self.reliability.items()
        ]

    def probability_words(self, model: str, set_name: str, requested: bool = False) -> str:
        """Which probabilities the numbers are of, in one sentence: the model's own, or
        temperature-scaled with the card's temperature (``requested``: the option set asked for
        ``calibrated=True``, :mod:`medseg_core.calibration` ``main``, ``medseg calibrate``)."""
        temps = self.temperatures.get((model, set_name), [None])
        fitted = [t for t in temps if t is not None]
        if not fitted:
            return (
                "The option set asked for calibrated probabilities, but the model's card has no temperature: "
                "these are the model's own probabilities."
                if requested
                else "These are the model's own probabilities (the option set did not ask for calibrated ones)."
            )
        words = ", ".join(f"{t:.3g}" for t in fitted)
        mixed = " for some cases" if None in temps else ""
        return (
            f"These are calibrated probabilities{mixed}: temperature-scaled with the card's temperature {words} "
            "('medseg calibrate' fitted it on a validation split), not the model's own."
        )


def cohort_calibration(run_dir: str | Path) -> CohortCalibration | None:
    """The cohort-level calibration of a run folder (its ``calibration.json``, written by
    :func:`medseg_core.cohort.run_cohort`), or None for a run made before it existed."""
    import json

    p = Path(run_dir) / "calibration.json"
    if not p.exists():
        return None
    doc = json.loads(p.read_text())
    rel, n_cases, temps = {}, {}, {}
    for e in doc["entries"]:
        key = (e["model"], e["set"])
        n_cases[key] = int(e["n_cases"])
        temps[key] = list(e["temperatures"])
        for region, r in e["regions"].items():
            rel[(*key, region)] = merge_bins([r], int(doc["n_bins"]), region)
    return CohortCalibration(rel, n_cases, temps)


def cohort_reliability(run_dir: str | Path) -> dict[tuple[str, str, str], Reliability]:
    """``(model, option set, region) -> Reliability`` of a cohort run (empty for a run made before
    cohort calibration existed); see :func:`cohort_calibration`."""
    c = cohort_calibration(run_dir)
    return c.reliability if c else {}


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
    where = REGION_WORDS.get(rel.region, rel.region)
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
