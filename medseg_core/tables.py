"""Small table helpers shared by the command lines and the app's exports."""
from __future__ import annotations

import csv
import io
from pathlib import Path


def csv_text(rows: list[dict]) -> str:
    """Dict rows as CSV text; the header is the union of keys in first-seen order."""
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
