"""``python -m medseg_core.evaluate --model REF --data DIR --adapter ADAPTER --out DIR [--option k=v ...]``
``python -m medseg_core.evaluate --predictions DIR --data DIR --adapter ADAPTER --out DIR``

Evaluates a checkpoint (``--model``: a shipped name, a ``.safetensors`` path or a run folder; it
runs exactly as its card says) or a folder of masks made elsewhere (``--predictions``: one file per
case named by case id, nnU-Net's ``evaluate_folder`` convention) over a dataset, through the one
evaluation engine (:mod:`medseg_core.engine`), and writes:

* ``per_case.csv``: every metric per case and label (Dice, IoU, precision, recall, specificity,
  HD95 and ASSD in mm, volumes in mL), Dice against both ovaries where the dataset has the
  unlabelled one, p(malignant) for multitask models, the case-level failure tags;
* ``per_slice.csv``: the same per axial slice (areas in mm^2) with failure-mode tags; ``slice`` is
  the 0-based array index (people see slice + 1);
* ``summary.json`` and ``summary.md``: means (NaN-aware, with the number of cases behind each)
  and classification metrics (accuracy, sensitivity, specificity, precision, F1, ROC AUC,
  confusion matrix) at the operating threshold.

Under ``torchrun --nproc_per_node N`` each rank evaluates a share of the cases (``cases[rank::N]``)
and rank 0 gathers and writes the results.

``--protocol report000|report001|report002|report003|report004`` scores the same predictions the way
that report did (:mod:`medseg_core.protocols`: what is averaged, which HD95, spacing, empty-mask
convention, post-processing); ``protocol.csv`` holds its units and ``summary.json`` its means under
``protocol_scores``. The default stays medseg's own protocol. A bad input or an unknown model prints one sentence and
exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .checkpoints import LoadedModel, load_model
from .cli import guarded
from .data import datasets as D
from .engine import CaseResult, PredictionFolder, evaluate_cases, summarise
from .io.errors import InputError
from .options import parse_value, predict_options
from .protocols import PROTOCOLS, aggregate, get_protocol
from .protocols import per_case as protocol_per_case
from .protocols import scorer as protocol_scorer
from .tables import write_csv


def case_rows(results: Iterable[CaseResult]) -> tuple[list[dict], list[dict]]:
    """per_case.csv and per_slice.csv rows of engine results."""
    rows, slices = [], []
    for res in results:
        for r in res.records:
            row = r.row()
            if res.p_malignant is not None and res.malignant is not None:
                row.update(p_malignant=res.p_malignant, malignant=res.malignant)
            rows.append(row)
        slices += [s.row() for s in res.slices]
    return rows, slices


def summary_markdown(summary: dict, model: str) -> str:
    lines = [
        f"# Evaluation of `{model}` ({summary['n_cases']} cases)",
        "",
        "| label | metric | mean | sd | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    for lab, s in summary.items():
        if lab in (
            "n_cases",
            "classification",
            "slice_classification",
            "options",
            "protocol",
            "protocol_scores",
            "protocol_per_case",
            "multiclass",
        ) or not isinstance(s, dict):
            continue
        for k, v in s.items():
            lines.append(f"| {lab} | {k} | {v['mean']:.4f} | {v['sd']:.4f} | {v['n']} |")
    if "classification" in summary:
        c = summary["classification"]
        lines += [
            "",
            "| accuracy | sensitivity | specificity | precision | F1 | AUC | threshold |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {c['accuracy']:.3f} | {c['sensitivity']:.3f} | {c['specificity']:.3f} | {c['precision']:.3f} | "
            f"{c['f1']:.3f} | {c['auc']:.3f} | {c['threshold']} |",
        ]
    if "protocol_scores" in summary:
        from .labels import display_name as metric_label

        ps, p = summary["protocol_scores"], summary["protocol"]
        lines += [
            "",
            f"## {p['title']}",
            "",
            p["description"],
            "",
            f"{ps['n_units']} scoring units.",
            "",
            "| label | metric | mean | n |",
            "| --- | --- | --- | --- |",
        ]
        for lab, s in ps.items():
            if isinstance(s, dict):
                lines += [f"| {lab} | {metric_label(k)} | {v['mean']:.4f} | {v['n']} |" for k, v in s.items()]
    if "multiclass" in summary:
        c = summary["multiclass"]
        lines += ["", f"Multi-class accuracy (argmax): {c['accuracy']:.3f} over {c['n_cases']} cases."]
    if "slice_classification" in summary:
        c = summary["slice_classification"]
        lines += ["", f"Slice classification: ROC AUC {c['auc']:.3f} over {c['n_slices']} slices."]
    return "\n".join(lines) + "\n"


def split_part(cases: list, checkpoint: str | None, part: str) -> list:
    """The cases of one part (train / val / test) of the split recorded in ``checkpoint``'s card, by
    patient: a reproduction is scored on the patients its training run held out."""
    from .checkpoints import find_checkpoint, read_card

    if not checkpoint:
        raise InputError("--split needs --split-of (or --model): the checkpoint whose card lists the split.")
    card = read_card(find_checkpoint(checkpoint)) or {}
    by_case = (card.get("split_cases") or {}).get(part)
    if by_case:  # a case-level (stratified) split, report 002: its cases, not its patients
        ids = set(by_case)
        chosen = [c for c in cases if c.case_id in ids]
        if not chosen:
            raise InputError(f"None of the '{part}' cases of '{checkpoint}' is in this dataset.")
        return chosen
    patients = set((card.get("split") or {}).get(part) or [])
    if not patients:
        raise InputError(f"The card of '{checkpoint}' lists no '{part}' patients; evaluate the whole dataset instead.")
    chosen = [c for c in cases if c.patient_id in patients]
    if not chosen:
        raise InputError(f"None of the '{part}' patients of '{checkpoint}' is in this dataset.")
    return chosen


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(
        description="Evaluate a checkpoint or a folder of predictions on a dataset (see the module docstring)."
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint: shipped name, .safetensors path, card or run folder")
    src.add_argument("--predictions", help="folder of masks made elsewhere, one per case (<case_id>.nii.gz)")
    ap.add_argument("--name", default=None, help="name of the predictions in the outputs (default: folder name)")
    ap.add_argument("--prediction-labels", default="{}", help='YAML mapping of label values, e.g. "{1: spleen}"')
    ap.add_argument("--data", required=True, help="dataset root in a published layout")
    ap.add_argument("--adapter", required=True, choices=sorted(D.ADAPTERS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", default=None, help="look model names up in this folder only")
    ap.add_argument("--option", action="append", default=[], help="PredictOptions field=value (repeatable)")
    ap.add_argument("--label-map", default="{}", help='YAML mapping, e.g. "{prostate: expert}"')
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--synthetic", default=None, help="KIND:N:SEED: generate a synthetic dataset at --data if absent")
    ap.add_argument(
        "--protocol",
        default="medseg",
        choices=sorted(PROTOCOLS),
        help="score as a report did (see medseg_core.protocols); default: medseg's own",
    )
    ap.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "test"),
        help="evaluate one part of a training split: needs --split-of (a checkpoint whose card lists it)",
    )
    ap.add_argument(
        "--split-of", default=None, help="checkpoint whose card's split selects the cases (default --model)"
    )
    a = ap.parse_args(argv)
    protocol = get_protocol(a.protocol)
    if a.synthetic:
        from .data.make_synthetic import ensure_synthetic, parse_synthetic

        ensure_synthetic(a.data, parse_synthetic(a.synthetic))
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    options = predict_options([f"{k}={v}" for k, v in protocol.options.items() if not isinstance(v, tuple)] + a.option)
    if protocol.options.get("postprocessing") == () and not any(o.startswith("postprocessing=") for o in a.option):
        options = replace(options, postprocessing=())
    source: LoadedModel | PredictionFolder
    if a.model:
        source = load_model(a.model, directory=a.checkpoints)
        name = source.name
        thr = options.class_threshold if options.class_threshold is not None else (source.spec.class_threshold or 0.5)
        if protocol.class_threshold is not None and options.class_threshold is None:
            thr = protocol.class_threshold
    else:
        source = PredictionFolder(a.predictions, a.name, parse_value(a.prediction_labels) or {})
        name, thr = source.name, 0.5
    if not Path(a.data).is_dir():
        raise InputError(f"The dataset folder '{a.data}' does not exist.")
    cases = D.ADAPTERS[a.adapter](a.data)
    if a.split:
        cases = split_part(cases, a.split_of or a.model, a.split)
    if a.max_cases:
        cases = cases[: a.max_cases]
    scorer = None if protocol.name == "medseg" else protocol_scorer(protocol)
    results = list(evaluate_cases(source, cases[rank::world], options, parse_value(a.label_map) or {}, scorer=scorer))
    if world > 1:
        for res in results:
            res.prediction = None  # predictions stay on their rank; the records travel
        gathered: list[list[CaseResult]] | None = [[] for _ in range(world)] if rank == 0 else None
        dist.gather_object(results, gathered, dst=0)
        if gathered is not None:  # rank 0
            results = [r for part in gathered for r in part]
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, slices = case_rows(results)
    rows.sort(key=lambda r: (str(r["case"]), r["label"]))
    slices.sort(key=lambda r: (str(r["case"]), r["label"], r["slice"]))
    write_csv(out / "per_case.csv", rows)
    if slices:
        write_csv(out / "per_slice.csv", slices)
    summary = summarise(results, thr)
    if scorer is not None:
        units = {str(r.case): r.units or [] for r in results}
        summary["protocol_scores"] = aggregate(protocol, units)
        summary["protocol_per_case"] = protocol_per_case(units)
        write_csv(
            out / "protocol.csv",
            [{"case": c, **u} for c, us in sorted(units.items()) for u in us]
            or [{"case": "", "label": "", "slice": ""}],
        )
    summary["protocol"] = {"name": protocol.name, "title": protocol.title, "description": protocol.description}
    summary["model"] = name
    summary["source"] = a.model or str(a.predictions)
    summary["options"] = {k: v for k, v in options.__dict__.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(summary_markdown(summary, name))
    print(summary_markdown(summary, name))
    return summary


if __name__ == "__main__":
    guarded(main)
