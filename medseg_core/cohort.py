"""Cohort runs: models x option sets over a dataset, with per-slice metrics, failure tags and
uncertainty, stored in a folder that the failure gallery reads.

``python -m medseg_core.cohort --models ovary_unet ovary_attention_unet --data DIR --adapter ut_endomri_d2
--set orig:side_masking=none --set masked:side_masking=oracle --mc 8 --out runs/cohorts/NAME``

A run folder holds:

* ``cohort.json``: models, option sets, dataset (adapter, root, case ids), tag rules, settings;
* ``slices.parquet``: one row per (model, option set, case, axial slice): Dice, IoU, HD95 (mm),
  predicted/reference areas (mm^2), Dice before post-processing, tags, primary tag, uncertainty
  (mean entropy in nats over the predicted region, when MC dropout ran);
* ``cases.parquet``: one row per (model, option set, case): 3D metrics and case-level tags;
* ``slices.csv`` / ``cases.csv``: the same rows as CSV exports (``tags`` joined with ';'); the
  Parquet files are the store, typed by a declared schema (:mod:`medseg_core.cohort_store`: case
  ids strings, numbers numbers, tags a list). Runs written before the store (CSV only) still open;
* ``comparisons.csv``: paired per-slice Dice deltas of every option set against the first one;
* ``table1.csv`` / ``table1.md``: report 000's Table 1 format (Dice orig, Dice masked, ΔDice on
  reference-positive slices) when the run has the two option sets it needs;
* ``calibration.json``: cohort-level calibration per model and option set: reliability-diagram bin
  counts and sums (15 bins) of the first label's probabilities for all voxels and for voxels near
  the structure, and of p(malignant) against the case label where both exist, with ECE, MCE and n
  (:func:`medseg_core.calibration.cohort_calibration` reads it; runs made before it lack the file);
* ``masks/<model>__<set>__<case>.npz``: bit-packed predicted masks (after and before
  post-processing), so the gallery draws thumbnails without re-running a model.

Images are not copied: the gallery reloads them from the dataset folder through the adapter.

**Sharding.** Under ``torchrun --nproc_per_node N`` (gloo, CPU is enough) each rank takes
``cases[rank::N]`` of every (model, option set), writes its own ``parts/`` and ``masks/`` files, and
rank 0 merges the parts in the canonical order (models x option sets x cases) and writes the tables,
exactly what one process writes. Finished (model, set, case) parts are never recomputed, whatever
the number of processes of the run that made them (resume after an interruption).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import analysis as A
from . import cohort_store as S
from . import metrics as M
from . import worklist as W
from .render import OTHER_OVARY_COLOUR
from .tables import csv_text, write_csv

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .data.datasets import Case
    from .inference import Prediction, PredictOptions
    from .io import Volume

#: cohort rows: a columnar RowTable or a list of dict rows
Rows = S.RowTable | list[dict]

ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = ROOT / "runs" / "cohorts"

#: Report 000's side-masking comparison: no masking, oracle masking, and the two-pass deployment.
SIDE_SETS = {
    "orig": {"side_masking": "none"},
    "masked": {"side_masking": "oracle"},
    "two_pass": {"side_masking": "two_pass"},
}


def runs_dir() -> Path:
    import os

    return Path(os.environ.get("MEDSEG_RUNS", RUNS_DIR))


def parse_set(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` -> (name, PredictOptions kwargs); the one options parser
    (:func:`medseg_core.options.parse_option_set`)."""
    from .options import parse_option_set

    return parse_option_set(text)


def _pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(mask, bool).ravel())


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def mask_file(run: Path, model: str, set_name: str, case_id: str) -> Path:
    return Path(run) / "masks" / f"{model}__{set_name}__{case_id}.npz"


#: The option-set name under which a folder of predictions made elsewhere appears.
EXTERNAL_SET = "as_delivered"


def part_file(run: Path, model: str, set_name: str, case_id: str) -> Path:
    """One finished (model, option set, case): its slice and case rows, kept so that a run stopped
    halfway (server restart, closed tab) resumes where it stopped."""
    return Path(run) / "parts" / f"{model}__{set_name}__{case_id}.json"


def write_progress(run: Path, **state: Any) -> None:
    """``progress.json``: what a run is doing (state running / done / failed, done, total, message),
    read by the gallery page from any session."""
    p = Path(run) / "progress.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({**state, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}))
    tmp.replace(p)


def read_progress(run: str | Path) -> dict | None:
    p = Path(run) / "progress.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_cohort(
    cases: Sequence[Case],
    models: list,
    option_sets: dict[str, dict],
    out: str | Path,
    mc_samples: int = 0,
    rules: A.TagRules = A.TagRules(),
    dataset: dict | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    directory: str | Path | None = None,
    predictions: dict[str, str | Path] | None = None,
    seed: int = 0,
    resume: bool = True,
    csv_export: bool = True,
    references: str = "dataset",
) -> Path:
    """Run every model with every option set over ``cases`` and write the run folder ``out``.

    ``references`` "corrected" scores each case against the latest correction saved for it in the
    review app (by case id or case key, :func:`medseg_core.correct.corrected_reference_cases`) where
    one exists, else against the dataset's reference; ``cohort.json`` says how many cases used one
    (``references.corrected_cases``) and which files. Default "dataset": the dataset's references.

    ``models``: checkpoint references (shipped names, ``.safetensors`` paths, run folders) or loaded
    models. ``option_sets`` maps a name to :class:`~medseg_core.inference.PredictOptions` keyword
    arguments; the first is the baseline of the paired comparisons. ``predictions`` maps a name to a
    folder of masks made elsewhere (one per case, see :class:`medseg_core.engine.PredictionFolder`):
    they join the gallery next to the models under the option set ``as_delivered``. ``mc_samples``
    > 0 averages MC-dropout samples (``seed`` fixes them; models without dropout run once) and adds
    uncertainty to every row; the stored masks are exactly what predict() returns with those options,
    so the review page reproduces them. ``progress(done, total, message)``; the same is written to
    ``progress.json``. Each finished (model, set, case) is kept under ``parts/``: with ``resume``
    (default) a run started again on the same folder skips what is already done. Under ``torchrun``
    each rank runs ``cases[rank::world]`` and rank 0 merges (module docstring, "Sharding"); the
    tables go to ``slices.parquet`` / ``cases.parquet`` and, with ``csv_export``, to CSV exports.

    Every number comes from the one evaluation engine (:func:`medseg_core.engine.evaluate_cases`).
    """
    from . import uncertainty as U
    from .checkpoints import LoadedModel, load_model
    from .engine import PredictionFolder, evaluate_cases
    from .options import predict_options

    out = Path(out)
    if references not in ("dataset", "corrected"):
        raise ValueError(f"references is 'dataset' or 'corrected', not {references!r}")
    used_corrections: dict[str, str] = {}
    if references == "corrected":
        from .correct import corrected_reference_cases

        cases, used_corrections = corrected_reference_cases(list(cases))
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    rank, world, started = _distributed()
    t0 = time.perf_counter()
    loaded = {}
    for m in models:
        lm = m if isinstance(m, LoadedModel) else load_model(m, directory=directory)
        loaded[lm.name] = (lm, m if isinstance(m, str) else (lm.ref or lm.name))
    folders = {n: PredictionFolder(d, n) for n, d in (predictions or {}).items()}
    # (name, set name, source, options)
    runs: list[tuple[str, str, LoadedModel | PredictionFolder, PredictOptions | None]] = []
    for name, (lm, _) in loaded.items():
        n_mc = mc_samples if mc_samples and U.has_dropout(lm.module) else 0
        for set_name, kw in option_sets.items():
            runs.append((name, set_name, lm, predict_options({**kw, "mc_samples": n_mc, "seed": seed})))
    for name, f in folders.items():
        runs.append((name, EXTERNAL_SET, f, None))
    mine = list(cases)[rank::world]  # this rank's share (all of them in one process)
    total, done = len(cases) * len(runs), 0
    exact: dict[str, dict] = {}
    if rank == 0:
        write_progress(out, state="running", done=0, total=total, message="starting")

    def report(message: str) -> None:
        if rank == 0:  # with several ranks, count every rank's finished parts
            n = done if world == 1 else min(total, len(os.listdir(out / "parts")))
            write_progress(out, state="running", done=n, total=total, message=message)
        if progress:
            progress(done, total, message)

    for name, set_name, source, opts in runs:
        if opts is not None:
            exact.setdefault(name, {})[set_name] = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.__dict__.items()
            }
        base = {"model": name, "set": set_name}
        todo = []
        for case in mine:
            part = part_file(out, name, set_name, case.case_id)
            if resume and part.exists() and mask_file(out, name, set_name, case.case_id).exists():
                done += 1
                report(f"{name} · {set_name} · {case.case_id} (kept from before)")
            else:
                todo.append(case)
        for res in evaluate_cases(source, todo, opts, rules=rules, scorer=_calibration_evidence):
            pred = res.prediction
            assert pred is not None  # evaluate_cases yields each case's prediction
            first = next(iter(pred.masks), None)
            s_rows, c_rows = [], []
            if first is not None:
                mask = pred.masks[first]
                before = pred.masks_before_postprocessing.get(first, mask)
                np.savez_compressed(
                    mask_file(out, name, set_name, res.case),
                    shape=np.array(mask.shape),
                    mask=_pack(mask),
                    before=_pack(before),
                )
                s_rows = [{**base, **sr.row()} for sr in res.slices if sr.label == first]
                c_rows = [
                    {**base, **cr.row(), "seconds": round(res.seconds, 3)} for cr in res.records if cr.label == first
                ]
            part = part_file(out, name, set_name, res.case)
            tmp = part.with_suffix(".tmp")  # a part exists whole or not at all
            cal = res.units[0] if res.units else None
            if cal is not None and "p_malignant" in cal:
                cal["malignant"] = res.malignant  # the case's label, when the dataset has one
            kept_part = {"slices": s_rows, "cases": c_rows, "calibration": cal, "case_key": res.case_key}
            tmp.write_text(json.dumps(kept_part, default=_json_value))
            tmp.replace(part)
            done += 1
            report(f"{name} · {set_name} · {res.case}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank's parts are written
        if started:
            dist.destroy_process_group()
        if rank != 0:
            return out
        done = total
    # merge the parts in the canonical order (models x option sets x cases): one process or many,
    # a fresh or a resumed run, the tables come out the same
    slices, case_rows, evidence = [], [], []
    keys: dict[str, dict] = {}
    for name, set_name, _, _ in runs:
        for case in cases:
            kept = json.loads(part_file(out, name, set_name, case.case_id).read_text())
            slices += kept["slices"]
            case_rows += kept["cases"]
            evidence.append((name, set_name, kept.get("calibration")))  # None in parts made before it
            if kept.get("case_key"):  # parts written before keys were kept have none
                keys[str(case.case_id)] = W.key_entry(case, kept["case_key"])
    W.write_key_cache(W.run_key_file(out), keys)  # the worklist's statuses need no case loaded again
    S.write_parquet(out / "slices.parquet", slices, S.SLICE_SCHEMA)
    S.write_parquet(out / "cases.parquet", case_rows, S.CASE_SCHEMA)
    if csv_export:
        write_csv(out / "slices.csv", slices)
        write_csv(out / "cases.csv", case_rows)
    names = list(option_sets)
    model_names = list(loaded)
    comps = [compare_sets(slices, m, names[0], b) for m in model_names for b in names[1:]]
    if comps:
        write_csv(out / "comparisons.csv", comps)
    meta = {
        "models": model_names + list(folders),
        "model_refs": {n: ref for n, (_, ref) in loaded.items()},
        "model_titles": {n: lm.spec.title for n, (lm, _) in loaded.items()},  # folders: model_title says so
        "predictions": {n: str(f.directory) for n, f in folders.items()},
        "option_sets": option_sets,
        "exact_options": exact,
        "mc_samples": mc_samples,
        "seed": seed,
        "rules": rules.to_dict(),
        "dataset": dataset or {},
        "case_ids": [c.case_id for c in cases],
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "processes": world,
        "references": {"kind": references, "corrected_cases": len(used_corrections), "files": used_corrections},
    }
    if "orig" in option_sets and "masked" in option_sets:
        rows = table1(slices, model_names)
        write_csv(out / "table1.csv", rows)
        (out / "table1.md").write_text(table1_markdown(rows))
    from .calibration import cohort_entries

    (out / "calibration.json").write_text(json.dumps(cohort_entries(evidence), indent=1))
    (out / "cohort.json").write_text(json.dumps(meta, indent=1, default=str))
    write_progress(out, state="done", done=done, total=total, message="finished")
    return out


def _calibration_evidence(case: Case, pred: Prediction, refs: dict, volume: Volume) -> list[dict]:
    """The engine's scorer hook (:func:`medseg_core.engine.evaluate_cases`) collecting one case's
    calibration evidence, :func:`medseg_core.calibration.prediction_bins` (15 bins, regions "all"
    and "near", p(malignant)), from the same prediction and references that the metrics use; kept
    in the part file and merged into ``calibration.json`` (issue 18 item 4)."""
    from .calibration import prediction_bins

    ev = prediction_bins(pred, refs)
    return [] if ev is None else [ev]


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether the process group was started here). Under ``torchrun``
    (``WORLD_SIZE`` > 1) the gloo group is started unless the caller already did, as in
    :mod:`medseg_core.evaluate`; otherwise (0, 1, False)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), started


def _json_value(v):
    """NaN-safe JSON for part files (numpy scalars to Python)."""
    return v.item() if hasattr(v, "item") else str(v)


# ----------------------------------------------------------------------------- reading a run
def read_rows(path: str | Path) -> list[dict]:
    """A run's CSV (or Parquet) file as dict rows, typed by the declared schema
    (:func:`medseg_core.cohort_store.read_csv_typed`: case ids strings, numbers numbers, missing
    numbers NaN, ``tags`` a list). ``slice`` is the 0-based array index; ``slice_number`` (1-based,
    what the app shows) is derived for files written before it was stored beside ``slice`` (see
    :mod:`medseg_core.tables`)."""
    path = Path(path)
    t = S.pq.read_table(path) if path.suffix == ".parquet" else S.read_csv_typed(path)
    return S.RowTable.from_arrow(t).records()


@dataclass
class CohortRun:
    """A run folder: ``meta`` (cohort.json) and its slice and case tables as
    :class:`~medseg_core.cohort_store.RowTable` (columnar; also a sequence of dict rows)."""

    path: Path
    meta: dict
    slices: S.RowTable
    cases: S.RowTable

    @property
    def name(self) -> str:
        return self.path.name

    def masks(self, model: str, set_name: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(mask, mask before post-processing) as stored by :func:`run_cohort`."""
        return read_masks(self.path, model, set_name, case_id)

    def dataset_cases(self) -> dict:
        return dataset_cases(self.meta)


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "cohort.json").read_text())


def read_masks(path: str | Path, model: str, set_name: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's stored (mask, mask before post-processing) without reading its tables."""
    z = np.load(mask_file(Path(path), model, set_name, case_id))
    shape = tuple(int(s) for s in z["shape"])
    return _unpack(z["mask"], shape), _unpack(z["before"], shape)


def model_title(meta: dict, name: str) -> str:
    """The title a person reads for a run's model (the card's title, "NAME (predictions)" for a folder of
    predictions); runs written before titles were recorded fall back on the card found by name, then the name."""
    titles = meta.get("model_titles") or {}
    if name in titles:
        return str(titles[name])
    if name in (meta.get("predictions") or {}):
        return f"{name} (predictions)"
    return _card_title(str((meta.get("model_refs") or {}).get(name, name)))


@functools.lru_cache(maxsize=256)
def _card_title(ref: str) -> str:
    """A checkpoint's card title by reference, read once per process (captions ask for it per thumbnail and per
    scatter point); a model no longer on disk keeps its name."""
    try:
        from .checkpoints import model_spec

        return str(model_spec(ref).title)
    except Exception:  # noqa: BLE001
        return ref


def titled_rows(rows: list[dict], meta: dict) -> list[dict]:
    """Table rows with their ``model`` column in the titles a person reads (:func:`model_title`)."""
    return [{**r, "model": model_title(meta, r["model"])} if "model" in r else r for r in rows]


def run_summary(meta: dict) -> str:
    """The gallery's one-line description of a run, in words."""
    from .labels import set_name

    mc = int(meta.get("mc_samples") or 0)
    parts = [
        f"{len(meta.get('case_ids', []))} cases",
        "models " + ", ".join(model_title(meta, n) for n in meta.get("models", [])),
        "option sets " + ", ".join(set_name(k, v) for k, v in (meta.get("option_sets") or {}).items()),
        f"uncertainty from {mc} MC-dropout samples" if mc else "no uncertainty (MC dropout off)",
        f"created {meta.get('created', '?')}",
        f"{meta.get('seconds', '?')} s",
    ]
    return " · ".join(parts)


def references_words(meta: dict) -> str:
    """One sentence on the references a run was scored against, for the gallery: empty for the
    dataset's own; for corrected references, how many cases used one and which of those files are gone
    (their thumbnails then show the dataset's reference, not the one the numbers were computed on)."""
    refs = meta.get("references") or {}
    if refs.get("kind") != "corrected":
        return ""
    files = refs.get("files") or {}
    gone = sorted(c for c, f in files.items() if not Path(f).is_file())
    n = len(meta.get("case_ids", []))
    out = f"Scored against reviewers' corrections where one was saved ({len(files)} of {n} cases)."
    if gone:
        out += (
            f" The correction of {len(gone)} case(s) ({', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}) has "
            "been deleted since: their pictures show the dataset's reference, their numbers the deleted correction."
        )
    return out


def dataset_cases(meta: dict) -> dict:
    """case id -> :class:`~medseg_core.data.datasets.Case` of the dataset a run was made on, with the
    references the run scored against: a run made with ``references="corrected"`` gives the cases it
    scored against a saved correction that correction as their reference (``cohort.json``
    ``references.files``), so thumbnails and "Open in review" show what the numbers were computed on.
    A correction file deleted since the run falls back to the dataset's reference."""
    from .correct import _CorrectedCase
    from .data import datasets as D

    ds = meta.get("dataset") or {}
    root = Path(ds.get("root", ""))
    if not root.is_absolute():
        root = ROOT / root
    cases: dict = {c.case_id: c for c in D.ADAPTERS[ds["adapter"]](root)}
    refs = meta.get("references") or {}
    if refs.get("kind") == "corrected":
        for case_id, f in (refs.get("files") or {}).items():
            if case_id in cases and Path(f).is_file():
                cases[case_id] = _CorrectedCase(cases[case_id], Path(f), None)
    return cases


def load_run(path: str | Path) -> CohortRun:
    """A run folder with its tables from the Parquet store (an old CSV-only run is converted once,
    :func:`medseg_core.cohort_store.read_table`)."""
    path = Path(path)
    return CohortRun(path, read_meta(path), S.read_rows_table(path, "slices"), S.read_rows_table(path, "cases"))


def run_mtime(path: str | Path) -> float:
    """When a run's slice table last changed (a cache key for the gallery)."""
    return S.table_mtime(path)


def list_runs(directory: str | Path | None = None) -> list[Path]:
    d = Path(directory) if directory else runs_dir()
    if not d.is_dir():
        return []
    return sorted(
        (p for p in d.iterdir() if (p / "cohort.json").exists()), key=lambda p: p.stat().st_mtime, reverse=True
    )


# ----------------------------------------------------------------------------- comparisons and tables
def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def paired_deltas(
    slices: list[dict], model: str, set_a: str, set_b: str, metric: str = "dice", positive_only: bool = True
) -> list[dict]:
    """Per-slice ``metric[b] - metric[a]`` for one model, paired on (case, slice).

    ``positive_only`` keeps slices with reference present (report 000's ovary-positive slices)."""
    a = {(r["case"], r["slice"]): r for r in slices if r["model"] == model and r["set"] == set_a}
    out = []
    for r in slices:
        if r["model"] != model or r["set"] != set_b:
            continue
        ra = a.get((r["case"], r["slice"]))
        if ra is None or (positive_only and not r["ref_present"]):
            continue
        va, vb = ra[metric], r[metric]
        if _finite(va) and _finite(vb):
            out.append(
                {
                    "case": r["case"],
                    "slice": r["slice"],
                    "a": va,
                    "b": vb,
                    "delta": vb - va,
                    "primary_a": ra["primary"],
                    "primary_b": r["primary"],
                }
            )
    return out


def compare_sets(slices: list[dict], model: str, set_a: str, set_b: str, metric: str = "dice") -> dict:
    """Summary of :func:`paired_deltas`: mean, SD, wins/losses/ties and a Wilcoxon signed-rank p."""
    d = paired_deltas(slices, model, set_a, set_b, metric)
    deltas = np.array([r["delta"] for r in d], float)
    out = {
        "model": model,
        "a": set_a,
        "b": set_b,
        "metric": metric,
        "n_slices": len(d),
        f"mean_{metric}_a": float(np.mean([r["a"] for r in d])) if d else M.NAN,
        f"mean_{metric}_b": float(np.mean([r["b"] for r in d])) if d else M.NAN,
        "mean_delta": float(deltas.mean()) if d else M.NAN,
        "sd_delta": float(deltas.std(ddof=1)) if len(d) > 1 else M.NAN,
        "better": int((deltas > 1e-9).sum()),
        "worse": int((deltas < -1e-9).sum()),
        "same": int((np.abs(deltas) <= 1e-9).sum()),
        "wilcoxon_p": M.NAN,
    }
    if (np.abs(deltas) > 1e-9).sum() >= 5:
        from scipy.stats import wilcoxon

        out["wilcoxon_p"] = float(wilcoxon(deltas, zero_method="wilcox").pvalue)
    return out


def table1(slices: list[dict], models: list[str], orig: str = "orig", masked: str = "masked") -> list[dict]:
    """Report 000 Table 1: mean per-slice Dice on reference-positive slices without (orig) and with
    (masked) side masking, and the difference, per model."""
    rows = []
    for m in models:
        c = compare_sets(slices, m, orig, masked)
        rows.append(
            {
                "model": m,
                "dice_orig": c["mean_dice_a"],
                "dice_masked": c["mean_dice_b"],
                "delta_dice": c["mean_delta"],
                "n_slices": c["n_slices"],
                "wilcoxon_p": c["wilcoxon_p"],
            }
        )
    return rows


def table1_markdown(rows: list[dict]) -> str:
    lines = [
        "| Model | Dice orig | Dice masked | ΔDice | slices | Wilcoxon p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p = "" if not _finite(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3g}"
        lines.append(
            f"| {r['model']} | {r['dice_orig']:.3f} | {r['dice_masked']:.3f} | {r['delta_dice']:+.3f} | "
            f"{r['n_slices']} | {p} |"
        )
    return "\n".join(lines) + "\n"


def _table(rows) -> S.RowTable:
    return rows if isinstance(rows, S.RowTable) else S.RowTable.from_records(list(rows))


def filter_slices(
    rows: Rows,
    tags: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    sets: Iterable[str] | None = None,
    dice_range: tuple[float, float] = (0.0, 1.0),
    uncertainty_range: tuple[float, float] | None = None,
    informative_only: bool = True,
) -> Rows:
    """Rows with any of ``tags`` (all if None), in the models / option sets given, with Dice* in
    ``dice_range`` and uncertainty in ``uncertainty_range`` (when given and finite); with
    ``informative_only`` only slices with a reference or a prediction.

    Done on the columns (:meth:`medseg_core.cohort_store.RowTable.mask`): a
    :class:`~medseg_core.cohort_store.RowTable` in, a RowTable out; a list of dict rows in, a list
    out."""
    t = _table(rows)
    out = t.filter(tags, models, sets, dice_range, uncertainty_range, informative_only)
    return out if isinstance(rows, S.RowTable) else out.records()


def tag_counts(rows: Rows) -> dict[str, int]:
    """Rows per tag (a row counts under each of its tags), on the columns for a RowTable
    (:func:`medseg_core.analysis.tag_counts` for dict rows)."""
    return rows.tag_counts() if isinstance(rows, S.RowTable) else A.tag_counts(rows)


def has_uncertainty(rows: Rows) -> bool:
    """Whether any row has a finite uncertainty score (the run used MC dropout)."""
    if isinstance(rows, S.RowTable):
        return rows.has_uncertainty()
    return any(_finite(r.get("uncertainty")) for r in rows)


def rows_csv(rows: Rows) -> bytes:
    """Slice rows as CSV bytes (tags joined with ';'), for the gallery's export."""
    if isinstance(rows, S.RowTable):
        return rows.csv_bytes()
    return csv_text([{k: (";".join(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]).encode()


#: The gallery's sort orders: the key of one dict row and whether it is descending. The columnar
#: :meth:`medseg_core.cohort_store.RowTable.order` sorts the same way (stable, ties in row order).
SORT_KEYS = {
    "Dice (worst first)": (lambda r: r["dice_star"], False),
    "Uncertainty (highest first)": (lambda r: r["uncertainty"] if _finite(r.get("uncertainty")) else -1.0, True),
    "Post-processing change (largest first)": (
        lambda r: abs(r["delta_pp"]) if _finite(r.get("delta_pp")) else 0.0,
        True,
    ),
    "Case and slice": (lambda r: (r["case"], r["slice"]), False),
}


def sort_slices(rows: Rows, how: str) -> Rows:
    """Rows in the order ``SORT_KEYS[how]``: a RowTable sorted on its columns, or a list of dicts."""
    if isinstance(rows, S.RowTable):
        return rows.sort(how)
    key, rev = SORT_KEYS[how]
    return sorted(rows, key=key, reverse=rev)


# ----------------------------------------------------------------------------- pictures
GALLERY_COLOURS = {
    "prediction": (230, 159, 0),
    "reference": (0, 158, 115),
    "other ovary": OTHER_OVARY_COLOUR,
    "removed": (86, 180, 233),
}


def thumbnail(
    volume: Volume,
    z: int,
    pred2d: np.ndarray,
    ref2d: np.ndarray | None,
    other2d: np.ndarray | None = None,
    removed2d: np.ndarray | None = None,
    size: int = 192,
) -> np.ndarray:
    """RGB thumbnail of axial slice ``z`` in display orientation with the spacing respected:
    prediction filled (orange), reference outline (green), the other ovary outline (pink) and what
    post-processing removed (blue outline). The picture is resized first (image bilinear, masks
    nearest) and the outlines drawn at thumbnail resolution, so they stay one crisp pixel wide."""
    from .render import auto_window, slice_picture

    def one(m: np.ndarray | None) -> np.ndarray | None:  # a (Y, X) slice as a one-slice volume like the image's
        return None if m is None or not np.any(m) else np.asarray(m)[None]

    return slice_picture(
        volume.array[z : z + 1],
        volume.spacing,
        "axial",
        0,
        auto_window(volume.array[z][None]),
        layers=[(np.asarray(pred2d)[None], GALLERY_COLOURS["prediction"])],
        alpha=0.45,
        outlines=[
            (one(m), GALLERY_COLOURS[k])
            for m, k in ((ref2d, "reference"), (other2d, "other ovary"), (removed2d, "removed"))
        ],
        fit=size,
    ).rgb


def caption(row: dict, meta: dict | None = None) -> str:
    """A slice row in words: case, 1-based slice number, model (its title when the run's ``meta`` is
    given), option set, main finding, Dice*."""
    from .labels import display_name, set_name

    u = row.get("uncertainty")
    unc = f" · entropy {u:.3f} nats" if _finite(u) else ""
    number = row.get("slice_number", int(row["slice"]) + 1)
    return (
        f"{row['case']} · slice {number} · {model_title(meta, row['model']) if meta else row['model']} · "
        f"{set_name(row['set'])} · "
        f"{display_name(row['primary'])} · Dice* {row['dice_star']:.2f}{unc}"
    )


def story_png(items: list[tuple[np.ndarray, str]], title: str = "", columns: int = 3) -> bytes:
    """A PNG sheet of thumbnails with captions (report 000's figure style) and a colour legend."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    tfont: ImageFont.FreeTypeFont | ImageFont.ImageFont
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 13)
        tfont = ImageFont.truetype("DejaVuSans-Bold.ttf", 16)
    except OSError:
        font = tfont = ImageFont.load_default()
    if not items:
        raise ValueError("nothing selected for the story sheet")
    tw = max(im.shape[1] for im, _ in items)
    th = max(im.shape[0] for im, _ in items)
    cap_h, pad, head = 38, 10, 56
    cols = max(1, min(columns, len(items)))
    rows = math.ceil(len(items) / cols)
    cell_w = max(tw, 300)
    sheet = Image.new("RGB", (cols * (cell_w + pad) + pad, head + rows * (th + cap_h + pad) + pad), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    d.text((pad, 8), title or "medseg failure gallery", fill=(0, 0, 0), font=tfont)
    x = pad
    for name, col in GALLERY_COLOURS.items():
        d.rectangle([x, 34, x + 12, 46], fill=col)
        d.text((x + 16, 32), name, fill=(0, 0, 0), font=font)
        x += 30 + int(d.textlength(name, font=font))
    for k, (im, text) in enumerate(items):
        r, c = divmod(k, cols)
        x0, y0 = pad + c * (cell_w + pad), head + r * (th + cap_h + pad)
        sheet.paste(Image.fromarray(im), (x0, y0))
        words, line, lines = text.split(" · "), "", []
        for w in words:
            cand = (line + " · " + w) if line else w
            if d.textlength(cand, font=font) > cell_w and line:
                lines.append(line)
                line = w
            else:
                line = cand
        lines.append(line)
        for i, ln in enumerate(lines[:2]):
            d.text((x0, y0 + im.shape[0] + 3 + i * 16), ln, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


#: At most this many points are drawn in the gallery's uncertainty scatter (a seeded sample, both groups in
#: proportion); the AUROC, counts and means are always of every slice.
SCATTER_POINTS = 4000


def uncertainty_scatter(
    rows: list[dict] | S.RowTable, height: int = 360, meta: dict | None = None, max_points: int = SCATTER_POINTS
) -> tuple[go.Figure, dict]:
    """Plotly scatter of per-slice uncertainty against Dice* (failed slices in vermilion), titled
    with the AUROC of the uncertainty for detecting failed slices (:func:`analysis.uncertainty_auroc`,
    over every informative slice with a score). Above ``max_points`` slices a seeded random sample is
    drawn (the legend and the returned ``au["n_drawn"]`` say how many); hover captions name models by
    their titles when the run's ``meta`` is given."""
    import plotly.graph_objects as go

    if not isinstance(rows, S.RowTable):
        rows = S.RowTable.from_records(list(rows)) if rows else S.RowTable.from_records([])
    f = rows.frame
    n = len(f)
    u = f["uncertainty"].to_numpy(float, na_value=np.nan) if "uncertainty" in f else np.full(n, np.nan)
    informative = f["ref_present"].to_numpy(bool) | f["pred_present"].to_numpy(bool) if n else np.zeros(0, bool)
    idx = np.flatnonzero(np.isfinite(u) & informative)
    failed = (f["primary"].astype(str).to_numpy() != "good")[idx] if n else np.zeros(0, bool)
    au = A.failure_auroc(failed, u[idx])
    drawn = np.arange(len(idx))
    if len(idx) > max_points:  # the same sample on every rerun: the picture does not flicker
        drawn = np.sort(np.random.default_rng(0).choice(len(idx), max_points, replace=False))
    au["n_drawn"] = int(len(drawn))
    fig = go.Figure()
    for is_failed, colour, label in ((False, "#009E73", "good"), (True, "#D55E00", "failed")):
        pick = drawn[failed[drawn] == is_failed]
        sel = rows.take(idx[pick]).records()
        total = au["n_failed"] if is_failed else au["n_good"]
        fig.add_trace(
            go.Scattergl(
                x=[r["uncertainty"] for r in sel],
                y=[r["dice_star"] for r in sel],
                mode="markers",
                name=f"{label} ({total:,})" if len(pick) == total else f"{label} ({len(pick):,} of {total:,} drawn)",
                marker=dict(color=colour, size=6, opacity=0.7),
                text=[caption(r, meta) for r in sel],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    auroc = "n/a" if not _finite(au["auroc"]) else f"{au['auroc']:.3f}"
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=36, b=0),
        xaxis_title="uncertainty (mean entropy, nats)",
        yaxis_title="Dice*",
        title=f"Uncertainty vs Dice* · AUROC for failed slices {auroc}",
    )
    return fig, au


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> Path:
    from .data import datasets as D
    from .data.make_synthetic import ensure_synthetic, parse_synthetic

    ap = argparse.ArgumentParser(
        description="Cohort run: models x option sets over a dataset, with failure tags (see the module docstring)."
    )
    ap.add_argument(
        "--models", nargs="*", default=[], help="checkpoints: shipped names, .safetensors paths or run folders"
    )
    ap.add_argument(
        "--predictions",
        action="append",
        default=[],
        help="NAME=DIR: a folder of masks made elsewhere, one per case (repeatable)",
    )
    ap.add_argument("--data", required=True, help="dataset root in a published layout")
    ap.add_argument("--adapter", required=True, choices=sorted(D.ADAPTERS))
    ap.add_argument("--synthetic", default=None, help="KIND:N:SEED: generate a synthetic dataset at --data if absent")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="NAME:option=value,... (repeatable; the first is the baseline). Default: orig, masked (oracle), two_pass",
    )
    ap.add_argument("--mc", type=int, default=0, help="MC-dropout samples for uncertainty (0 = none)")
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--out", default=None, help=f"run folder (default {RUNS_DIR}/<timestamp>)")
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument(
        "--references",
        choices=["dataset", "corrected"],
        default="dataset",
        help="corrected: score each case against the latest correction saved in the review app "
        "(MEDSEG_DB) where one exists, else the dataset's reference",
    )
    a = ap.parse_args(argv)
    from .io.errors import InputError
    from .options import parse_pairs

    if not a.models and not a.predictions:
        raise InputError("Name at least one model (--models) or folder of predictions (--predictions NAME=DIR).")
    if a.synthetic:
        ensure_synthetic(a.data, parse_synthetic(a.synthetic))
    if not Path(a.data).is_dir():
        raise InputError(f"The dataset folder '{a.data}' does not exist.")
    sets = dict(parse_set(s) for s in a.set) if a.set else dict(SIDE_SETS)
    predictions: dict[str, str | Path] = {k: str(v) for k, v in parse_pairs(a.predictions).items()}
    cases = D.ADAPTERS[a.adapter](a.data)[: a.max_cases]
    out = Path(a.out) if a.out else runs_dir() / time.strftime("cohort_%Y%m%d_%H%M%S")
    run = run_cohort(
        cases,
        a.models,
        sets,
        out,
        mc_samples=a.mc,
        directory=a.checkpoints,
        predictions=predictions,
        dataset={"adapter": a.adapter, "root": str(a.data), "synthetic": a.synthetic},
        progress=lambda d, t, m: print(f"[{d}/{t}] {m}", flush=True),
        references=a.references,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return run  # rank 0 merged and reports
    r = load_run(run)
    print(f"\nCohort run written to {run}")
    if a.references == "corrected":
        n_used = (r.meta.get("references") or {}).get("corrected_cases", 0)
        print(f"References: {n_used} of {len(cases)} cases used a saved correction; the others the dataset's.")
    counts = tag_counts(filter_slices(r.slices))
    print("Slice tags (slices with reference or prediction): " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if (run / "table1.md").exists():
        print("\n" + (run / "table1.md").read_text())
    return run


if __name__ == "__main__":
    from .cli import guarded

    guarded(main)
