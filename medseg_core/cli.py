"""Command-line error handling shared by ``train``, ``evaluate``, ``cohort`` and ``checkpoints``:
a bad input or an unknown model prints one sentence and exits with status 2, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from .io.errors import InputError


def guarded(main: Callable, argv=None):
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
