"""Report 001's "denoised" setting: the annotation-removal autoencoder applied to every input.

Report 001 (Appendix C step 7, Tables 2, 4 and 6) removes burned-in annotations with the denoising
U-Net before the classifier / segmenter sees the image, in training and at test time alike. A
training config names the denoiser with ``denoiser: <checkpoint ref>`` (a registry name such as
``us_denoiser``, or the path of a trained ``.safetensors``); :func:`medseg_core.train.prepare_2d`
runs every case through :func:`apply_denoiser` before preprocessing, the card records the reference
(``card["denoiser"]``) and :func:`medseg_core.inference.predict` applies it again to every input
of that checkpoint, so training and inference see the same cleaned image.

The denoiser runs through the ordinary inference path (``predict`` on the restoration model, its
``Prediction.restored`` back in the input's intensity range), exactly as the Ultrasound page's
annotation removal (:func:`medseg_core.ultrasound.remove_annotations`) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .io import Volume

if TYPE_CHECKING:
    from .checkpoints import LoadedModel


def load_denoiser(ref: str) -> LoadedModel:
    """The denoiser checkpoint ``ref`` loaded once per process (a restoration model, or InputError)."""
    from .checkpoints import load_auxiliary

    return load_auxiliary(
        ref,
        "restoration",
        "The denoiser '{ref}' is a {task} model; give an annotation-removal "
        "(restoration) checkpoint such as us_denoiser.",
    )


def apply_denoiser(volume: Volume, ref: str | LoadedModel) -> Volume:
    """``volume`` with its annotations removed by the denoiser ``ref`` (a checkpoint reference or a
    loaded restoration model): same grid and geometry, the restored intensities, and
    ``meta["annotation_removed"]`` naming the denoiser."""
    from .inference import PredictOptions, predict

    lm = load_denoiser(ref) if isinstance(ref, str) else ref
    pred = predict(lm, volume, PredictOptions())
    restored = np.asarray(pred.restored, dtype=np.float32)
    meta = dict(volume.meta, annotation_removed=getattr(lm, "name", str(ref)))
    return volume.with_array(restored, name=f"{volume.name} (annotations removed)", meta=meta)
