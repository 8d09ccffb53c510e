"""``medseg reproduce NNN [--run] [--smoke]`` (``make reproduce-NNN [RUN=1] [SMOKE=1]``)

Every result row of the five reports, machine-readable, with the config that reproduces it.

``configs/reproduce/rows/NNN.yaml`` holds, per report:

* ``configs``: for each reproduce config (a file stem in ``configs/reproduce/``), ``states``: what
  the *report* says that run used (loss, optimiser, lr, epochs, batch, input size, preprocessing,
  augmentation, split, selection rule, and anything else it states), and ``source``: where it says so
  (or that the public code is the source because the report is silent);
* ``rows``: every number of every results table: table, row, metric, the report's value, the config
  and the evaluation protocol (:mod:`medseg_core.protocols`), optionally prediction options (the
  "masked" column of report 000 is ``side_masking: oracle``) and a label;
* ``protocol``: the report's evaluation protocol in words, with section references.

:func:`check` compares every config with its ``states`` through :func:`settings_of` (dicts compare
as subsets, floats with a relative tolerance) and finds rows without a config; the test suite fails
on any finding. Without ``--run`` the command lists the commands, one per config and row; ``--run``
trains each config and evaluates each row with its protocol on the run's held-out patients, then
prints the report's numbers beside the reproduced ones (``runs/reproduce/NNN/table.md``).
``--smoke`` does that on small synthetic phantoms of each dataset's layout, one epoch of two steps:
it proves that every row runs end to end, not what the method achieves.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .io.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "reproduce"
ROWS_DIR = CONFIG_DIR / "rows"
REQUIRED = (
    "loss",
    "optimiser",
    "lr",
    "epochs",
    "batch",
    "input_size",
    "preprocessing",
    "augmentation",
    "split",
    "select_by",
)
#: the smoke run's synthetic datasets, per adapter (small: every config of a report trains on them)
SMOKE_DATA = {
    "msd_spleen": {"kind": "ct", "n": 6, "seed": 11},
    "ut_endomri_d2": {"kind": "pelvic", "n": 6, "seed": 11},
    "ut_endomri_d1": {"kind": "pelvic", "n": 6, "seed": 11},
    "mmotu": {"kind": "us", "n": 24, "seed": 11},
    "us_primary": {"kind": "us", "n": 24, "seed": 11},  # report 001's hospital layout: the same phantoms' primary.csv
    "uw_madison_gi": {"kind": "gi", "n": 24, "seed": 11},
    "microsegnet": {"kind": "microus", "n": 6, "seed": 11},
}


@dataclass
class Row:
    report: str
    table: str
    row: str
    metric: str
    value: float
    config: str
    protocol: str
    options: dict = field(default_factory=dict)
    label: str | None = None
    column: str | None = None
    note: str = ""
    case: str | None = None  # a per-case row (report 004's Table 2): that case's value
    epoch: int | None = None  # a training-curve row (metric train_loss): that epoch of the training log
    split: str | None = None  # which held-out part the report scored (val | test); default test, else val

    @property
    def eval_key(self) -> str:
        """Rows that share config, protocol and options share one evaluation."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return (
            f"{self.config}__{self.protocol}"
            + (f"__{opts}" if opts else "")
            + (f"__{self.split}" if self.split else "")
        )


def reports() -> list[str]:
    return sorted(p.stem for p in ROWS_DIR.glob("*.yaml"))


def load_table(report: str) -> dict:
    p = ROWS_DIR / f"{report}.yaml"
    if not p.is_file():
        raise InputError(
            f"There is no rows table for report '{report}' (looked for {p.relative_to(ROOT)}); "
            f"tables exist for {', '.join(reports()) or 'no report'}."
        )
    return yaml.safe_load(p.read_text()) or {}


def rows_of(report: str) -> list[Row]:
    t = load_table(report)
    out = []
    for r in t.get("rows") or []:
        out.append(
            Row(
                report=report,
                table=str(r.get("table", "")),
                row=str(r.get("row", "")),
                metric=str(r.get("metric", "")),
                value=float(r["value"]) if r.get("value") is not None else math.nan,
                config=str(r.get("config") or ""),
                protocol=str(r.get("protocol") or f"report{report}"),
                options=dict(r.get("options") or {}),
                label=r.get("label"),
                column=r.get("column"),
                note=str(r.get("note") or ""),
                case=None if r.get("case") is None else str(r["case"]),
                epoch=None if r.get("epoch") is None else int(r["epoch"]),
                split=None if r.get("split") is None else str(r["split"]),
            )
        )
    return out


# ----------------------------------------------------------------------------- settings
def _spec_default_preprocessing(cfg: dict) -> str:
    from .models import get_spec

    return cfg.get("preprocessing") or get_spec(cfg["model"]).preprocessing


def settings_of(cfg: dict) -> dict[str, Any]:
    """A loaded training config's settings under the rows tables' canonical names."""
    o, t = cfg["optim"], cfg["train"]
    sched = o.get("scheduler") or {}
    return {
        "model": cfg["model"],
        "variant": cfg.get("variant"),
        "loss": cfg["loss"]["name"],
        "loss_params": dict(cfg["loss"].get("params") or {}),
        "optimiser": o["name"],
        "lr": o.get("lr"),
        "momentum": o.get("momentum"),
        "weight_decay": o.get("weight_decay"),
        "scheduler": (sched.get("name") or "none") if isinstance(sched, dict) else str(sched),
        "scheduler_params": {k: v for k, v in sched.items() if k != "name"} if isinstance(sched, dict) else {},
        "epochs": t.get("epochs"),
        "batch": t.get("batch_size"),
        "input_size": list(cfg.get("roi") or cfg.get("input_size") or []) or None,
        "preprocessing": _spec_default_preprocessing(cfg),
        "preprocessing_params": dict(cfg.get("preprocessing_params") or {}),
        "augmentation": dict(cfg.get("augment") or {}),
        "split": {k: v for k, v in (cfg["data"].get("split") or {}).items() if k != "seed"},
        "select_by": t.get("select_by"),
        "sampler": t.get("sampler") or "uniform",
        "encoder_weights": cfg.get("encoder_weights") or "random init",
        "init_from": cfg.get("init_from"),
    }


def _dotted(cfg: dict, key: str) -> Any:
    cur: Any = cfg
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING = object()


def _same(expected: object, actual: object) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(expected) == len(actual)
            and all(_same(a, b) for a, b in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or expected == actual and type(expected) is type(actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.lower() == actual.lower()
    return expected == actual


def compare(states: dict, cfg: dict) -> list[str]:
    """Where a config differs from what the report states (one sentence each)."""
    have = settings_of(cfg)
    out = []
    for key, want in states.items():
        got = have[key] if key in have else _dotted(cfg, key)
        if got is _MISSING:
            out.append(f"{key}: the report states {want!r}, the config has no '{key}'")
        elif not _same(want, got):
            out.append(f"{key}: the report states {want!r}, the config has {got!r}")
    return out


def check(report: str | None = None) -> list[str]:
    """Every finding of the rows tables: rows without a config, configs that do not load, required
    settings the table does not state, settings that differ from the report's."""
    from .train import load_config

    findings = []
    for rep in [report] if report else reports():
        t = load_table(rep)
        configs = t.get("configs") or {}
        rows = rows_of(rep)
        if not rows:
            findings.append(f"{rep}: the table lists no rows")
        for r in rows:
            if not r.config:
                findings.append(f"{rep} {r.table} '{r.row}' {r.metric}: no config")
            elif r.config not in configs:
                findings.append(f"{rep} {r.table} '{r.row}': config '{r.config}' has no 'states' entry in the table")
            if math.isnan(r.value):
                findings.append(f"{rep} {r.table} '{r.row}' {r.metric}: no reported value")
            if r.split not in (None, "val", "test"):
                findings.append(f"{rep} {r.table} '{r.row}': split must be val or test, not '{r.split}'")
            if r.metric == "train_loss" and r.epoch is None:
                findings.append(f"{rep} {r.table} '{r.row}': a train_loss row needs 'epoch'")
            if r.protocol not in _protocol_names():
                findings.append(f"{rep} {r.table} '{r.row}': unknown protocol '{r.protocol}'")
        for name, entry in configs.items():
            path = CONFIG_DIR / f"{name}.yaml"
            if not path.is_file():
                findings.append(f"{rep}: config '{name}' listed but {path.relative_to(ROOT)} does not exist")
                continue
            states = (entry or {}).get("states") or {}
            missing = [k for k in REQUIRED if k not in states]
            if missing:
                findings.append(f"{rep} {name}: the table does not state {', '.join(missing)}")
            if not (entry or {}).get("source"):
                findings.append(f"{rep} {name}: no 'source' saying where the report states these settings")
            try:
                cfg = load_config(path)
            except Exception as e:  # noqa: BLE001 - a finding, not a crash
                findings.append(f"{rep} {name}: does not load ({e})")
                continue
            findings += [f"{rep} {name}: {f}" for f in compare(states, cfg)]
    return findings


def _protocol_names() -> set[str]:
    from .protocols import PROTOCOLS

    return set(PROTOCOLS)


# ----------------------------------------------------------------------------- running
def smoke_overrides(cfg: dict, out_root: Path) -> list[str]:
    """key=value overrides that turn a report config into a smoke run on synthetic phantoms."""
    adapter = cfg["data"]["adapter"]
    if adapter not in SMOKE_DATA:
        raise InputError(f"No synthetic smoke dataset for adapter '{adapter}'.")
    syn = dict(SMOKE_DATA[adapter])
    if adapter in ("mmotu", "us_primary") and (cfg["model"] == "us_denoiser" or cfg.get("denoiser")):
        syn["annotate"] = True
    syn.update((cfg.get("smoke") or {}).get("synthetic") or {})
    root = f"data/synthetic/smoke/{syn['kind']}" + ("_annotated" if syn.get("annotate") else "")
    return [
        f"data.root={root}",
        f"data.synthetic={json.dumps(syn)}",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=2",
        "train.patience=1",
        "evaluate_test=false",
        f"out={out_root}",
        "data.max_cases=null",
    ]


_DEPENDENCY = re.compile(r"runs/reproduce/\d{3}[^/]*/([^/]+)/")


def dependencies(cfg: dict) -> list[tuple[str, str]]:
    """(config key, reproduce config) pairs a config builds on: report 001's primary-data models start
    from their MMOTU counterparts (``init_from``) and its denoised rows clean every input with the
    annotation-removal run (``denoiser``), both named by their place under ``runs/reproduce/NNN/``."""
    out = []
    for key in ("init_from", "denoiser"):
        m = _DEPENDENCY.search(str(cfg.get(key) or ""))
        if m and (CONFIG_DIR / f"{m.group(1)}.yaml").is_file():
            out.append((key, m.group(1)))
    return out


def _train_cmd(name: str, extra: list[str]) -> str:
    return (
        "medseg train --config "
        + shlex.quote(str((CONFIG_DIR / f"{name}.yaml").relative_to(ROOT)))
        + "".join(" " + shlex.quote(e) for e in extra)
    )


def _eval_args(row: Row, checkpoint: Path, cfg: dict, out: Path, split: str | None) -> list[str]:
    data = Path(cfg["data"]["root"])
    args = [
        "--model",
        str(checkpoint),
        "--data",
        str(data if data.is_absolute() else ROOT / data),
        "--adapter",
        cfg["data"]["adapter"],
        "--out",
        str(out),
        "--protocol",
        row.protocol,
    ]
    if split:
        args += ["--split", split]
    for k, v in row.options.items():
        args += ["--option", f"{k}={v}"]
    lm = cfg["data"].get("label_map") or {}
    if lm:
        args += ["--label-map", json.dumps(lm)]
    return args


def run(
    report: str,
    execute: bool = False,
    smoke: bool = False,
    out: str | Path | None = None,
    configs: list[str] | None = None,
) -> list[dict]:
    """List (or, with ``execute``, run) every config and row of ``report``; returns the table rows
    (report value, reproduced value) and writes ``<out>/table.md`` when run."""
    from .protocols import row_value
    from .train import load_config, train

    problems = check(report)
    if problems:
        raise InputError(f"The rows table of report {report} does not match its configs: " + "; ".join(problems[:5]))
    rows = [r for r in rows_of(report) if not configs or r.config in configs]
    out_root = Path(out) if out else ROOT / "runs" / "reproduce" / (report + ("_smoke" if smoke else ""))
    table = []
    trained: dict[str, tuple[Path, dict]] = {}
    evaluated: dict[str, dict] = {}

    def ensure_trained(name: str, chain: tuple[str, ...] = ()) -> None:
        """Train ``name`` once, after the runs it starts from (init_from) or cleans its inputs with
        (denoiser), whose checkpoints are then taken from this run's folder."""
        if name in trained:
            return
        if name in chain:
            raise InputError(f"The reproduce configs depend on each other in a circle: {' -> '.join(chain + (name,))}.")
        base = load_config(CONFIG_DIR / f"{name}.yaml")
        ckpt_dir = out_root / name
        extra = smoke_overrides(base, ckpt_dir) if smoke else [f"out={ckpt_dir}"]
        for key, dep in dependencies(base):
            ensure_trained(dep, chain + (name,))
            extra.append(f"{key}={trained[dep][0]}")
        cfg = load_config(CONFIG_DIR / f"{name}.yaml", extra)
        print(_train_cmd(name, extra), flush=True)
        if execute:
            train(cfg, argv=["--config", str(CONFIG_DIR / f"{name}.yaml"), *extra])
        trained[name] = (ckpt_dir / f"{cfg['name']}.safetensors", cfg)

    for r in rows:
        ensure_trained(r.config)
        ckpt, cfg = trained[r.config]
        ev_dir = out_root / "evaluations" / r.eval_key
        split = None
        if execute and r.eval_key not in evaluated:
            from .checkpoints import read_card
            from .evaluate import main as evaluate_main

            card_split = (read_card(ckpt) or {}).get("split") or {}
            split = r.split or ("test" if card_split.get("test") else ("val" if card_split.get("val") else None))
            args = _eval_args(r, ckpt, cfg, ev_dir, split)
            print("medseg evaluate " + " ".join(shlex.quote(a) for a in args), flush=True)
            evaluated[r.eval_key] = evaluate_main(args) or {}
        elif not execute:
            print(
                "medseg evaluate "
                + " ".join(shlex.quote(a) for a in _eval_args(r, ckpt, cfg, ev_dir, r.split or "test"))
            )
        if not execute:
            got = math.nan
        elif r.metric == "train_loss":
            got = training_log_value(ckpt.with_name(f"{cfg['name']}_log.csv"), r.epoch)
        else:
            got = row_value(evaluated.get(r.eval_key) or {}, r.metric, r.label, r.case)
        table.append(
            {
                "table": r.table,
                "row": r.row,
                "column": r.column or "",
                "metric": r.metric,
                "report": r.value,
                "reproduced": got,
                "config": r.config,
                "protocol": r.protocol,
            }
        )
    if execute:
        out_root.mkdir(parents=True, exist_ok=True)
        md = table_markdown(report, table, smoke)
        (out_root / "table.md").write_text(md)
        (out_root / "table.json").write_text(json.dumps(table, indent=1))
        print(md)
    return table


def training_log_value(log: Path, epoch: int | None, key: str = "train_loss") -> float:
    """A training-curve row's number: ``key`` of ``epoch`` (1-based) in the run's ``<name>_log.csv``
    (the last stage's row; NaN when the run stopped earlier or the log is missing)."""
    import csv

    if epoch is None or not log.is_file():
        return math.nan
    rows = [r for r in csv.DictReader(log.open()) if str(r.get("epoch")) == str(epoch)]
    try:
        return float(rows[-1][key]) if rows else math.nan
    except (KeyError, ValueError):
        return math.nan


def table_markdown(report: str, table: list[dict], smoke: bool) -> str:
    from .labels import display_name

    head = f"# Report {report}: the report's numbers and the reproduced ones"
    lines = [head, ""]
    if smoke:
        lines += [
            "**Smoke run** on synthetic phantoms (1 epoch of 2 steps per config): it shows that every row "
            "runs end to end; the numbers say nothing about the methods.",
            "",
        ]
    lines += [
        "| table | row | column | metric | report | reproduced | config | protocol |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in table:
        rep = "n/a" if math.isnan(t["report"]) else f"{t['report']:.4g}"
        got = "n/a" if t["reproduced"] is None or math.isnan(t["reproduced"]) else f"{t['reproduced']:.4g}"
        lines.append(
            f"| {t['table']} | {t['row']} | {t['column']} | {display_name(t['metric'])} | {rep} | {got} | "
            f"{t['config']} | {t['protocol']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="List, run and tabulate every result row of a report (module docstring).")
    ap.add_argument("report", nargs="?", help="000 | 001 | 002 | 003 | 004")
    ap.add_argument("--run", action="store_true", help="train every config and evaluate every row")
    ap.add_argument("--smoke", action="store_true", help="on small synthetic phantoms, one epoch of two steps")
    ap.add_argument("--out", default=None, help="output folder (default runs/reproduce/NNN[_smoke])")
    ap.add_argument("--config", action="append", default=None, help="only the rows of this config (repeatable)")
    ap.add_argument("--check", action="store_true", help="only compare the configs with the rows tables")
    a = ap.parse_args(argv)
    if a.check or not a.report:
        findings = check(a.report)
        print("\n".join(findings) if findings else f"rows tables agree with their configs ({', '.join(reports())})")
        if findings:
            raise SystemExit(1)
        return
    run(a.report, execute=a.run, smoke=a.smoke, out=a.out, configs=a.config)


if __name__ == "__main__":
    from .cli import guarded

    guarded(main)
