"""``python -m medseg_core.data.montage --out phantoms.png``: a sheet of every phantom type.

Each row is one phantom (three seeds), drawn through the same display path as the app
(radiological orientation, aspect-correct), with the labels outlined.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..io.orientation import n_slices
from ..render import CT_PRESETS, LABEL_COLOURS, auto_window, slice_picture
from .synthetic import GENERATORS, SyntheticCase


def _tile(case: SyntheticCase, size: int = 256) -> tuple[Image.Image, int]:
    v = case.volume
    key = case.meta["primary_label"]
    z = (
        int(np.argmax(case.masks[key].reshape(v.shape[0], -1).sum(1)))
        if case.masks[key].any()
        else n_slices(v.shape, "axial") // 2
    )
    w, level = CT_PRESETS["Abdomen (liver/spleen)"] if v.modality == "CT" else auto_window(v.array)
    masks = [(m, LABEL_COLOURS[i % len(LABEL_COLOURS)]) for i, m in enumerate(case.masks.values())]
    rgb = slice_picture(v.array, v.spacing, "axial", z, (w, level), layers=masks, alpha=0.0, mode="outline").rgb
    im = Image.fromarray(rgb)
    im.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas, z


def montage(seeds: Sequence[int] = (0, 1, 2), size: int = 256) -> Image.Image:
    rows = list(GENERATORS.items())
    sheet = Image.new("RGB", (size * len(seeds) + 120, size * len(rows)), (20, 20, 20))
    dr = ImageDraw.Draw(sheet)
    for r, (kind, gen) in enumerate(rows):
        dr.text((8, r * size + size // 2), kind, fill=(230, 230, 230))
        for c, seed in enumerate(seeds):
            case = gen(seed)
            tile, z = _tile(case, size)
            sheet.paste(tile, (120 + c * size, r * size))
            labels = ", ".join(f"{k}" for k in case.masks)
            extra = case.meta.get("labelled_side") or (
                "malignant" if case.meta.get("malignant") else ("benign" if "malignant" in case.meta else "")
            )
            dr.text((124 + c * size, r * size + 4), f"seed {seed} z{z} {extra}", fill=(255, 255, 255))
            dr.text((124 + c * size, r * size + size - 14), labels[:40], fill=(200, 200, 200))
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="phantoms.png")
    args = ap.parse_args(argv)
    montage().save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
