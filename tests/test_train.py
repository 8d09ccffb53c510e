"""Training and evaluation command lines, resume, distributed (2 CPU processes) training and
sharded evaluation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from medseg_core import evaluate as E
from medseg_core import train as T
from medseg_core.checkpoints import sha256_file


def tiny_config(tmp: Path, data_root: Path, **extra) -> Path:
    cfg = {
        "model": "ovary_unet",
        "variant": "demo",
        "overrides": {"base": 4},
        "input_size": [32, 32],
        "data": {
            "adapter": "ut_endomri_d2",
            "root": str(data_root),
            "synthetic": {"kind": "pelvic", "n": 6, "seed": 5},
            "split": {"fractions": [0.5, 0.25, 0.25], "seed": 0},
            "positive_slices_only": True,
        },
        "loss": {"name": "focal_tversky"},
        "optim": {"name": "adam", "lr": 0.001},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "patience": 5,
            "select_by": "val_dice",
            "seed": 0,
            "max_steps_per_epoch": 3,
        },
        "out": str(tmp / "ck"),
    }
    cfg.update(extra)
    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def pelvic_root(tmp_path_factory):
    return tmp_path_factory.mktemp("pelvic")


@pytest.mark.slow
def test_train_writes_card_log_and_resumes(tmp_path, pelvic_root):
    cfgp = tiny_config(tmp_path, pelvic_root)
    T.main(["--config", str(cfgp)])
    ck = tmp_path / "ck"
    card = json.loads((ck / "ovary_unet.json").read_text())
    assert card["sha256"] == sha256_file(ck / "ovary_unet.safetensors")
    r = card["recipe"]
    assert card["schema"] == "medseg.card/2" and "Research use only" in card["notice"]
    assert r["architecture"]["variant"] == "demo" and r["architecture"]["builder"] == "ovary_unet"
    assert r["architecture"]["overrides"] == {"base": 4} and r["architecture"]["kwargs"]["base"] == 4
    assert r["input_size"] == [32, 32] and r["labels"] == ["ovary"] and r["side_masking"] is True
    env = card["envelope"]  # the training split's geometry, measured
    assert env["modalities"] == ["MR"] and env["n_cases"] == len(card["split"]["train"])
    assert env["spacing_mm"][0] == [6.0, 6.0] and env["intensity"]["after"] == "plain"
    sp = card["split"]
    assert not (set(sp["train"]) & set(sp["val"])) and not (set(sp["train"]) & set(sp["test"]))
    assert card["parameters"] > 0 and card["epochs_run"] == 2 and "dice" in card["test"]
    assert "--config" in card["command"] and r["preprocessing"] == {"name": "plain", "params": {}}
    rows = list(csv.DictReader(open(ck / "ovary_unet_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {"train_loss", "val_loss", "val_dice"} <= set(rows[0])
    # resume for one more epoch: the log continues where it stopped
    T.main(["--config", str(cfgp), "--resume", str(ck / "ovary_unet_last.safetensors"), "train.epochs=3"])
    rows = list(csv.DictReader(open(ck / "ovary_unet_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # the checkpoint loads through the safe loader and evaluates through the CLI
    out = tmp_path / "eval"
    summary = E.main(
        [
            "--model",
            "ovary_unet",
            "--data",
            str(pelvic_root),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(out),
            "--checkpoints",
            str(ck),
            "--option",
            "side_masking=none",
        ]
    )
    assert summary["n_cases"] == 6 and "dice" in summary["ovary"]
    per_case = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(per_case) == 6 and {"dice", "hd95_mm", "dice_vs_both_ovaries"} <= set(per_case[0])
    assert (out / "per_slice.csv").exists() and "| ovary | dice |" in (out / "summary.md").read_text()
    # failure-mode tags: every slice row has a primary tag that is among its tags
    from medseg_core.analysis import TAGS

    per_slice = list(csv.DictReader(open(out / "per_slice.csv")))
    assert all(r["primary"] in r["tags"].split(";") and set(r["tags"].split(";")) <= set(TAGS) for r in per_slice)
    assert all(r["primary"] in TAGS for r in per_case)


def _torchrun(args, cwd, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + args
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_distributed_training_two_cpu_processes_identical_weights(tmp_path, pelvic_root):
    cfgp = tiny_config(tmp_path, pelvic_root)
    r = _torchrun(["-m", "medseg_core.train", "--config", str(cfgp), "train.epochs=1", "evaluate_test=false"], ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ck = tmp_path / "ck"
    h0 = (ck / "ovary_unet_rank0.sha256").read_text()
    h1 = (ck / "ovary_unet_rank1.sha256").read_text()
    assert h0 == h1 and len(h0) == 64
    card = json.loads((ck / "ovary_unet.json").read_text())
    assert card["world_size"] == 2
    # sharded evaluation gathers every case on rank 0, identical to a single process
    out2 = tmp_path / "eval2"
    r = _torchrun(
        [
            "-m",
            "medseg_core.evaluate",
            "--model",
            "ovary_unet",
            "--data",
            str(pelvic_root),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(out2),
            "--checkpoints",
            str(ck),
        ],
        ROOT,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out1 = tmp_path / "eval1"
    E.main(
        [
            "--model",
            "ovary_unet",
            "--data",
            str(pelvic_root),
            "--adapter",
            "ut_endomri_d2",
            "--out",
            str(out1),
            "--checkpoints",
            str(ck),
        ]
    )
    a = list(csv.DictReader(open(out1 / "per_case.csv")))
    b = list(csv.DictReader(open(out2 / "per_case.csv")))
    assert len(a) == len(b) == 6
    assert [(x["case"], round(float(x["dice"]), 6)) for x in a] == [(x["case"], round(float(x["dice"]), 6)) for x in b]


def test_config_overrides_and_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: ovary_unet\ntrain: {epochs: 3}\n")
    cfg = T.load_config(p, ["train.epochs=7", "optim.lr=0.01", "data.positive_slices_only=true"])
    assert cfg["train"]["epochs"] == 7 and cfg["optim"]["lr"] == 0.01 and cfg["data"]["positive_slices_only"] is True
    assert cfg["train"]["batch_size"] == T.DEFAULTS["train"]["batch_size"] and cfg["name"] == "ovary_unet"


def test_every_demo_config_names_a_registry_model():
    from medseg_core.models import get_spec, list_models

    names = {yaml.safe_load(p.read_text())["model"] for p in (ROOT / "configs" / "demo").glob("*.yaml")}
    # every shipped architecture has its demo config; reproduction-only ones (issue 19) may have one
    assert {m for m in list_models() if not get_spec(m).reproduction_only} <= names <= set(list_models())


def test_reproduce_configs_cover_every_report_row():
    from medseg_core.losses import LOSSES
    from medseg_core.models import list_models

    cfgs = {p.stem: T.load_config(p) for p in (ROOT / "configs" / "reproduce").glob("*.yaml")}
    assert {"000_m1", "000_m2", "000_m3", "000_m4", "000_m5", "000_tl5", "000_m7"} <= set(cfgs)
    assert {
        "003_unet3d",
        "003_vnet3d",
        "003_unetr3d",
        "004_focal",
        "004_agbce",
        "004_adaptive_focal",
        "002_unetpp_effb3",
    } <= set(cfgs)
    assert sum(k.startswith("001_") for k in cfgs) >= 5
    for c in cfgs.values():
        assert c["model"] in list_models() and c["variant"] == "paper"
        assert c["loss"]["name"] in set(LOSSES) | {"dice_softmax"}
    assert cfgs["000_m7"]["side_masking_train"] == "oracle" and cfgs["000_m4"]["train"]["epochs"] == 50


def test_selection_ties_go_to_the_lower_validation_loss():
    """The best-epoch rule: a higher score wins; an equal score (AUC 1.0 again) wins only with a lower
    validation loss. The shipped cascade's classifier log: AUC 1.0 at epochs 3, 5, 7, 8 with losses
    2.33, 0.13, 0.016, 0.009 -- the rule keeps epoch 8, the old one kept epoch 3."""
    import math

    assert T._better(0.9, 5.0, 0.8, 0.1)  # higher score wins whatever the loss
    assert not T._better(0.8, 0.01, 0.9, 5.0)  # lower score loses whatever the loss
    assert T._better(1.0, 0.016, 1.0, 2.33) and not T._better(1.0, 2.33, 1.0, 0.016)
    assert not T._better(1.0, 0.5, 1.0, 0.5)  # a full tie keeps the earlier epoch
    assert T._better(0.5, 1.0, -math.inf, math.inf)  # the first scored epoch
    assert not T._better(math.nan, 0.001, 0.5, 1.0)  # a NaN score never wins
    assert not T._better(1.0, math.nan, 1.0, 0.5)  # a NaN loss never breaks a tie
    # a NaN metric (one class present) falls back to the loss, below every real score
    assert T._selection({"val_loss": 0.3}, "val_auc") == (-0.3 - 1e6, 0.3)
    assert T._selection({"val_loss": 0.3}, "val_loss") == (-0.3, 0.3)
    log = [
        (1, 0.21, 0.92),
        (2, 0.40, 1.46),
        (3, 1.0, 2.33),
        (4, 0.5, 6.44),
        (5, 1.0, 0.129),
        (6, 0.0, 9.11),
        (7, 1.0, 0.0164),
        (8, 1.0, 0.0093),
    ]
    best, best_loss, kept = -math.inf, math.inf, None
    for epoch, auc, loss in log:
        score, loss = T._selection({"val_auc": auc, "val_loss": loss}, "val_auc")
        if T._better(score, loss, best, best_loss):
            best, best_loss, kept = score, loss, epoch
    assert kept == 8


@pytest.mark.slow
def test_recalibrate_bn_changes_only_batchnorm_statistics(tmp_path, pelvic_root):
    """``--recalibrate-bn``: the same weights bit for bit, new running statistics from the card's
    training split, a card that keeps every field and records the repair with the old SHA-256."""
    import torch
    from safetensors.torch import load_file

    cfgp = tiny_config(
        tmp_path,
        pelvic_root,
        train={
            "epochs": 1,
            "batch_size": 4,
            "patience": 5,
            "select_by": "val_dice",
            "seed": 0,
            "max_steps_per_epoch": 2,
        },
    )
    T.main(["--config", str(cfgp)])
    ck = tmp_path / "ck"
    old_card = json.loads((ck / "ovary_unet.json").read_text())
    old = load_file(str(ck / "ovary_unet.safetensors"))
    T.main(["--config", str(cfgp), "--recalibrate-bn", str(ck / "ovary_unet.safetensors"), "--reason", "a test"])
    card = json.loads((ck / "ovary_unet.json").read_text())
    new = load_file(str(ck / "ovary_unet.safetensors"))
    assert card["sha256"] == sha256_file(ck / "ovary_unet.safetensors") != old_card["sha256"]
    assert set(old_card) <= set(card) and card["split"] == old_card["split"] and card["recipe"] == old_card["recipe"]
    rep = card["repairs"][-1]
    assert rep["old_sha256"] == old_card["sha256"] and rep["why"] == "a test" and rep["n_inputs"] > 0
    assert "--recalibrate-bn" in rep["command"] and "dice" in rep["test_after"] and card["test"] == rep["test_after"]
    stats = [k for k in new if k.endswith(("running_mean", "running_var"))]
    assert stats and any(not torch.equal(new[k], old[k]) for k in stats)
    assert all(
        torch.equal(new[k], old[k])
        for k in new
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert not list(ck.glob(".*recalibrating*"))
