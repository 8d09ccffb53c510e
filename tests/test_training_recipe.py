"""Training-recipe keys that the reports' configs need: LR schedulers, patient counts for the split,
local pretrained encoder weights and fine-tuning from another checkpoint (issue 19)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from medseg_core import train as T
from medseg_core.data.datasets import Case
from medseg_core.io.errors import InputError
from medseg_core.models import build_model


def _cfg(**optim):
    return {"optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, **optim}}


def _lrs(cfg, epochs, vals=None):
    net = torch.nn.Linear(2, 1)
    opt = T._optimizer(cfg, net.parameters())
    sched = T._scheduler(cfg["optim"], opt, epochs)
    out = []
    for e in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        T._scheduler_step(sched, {"val_loss": (vals or [1.0] * epochs)[e]}, 1.0)
    return out


def test_cosine_schedule_follows_the_closed_form():
    # report 002: CosineAnnealingLR(T_max=50, eta_min=1e-6) from 5e-5
    cfg = {
        "optim": {
            "name": "rmsprop",
            "lr": 5e-5,
            "momentum": 0.9,
            "scheduler": {"name": "cosine", "T_max": 50, "eta_min": 1e-6},
        }
    }
    lrs = _lrs(cfg, 11)
    for e, lr in enumerate(lrs):
        want = 1e-6 + (5e-5 - 1e-6) * (1 + math.cos(math.pi * e / 50)) / 2
        assert lr == pytest.approx(want, rel=1e-6)


def test_step_schedule_cuts_ten_percent_per_epoch_and_plateau_watches_validation_loss():
    lrs = _lrs(_cfg(lr=1e-6, scheduler={"name": "step", "step_size": 1, "gamma": 0.9}), 4)
    assert lrs == pytest.approx([1e-6, 0.9e-6, 0.81e-6, 0.729e-6])
    # plateau: validation loss stops improving after epoch 1 -> lr halves after patience 1
    lrs = _lrs(_cfg(scheduler={"name": "plateau", "factor": 0.5, "patience": 1}), 5, vals=[1.0, 0.5, 0.6, 0.6, 0.6])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05])
    assert T._scheduler({"scheduler": None}, None, 3) is None
    with pytest.raises(InputError, match="scheduler 'warmup'"):
        T._scheduler({"scheduler": {"name": "warmup"}}, None, 3)


def _cases(n):
    return [Case(case_id=f"c{i}", patient_id=f"p{i}", image=None) for i in range(n)]


def test_split_by_patient_counts():
    cfg = {"data": {"split": {"counts": [28, 8, 5], "seed": 0}}}
    s = T.split_cases(_cases(41), cfg)
    assert [len(s[k]) for k in ("train", "val", "test")] == [28, 8, 5]
    assert not {c.patient_id for c in s["train"]} & {c.patient_id for c in s["test"]}
    # a smoke run on 12 phantoms keeps the proportions
    s = T.split_cases(_cases(12), cfg)
    assert sum(len(v) for v in s.values()) == 12 and len(s["train"]) == 8
    with pytest.raises(InputError, match="asks for 41 patients but the dataset has 50"):
        T.split_cases(_cases(50), cfg)


def test_local_encoder_weights_are_loaded_and_recorded(tmp_path):
    torch.manual_seed(1)
    donor = build_model("ovary_tl5", "demo")
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(tmp_path / "r34.safetensors"))
    torch.manual_seed(2)
    model = build_model("ovary_tl5", "demo")
    k = next(iter(donor.encoder.state_dict()))
    assert not torch.equal(model.encoder.state_dict()[k], donor.encoder.state_dict()[k])
    entry = T.pretrained_entry(model, {"encoder_weights": str(tmp_path / "r34.safetensors")})
    assert torch.equal(model.encoder.state_dict()[k], donor.encoder.state_dict()[k])
    assert entry["encoder"] == "r34.safetensors" and entry["tensors_loaded"] == entry["encoder_tensors"]
    assert len(entry["sha256"]) == 64
    # no weights: the card says so
    assert T.pretrained_entry(build_model("ovary_tl5", "demo"), {}) == {"encoder": "random init"}
    # a file for another network is refused with a sentence
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a weights file for this encoder"):
        T.pretrained_entry(build_model("ovary_tl5", "demo"), {"encoder_weights": str(tmp_path / "other.safetensors")})
    with pytest.raises(InputError, match="does not exist"):
        T.pretrained_entry(build_model("ovary_tl5", "demo"), {"encoder_weights": str(tmp_path / "none.safetensors")})


def test_init_from_a_checkpoint_copies_every_fitting_tensor():
    model = build_model("ovary_unet", "demo")
    entry = T.pretrained_entry(model, {"init_from": "ovary_unet"})
    from medseg_core.checkpoints import load_model

    ref = load_model("ovary_unet").module.state_dict()
    assert all(torch.equal(v.float(), ref[k].float()) for k, v in model.state_dict().items())
    assert entry["init_from"]["checkpoint"] == "ovary_unet"
    assert entry["init_from"]["tensors_loaded"] == entry["init_from"]["model_tensors"]
