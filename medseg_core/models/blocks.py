"""Building blocks shared by the 2D model families (written once, reused everywhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2, as in the original U-Net."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        mid = mid or cout
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection.

    The decoder feature ``g`` (gating signal) and the encoder feature ``x`` are projected to
    ``inter`` channels, summed, passed through ReLU, a 1x1 conv and a sigmoid; the resulting map
    in [0, 1] scales ``x``. ``g`` is resized to ``x``'s grid when they differ.
    """

    def __init__(self, g_ch: int, x_ch: int, inter: int | None = None) -> None:
        super().__init__()
        inter = inter or max(x_ch // 2, 1)
        self.wg = nn.Sequential(nn.Conv2d(g_ch, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.wx = nn.Sequential(nn.Conv2d(x_ch, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.last_attention: torch.Tensor | None = None

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gg = self.wg(g)
        if gg.shape[-2:] != x.shape[-2:]:
            gg = F.interpolate(gg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        a = self.psi(F.relu(gg + self.wx(x)))
        self.last_attention = a.detach()
        return x * a


def match_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pad or crop ``x`` (N, C, H, W) to ``ref``'s spatial size (odd input sizes)."""
    dh, dw = ref.shape[-2] - x.shape[-2], ref.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


class UpBlock(nn.Module):
    """Transposed-conv x2 upsampling, optional attention gate on the skip, concat, DoubleConv.

    ``dropout`` > 0 adds ``Dropout2d`` before the DoubleConv (used for MC-dropout uncertainty;
    it sits only in the decoder, so the encoder can be computed once per input).
    """

    def __init__(
        self, cin: int, skip: int, cout: int, attention: bool = False, dropout: float = 0.0, up_out: int | None = None
    ) -> None:
        super().__init__()
        up_out = up_out or cin // 2
        self.up = nn.ConvTranspose2d(cin, up_out, 2, stride=2)
        self.gate = AttentionGate(up_out, skip) if attention else None
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv = DoubleConv(up_out + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = match_size(self.up(x), skip)
        if self.gate is not None:
            skip = self.gate(x, skip)
        return self.conv(self.drop(torch.cat([skip, x], dim=1)))


class ClinicalFusionHead(nn.Module):
    """Report 001's classification head: image features fused with the clinical vector.

    clinical [menopausal, oncology centre] -> Linear(2,64) -> ReLU -> Linear(64,128) -> ReLU;
    concat with the pooled image features -> Linear(F+128, 256) -> ReLU -> Dropout(p) ->
    Linear(256, 64) -> ReLU -> Linear(64, n_classes). Without clinical data (``n_clinical`` 0):
    Linear(F, 256) -> ReLU -> Dropout -> Linear(256, n_classes).
    """

    def __init__(self, features: int, n_clinical: int = 2, n_classes: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        self.n_clinical = n_clinical
        self.clinical: nn.Sequential | None
        if n_clinical:
            self.clinical = nn.Sequential(
                nn.Linear(n_clinical, 64), nn.ReLU(inplace=True), nn.Linear(64, 128), nn.ReLU(inplace=True)
            )
            self.head = nn.Sequential(
                nn.Linear(features + 128, 256),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(256, 64),
                nn.ReLU(inplace=True),
                nn.Linear(64, n_classes),
            )
        else:
            self.clinical = None
            self.head = nn.Sequential(
                nn.Linear(features, 256), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, n_classes)
            )

    def forward(self, pooled: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        if self.clinical is not None:
            if clinical is None:
                raise ValueError("this model needs the clinical vector [menopausal, oncology_center]")
            pooled = torch.cat([pooled, self.clinical(clinical.to(pooled.dtype))], dim=1)
        return self.head(pooled)
