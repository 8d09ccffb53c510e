"""medseg is an installable package (issue 20 item 1): the `medseg` command with its subcommands,
and a wheel that imports outside the checkout with its bundled samples."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDSEG = Path(sys.executable).parent / "medseg"


def _run(*args, cwd="/", env=None):
    return subprocess.run([*args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.skipif(not MEDSEG.exists(), reason="medseg is not installed in this environment (make setup installs it)")
def test_medseg_command_and_subcommands():
    r = _run(str(MEDSEG), "--help")
    assert r.returncode == 0
    for sub in ("app", "train", "evaluate", "cohort", "import-bundle", "cards", "bench"):
        assert f"  {sub} " in r.stdout
    r = _run(str(MEDSEG), "evaluate", "--help")
    assert r.returncode == 0 and "--predictions" in r.stdout
    r = _run(
        str(MEDSEG), "evaluate", "--model", "no_such_model", "--data", "/tmp", "--adapter", "generic", "--out", "/tmp/x"
    )
    assert r.returncode == 2 and r.stderr.startswith("error: No checkpoint named 'no_such_model'")
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run(str(MEDSEG), "frobnicate")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr


@pytest.mark.slow
def test_wheel_imports_outside_the_checkout(tmp_path):
    """`pip install .` builds a wheel holding the library and its samples; installed into a folder of
    its own, it imports from anywhere and opens a bundled sample."""
    target = tmp_path / "site"
    r = _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "-q",
        "--target",
        str(target),
        str(ROOT),
        cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert (target / "medseg_core" / "sample_data" / "index.json").exists()
    assert not (target / "tests").exists() and not (target / "pages").exists()
    code = (
        "import medseg_core, medseg_core.samples as s; "
        "v = s.get_sample('pelvic').load()[0]; print(medseg_core.__file__); print(v.shape)"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = _run(sys.executable, "-c", code, cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(str(target)) and "(24, 256, 256)" in r.stdout
    shutil.rmtree(target)
