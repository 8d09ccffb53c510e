"""Losses as torch modules. Inputs are **logits** ``(N, C, ...)`` and binary targets of the same
shape unless stated; probabilities are ``sigmoid(logits)``. ``smooth`` terms avoid 0/0 on empty
masks so gradients stay finite.

================  ==================================================================  =========
name              definition                                                          source
================  ==================================================================  =========
BCELoss           mean binary cross-entropy with logits                               000, 002
SoftDiceLoss      1 - (2 sum(p g) + s) / (sum p + sum g + s), per sample and channel   all
CompoundLoss      0.4 Dice + 0.6 BCE (``dice: report002``: smp multilabel DiceLoss)     002
SmpMultilabel...  smp ``DiceLoss(mode="multilabel")``: per channel over the batch        002
FocalTverskyLoss  TI = (TP + s)/(TP + a FP + b FN + s); (1 - TI)^gamma                 000
FocalLoss         alpha (1 - p_t)^gamma BCE, mean (alpha 0.25, gamma 2)                004
AGBCELoss         annotation-guided BCE, hard = dilate(expert XOR non-expert), w = 4   004
AdaptiveFocalLoss report 004 section 3.3.6 step by step                               004
MultiTaskLoss     0.3 Dice(seg, non-empty masks only) + CE(cls, weights [1, 2])        001
                  (or + softmax focal loss, MMOTU's 8 classes)                         001
WeightedMSELoss   sum w (clean - pred)^2 / sum w, w = alpha M + beta (1 - M)           001
================  ==================================================================  =========
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over every element."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target.float())


class SoftDiceLoss(nn.Module):
    """Soft Dice on sigmoid probabilities, per sample and channel, then averaged.

    Equals MONAI ``DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth)``.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        g = target.float()
        dims = _reduce_dims(p)
        inter = (p * g).sum(dims)
        denom = p.sum(dims) + g.sum(dims)
        return (1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)).mean()


class SmpMultilabelDiceLoss(nn.Module):
    """Report 002's Dice term (section 2.4): ``smp.losses.DiceLoss(mode='multilabel')`` with its
    defaults, called from segmentation-models-pytorch itself (not re-implemented).

    What that is, for the record (smp 0.6 ``DiceLoss.forward``): p = sigmoid(logits); per channel c,
    sums run over the **whole batch and all pixels** (dims (0, 2)): I_c = sum p g,
    D_c = sum p + sum g; score_c = (2 I_c + smooth) / max(D_c + smooth, eps) with smooth 0 and
    eps 1e-7; loss_c = 1 - score_c, set to 0 for a channel with no reference pixel anywhere in the
    batch (still counted in the mean); loss = mean over channels. It is *not* the per-sample soft
    Dice of :class:`SoftDiceLoss` (smooth 1e-5, one term per sample and channel, empty channels
    included): on the same tensors the two differ (tests/test_report002.py).
    """

    def __init__(self, smooth: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.dice = DiceLoss(mode="multilabel", from_logits=True, smooth=smooth, eps=eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target.float())


#: the Dice terms :class:`CompoundLoss` can use (``loss.params.dice``)
COMPOUND_DICE = {
    "per_sample": SoftDiceLoss,
    "smp_multilabel": SmpMultilabelDiceLoss,
    "report002": SmpMultilabelDiceLoss,
}


class CompoundLoss(nn.Module):
    """``dice_weight`` * Dice + ``bce_weight`` * BCE (report 002: 0.4 / 0.6, multilabel).

    ``dice`` picks the Dice term: ``"per_sample"`` (default, :class:`SoftDiceLoss`, smooth 1e-5)
    or ``"report002"`` / ``"smp_multilabel"`` (:class:`SmpMultilabelDiceLoss`, report 002 section
    2.4's ``smp.losses.DiceLoss(mode='multilabel')``). The BCE term is the mean BCE with logits, which
    is what report 002's ``smp.losses.SoftBCEWithLogitsLoss()`` computes with its defaults (no label
    smoothing, no ignored label present).
    """

    def __init__(self, dice_weight: float = 0.4, bce_weight: float = 0.6, dice: str = "per_sample") -> None:
        super().__init__()
        if dice not in COMPOUND_DICE:
            raise ValueError(f"dice must be one of {', '.join(COMPOUND_DICE)}")
        self.dw, self.bw = dice_weight, bce_weight
        self.dice, self.bce = COMPOUND_DICE[dice](), BCELoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dw * self.dice(logits, target) + self.bw * self.bce(logits, target)


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss (report 000).

    TI = (sum p g + s) / (sum p g + alpha sum p (1-g) + beta sum (1-p) g + s), per sample and
    channel. ``alpha`` weights false positives (0.7), ``beta`` false negatives (0.3).
    ``exponent="gamma"`` gives (1 - TI)^gamma with gamma = 4/3 (report 000); ``"inverse"`` gives
    (1 - TI)^(1/gamma) = (1 - TI)^0.75 (Abraham & Khan's code). Averaged over samples/channels.
    """

    def __init__(
        self,
        alpha: float = 0.7,
        beta: float = 0.3,
        gamma: float = 4.0 / 3.0,
        exponent: str = "gamma",
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if exponent not in ("gamma", "inverse"):
            raise ValueError("exponent must be 'gamma' or 'inverse'")
        self.alpha, self.beta, self.gamma, self.exponent, self.smooth = alpha, beta, gamma, exponent, smooth

    def tversky_index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        g = target.float()
        dims = _reduce_dims(p)
        tp = (p * g).sum(dims)
        fp = (p * (1 - g)).sum(dims)
        fn = ((1 - p) * g).sum(dims)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti = self.tversky_index(logits, target)
        e = self.gamma if self.exponent == "gamma" else 1.0 / self.gamma
        return torch.clamp(1.0 - ti, min=0.0).pow(e).mean()


class FocalLoss(nn.Module):
    """Sigmoid focal loss: mean of alpha (1 - p_t)^gamma BCE (report 004's ``pyT_focal_loss``).

    As in report 004 the weight alpha is applied to every pixel (no alpha/1-alpha class split);
    ``balanced=True`` uses Lin et al.'s alpha_t (alpha for positives, 1 - alpha for negatives),
    which equals MONAI ``FocalLoss(alpha=alpha, use_softmax=False)``.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, balanced: bool = False) -> None:
        super().__init__()
        self.alpha, self.gamma, self.balanced = alpha, gamma, balanced

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        g = target.float()
        p = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none")
        pt = p * g + (1 - p) * (1 - g)
        w = (self.alpha * g + (1 - self.alpha) * (1 - g)) if self.balanced else self.alpha
        return (w * (1 - pt).pow(self.gamma) * bce).mean()


def hard_region(expert: torch.Tensor, other: torch.Tensor, ks: int = 5) -> torch.Tensor:
    """dilate(expert XOR other) with a ``ks`` x ``ks`` square kernel (binary, same shape).

    As ``cv2.dilate(x, cv2.getStructuringElement(MORPH_RECT, (ks, ks)))`` in MicroSegNet's public code:
    the anchor is the kernel centre ``ks // 2``, so an even kernel (the public trainer uses ks = 2 at
    the 56 x 56 scale) reaches ``ks // 2`` pixels up/left and ``ks - 1 - ks // 2`` down/right.
    """
    x = (expert > 0.5) ^ (other > 0.5)
    x = x.float()
    if ks > 1:
        lo, hi = ks // 2, ks - 1 - ks // 2
        flat = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (lo, hi, lo, hi))
        flat = F.max_pool2d(flat, ks, stride=1)
        x = flat.reshape(x.shape)
    return x


class AGBCELoss(nn.Module):
    """Annotation-guided BCE (MicroSegNet, report 004).

    hard = dilate(expert XOR non-expert, ks), easy = 1 - hard, l = per-pixel BCE;
    loss = [sum(easy l) / (1 + w) + w sum(hard l) / (1 + w)] / (B H W), w = 4.
    ``forward(logits, expert, non_expert)``.
    """

    def __init__(self, w: float = 4.0, ks: int = 5, beta: float = 1.0) -> None:
        super().__init__()
        self.w, self.ks, self.beta = w, ks, beta

    def forward(
        self, logits: torch.Tensor, expert: torch.Tensor, non_expert: torch.Tensor, ks: int | None = None
    ) -> torch.Tensor:
        """``ks`` overrides the dilation kernel for this call (deep supervision: one per scale).
        ``beta`` scales the per-pixel BCE: MicroSegNet's public ``attention_BCE_loss`` computes
        -beta y log p - (1 - beta)(1 - y) log(1 - p) with beta 0.5, i.e. 0.5 BCE."""
        hard = hard_region(expert, non_expert, self.ks if ks is None else ks)
        easy = 1 - hard
        bce = self.beta * F.binary_cross_entropy_with_logits(logits, expert.float(), reduction="none")
        n = bce.numel() / (bce.shape[1] if bce.ndim > 3 else 1)
        return ((easy * bce).sum() / (1 + self.w) + self.w * (hard * bce).sum() / (1 + self.w)) / n


class AdaptiveFocalLoss(nn.Module):
    r"""Report 004's adaptive focal loss, read exactly as section 3.3.6 writes it (``reading="report"``).

    The report's algorithm (inputs y_true, y_pred "model predictions", y_std "annotation
    variability", ks), quoted step by step:

    1. "N_pixels = height x width x channels".
    2. "hard_np = y_true_np XOR y_std_np"; "hard_dilated = dilate(hard_np, kernel)" (ks x ks);
       "easy = 1 - hard_dilated".
    3. "y_pred_sigmoid = torch.sigmoid(y_pred)"; p_t = p y + (1 - p)(1 - y);
       "focal_loss = -theta (1 - p_t)^gamma log(p_t + eps)".
    4. "hard_loss = sum(focal_loss x hard_dilated)"; "easy_loss = sum(focal_loss x easy)".
    5. "sample_difficulty = 1.0 - mean(y_pred)" -- of y_pred, the tensor the algorithm passes through
       the sigmoid in step 3, i.e. the network's raw outputs (logits in medseg), *not* of
       y_pred_sigmoid;
       "annotation_variability = mean(y_std), where mean(y_std) is the average annotation standard
       deviation across all pixels" -- with the two annotations of MicroSegNet (expert y_true,
       non-expert), the per-pixel standard deviation is |e - n| / 2 (population std of two values),
       so variability = mean(|e - n|) / 2 = (fraction of disagreeing pixels) / 2.
    6. "gamma = sample_difficulty + annotation_variability"; "weighted_hard_loss = gamma hard_loss";
       "weighted_easy_loss = easy_loss / gamma"; "LOSS = (weighted_easy_loss + weighted_hard_loss) /
       N_pixels".

    The focal term's exponent is written gamma, the same symbol as step 6, so it is the adaptive gamma
    (``focal_gamma="adaptive"``); theta is unnamed in the report (beta in section 3.3.9): 0.5 as the
    public code. gamma is a weight: no gradient flows through it (the public code takes ``.item()``).

    Where the report's public code (``utils.adaptive_focal_loss``, called by the MicroSegNet trainer
    with ``torch.sigmoid`` outputs) differs, ``reading="public_code"`` switches all of them:

    ===================  ===========================================  ===========================================
    parameter            report (default)                             public code
    ===================  ===========================================  ===========================================
    ``difficulty_from``  ``"y_pred"``: 1 - mean(logits)               ``"probabilities"``: 1 - mean(sigmoid)
    ``variability``      ``"annotation_std"``: mean |e - n| / 2        ``"y_std_mean"``: mean(non-expert mask),
                                                                      its foreground fraction
    ``n_pixels``         ``"hwc"``: H x W x C (the batch not in N)     ``"bhw"``: B x H x W
    ===================  ===========================================  ===========================================

    Both: ``theta`` 0.5, ``focal_gamma`` adaptive, eps 1e-6, ``ks`` the dilation kernel (MicroSegNet's
    trainer: 4 at 224 x 224, 3, 2, 1 at 112, 56, 28 for deep supervision; ``forward(..., ks=)``).
    The report reading can make gamma <= 0 (1 - mean(logits) <= -variability, when the logits are
    mostly large and positive); gamma is then clamped to ``gamma_min`` (not in the report, which
    gives no guard) so 1 / gamma stays finite.

    ``forward(logits, y_true, y_std)``: ``y_std`` is the second (non-expert) annotation, as MicroSegNet
    passes it.
    """

    READINGS = {
        "report": {"difficulty_from": "y_pred", "variability": "annotation_std", "n_pixels": "hwc"},
        "public_code": {"difficulty_from": "probabilities", "variability": "y_std_mean", "n_pixels": "bhw"},
    }

    def __init__(
        self,
        ks: int = 5,
        theta: float = 0.5,
        focal_gamma: float | str = "adaptive",
        eps: float = 1e-6,
        reading: str = "report",
        difficulty_from: str | None = None,
        variability: str | None = None,
        n_pixels: str | None = None,
        gamma_min: float = 1e-3,
    ) -> None:
        super().__init__()
        if reading not in self.READINGS:
            raise ValueError(f"reading must be one of {', '.join(self.READINGS)}")
        opts = dict(self.READINGS[reading])
        for k, v in (("difficulty_from", difficulty_from), ("variability", variability), ("n_pixels", n_pixels)):
            if v is not None:
                opts[k] = v
        if opts["difficulty_from"] not in ("y_pred", "probabilities"):
            raise ValueError("difficulty_from must be 'y_pred' or 'probabilities'")
        if opts["variability"] not in ("annotation_std", "y_std_mean"):
            raise ValueError("variability must be 'annotation_std' or 'y_std_mean'")
        if opts["n_pixels"] not in ("hwc", "bhw"):
            raise ValueError("n_pixels must be 'hwc' or 'bhw'")
        if focal_gamma != "adaptive":
            focal_gamma = float(focal_gamma)
        self.ks, self.theta, self.focal_gamma, self.eps = ks, float(theta), focal_gamma, float(eps)
        self.reading, self.gamma_min = reading, float(gamma_min)
        self.difficulty_from, self.variability, self.n_pixels = (
            opts["difficulty_from"],
            opts["variability"],
            opts["n_pixels"],
        )

    def gamma(self, logits: torch.Tensor, y_true: torch.Tensor, y_std: torch.Tensor) -> torch.Tensor:
        """Step 5-6: sample_difficulty + annotation_variability (detached, clamped at ``gamma_min``)."""
        with torch.no_grad():
            pred = logits.float() if self.difficulty_from == "y_pred" else torch.sigmoid(logits.float())
            difficulty = 1.0 - pred.mean()
            if self.variability == "annotation_std":
                e, n = (y_true > 0.5).float(), (y_std > 0.5).float()
                variability = ((e - n).abs() / 2).mean()
            else:
                variability = y_std.float().mean()
            return torch.clamp(difficulty + variability, min=self.gamma_min)

    def forward(
        self, logits: torch.Tensor, y_true: torch.Tensor, y_std: torch.Tensor, ks: int | None = None
    ) -> torch.Tensor:
        y = y_true.float()
        if self.n_pixels == "hwc":
            n_pixels = float(torch.tensor(logits.shape[1:]).prod())
        else:
            n_pixels = float(logits.shape[0] * logits.shape[-2] * logits.shape[-1])
        hard = hard_region(y, y_std, self.ks if ks is None else ks)
        easy = 1 - hard
        gamma = self.gamma(logits, y, y_std)
        exponent: torch.Tensor | float = gamma if self.focal_gamma == "adaptive" else float(self.focal_gamma)
        p = torch.sigmoid(logits)
        pt = p * y + (1 - p) * (1 - y)
        focal = -self.theta * (1 - pt).pow(exponent) * torch.log(pt + self.eps)
        hard_loss = (focal * hard).sum()
        easy_loss = (focal * easy).sum()
        return (gamma * hard_loss + easy_loss / gamma) / n_pixels


class MultiClassFocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017) for C classes: mean over samples of
    -(1 - p_t)^gamma log p_t, with p_t the softmax probability of the true class; optional per-class
    ``alpha`` weights multiply each sample's term. Report 001 uses focal loss for the 8 MMOTU classes
    (Appendix B) and names no gamma; 2 is Lin et al.'s default. ``forward(logits (N, C), label (N,))``."""

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else torch.tensor(alpha, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = label.long()
        logp_t = F.log_softmax(logits, dim=1).gather(1, label[:, None])[:, 0]
        loss = -(1 - logp_t.exp()).pow(self.gamma) * logp_t
        if self.alpha is not None:
            loss = loss * self.alpha.to(logits.device, logits.dtype)[label]
        return loss.mean()


class MultiTaskLoss(nn.Module):
    """Report 001: ``seg_weight`` * Dice(seg) + ``cls_weight`` * CE(cls, class weights [1, 2]).

    Dice is computed only on samples whose reference mask is non-empty (a normal ovary with no
    lesion must not be pushed towards an empty prediction by Dice's 0/0). ``forward(outputs,
    mask, label)`` with ``outputs = {"seg": logits, "cls": logits}``; a single-task network
    (``task`` seg or cls) gives only one of the two and only that term is computed.
    ``cls_loss="focal"`` (MMOTU, report 001 Appendix B: 0.3 Dice + 1.0 Focal) uses
    :class:`MultiClassFocalLoss` (``focal_gamma``) instead of weighted cross-entropy;
    ``class_weights`` None means unweighted (the [1, 2] default is for the 2 primary-data classes).
    """

    class_weights: torch.Tensor | None  # a registered buffer (moves with .to())

    def __init__(
        self,
        seg_weight: float = 0.3,
        cls_weight: float = 1.0,
        class_weights: Sequence[float] | None = (1.0, 2.0),
        cls_loss: str = "ce",
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cls_loss not in ("ce", "focal"):
            raise ValueError("cls_loss must be 'ce' or 'focal'")
        self.sw, self.cw, self.cls_loss = seg_weight, cls_weight, cls_loss
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        self.dice = SoftDiceLoss()
        self.focal = MultiClassFocalLoss(focal_gamma, class_weights) if cls_loss == "focal" else None

    def forward(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        if "seg" in outputs:
            seg = outputs["seg"]
            nonempty = mask.flatten(1).sum(1) > 0
            dice = self.dice(seg[nonempty], mask[nonempty]) if nonempty.any() else seg.sum() * 0.0
            total = self.sw * dice
        if "cls" in outputs:
            cls = outputs["cls"]
            if self.focal is not None:
                term = self.focal(cls, label)
            else:
                w = None if self.class_weights is None else self.class_weights.to(cls.dtype)
                term = F.cross_entropy(cls, label.long(), weight=w)
            total = self.cw * term if total is None else total + self.cw * term
        if total is None:
            raise ValueError("the outputs hold neither 'seg' nor 'cls'")
        return total


class WeightedMSELoss(nn.Module):
    """Annotation-removal loss: M = (annotated != clean); w = alpha M + beta (1 - M);
    loss = sum w (clean - pred)^2 / sum w (report 001: alpha 300, beta 1; public code alpha 150).
    ``forward(pred, clean, annotated)``."""

    def __init__(self, alpha: float = 300.0, beta: float = 1.0, tol: float = 1e-6) -> None:
        super().__init__()
        self.alpha, self.beta, self.tol = alpha, beta, tol

    def forward(self, pred: torch.Tensor, clean: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
        m = ((annotated - clean).abs() > self.tol).float()
        w = self.alpha * m + self.beta * (1 - m)
        return (w * (clean - pred) ** 2).sum() / w.sum()


LOSSES = {
    "bce": BCELoss,
    "dice": SoftDiceLoss,
    "dice_smp_multilabel": SmpMultilabelDiceLoss,
    "compound": CompoundLoss,
    "focal_tversky": FocalTverskyLoss,
    "focal": FocalLoss,
    "agbce": AGBCELoss,
    "adaptive_focal": AdaptiveFocalLoss,
    "multitask": MultiTaskLoss,
    "weighted_mse": WeightedMSELoss,
}
