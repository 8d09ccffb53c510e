"""Multi-scale deep supervision loss (MicroSegNet, report 004's network).

MicroSegNet's public trainer (``TransUNet/trainer_MicroUS.py``, methods.md §5) does, per batch::

    outputs, out0, out1, out2 = model(image)            # 224, 28, 56, 112 pixels square
    loss = L(label0, out0, non_expert0, ks=1) + L(label1, out1, non_expert1, ks=2)
         + L(label2, out2, non_expert2, ks=3) + L(label,  outputs, non_expert, ks=4)

so every scale has weight 1 and the hard-region dilation kernel grows with the scale (1, 2, 3, 4 from
coarse to fine). The smaller labels come from ``MultiscaleGenerator``: ``cv2.resize`` with its default
bilinear interpolation of the 0/1 mask, then ``astype(long)``, which truncates: a pixel is foreground
only where the bilinear value is 1, i.e. where every source pixel it samples is foreground. That is
``resize_target(..., mode="bilinear_floor")`` here (torch's bilinear with ``align_corners=False`` and
no antialiasing samples the same source positions as cv2's INTER_LINEAR). ``mode="nearest"`` is offered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: MicroSegNet's trainer: dilation kernel per scale, from the coarsest (28) to the finest (224) output
MICROSEGNET_KS = (1, 2, 3, 4)


def resize_target(y: torch.Tensor, size: Sequence[int], mode: str = "bilinear_floor") -> torch.Tensor:
    """A (B, C, H, W) 0/1 mask at ``size``: MicroSegNet's bilinear-then-truncate, or nearest."""
    size = tuple(int(s) for s in size)
    if tuple(y.shape[-2:]) == size:
        return y
    if mode == "nearest":
        return F.interpolate(y.float(), size=size, mode="nearest")
    if mode != "bilinear_floor":
        raise ValueError("mode must be 'bilinear_floor' or 'nearest'")
    r = F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False, antialias=False)
    return (r >= 1.0 - 1e-6).float()


def deep_supervision_loss(
    loss_fn: Callable[..., torch.Tensor],
    outputs: Sequence[torch.Tensor],
    y: torch.Tensor,
    non_expert: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
    ks: Sequence[int] | None = None,
    mode: str = "bilinear_floor",
) -> torch.Tensor:
    """Sum over the outputs of ``weight * loss_fn(output, target at its size[, non-expert at its size])``.

    ``outputs`` in any order (e.g. TransUNet's ``(full, 28, 56, 112)``); ``weights`` and ``ks`` are
    given from the coarsest to the finest output (default: 1 each, as MicroSegNet; ``ks`` default
    :data:`MICROSEGNET_KS` aligned to the finest scales). ``ks`` is passed only to losses that take a
    hard region (``non_expert`` given).
    """
    order = sorted(range(len(outputs)), key=lambda i: outputs[i].shape[-2] * outputs[i].shape[-1])
    n = len(outputs)
    w = list(weights) if weights is not None else [1.0] * n
    k = list(ks) if ks is not None else list(MICROSEGNET_KS)
    if len(w) != n:
        raise ValueError(f"{len(w)} deep-supervision weights for {n} outputs")
    k = k[-n:] if len(k) >= n else [k[0]] * (n - len(k)) + k
    total: torch.Tensor | None = None
    for rank, i in enumerate(order):
        out = outputs[i]
        yt = resize_target(y, out.shape[-2:], mode)
        if non_expert is not None:
            ne = resize_target(non_expert, out.shape[-2:], mode)
            term = loss_fn(out, yt, ne, ks=int(k[rank]))
        else:
            term = loss_fn(out, yt)
        weighted = float(w[rank]) * term
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("deep supervision needs at least one output")
    return total
