"""Small table helpers shared by the command lines and the app's exports.

Slice numbering in files: a ``slice`` column is the 0-based array index along Z (what code indexes
with); every CSV written here also carries ``slice_number`` = ``slice`` + 1 right beside it, the
1-based number the app shows ("slice 5 of 24"). Readers of old files without ``slice_number``
derive it (:func:`medseg_core.cohort.read_rows`).
"""

from __future__ import annotations

import csv
import io
import numbers
from pathlib import Path


def with_slice_numbers(row: dict) -> dict:
    """``row`` with ``slice_number`` (1-based) inserted right after a 0-based integer ``slice``
    column, unless it is already there."""
    z = row.get("slice")
    if "slice_number" in row or not isinstance(z, numbers.Integral) or isinstance(z, bool):
        return row
    out = {}
    for k, v in row.items():
        out[k] = v
        if k == "slice":
            out["slice_number"] = int(v) + 1
    return out


def csv_text(rows: list[dict]) -> str:
    """Dict rows as CSV text; the header is the union of keys in first-seen order. A 0-based
    ``slice`` column gets its 1-based ``slice_number`` beside it (see the module docstring)."""
    rows = [with_slice_numbers(r) for r in rows]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write dict rows to CSV (see :func:`csv_text`)."""
    with open(path, "w", newline="") as fh:
        fh.write(csv_text(rows))
