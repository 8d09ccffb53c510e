"""Report 002's from-scratch encoder-decoder CNNs (section 3.1), four versions.

The report gives the layer table (torchsummary) of the final version only (section 3.1.4, 224 x 224
input, 25,436,486 parameters); :class:`GIScratchCNN` with ``version="final"`` and ``in_channels=3``
reproduces that table layer for layer and its parameter count exactly (tests/test_report002.py).
Read from the table:

* stem: Conv2d 7 x 7 (3 -> 64, stride 1, no bias: 9,408 parameters), BatchNorm, ReLU;
* eight ``EncoderBlock`` s of two [Conv2d 3 x 3 (no bias), BatchNorm, ReLU, Dropout2d]; channels
  64, 64, 128, 128, 256, 256, 512, 512; the first conv of blocks 3, 5 and 7 has stride 2 (224 ->
  ... the table's 112 -> 56, 28 -> 14, 7 -> 4) and a MaxPool2d(2) follows blocks 1, 3, 5 and 7
  (224 -> 112, 56 -> 28, 14 -> 7, 4 -> 2);
* eight ``DecoderBlock`` s of two [ConvTranspose2d (no bias), BatchNorm] at 2, 2, 7, 7, 28, 28,
  112, 112 pixels. The up-sampling ConvTranspose2d's shapes follow from the parameter counts:
  512 -> 256, 3 x 3, stride 4 (2 -> 7; 1,179,648 = 512 x 256 x 9), then 256 -> 128 and 128 -> 64
  with 6 x 6 kernels, stride 4, padding 1 (7 -> 28, 28 -> 112; 1,179,648 = 256 x 128 x 36 and
  294,912 = 128 x 64 x 36); the others are 3 x 3, stride 1;
* output: ConvTranspose2d 64 -> 3, 8 x 8, stride 2, padding 3 (112 -> 224; 12,288 = 64 x 3 x 64),
  BatchNorm2d(3) (6 parameters); its output are the logits of the three organs.

Not in the table (parameter-free, so the count cannot show them; the product's reading, stated):

* the decoder's ReLUs (torchsummary lists module activations only, the encoder's are modules; the
  decoder's are taken as functional ReLUs after each BatchNorm but the last);
* the Dropout2d probability: 0.1, section 3.1.2's value (the table does not give p);
* section 3.1.3's "residuals and skip connections ... connect some layers of the encoder to those
  of the decoder, as well as some internal layers of the encoder": identity residuals around every
  encoder block whose input and output shapes agree (blocks 1, 2, 4, 6, 8) and additive
  encoder-to-decoder skips where the resolutions meet (block 6 output added to decoder block 3's
  output at 7 x 7, block 4 to decoder block 5 at 28 x 28, block 2 to decoder block 7 at 112 x 112;
  additive because the decoder's channel counts leave no room for concatenation).

The earlier versions are described in words only; they are built by removing what each later
section says it added:

* ``simple`` (3.1.1, val Dice 0.4677): "an encoder composed of convolutional layers and max pooling
  layers; and a decoder with only deconvolutional layers": the stem, then four [Conv 3 x 3 + ReLU,
  MaxPool 2] stages (64, 128, 256, 512), four ConvTranspose2d 2 x 2 stride 2 (ReLU between);
  convolutions with bias, no normalisation, no dropout;
* ``bn_dropout`` (3.1.2, 0.6940): ``simple`` with BatchNorm after each convolution (and
  deconvolution but the last) and Dropout2d(0.1) after the activations;
* ``residual`` (3.1.3, 0.6995): "more convolutional/deconvolutional layers" plus residuals and
  skips: the final layout with one convolution per block (encoder and decoder) instead of two;
* ``final`` (3.1.4, test Dice 0.8054): "additional convolutional layers": the table above.

The report's input is 3 channels (a grey MRI slice read as three identical channels); medseg
feeds one channel (``in_channels=1``: the first convolution then equals the 3-channel one with its
three kernels summed). Other sizes than 224 x 224 work (at least about 112 pixels a side, so the
encoder keeps one pixel after its last pooling): where a decoder stage's size differs from
the encoder feature it is added to, it is resized (bilinear) to it, and the output to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VERSIONS = ("simple", "bn_dropout", "residual", "final")


def _conv_unit(cin: int, cout: int, stride: int, dropout: float) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
    ]


class EncoderBlock(nn.Module):
    """``n_convs`` x [Conv 3 x 3 (first one with ``stride``), BatchNorm, ReLU, Dropout2d]; plus the
    input when ``residual`` and the shapes agree."""

    def __init__(
        self, cin: int, cout: int, stride: int = 1, n_convs: int = 2, dropout: float = 0.1, residual: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += _conv_unit(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout)
        self.body = nn.Sequential(*layers)
        self.residual = residual and cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + x if self.residual else y


class DecoderBlock(nn.Module):
    """[ConvTranspose2d ``up`` (kernel, stride, padding), BatchNorm, ReLU] then ``n_convs - 1`` x
    [ConvTranspose2d 3 x 3, BatchNorm, ReLU] (ReLU functional, see the module docstring)."""

    def __init__(self, cin: int, cout: int, up: tuple[int, int, int] = (3, 1, 1), n_convs: int = 2) -> None:
        super().__init__()
        k, s, p = up
        self.convs = nn.ModuleList([nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, bias=False)])
        self.convs.extend(
            nn.ConvTranspose2d(cout, cout, 3, stride=1, padding=1, bias=False) for _ in range(n_convs - 1)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(cout) for _ in range(n_convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.norms, strict=True):
            x = F.relu(bn(conv(x)))
        return x


def _match(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] != like.shape[-2:]:
        x = F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return x


class GIScratchCNN(nn.Module):
    """Report 002's from-scratch CNN, ``version`` in :data:`VERSIONS` (see the module docstring).

    ``base`` scales every width (64 in the report; 16 for CPU demos); ``classes`` organs out
    (large bowel, small bowel, stomach); ``dropout`` the Dropout2d probability.
    """

    def __init__(
        self, version: str = "final", in_channels: int = 1, classes: int = 3, base: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}")
        self.version = version
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        if version in ("simple", "bn_dropout"):
            norm = version == "bn_dropout"
            p = dropout if norm else 0.0

            def unit(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
                layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=pad, bias=not norm)]
                if norm:
                    layers.append(nn.BatchNorm2d(cout))
                layers.append(nn.ReLU(inplace=True))
                if p:
                    layers.append(nn.Dropout2d(p))
                return layers

            enc = unit(in_channels, c1, 7, 3)
            for cin, cout in ((c1, c1), (c1, c2), (c2, c3), (c3, c4)):
                enc += unit(cin, cout, 3, 1) + [nn.MaxPool2d(2)]
            self.encoder = nn.Sequential(*enc)
            dec: list[nn.Module] = []
            for cin, cout in ((c4, c3), (c3, c2), (c2, c1)):
                dec.append(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=not norm))
                if norm:
                    dec.append(nn.BatchNorm2d(cout))
                dec.append(nn.ReLU(inplace=True))
            dec.append(nn.ConvTranspose2d(c1, classes, 2, stride=2))
            self.decoder = nn.Sequential(*dec)
            return
        n = 2 if version == "final" else 1
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c1, 7, padding=3, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True)
        )
        # (cin, cout, stride, max-pool after)
        plan = [
            (c1, c1, 1, True),
            (c1, c1, 1, False),
            (c1, c2, 2, True),
            (c2, c2, 1, False),
            (c2, c3, 2, True),
            (c3, c3, 1, False),
            (c3, c4, 2, True),
            (c4, c4, 1, False),
        ]
        self.enc = nn.ModuleList(EncoderBlock(a, b, s, n, dropout, residual=True) for a, b, s, _ in plan)
        self.pool_after = [pool for *_, pool in plan]
        ups = [
            (c4, c4, (3, 1, 1)),
            (c4, c4, (3, 1, 1)),
            (c4, c3, (3, 4, 0)),
            (c3, c3, (3, 1, 1)),
            (c3, c2, (6, 4, 1)),
            (c2, c2, (3, 1, 1)),
            (c2, c1, (6, 4, 1)),
            (c1, c1, (3, 1, 1)),
        ]
        self.dec = nn.ModuleList(DecoderBlock(a, b, up, n) for a, b, up in ups)
        self.head = nn.ConvTranspose2d(c1, classes, 8, stride=2, padding=3, bias=False)
        self.head_norm = nn.BatchNorm2d(classes)
        #: decoder block index -> encoder block index whose output is added to its output
        self.skips = {2: 5, 4: 3, 6: 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.version in ("simple", "bn_dropout"):
            return _match(self.decoder(self.encoder(x)), x)
        h = self.stem(x)
        feats = []
        for block, pool in zip(self.enc, self.pool_after, strict=True):
            h = block(h)
            feats.append(h)
            if pool:
                h = F.max_pool2d(h, 2)
        for i, block in enumerate(self.dec):
            h = block(h)
            if i in self.skips:
                e = feats[self.skips[i]]
                h = _match(h, e) + e
        out = self.head_norm(self.head(h))
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out
