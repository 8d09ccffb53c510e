"""``python -m medseg_core.evaluate --model NAME --data DIR --adapter ADAPTER --out DIR [--option k=v ...]``

Runs a checkpoint over a dataset through :func:`medseg_core.inference.predict` and writes:

* ``per_case.csv``: every metric of :mod:`medseg_core.metrics` per case and label (Dice, IoU,
  precision, recall, specificity, HD95 and ASSD in mm, volumes in mL), plus Dice against both
  ovaries where the dataset has the unlabelled one, and p(malignant) for multitask models;
* ``per_slice.csv``: the same per axial slice (areas in mm^2), with failure-mode tags and the primary
  tag of :mod:`medseg_core.analysis` (the case rows carry the case-level tags);
* ``summary.json`` and ``summary.md``: means (NaN-aware, with the number of cases behind each)
  and classification metrics (accuracy, sensitivity, specificity, precision, F1, ROC AUC,
  confusion matrix) at the operating threshold.

Under ``torchrun --nproc_per_node N`` each rank evaluates a share of the cases (``cases[rank::N]``)
and rank 0 gathers and writes the results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import yaml

from . import analysis as A
from . import metrics as M
from .tables import write_csv
from .checkpoints import CHECKPOINT_DIR, load_model
from .data import datasets as D
from .inference import PredictOptions, predict

METRIC_KEYS = ("dice", "iou", "precision", "recall", "specificity", "hd95_mm", "assd_mm", "pred_volume_ml", "ref_volume_ml")


def parse_options(items: list[str]) -> PredictOptions:
    kw = {}
    for it in items or []:
        k, v = it.split("=", 1)
        val = yaml.safe_load(v)
        if k == "postprocessing":
            val = tuple(val or ())
        kw[k] = val
    return PredictOptions(**kw)


def _label_map(spec, masks: dict, label_map: dict) -> dict[str, np.ndarray]:
    out = {}
    for lab in spec.labels:
        key = label_map.get(lab, lab)
        if key not in masks and len(masks) >= 1:
            key = "expert" if "expert" in masks else next(iter(masks))
        if key in masks:
            out[lab] = masks[key]
    return out


def evaluate_cases(lm, cases, options: PredictOptions, label_map: dict | None = None, progress=None) -> tuple[list, list, list]:
    """(per-case rows, per-slice rows, classification pairs (label, p_malignant)) for ``cases``."""
    spec = lm.spec
    case_rows, slice_rows, cls = [], [], []
    for i, case in enumerate(cases):
        vol, masks = case.load()
        opts = options
        if spec.clinical_inputs:
            from dataclasses import replace

            opts = replace(options, menopausal=int(case.extra.get("menopausal", 0)),
                           oncology_center=int(case.extra.get("oncology_center", 0)))
        refs = _label_map(spec, masks, label_map or {})
        ref0 = next(iter(refs.values()), None)
        pred = predict(lm, vol, opts, reference=ref0 if opts.side_masking == "oracle" else None)
        for lab, ref in refs.items():
            if lab not in pred.masks:
                continue
            m = M.segmentation_metrics(pred.masks[lab], ref, vol.spacing)
            row = {"case": case.case_id, "patient": case.patient_id, "label": lab,
                   **{k: m[k] for k in METRIC_KEYS}, "both_empty": m["both_empty"]}
            if "ovary_other" in masks and lab == spec.labels[0]:
                row["dice_vs_both_ovaries"] = M.dice(pred.masks[lab], (ref > 0) | (masks["ovary_other"] > 0))
                row["dice_other_ovary"] = M.dice(pred.masks[lab], masks["ovary_other"])
            if pred.uncertainty_scores:
                row["uncertainty"] = pred.uncertainty_scores["case"]
            case_rows.append(row)
            other = masks.get("ovary_other") if lab == spec.labels[0] else None
            before = pred.masks_before_postprocessing.get(lab)
            mirrored = spec.family == "ovary"
            tc = A.tag_case(pred.masks[lab], ref, vol, other=other, before=before, mirrored=mirrored,
                            hd95_mm=m["hd95_mm"])
            row["primary"], row["tags"] = tc["primary"], ";".join(tc["tags"])
            if vol.shape[0] > 1:
                per_slice = M.per_slice_metrics(pred.masks[lab], ref, vol.spacing)
                tags = A.tag_slices(pred.masks[lab], ref, vol, other=other, before=before, mirrored=mirrored,
                                    hd95_mm=[s["hd95_mm"] for s in per_slice])
                for s, t in zip(per_slice, tags):
                    slice_rows.append({"case": case.case_id, "label": lab, "slice": s["slice"],
                                       **{k: s[k] for k in ("dice", "iou", "precision", "recall", "hd95_mm",
                                                            "pred_area_mm2", "ref_area_mm2", "both_empty")},
                                       "primary": t["primary"], "tags": ";".join(t["tags"])})
        if pred.class_probabilities is not None and "malignant" in case.extra:
            cls.append((int(case.extra["malignant"]), float(pred.class_probabilities[1])))
            if case_rows:
                case_rows[-1]["p_malignant"] = float(pred.class_probabilities[1])
                case_rows[-1]["malignant"] = int(case.extra["malignant"])
        if progress:
            progress(i + 1, len(cases))
    return case_rows, slice_rows, cls


def summarise(case_rows: list, cls: list, threshold: float) -> dict:
    out: dict = {"n_cases": len({r["case"] for r in case_rows})}
    labels = sorted({r["label"] for r in case_rows})
    for lab in labels:
        rows = [r for r in case_rows if r["label"] == lab]
        s = {}
        for k in METRIC_KEYS + ("dice_vs_both_ovaries", "dice_other_ovary", "uncertainty"):
            vals = [r[k] for r in rows if k in r and r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
            if vals:
                s[k] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "n": len(vals)}
        out[lab] = s
    if cls:
        y, p = zip(*cls)
        out["classification"] = M.classification_metrics(list(y), list(p), threshold)
    return out


def summary_markdown(summary: dict, model: str) -> str:
    lines = [f"# Evaluation of `{model}` ({summary['n_cases']} cases)", "",
             "| label | metric | mean | sd | n |", "| --- | --- | --- | --- | --- |"]
    for lab, s in summary.items():
        if lab in ("n_cases", "classification") or not isinstance(s, dict) or lab == "options":
            continue
        for k, v in s.items():
            lines.append(f"| {lab} | {k} | {v['mean']:.4f} | {v['sd']:.4f} | {v['n']} |")
    if "classification" in summary:
        c = summary["classification"]
        lines += ["", "| accuracy | sensitivity | specificity | precision | F1 | AUC | threshold |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| {c['accuracy']:.3f} | {c['sensitivity']:.3f} | {c['specificity']:.3f} | {c['precision']:.3f} | "
                  f"{c['f1']:.3f} | {c['auc']:.3f} | {c['threshold']} |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description="Evaluate a checkpoint on a dataset (see the module docstring).")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="dataset root in a published layout")
    ap.add_argument("--adapter", required=True, choices=sorted(D.ADAPTERS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", default=str(CHECKPOINT_DIR))
    ap.add_argument("--option", action="append", default=[], help="PredictOptions field=value (repeatable)")
    ap.add_argument("--label-map", default="{}", help='YAML mapping, e.g. "{prostate: expert}"')
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--synthetic", default=None, help="KIND:N:SEED: generate a synthetic dataset at --data if absent")
    a = ap.parse_args(argv)
    if a.synthetic:
        from .data.make_synthetic import ensure_synthetic, parse_synthetic

        ensure_synthetic(a.data, parse_synthetic(a.synthetic))
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    lm = load_model(a.model, directory=a.checkpoints)
    cases = D.ADAPTERS[a.adapter](a.data)
    if a.max_cases:
        cases = cases[: a.max_cases]
    options = parse_options(a.option)
    rows, slices, cls = evaluate_cases(lm, cases[rank::world], options, yaml.safe_load(a.label_map))
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object((rows, slices, cls), gathered, dst=0)
        if rank == 0:
            rows, slices, cls = [], [], []
            for r, s, c in gathered:
                rows += r
                slices += s
                cls += c
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: (r["case"], r["label"]))
    slices.sort(key=lambda r: (r["case"], r["label"], r["slice"]))
    write_csv(out / "per_case.csv", rows)
    if slices:
        write_csv(out / "per_slice.csv", slices)
    thr = options.class_threshold if options.class_threshold is not None else (lm.spec.class_threshold or 0.5)
    summary = summarise(rows, cls, thr)
    summary["model"] = a.model
    summary["options"] = {k: v for k, v in options.__dict__.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(summary_markdown(summary, a.model))
    print(summary_markdown(summary, a.model))
    return summary


if __name__ == "__main__":
    main()
