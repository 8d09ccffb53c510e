"""Small table helpers shared by the command lines."""
from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write dict rows to CSV; the header is the union of keys in first-seen order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
