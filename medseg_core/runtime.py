"""How a model's forward passes run on the CPU: PyTorch with channels-last weights where that is faster.

Measured by ``make bench`` on this project's 2-core CPU (``benchmarks/RESULTS.md``, section "CPU
speed of 3D inference"): one batch of four 64^3 windows through the shipped ``unet3d`` takes about
90-150 ms with contiguous float32 weights and 58-90 ms with the weights in ``channels_last_3d``
(oneDNN's blocked 3D convolutions), the same float32 numbers (largest logit difference 6e-6); a whole
``predict`` of a 300 x 512 x 512 CT drops from 6.0-7.2 s to 4.5-4.7 s. So :func:`prepare` puts a 3D
model's weights in that layout once, on the CPU, before its first window; MC dropout, TTA and the
deterministic path all run the same module. ``MEDSEG_CHANNELS_LAST=0`` keeps the contiguous layout.

2D models: channels-last (NHWC) helps most architectures here but not all (one batch of 8 slices at
each checkpoint's size, ``make bench`` section "2D layout": 0.66-0.89 x the contiguous time for the
U-Nets, the EfficientNet-B0 models, UNet++ and the slice classifier; 1.25 x for TL-5's ResNet34;
about 1.0 for the denoiser and the micro-US U-Net), so it is used for the architectures in
:data:`CHANNELS_LAST_2D` only (a user's checkpoint counts by its architecture).

Tried and not kept (same page of results):

* ONNX Runtime 1.32 (the exported eval-mode graph): as fast as channels-last in a fresh process,
  slower and more variable inside ``predict`` (PyTorch's OpenMP threads, busy with the blending
  between windows, compete with its thread pool: 4.5-6.1 s for the 300 x 512 x 512 CT), no MC
  dropout (an exported graph is the eval-mode network), and two more dependencies.
* ``torch.compile``: no faster than channels-last per window, and its compilation (3 s with a
  warm cache, about 40 s cold) would be paid by every new server process on a user's first click.
* bfloat16 autocast: as fast as channels-last but not the same numbers (28 of 6013 mask voxels of
  the CT phantom change; Dice 0.998 to float32).
"""

from __future__ import annotations

import os
import threading
import weakref

import torch

from .checkpoints import LoadedModel

CHANNELS_LAST = "PyTorch, channels-last-3d"
CHANNELS_LAST_2D_WORDS = "PyTorch, channels-last"
CONTIGUOUS = "PyTorch"
#: 2D architectures measured faster with channels-last weights on this project's CPU (see above)
CHANNELS_LAST_2D = frozenset(
    {
        "ovary_unet",
        "ovary_attention_unet",
        "ovary_slice_classifier",
        "us_mtl_effb0",
        "us_mtl_unet",
        "us_cascade",
        "gi_unetpp_effb3",
    }
)
_LOCK = threading.Lock()
_PREPARED: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def wanted() -> bool:
    """Whether 3D models run with channels-last-3d weights on the CPU (``MEDSEG_CHANNELS_LAST``, default on)."""
    return os.environ.get("MEDSEG_CHANNELS_LAST", "1").strip().lower() not in ("0", "false", "no", "off")


def prepare(loaded: LoadedModel) -> str:
    """Put ``loaded``'s module in the layout that runs fastest here (once per module) and say which
    layout runs: 3D models :data:`CHANNELS_LAST` on the CPU, 2D models of :data:`CHANNELS_LAST_2D`
    :data:`CHANNELS_LAST_2D_WORDS`, everything else (CUDA, switched off) :data:`CONTIGUOUS`. The
    numbers do not change beyond float rounding (only the memory order of the weights)."""
    module = loaded.module
    three_d = loaded.spec.dims == "3d"
    arch = loaded.spec.architecture or loaded.spec.name
    if str(loaded.device) != "cpu" or not wanted() or not (three_d or arch in CHANNELS_LAST_2D):
        if module in _PREPARED:  # switched off after an earlier run: back to the contiguous layout
            with _LOCK:
                module.to(memory_format=torch.contiguous_format)
                _PREPARED.discard(module)
        return CONTIGUOUS
    with _LOCK:
        if module not in _PREPARED:
            module.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)
            _PREPARED.add(module)
    return CHANNELS_LAST if three_d else CHANNELS_LAST_2D_WORDS
