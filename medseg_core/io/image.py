"""2D images (PNG, JPEG, TIFF, BMP): ultrasound frames, screenshots, 16-bit MRI slices."""

from __future__ import annotations

import io

import numpy as np

from .errors import InputError, Limits
from .orientation import to_canonical

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_image(
    data: bytes, name: str, limits: Limits, pixel_spacing_mm: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Decode an image to a canonical (1, Y, X) array; colour becomes grey (BT.601 luminance).

    The picture is stored as an axial slice in radiological display (rows anterior to posterior,
    columns patient right to left), so :func:`orientation.display_slice` shows it exactly as the
    file looks. That orientation is assumed, not stated by the file: ``meta["orientation_known"]``
    is False and the viewer shows no anatomical letters. ``pixel_spacing_mm`` is (row, column) in
    mm; 1 mm when not given.
    """
    from PIL import Image, UnidentifiedImageError

    warnings: list[str] = []
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > limits.max_image_pixels:
                raise InputError(
                    f"'{name}' is {w} x {h} pixels, larger than this server accepts; resize it before uploading."
                )
            n_frames = int(getattr(im, "n_frames", 1))
            if n_frames > 1:
                warnings.append(f"'{name}' holds {n_frames} pages or frames; only the first is shown.")
            im.seek(0)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
            elif mode in ("L", "1"):
                arr = np.asarray(im.convert("L"), dtype=np.float32)
            elif mode == "LA":
                arr = np.asarray(im, dtype=np.float32)[..., 0]
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
                if not (np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2])):
                    warnings.append(f"'{name}' is a colour image; it was converted to grey (luminance).")
                arr = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"'{name}' declares an enormous picture (a decompression bomb?) and was refused.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(
            f"'{name}' could not be read as an image: it is damaged or truncated; save it again as PNG and re-upload."
        ) from None
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"'{name}' holds no 2D picture that can be shown.")
    rs, cs = pixel_spacing_mm if pixel_spacing_mm else (1.0, 1.0)
    if not pixel_spacing_mm:
        warnings.append("Image files carry no pixel size; 1 mm pixels are assumed (distances and areas are in pixels).")
    data_xyz = arr.T[:, :, None]  # (col, row, 1)
    affine = LPS_TO_RAS @ np.diag([cs, rs, 1.0, 1.0])
    arr_zyx, canon = to_canonical(data_xyz, affine)
    # An image file states no patient orientation: it is shown as the file looks, without R/L/A/P letters.
    meta = {
        "format": f"image ({name.rsplit('.', 1)[-1].upper() if '.' in name else 'unknown'})",
        "source_orientation": "not stated (shown as the file looks)",
        "orientation_known": False,
        "image_mode": mode,
        "spacing_source": "given" if pixel_spacing_mm else "assumed",
    }
    return arr_zyx, canon, warnings, meta
