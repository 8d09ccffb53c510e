"""The ``medseg`` command, and the command-line error handling that ``train``, ``evaluate``,
``cohort`` and ``checkpoints`` share: a bad input or an unknown model prints one sentence and exits
with status 2, never a traceback.

``medseg app | train | evaluate | cohort | import-bundle | cards | bench`` (``medseg SUB --help``
for each); every subcommand is also ``python -m medseg_core.<module>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .io.errors import InputError

T = TypeVar("T")


def guarded(main: Callable[[list[str] | None], T], argv: list[str] | None = None) -> T:
    """Run ``main(argv)``; an InputError (bad file, unknown model or option, damaged checkpoint)
    becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (FileNotFoundError, NotADirectoryError) as e:  # a dataset folder without its published layout
        text = str(e).replace("\n", " ")
        print(f"error: {text[0].upper() + text[1:] if text else 'A file or folder is missing.'}", file=sys.stderr)
        raise SystemExit(2) from None


#: subcommand -> (module, what it does)
SUBCOMMANDS = {
    "app": (None, "start the review app (Streamlit) on a bundled sample case"),
    "train": ("medseg_core.train", "train a registry model from a config"),
    "evaluate": ("medseg_core.evaluate", "evaluate a checkpoint or a folder of predictions on a dataset"),
    "cohort": ("medseg_core.cohort", "a cohort run (models x option sets) for the failure gallery"),
    "import-bundle": ("medseg_core.checkpoints", "import a MONAI Model Zoo bundle as a checkpoint"),
    "cards": ("medseg_core.cards", "migrate model cards to the current schema"),
    "calibrate": ("medseg_core.calibration", "fit temperature scaling on validation data, stored in the card"),
    "reproduce": ("medseg_core.reproduce", "list / run every result row of a report (configs/reproduce/rows/)"),
    "bench": (None, "run the benchmarks (writes benchmarks/RESULTS.md; needs the repository)"),
}


def _repo_file(*parts: str) -> Path:
    p = Path(__file__).resolve().parents[1].joinpath(*parts)
    if not p.exists():
        raise InputError(
            f"'{'/'.join(parts)}' is part of the medseg repository, not of the installed library; run "
            "this from a checkout (pip install -e .) or use the library's own commands."
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """``medseg SUBCOMMAND [ARGS]``."""
    import importlib
    import subprocess

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(map(len, SUBCOMMANDS))
        print("usage: medseg SUBCOMMAND [ARGS]   (medseg SUBCOMMAND --help)\n\nsubcommands:")
        for k, (_, what) in SUBCOMMANDS.items():
            print(f"  {k:<{width}}  {what}")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from . import __version__

        print(f"medseg {__version__}")
        return 0
    sub, rest = args[0], args[1:]
    if sub not in SUBCOMMANDS:
        print(f"error: unknown subcommand '{sub}'; choose one of {', '.join(SUBCOMMANDS)}.", file=sys.stderr)
        return 2
    try:
        if sub == "app":
            return subprocess.call(
                [sys.executable, "-m", "streamlit", "run", str(_repo_file("app.py")), *rest], cwd=str(_repo_file())
            )
        if sub == "bench":
            return subprocess.call([sys.executable, str(_repo_file("benchmarks", "run_all.py")), *rest])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = SUBCOMMANDS[sub][0]
    assert name is not None  # app and bench (no module) returned above
    module = importlib.import_module(name)
    if sub == "import-bundle":
        return int(module.main(["import-bundle", *rest]) or 0)
    guarded(module.main, rest)
    return 0
