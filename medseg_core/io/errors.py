"""The one exception every loader raises for bad input, and the limits it enforces."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


class InputError(Exception):
    """An input that cannot be used, explained in one sentence a clinician understands.

    The message says what is wrong and what to do. It never contains a library traceback.
    """


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    """Budgets checked *before* data is decoded, so a hostile header cannot exhaust memory.

    Attributes:
        max_voxels: largest number of voxels a loaded volume may have (default 300 M, about
            1.2 GB as float32). Override with ``MEDSEG_MAX_VOXELS``.
        max_decompressed_bytes: largest number of bytes a gzip stream or zip archive may inflate
            to (default 2 GiB). Override with ``MEDSEG_MAX_DECOMPRESSED_BYTES``.
        max_zip_entries: largest number of members in a zip archive (default 20 000).
        max_image_pixels: largest 2D image (default 100 M pixels).
    """

    max_voxels: int = 300_000_000
    max_decompressed_bytes: int = 2 * 1024**3
    max_zip_entries: int = 20_000
    max_image_pixels: int = 100_000_000

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_voxels=_env_int("MEDSEG_MAX_VOXELS", cls.max_voxels),
            max_decompressed_bytes=_env_int("MEDSEG_MAX_DECOMPRESSED_BYTES", cls.max_decompressed_bytes),
            max_zip_entries=_env_int("MEDSEG_MAX_ZIP_ENTRIES", cls.max_zip_entries),
            max_image_pixels=_env_int("MEDSEG_MAX_IMAGE_PIXELS", cls.max_image_pixels),
        )


def check_voxel_budget(shape: Sequence[int], limits: Limits, what: str) -> None:
    n = 1
    for s in shape:
        n *= int(s)
    if n > limits.max_voxels:
        dims = " x ".join(str(int(s)) for s in shape)
        raise InputError(
            f"The {what} declares {dims} voxels ({n / 1e6:,.3g} million), more than this server "
            f"accepts ({limits.max_voxels / 1e6:,.3g} million); crop or downsample it before uploading."
        )


def human_bytes(n: float) -> str:
    """A byte count in words a user reads: "640 MB", "2.0 GB"."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
