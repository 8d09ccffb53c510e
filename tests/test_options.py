"""The one key=value options parser shared by train, evaluate and cohort, and the command lines'
one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medseg_core.io.errors import InputError
from medseg_core.options import parse_option_set, parse_pairs, predict_options, set_dotted, split_pairs

ROOT = Path(__file__).resolve().parents[1]


def test_values_lists_tuples_numbers():
    kw = parse_pairs(
        ["epochs=5", "lr=1e-4", "flip=false", "size=[96, 96]", "map={prostate: expert}", "a=1,b=[x, y],c=none"]
    )
    assert kw == {
        "epochs": 5,
        "lr": 1e-4,
        "flip": False,
        "size": [96, 96],
        "map": {"prostate": "expert"},
        "a": 1,
        "b": ["x", "y"],
        "c": "none",
    }
    assert split_pairs("a=[1,2],b={k: 1, j: 2},c=3") == ["a=[1,2]", "b={k: 1, j: 2}", "c=3"]
    cfg = {"train": {"epochs": 1}}
    set_dotted(cfg, "train.epochs", 7)
    set_dotted(cfg, "optim.lr", 0.1)
    assert cfg == {"train": {"epochs": 7}, "optim": {"lr": 0.1}}


def test_predict_options_coerces_and_refuses():
    o = predict_options(["postprocessing=largest_2d", "threshold=0.4", "side_masking=two_pass"])
    assert o.postprocessing == ("largest_2d",) and o.threshold == 0.4 and o.side_masking == "two_pass"
    assert predict_options(["postprocessing=[]"]).postprocessing == ()
    assert predict_options(["postprocessing=[largest_2d, raovseg]"]).postprocessing == ("largest_2d", "raovseg")
    with pytest.raises(InputError, match="Unknown option"):
        predict_options(["treshold=0.4"])
    with pytest.raises(InputError, match="key=value"):
        parse_pairs(["threshold"])
    with pytest.raises(InputError, match="no name"):
        parse_option_set(":side_masking=oracle")


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_command_lines_say_one_sentence_and_exit_2(tmp_path):
    cases = [
        (
            "medseg_core.evaluate",
            "--model",
            "no_such_model",
            "--data",
            str(tmp_path),
            "--adapter",
            "generic",
            "--out",
            str(tmp_path / "o"),
        ),
        (
            "medseg_core.evaluate",
            "--model",
            "ovary_unet",
            "--data",
            str(tmp_path),
            "--adapter",
            "generic",
            "--out",
            str(tmp_path / "o"),
            "--option",
            "treshold=0.3",
        ),
        (
            "medseg_core.cohort",
            "--models",
            str(tmp_path / "nothing.safetensors"),
            "--data",
            str(tmp_path),
            "--adapter",
            "generic",
            "--out",
            str(tmp_path / "c"),
        ),
        ("medseg_core.train", "--config", str(tmp_path / "missing.yaml")),
    ]
    for args in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
