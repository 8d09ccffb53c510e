"""Losses as torch modules. Inputs are **logits** ``(N, C, ...)`` and binary targets of the same
shape unless stated; probabilities are ``sigmoid(logits)``. ``smooth`` terms avoid 0/0 on empty
masks so gradients stay finite.

================  ==================================================================  =========
name              definition                                                          source
================  ==================================================================  =========
BCELoss           mean binary cross-entropy with logits                               000, 002
SoftDiceLoss      1 - (2 sum(p g) + s) / (sum p + sum g + s), per sample and channel   all
CompoundLoss      0.4 Dice + 0.6 BCE                                                   002
FocalTverskyLoss  TI = (TP + s)/(TP + a FP + b FN + s); (1 - TI)^gamma                 000
FocalLoss         alpha (1 - p_t)^gamma BCE, mean (alpha 0.25, gamma 2)                004
AGBCELoss         annotation-guided BCE, hard = dilate(expert XOR non-expert), w = 4   004
AdaptiveFocalLoss report 004 section 3.3.6 step by step                               004
MultiTaskLoss     0.3 Dice(seg, non-empty masks only) + CE(cls, weights [1, 2])        001
WeightedMSELoss   sum w (clean - pred)^2 / sum w, w = alpha M + beta (1 - M)           001
================  ==================================================================  =========
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over every element."""

    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target.float())


class SoftDiceLoss(nn.Module):
    """Soft Dice on sigmoid probabilities, per sample and channel, then averaged.

    Equals MONAI ``DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth)``.
    """

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits, target):
        p = torch.sigmoid(logits)
        g = target.float()
        dims = _reduce_dims(p)
        inter = (p * g).sum(dims)
        denom = p.sum(dims) + g.sum(dims)
        return (1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)).mean()


class CompoundLoss(nn.Module):
    """``dice_weight`` * Dice + ``bce_weight`` * BCE (report 002: 0.4 / 0.6, multilabel)."""

    def __init__(self, dice_weight: float = 0.4, bce_weight: float = 0.6):
        super().__init__()
        self.dw, self.bw = dice_weight, bce_weight
        self.dice, self.bce = SoftDiceLoss(), BCELoss()

    def forward(self, logits, target):
        return self.dw * self.dice(logits, target) + self.bw * self.bce(logits, target)


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss (report 000).

    TI = (sum p g + s) / (sum p g + alpha sum p (1-g) + beta sum (1-p) g + s), per sample and
    channel. ``alpha`` weights false positives (0.7), ``beta`` false negatives (0.3).
    ``exponent="gamma"`` gives (1 - TI)^gamma with gamma = 4/3 (report 000); ``"inverse"`` gives
    (1 - TI)^(1/gamma) = (1 - TI)^0.75 (Abraham & Khan's code). Averaged over samples/channels.
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, gamma: float = 4.0 / 3.0, exponent: str = "gamma",
                 smooth: float = 1e-5):
        super().__init__()
        if exponent not in ("gamma", "inverse"):
            raise ValueError("exponent must be 'gamma' or 'inverse'")
        self.alpha, self.beta, self.gamma, self.exponent, self.smooth = alpha, beta, gamma, exponent, smooth

    def tversky_index(self, logits, target):
        p = torch.sigmoid(logits)
        g = target.float()
        dims = _reduce_dims(p)
        tp = (p * g).sum(dims)
        fp = (p * (1 - g)).sum(dims)
        fn = ((1 - p) * g).sum(dims)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits, target):
        ti = self.tversky_index(logits, target)
        e = self.gamma if self.exponent == "gamma" else 1.0 / self.gamma
        return torch.clamp(1.0 - ti, min=0.0).pow(e).mean()


class FocalLoss(nn.Module):
    """Sigmoid focal loss: mean of alpha (1 - p_t)^gamma BCE (report 004's ``pyT_focal_loss``).

    As in report 004 the weight alpha is applied to every pixel (no alpha/1-alpha class split);
    ``balanced=True`` uses Lin et al.'s alpha_t (alpha for positives, 1 - alpha for negatives),
    which equals MONAI ``FocalLoss(alpha=alpha, use_softmax=False)``.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, balanced: bool = False):
        super().__init__()
        self.alpha, self.gamma, self.balanced = alpha, gamma, balanced

    def forward(self, logits, target):
        g = target.float()
        p = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none")
        pt = p * g + (1 - p) * (1 - g)
        w = (self.alpha * g + (1 - self.alpha) * (1 - g)) if self.balanced else self.alpha
        return (w * (1 - pt).pow(self.gamma) * bce).mean()


def hard_region(expert: torch.Tensor, other: torch.Tensor, ks: int = 5) -> torch.Tensor:
    """dilate(expert XOR other) with a ``ks`` x ``ks`` square kernel (binary, same shape)."""
    x = (expert > 0.5) ^ (other > 0.5)
    x = x.float()
    if ks > 1:
        flat = x.reshape(-1, 1, *x.shape[-2:])
        flat = F.max_pool2d(flat, ks, stride=1, padding=ks // 2)
        x = flat.reshape(x.shape)
    return x


class AGBCELoss(nn.Module):
    """Annotation-guided BCE (MicroSegNet, report 004).

    hard = dilate(expert XOR non-expert, ks), easy = 1 - hard, l = per-pixel BCE;
    loss = [sum(easy l) / (1 + w) + w sum(hard l) / (1 + w)] / (B H W), w = 4.
    ``forward(logits, expert, non_expert)``.
    """

    def __init__(self, w: float = 4.0, ks: int = 5):
        super().__init__()
        self.w, self.ks = w, ks

    def forward(self, logits, expert, non_expert):
        hard = hard_region(expert, non_expert, self.ks)
        easy = 1 - hard
        bce = F.binary_cross_entropy_with_logits(logits, expert.float(), reduction="none")
        n = bce.numel() / (bce.shape[1] if bce.ndim > 3 else 1)
        return ((easy * bce).sum() / (1 + self.w) + self.w * (hard * bce).sum() / (1 + self.w)) / n


class AdaptiveFocalLoss(nn.Module):
    """Report 004's adaptive focal loss, section 3.3.6, step by step.

    1. N = height x width x channels (as in the report: the batch is *not* in N, so the loss grows
       with batch size; kept for fidelity).
    2. hard = dilate(y_true XOR y_std, ks); easy = 1 - hard.
    3. p = sigmoid(y_pred); p_t = p y + (1 - p)(1 - y);
       focal = -theta (1 - p_t)^focal_gamma log(p_t + eps)  (theta 0.25, focal_gamma 2 as the
       report's focal baseline; the report leaves them unnamed).
    4. hard_loss = sum(focal hard); easy_loss = sum(focal easy).
    5. difficulty = 1 - mean(p) (the report's "mean prediction confidence": on probabilities);
       variability = mean(y_std); gamma = difficulty + variability (a weight: no gradient).
    6. loss = (gamma hard_loss + easy_loss / gamma) / N.

    ``y_std`` is the second annotation the report passes (the non-expert mask in MicroSegNet), or
    any per-pixel annotation standard-deviation map in [0, 1].
    """

    def __init__(self, ks: int = 5, theta: float = 0.25, focal_gamma: float = 2.0, eps: float = 1e-7):
        super().__init__()
        self.ks, self.theta, self.focal_gamma, self.eps = ks, theta, focal_gamma, eps

    def forward(self, logits, y_true, y_std):
        y = y_true.float()
        n_pixels = float(torch.tensor(logits.shape[1:]).prod())
        hard = hard_region(y, y_std, self.ks)
        easy = 1 - hard
        p = torch.sigmoid(logits)
        pt = p * y + (1 - p) * (1 - y)
        focal = -self.theta * (1 - pt).pow(self.focal_gamma) * torch.log(pt + self.eps)
        hard_loss = (focal * hard).sum()
        easy_loss = (focal * easy).sum()
        gamma = (1.0 - p.mean()).detach() + y_std.float().mean()
        gamma = torch.clamp(gamma, min=1e-3)
        return (gamma * hard_loss + easy_loss / gamma) / n_pixels


class MultiTaskLoss(nn.Module):
    """Report 001: ``seg_weight`` * Dice(seg) + ``cls_weight`` * CE(cls, class weights [1, 2]).

    Dice is computed only on samples whose reference mask is non-empty (a normal ovary with no
    lesion must not be pushed towards an empty prediction by Dice's 0/0). ``forward(outputs,
    mask, label)`` with ``outputs = {"seg": logits, "cls": logits}``.
    """

    def __init__(self, seg_weight: float = 0.3, cls_weight: float = 1.0, class_weights=(1.0, 2.0)):
        super().__init__()
        self.sw, self.cw = seg_weight, cls_weight
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32))
        self.dice = SoftDiceLoss()

    def forward(self, outputs, mask, label):
        seg, cls = outputs["seg"], outputs["cls"]
        nonempty = mask.flatten(1).sum(1) > 0
        dice = self.dice(seg[nonempty], mask[nonempty]) if nonempty.any() else seg.sum() * 0.0
        ce = F.cross_entropy(cls, label.long(), weight=self.class_weights.to(cls.dtype))
        return self.sw * dice + self.cw * ce


class WeightedMSELoss(nn.Module):
    """Annotation-removal loss: M = (annotated != clean); w = alpha M + beta (1 - M);
    loss = sum w (clean - pred)^2 / sum w (report 001: alpha 300, beta 1; public code alpha 150).
    ``forward(pred, clean, annotated)``."""

    def __init__(self, alpha: float = 300.0, beta: float = 1.0, tol: float = 1e-6):
        super().__init__()
        self.alpha, self.beta, self.tol = alpha, beta, tol

    def forward(self, pred, clean, annotated):
        m = ((annotated - clean).abs() > self.tol).float()
        w = self.alpha * m + self.beta * (1 - m)
        return (w * (clean - pred) ** 2).sum() / w.sum()


LOSSES = {"bce": BCELoss, "dice": SoftDiceLoss, "compound": CompoundLoss, "focal_tversky": FocalTverskyLoss,
          "focal": FocalLoss, "agbce": AGBCELoss, "adaptive_focal": AdaptiveFocalLoss, "multitask": MultiTaskLoss,
          "weighted_mse": WeightedMSELoss}
