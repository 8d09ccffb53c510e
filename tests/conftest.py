import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
    assert msg and (msg[0].isupper() or msg[0] == "'"), msg
    assert msg.rstrip().endswith((".", "?")), msg
    assert 20 <= len(msg) <= 400, msg
    for noise in ("Traceback", "Error(", "0x", "errno", "<class", "dtype(", "File \"", "Exception"):
        assert noise not in msg, msg
