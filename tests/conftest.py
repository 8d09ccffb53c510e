import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# loaders re-raise unexpected exceptions instead of wrapping them, so the tests find them
os.environ["MEDSEG_STRICT_LOADING"] = "1"
# the app writes its audit trail (medseg_core.store): tests never touch the user's own database
os.environ.setdefault("MEDSEG_DB", str(Path(__import__("tempfile").mkdtemp(prefix="medseg-db-")) / "medseg.db"))


@pytest.fixture(scope="session")
def pydicom_files() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="session")
def nibabel_files() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data"


def assert_readable(msg: str) -> None:
    """An InputError message a clinician can read: one or two plain sentences, no library noise."""
    assert msg and (msg[0].isupper() or msg[0].isdigit() or msg[0] == "'"), msg
    assert msg.rstrip().endswith((".", "?")), msg
    assert 20 <= len(msg) <= 400, msg
    for noise in ("Traceback", "Error(", "0x", "errno", "<class", "dtype(", 'File "', "Exception"):
        assert noise not in msg, msg


@pytest.fixture(scope="session")
def pelvic_cohort(tmp_path_factory) -> Path:
    """A real cohort run folder: the shipped ovary U-Net on 3 fresh synthetic pelvic cases (seed 7),
    side masking off / oracle / two-pass, 4 MC-dropout samples. Shared by the analysis and app tests."""
    from medseg_core import cohort as C
    from medseg_core.checkpoints import checkpoint_status
    from medseg_core.data import datasets as D
    from medseg_core.data.make_synthetic import ensure_synthetic

    if checkpoint_status("ovary_unet") != "ok":
        pytest.skip("ovary_unet checkpoint not shipped")
    root = tmp_path_factory.mktemp("pelvic")
    ensure_synthetic(root, {"kind": "pelvic", "n": 3, "seed": 7})
    out = tmp_path_factory.mktemp("runs") / "pelvic_ovary_unet"
    C.run_cohort(
        D.ut_endomri_d2(root),
        ["ovary_unet"],
        C.SIDE_SETS,
        out,
        mc_samples=4,
        dataset={"adapter": "ut_endomri_d2", "root": str(root)},
    )
    return out


def open_case(at, vol, gt=None):
    """Make ``vol`` the case of an AppTest session, as ``pages._shared.set_case`` does in the app,
    and run the app once."""
    from medseg_core.render import auto_window
    from medseg_core.review import PredictionCache, case_key

    ss = at.session_state
    for k, v in {
        "volume": vol,
        "gt_mask": gt,
        "extra_masks": {},
        "sample": None,
        "case_key": case_key(vol),
        "auto_window": auto_window(vol.array),
        "predictions": PredictionCache(),
        "clinical": {"menopausal": 0, "oncology_center": 0},
        "external_predictions": {},
    }.items():
        ss[k] = v
    ss["model_name"] = None
    ss["current"] = None
    return at.run()


@pytest.fixture
def watched_disk(tmp_path, monkeypatch):
    """(temporary folder, working directory), both empty and in force for the test: a test that
    reads uploads asserts afterwards that nothing was written to either."""
    import tempfile

    import streamlit.testing.v1  # noqa: F401 - imported before the watch starts: the import makes a temporary folder

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp, work
