"""Report 000's 2D ovary models and RAovSeg's slice classifier.

* :class:`UNet2D` -- Model 1: 4 down stages of DoubleConv + 2x2 max-pool, 4 up stages with
  transposed conv + skip + DoubleConv, 1x1 conv to one logit. ``base`` 64 is the report's width.
* ``UNet2D(attention=True)`` -- Model 2: an attention gate on every skip connection.
* :class:`TL5` -- ResNet34 encoder (segmentation-models-pytorch) + the attention-gated decoder.
  ImageNet weights only from a local file (``encoder_weights_path``); none are downloaded.
* :class:`SliceClassifier` -- RAovSeg's first stage: 7x7 stride-2 stem, residual blocks 8->8 and
  8->16, global pool, dropout 0.2, one logit (ovary present on the slice).

All segmenters split into ``encode`` (deterministic) and ``decode`` (holds the optional dropout),
so MC-dropout sampling computes the encoder once.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DoubleConv, UpBlock


class UNet2D(nn.Module):
    """U-Net (Model 1) or Attention U-Net (Model 2) with one output logit per pixel.

    Args:
        in_channels: input channels (1 for MRI).
        out_channels: logits per pixel (1, sigmoid).
        base: channels of the first stage (64 in the report; 16 for the CPU demo).
        attention: attention gate on every skip (Model 2).
        dropout: Dropout2d probability in each decoder stage (0 = the report's models).
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, base: int = 64, attention: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        c = [base * 2**i for i in range(5)]
        self.inc = DoubleConv(in_channels, c[0])
        self.downs = nn.ModuleList([DoubleConv(c[i], c[i + 1]) for i in range(4)])
        self.ups = nn.ModuleList(
            [UpBlock(c[i + 1], c[i], c[i], attention=attention, dropout=dropout) for i in reversed(range(4))]
        )
        self.outc = nn.Conv2d(c[0], out_channels, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.inc(x)]
        for d in self.downs:
            feats.append(d(F.max_pool2d(feats[-1], 2)))
        return feats

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            x = up(x, skip)
        return self.outc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def load_local_encoder_weights(encoder: nn.Module, path: str | Path | None) -> str:
    """Load ImageNet (or other) encoder weights from a local safetensors file, never a download.

    Returns a sentence describing what was loaded, for the model card. A 3-channel first conv is
    averaged to the model's input channels.
    """
    if path is None:
        return "encoder randomly initialised (no local pretrained weights file given)"
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = encoder.state_dict()
    for k, v in list(state.items()):
        if k in own and own[k].ndim == 4 and v.ndim == 4 and v.shape[1] != own[k].shape[1]:
            state[k] = v.mean(dim=1, keepdim=True).repeat(1, own[k].shape[1], 1, 1)
    missing, _unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    return f"encoder weights from {Path(path).name} ({len(own) - len(missing)} tensors loaded)"


class TL5(nn.Module):
    """ResNet34 encoder + attention-gated U-Net decoder (report 000's best model, TL-5).

    ``encoder`` may name another smp ResNet ("resnet18": same stage widths, half the blocks, 14.3 M
    instead of 24.4 M parameters in the demo configuration) as a ``--override`` for a smaller model."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        decoder_base: int = 32,
        dropout: float = 0.0,
        encoder_weights_path: str | None = None,
        encoder: str = "resnet34",
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
        self.encoder_weights_note = load_local_encoder_weights(self.encoder, encoder_weights_path)
        ch = self.encoder.out_channels  # (in, 64, 64, 128, 256, 512)
        d = [decoder_base * 2**i for i in range(4)]  # decoder widths at /16, /8, /4, /2
        self.ups = nn.ModuleList(
            [
                UpBlock(ch[5], ch[4], d[3] * 2, attention=True, dropout=dropout, up_out=ch[4]),
                UpBlock(d[3] * 2, ch[3], d[3], attention=True, dropout=dropout, up_out=d[3]),
                UpBlock(d[3], ch[2], d[2], attention=True, dropout=dropout, up_out=d[2]),
                UpBlock(d[2], ch[1], d[1], attention=True, dropout=dropout, up_out=d[1]),
            ]
        )
        self.final_up = nn.ConvTranspose2d(d[1], d[0], 2, stride=2)
        self.final = nn.Sequential(DoubleConv(d[0], d[0]), nn.Conv2d(d[0], out_channels, 1))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[5]
        for up, skip in zip(self.ups, (feats[4], feats[3], feats[2], feats[1]), strict=True):
            x = up(x, skip)
        return self.final(self.final_up(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if (cin != cout or stride != 1)
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class SliceClassifier(nn.Module):
    """RAovSeg's slice classifier: one logit, "this slice shows an ovary"."""

    def __init__(self, in_channels: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 7, 2, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.blocks = nn.Sequential(_ResBlock(8, 8), _ResBlock(8, 16, stride=2))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(16, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
