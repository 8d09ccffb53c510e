"""Report 001's ultrasound models: multitask segmentation + benign/malignant classification.

* :class:`EffB0MultiTask` -- EfficientNet-B0 (torchvision, 1-channel stem Conv 1->32 3x3 s2) with
  a U-Net decoder from the 1280-channel map (skips 80, 40, 24, 32; outputs 80, 40, 24, 16;
  bilinear x2; 1x1 conv to one logit) and :class:`~.blocks.ClinicalFusionHead` on the pooled
  1280 features. Stage shapes for 1 x 336 x 544 match methods.md section 2.
* :class:`UNetMultiTask` -- classic U-Net 64..1024 with the same clinical head. ``cls_pool``
  ``"last_two"`` (report 001 section 3.3.2 / Figure 7: "global average pooling on the last two encoder
  blocks", 1x1 convs to 512 and 256 as one version of the public code did, methods.md section 2) or
  ``"bottleneck"`` (pools the 1024 bottleneck only: the shipped demo checkpoint ``us_mtl_unet``).

Both multitask builders take ``task``: ``"mtl"`` (both heads), ``"seg"`` (segmentation-only: no
classification head, output ``{"seg"}``) or ``"cls"`` (classification-only: encoder + head, no
decoder, output ``{"cls"}``): report 001's single-task baselines (Tables 1-6) are the same encoder
and the same head without the other branch (section 3.3.1). ``n_classes`` 8 gives the MMOTU
8-class head; ``n_clinical`` 0 the head without clinical inputs (MMOTU has none, section 6.1).
* :class:`Cascade` -- segment, keep the largest lesion, crop its bounding box padded by 1 % each
  side, pad to a square, resize to 164 x 164 and classify with clinical data. ``segmenter="effb0"``
  is the report's (section 5.3: the segmentation-only EfficientNet-B0, trained with Dice loss);
  ``"unet"`` the shipped demo checkpoint's U-Net.
* :func:`denoiser` -- annotation-removal U-Net (MONAI ``UNet`` 2D, image -> clean image).

Multitask models return ``{"seg": (N,1,H,W) logits, "cls": (N,2) logits}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ClinicalFusionHead, DoubleConv, UpBlock

TASKS = ("mtl", "seg", "cls")


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    return task


class EffB0MultiTask(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        n_clinical: int = 2,
        head_dropout: float = 0.25,
        decoder_dropout: float = 0.0,
        width_mult: float = 1.0,
        task: str = "mtl",
    ) -> None:
        super().__init__()
        import torchvision

        self.task = _check_task(task)
        net = torchvision.models.efficientnet_b0(weights=None)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 2, 1, bias=False)
        self.features = net.features  # 0:32@/2 1:16@/2 2:24@/4 3:40@/8 4:80@/16 5:112 6:192@/32 7:320 8:1280
        if task != "cls":
            self.ups = nn.ModuleList(
                [
                    UpBlock(1280, 80, 80, dropout=decoder_dropout, up_out=80),
                    UpBlock(80, 40, 40, dropout=decoder_dropout, up_out=40),
                    UpBlock(40, 24, 24, dropout=decoder_dropout, up_out=24),
                    UpBlock(24, 32, 16, dropout=decoder_dropout, up_out=24),
                ]
            )
            self.seg_out = nn.Conv2d(16, 1, 1)
        if task != "seg":
            self.cls_head = ClinicalFusionHead(1280, n_clinical=n_clinical, n_classes=n_classes, dropout=head_dropout)

    def encode(self, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        skips = {}
        for i, blk in enumerate(self.features):
            x = blk(x)
            if i in (0, 2, 3, 4):
                skips[i] = x
        return skips, x

    def decode(
        self,
        state: tuple[dict[int, torch.Tensor], torch.Tensor],
        clinical: torch.Tensor | None = None,
        size: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        skips, x = state
        bott = x
        out = {}
        if self.task != "cls":
            for up, k in zip(self.ups, (4, 3, 2, 0), strict=True):
                x = up(x, skips[k])
            seg = self.seg_out(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            if size is not None and seg.shape[-2:] != tuple(size):
                seg = F.interpolate(seg, size=size, mode="bilinear", align_corners=False)
            out["seg"] = seg
        if self.task != "seg":
            out["cls"] = self.cls_head(F.adaptive_avg_pool2d(bott, 1).flatten(1), clinical)
        return out

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x), clinical, size=x.shape[-2:])


class UNetMultiTask(nn.Module):
    """Classic U-Net (``base`` .. 16 ``base``) with the clinical classification head.

    ``cls_pool="last_two"`` (report 001, Figure 7): the last two encoder blocks (16 ``base`` = 1024,
    the bottleneck, and 8 ``base`` = 512) each go through a 1x1 conv to 8 ``base`` and 4 ``base``
    channels (512 and 256 as in the public code's version, methods.md section 2), are global-average
    pooled and concatenated (12 ``base`` = 768 features) into the head. ``"bottleneck"``: the pooled
    bottleneck alone (16 ``base`` features; the shipped ``us_mtl_unet`` demo checkpoint).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        n_clinical: int = 2,
        base: int = 64,
        head_dropout: float = 0.25,
        decoder_dropout: float = 0.0,
        cls_pool: str = "bottleneck",
        task: str = "mtl",
    ) -> None:
        super().__init__()
        if cls_pool not in ("bottleneck", "last_two"):
            raise ValueError(f"cls_pool must be 'bottleneck' or 'last_two', not {cls_pool!r}")
        self.task, self.cls_pool = _check_task(task), cls_pool
        c = [base * 2**i for i in range(5)]
        self.inc = DoubleConv(in_channels, c[0])
        self.downs = nn.ModuleList([DoubleConv(c[i], c[i + 1]) for i in range(4)])
        if task != "cls":
            self.ups = nn.ModuleList(
                [UpBlock(c[i + 1], c[i], c[i], dropout=decoder_dropout) for i in reversed(range(4))]
            )
            self.seg_out = nn.Conv2d(c[0], 1, 1)
        if task != "seg":
            features = c[4]
            if cls_pool == "last_two":
                self.pool_proj = nn.ModuleList([nn.Conv2d(c[4], c[3], 1), nn.Conv2d(c[3], c[2], 1)])
                features = c[3] + c[2]
            self.cls_head = ClinicalFusionHead(
                features, n_clinical=n_clinical, n_classes=n_classes, dropout=head_dropout
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.inc(x)]
        for d in self.downs:
            feats.append(d(F.max_pool2d(feats[-1], 2)))
        return feats

    def pooled_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(N, F) features the classification head sees (see the class docstring)."""
        if self.cls_pool == "bottleneck":
            return F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
        blocks = (feats[-1], feats[-2])  # bottleneck (16 base), the encoder block before it (8 base)
        return torch.cat(
            [F.adaptive_avg_pool2d(conv(f), 1).flatten(1) for conv, f in zip(self.pool_proj, blocks, strict=True)], 1
        )

    def decode(
        self, feats: list[torch.Tensor], clinical: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        out = {}
        if self.task != "cls":
            x = feats[-1]
            for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
                x = up(x, skip)
            out["seg"] = self.seg_out(x)
        if self.task != "seg":
            out["cls"] = self.cls_head(self.pooled_features(feats), clinical)
        return out

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x), clinical)


class CropClassifier(nn.Module):
    """EfficientNet-B0 classifier of the 164 x 164 lesion crop with the clinical head."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_clinical: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.efficientnet_b0(weights=None)
        net.features[0][0] = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self.features = net.features
        self.head = ClinicalFusionHead(1280, n_clinical=n_clinical, n_classes=n_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1), clinical)


def lesion_crop_box(mask: np.ndarray, pad_fraction: float = 0.01) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) of the largest connected lesion, padded by ``pad_fraction`` of the image
    size on each side (report 001: 1 %). None when the mask is empty."""
    from scipy import ndimage

    lab, n = ndimage.label(mask > 0)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    rows, cols = np.nonzero(lab == int(np.argmax(sizes)) + 1)
    h, w = mask.shape
    pr, pc = int(round(pad_fraction * h)), int(round(pad_fraction * w))
    return max(rows.min() - pr, 0), min(rows.max() + 1 + pr, h), max(cols.min() - pc, 0), min(cols.max() + 1 + pc, w)


def square_crop(image: torch.Tensor, box: Sequence[int], size: int = 164) -> torch.Tensor:
    """Crop (C, H, W) to ``box``, zero-pad to a square (centred) and resize to ``size``."""
    r0, r1, c0, c1 = box
    crop = image[:, r0:r1, c0:c1]
    h, w = crop.shape[-2:]
    s = max(h, w)
    crop = F.pad(crop, [(s - w) // 2, s - w - (s - w) // 2, (s - h) // 2, s - h - (s - h) // 2])
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]


class SegLogits(nn.Module):
    """A segmentation-only multitask network seen as a plain segmenter: ``forward(x)`` returns the
    (N, 1, H, W) lesion logits (what the cascade's training stage and crop step expect)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["seg"]


class Cascade(nn.Module):
    """Segment -> crop the largest lesion (1 % padding) -> square -> 164 x 164 -> classify.

    ``forward`` returns ``{"seg": logits, "cls": logits, "boxes": [box or None]}``; an image with
    no segmented lesion is classified on the whole (square-padded) image.
    """

    def __init__(
        self,
        seg_base: int = 16,
        crop_size: int = 164,
        n_clinical: int = 2,
        threshold: float = 0.5,
        segmenter: str = "unet",
    ) -> None:
        super().__init__()
        self.segmenter: nn.Module
        if segmenter == "effb0":
            # report 001 section 5.3: the segmentation-only EfficientNet-B0 (best on MMOTU segmentation)
            self.segmenter = SegLogits(EffB0MultiTask(1, n_clinical=0, task="seg"))
        elif segmenter == "unet":  # the shipped us_cascade demo checkpoint
            from .ovary import UNet2D

            self.segmenter = UNet2D(1, 1, base=seg_base)
        else:
            raise ValueError(f"segmenter must be 'unet' or 'effb0', not {segmenter!r}")
        self.segmenter_kind = segmenter
        self.classifier = CropClassifier(1, 2, n_clinical)
        self.crop_size = crop_size
        self.threshold = threshold

    def crops(
        self, x: torch.Tensor, seg_logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[int, int, int, int] | None]]:
        boxes, crops = [], []
        probs = torch.sigmoid(seg_logits).detach().cpu().numpy()[:, 0]
        for i in range(x.shape[0]):
            box = lesion_crop_box(probs[i] > self.threshold)
            boxes.append(box)
            crops.append(square_crop(x[i], box or (0, x.shape[-2], 0, x.shape[-1]), self.crop_size))
        return torch.stack(crops), boxes

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> dict[str, torch.Tensor | list]:
        seg = self.segmenter(x)
        crops, boxes = self.crops(x, seg)
        return {"seg": seg, "cls": self.classifier(crops, clinical), "boxes": boxes}


def denoiser(channels: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.0) -> nn.Module:
    """Annotation-removal U-Net: annotated grey image in, clean image out (MONAI UNet, 2D)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=2,
        dropout=dropout,
    )
