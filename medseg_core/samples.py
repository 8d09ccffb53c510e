"""Bundled sample cases (files under ``medseg_core/sample_data``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


@dataclass
class Sample:
    key: str
    title: str
    description: str
    image: Path
    mask: Path | None
    family: str
    extra: dict


def list_samples() -> list[Sample]:
    """The bundled cases listed in ``sample_data/index.json`` (empty if none are bundled)."""
    idx = SAMPLE_DIR / "index.json"
    if not idx.exists():
        return []
    out = []
    for e in json.loads(idx.read_text()):
        out.append(Sample(key=e["key"], title=e["title"], description=e["description"],
                          image=SAMPLE_DIR / e["image"], mask=(SAMPLE_DIR / e["mask"]) if e.get("mask") else None,
                          family=e.get("family", ""), extra=e.get("extra", {})))
    return out


def get_sample(key: str) -> Sample:
    for s in list_samples():
        if s.key == key:
            return s
    raise KeyError(f"no bundled sample named {key!r}")
