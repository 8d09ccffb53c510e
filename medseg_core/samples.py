"""Bundled sample cases (files under ``medseg_core/sample_data``, made by
``python -m medseg_core.data.make_samples``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .io import Volume

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


@dataclass
class Sample:
    key: str
    title: str
    description: str
    image: Path
    mask: Path | None
    family: str
    extra: dict = field(default_factory=dict)
    extra_masks: dict[str, Path] = field(default_factory=dict)
    pixel_spacing_mm: tuple[float, float] | None = None
    modality: str | None = None

    def load(self) -> tuple[Volume, np.ndarray | None, dict[str, np.ndarray]]:
        """(Volume, primary mask or None, {name: extra mask}) through the public loaders."""
        from .io import load_mask, load_volume

        vol = load_volume(self.image, pixel_spacing_mm=self.pixel_spacing_mm, modality=self.modality)
        vol.warnings = [w for w in vol.warnings if "pixel size" not in w.lower()]
        mask = (load_mask(self.mask, like=vol) > 0).astype(np.uint8) if self.mask else None
        extras = {k: (load_mask(p, like=vol) > 0).astype(np.uint8) for k, p in self.extra_masks.items()}
        return vol, mask, extras


def list_samples() -> list[Sample]:
    """The bundled cases listed in ``sample_data/index.json`` (empty if none are bundled)."""
    idx = SAMPLE_DIR / "index.json"
    if not idx.exists():
        return []
    out = []
    for e in json.loads(idx.read_text()):
        out.append(
            Sample(
                key=e["key"],
                title=e["title"],
                description=e["description"],
                image=SAMPLE_DIR / e["image"],
                mask=(SAMPLE_DIR / e["mask"]) if e.get("mask") else None,
                family=e.get("family", ""),
                extra=e.get("extra", {}),
                extra_masks={k: SAMPLE_DIR / v for k, v in e.get("extra_masks", {}).items()},
                pixel_spacing_mm=tuple(e["pixel_spacing_mm"]) if e.get("pixel_spacing_mm") else None,
                modality=e.get("modality"),
            )
        )
    return out


def get_sample(key: str) -> Sample:
    for s in list_samples():
        if s.key == key:
            return s
    raise KeyError(f"no bundled sample named {key!r}")
