"""How a 3D model's sliding-window passes run on the CPU: PyTorch with channels-last-3d weights.

Measured by ``make bench`` on this project's 2-core CPU (``benchmarks/RESULTS.md``, section "CPU
speed of 3D inference"): one batch of four 64^3 windows through the shipped ``unet3d`` takes about
90-150 ms with contiguous float32 weights and 58-90 ms with the weights in ``channels_last_3d``
(oneDNN's blocked 3D convolutions), the same float32 numbers (largest logit difference 6e-6); a whole
``predict`` of a 300 x 512 x 512 CT drops from 6.0-7.2 s to 4.5-4.7 s. So :func:`prepare` puts a 3D
model's weights in that layout once, on the CPU, before its first window; MC dropout, TTA and the
deterministic path all run the same module. ``MEDSEG_CHANNELS_LAST=0`` keeps the contiguous layout.

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
CONTIGUOUS = "PyTorch"
_LOCK = threading.Lock()
_PREPARED: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def wanted() -> bool:
    """Whether 3D models run with channels-last-3d weights on the CPU (``MEDSEG_CHANNELS_LAST``, default on)."""
    return os.environ.get("MEDSEG_CHANNELS_LAST", "1").strip().lower() not in ("0", "false", "no", "off")


def prepare(loaded: LoadedModel) -> str:
    """Put ``loaded``'s 3D module in the layout that runs fastest here (once per module) and say
    which layout runs: :data:`CHANNELS_LAST` on the CPU, :data:`CONTIGUOUS` on CUDA or when
    switched off. The numbers do not change (only the memory order of the weights)."""
    module = loaded.module
    if str(loaded.device) != "cpu" or not wanted():
        if module in _PREPARED:  # switched off after an earlier run: back to the contiguous layout
            with _LOCK:
                module.to(memory_format=torch.contiguous_format)
                _PREPARED.discard(module)
        return CONTIGUOUS
    with _LOCK:
        if module not in _PREPARED:
            module.to(memory_format=torch.channels_last_3d)
            _PREPARED.add(module)
    return CHANNELS_LAST
