"""TransUNet with MicroSegNet's multi-scale deep supervision (report 004's network).

Report 004 (§3.2.3, §3.3.7) builds on the MicroSegNet researchers' code: 224 x 224 inputs, "image
patch size 16", batch 8, SGD 0.01 / momentum 0.9 / weight decay 1e-4, at most 10 epochs; §2.1.4:
"multi-scale deep supervision". The public code of MicroSegNet (``TransUNet/train_MicroUS.py``,
``networks/vit_seg_modeling.py``; methods.md §5) fixes what the report leaves out:

* ``R50-ViT-B_16``: a BiT ResNet-50 root + the first three stages (3, 4, 9 bottleneck units, weight-
  standardised convolutions with GroupNorm, 64 -> 256 -> 512 -> 1024 channels, stride 16 overall),
  a 1 x 1 patch embedding of the 14 x 14 feature grid (so "patch 16" in image pixels) with learned
  position embeddings, 12 pre-norm transformer blocks (hidden 768, MLP 3072, 12 heads, dropout 0.1,
  attention dropout 0, LayerNorm eps 1e-6) and a final LayerNorm.
* Decoder ("CUP"): 3 x 3 conv + BN + ReLU 768 -> 512, then four blocks (bilinear x2 upsampling,
  concatenation with the skip, two 3 x 3 conv + BN + ReLU) to 256, 128, 64, 16 channels with the
  skips 512 @ 1/8, 256 @ 1/4 and 64 @ 1/2 (``n_skip = 3``; the last block has none).
* Heads: a 3 x 3 conv to 1 logit on the last block (224 x 224) and, MicroSegNet's deep supervision,
  a 3 x 3 conv to 1 logit on each of the first three blocks' outputs (28, 56 and 112 pixels square).
  The public trainer sums the loss of the four outputs with weight 1 each, against labels resized to
  each scale, with hard-region dilation kernels 1, 2, 3, 4 from the coarsest to the finest scale
  (see :mod:`medseg_core.deep_supervision`).
* One-channel inputs are repeated to three channels (the ImageNet-21k R50+ViT-B/16 weights expect
  RGB). medseg never downloads those weights: the network starts from random initialisation unless a
  local safetensors file is given to training (``encoder_weights``), which the card records.

Built from library blocks: timm's ``ResNetV2`` (the same BiT R50 hybrid backbone timm uses for
``vit_base_r50_s16_224``), timm's ViT ``Block``, MONAI's ``Convolution`` (conv + BN + ReLU).

``forward`` returns the full-resolution logits in eval mode (so inference is unchanged) and, in train
mode with ``deep_supervision=True``, the tuple ``(full, out_28, out_56, out_112)`` -- the main output
first, the auxiliary ones from coarse to fine as MicroSegNet's ``VisionTransformer.forward`` orders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Module:
    from monai.networks.blocks import Convolution

    # TransUNet's Conv2dReLU: 3x3 conv without bias (BatchNorm follows), BN, ReLU
    return Convolution(
        spatial_dims=2,
        in_channels=cin,
        out_channels=cout,
        kernel_size=3,
        act="RELU",
        norm="BATCH",
        bias=False,
        adn_ordering="NA",
    )


class _DecoderBlock(nn.Module):
    """Bilinear x2 (align_corners=True, as ``nn.UpsamplingBilinear2d``), concat skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, skip: int = 0) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    """R50-ViT-B/16 TransUNet with MicroSegNet's three auxiliary deep-supervision heads.

    Parameters (defaults: the paper variant, ``R50-ViT-B_16`` of MicroSegNet's public code):
    ``img_size`` 224, ``patch_size`` 16 (the backbone's stride: the token grid is img_size / 16),
    ``resnet_layers`` (3, 4, 9), ``resnet_channels`` (256, 512, 1024), ``stem_channels`` 64,
    ``hidden_size`` 768, ``depth`` 12, ``num_heads`` 12, ``mlp_dim`` 3072, ``dropout`` 0.1,
    ``attention_dropout`` 0.0, ``head_channels`` 512, ``decoder_channels`` (256, 128, 64, 16),
    ``n_skip`` 3, ``in_chans`` 3 (one-channel inputs are repeated), ``out_channels`` 1,
    ``deep_supervision`` True, ``gn_groups`` 32 (BiT's GroupNorm; the narrow demo needs fewer).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        resnet_layers: Sequence[int] = (3, 4, 9),
        resnet_channels: Sequence[int] = (256, 512, 1024),
        stem_channels: int = 64,
        hidden_size: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        head_channels: int = 512,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        n_skip: int = 3,
        in_chans: int = 3,
        out_channels: int = 1,
        deep_supervision: bool = True,
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        from timm.layers import GroupNormAct, StdConv2dSame
        from timm.models.resnetv2 import ResNetV2
        from timm.models.vision_transformer import Block

        if len(resnet_layers) != 3 or len(resnet_channels) != 3:
            raise ValueError("the R50 hybrid backbone has three stages (resnet_layers, resnet_channels)")
        if patch_size != 16:
            raise ValueError("the hybrid backbone has stride 16: patch_size must be 16")
        if len(decoder_channels) != 4:
            raise ValueError("decoder_channels needs four entries (one per upsampling block)")
        self.img_size, self.patch_size, self.in_chans = int(img_size), int(patch_size), int(in_chans)
        self.deep_supervision = bool(deep_supervision)
        self.backbone = ResNetV2(
            layers=list(resnet_layers),
            channels=tuple(resnet_channels),
            num_classes=0,
            global_pool="",
            in_chans=in_chans,
            preact=False,
            stem_type="same",
            stem_chs=stem_channels,
            conv_layer=StdConv2dSame,
            norm_layer=partial(GroupNormAct, num_groups=gn_groups),
        )
        grid = self.img_size // self.patch_size
        self.patch_embed = nn.Conv2d(resnet_channels[-1], hidden_size, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [
                Block(
                    hidden_size,
                    num_heads,
                    mlp_ratio=mlp_dim / hidden_size,
                    qkv_bias=True,
                    proj_drop=dropout,
                    attn_drop=attention_dropout,
                    norm_layer=partial(nn.LayerNorm, eps=1e-6),  # type: ignore[arg-type]  # timm calls it; its hint says a class
                )
                for _ in range(depth)
            ]
        )
        self.encoder_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.conv_more = _conv_bn_relu(hidden_size, head_channels)
        # skips from deep to shallow: stage 2 (1/8), stage 1 (1/4), stem (1/2); n_skip of them are used
        skips = [resnet_channels[1], resnet_channels[0], stem_channels, 0]
        skips = [s if i < n_skip else 0 for i, s in enumerate(skips)]
        self.n_skip = int(n_skip)
        ins = [head_channels, *decoder_channels[:-1]]
        self.decoder = nn.ModuleList(
            [_DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips, strict=True)]
        )
        self.aux_heads = nn.ModuleList([nn.Conv2d(c, out_channels, 3, padding=1) for c in decoder_channels[:3]])
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 3, padding=1)

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        g = self.img_size // self.patch_size
        if (gh, gw) == (g, g):
            return self.pos_embed
        # another input size: bilinear resize of the grid of position embeddings (as TransUNet's load_from)
        pe = self.pos_embed.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(gh, gw), mode="bilinear", align_corners=False)
        return pe.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(tokens after the final LayerNorm as a B x hidden x h x w map, skip features deep -> shallow)."""
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.repeat(1, 3, 1, 1)
        stem: Any = self.backbone.stem  # timm's stem: named conv / norm / pool children
        s0 = stem.norm(stem.conv(x))  # 64 @ 1/2, before the max pool (TransUNet's root feature)
        h = stem.pool(s0)
        s1 = self.backbone.stages[0](h)  # 256 @ 1/4
        s2 = self.backbone.stages[1](s1)  # 512 @ 1/8
        s3 = self.backbone.stages[2](s2)  # 1024 @ 1/16
        t = self.patch_embed(s3)
        b, c, gh, gw = t.shape
        t = self.embed_drop(t.flatten(2).transpose(1, 2) + self._pos_embed(gh, gw))
        for blk in self.blocks:
            t = blk(t)
        t = self.encoder_norm(t)
        return t.transpose(1, 2).reshape(b, c, gh, gw), [s2, s1, s0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        h, skips = self.encode(x)
        h = self.conv_more(h)
        aux = []
        for i, blk in enumerate(self.decoder):
            h = blk(h, skips[i] if i < self.n_skip else None)
            if i < 3:
                aux.append(h)
        full = self.head(h)
        if self.training and self.deep_supervision:
            return (full, *[head(a) for head, a in zip(self.aux_heads, aux, strict=True)])
        return full


def transunet(**kw: Any) -> TransUNet:
    return TransUNet(**kw)
