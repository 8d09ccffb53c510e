"""Volume input/output. See :mod:`medseg_core.io.loader` for formats and
:mod:`medseg_core.io.volume` for the array orientation."""

from .dicom import SeriesInfo
from .errors import InputError, Limits
from .loader import list_series, load_mask, load_volume, mask_nifti_bytes, save_mask_nifti
from .orientation import EDGE_LABELS, PLANES, display_aspect, display_slice, display_to_index, n_slices
from .segmentation import load_label_masks, union_mask
from .volume import Volume

__all__ = [
    "Volume",
    "InputError",
    "Limits",
    "SeriesInfo",
    "load_volume",
    "list_series",
    "load_mask",
    "save_mask_nifti",
    "mask_nifti_bytes",
    "display_slice",
    "display_aspect",
    "display_to_index",
    "n_slices",
    "PLANES",
    "EDGE_LABELS",
    "load_label_masks",
    "union_mask",
]
