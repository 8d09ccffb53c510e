"""Report 004 (micro-US prostate, MicroSegNet data): TransUNet with deep supervision, the adaptive focal
loss as section 3.3.6 writes it, medpy's pooled HD95, and the rows table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg_core import losses as L
from medseg_core import metrics as M
from medseg_core.deep_supervision import deep_supervision_loss, resize_target
from medseg_core.models import build_model, get_spec


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ----------------------------------------------------------------------------- TransUNet
def test_paper_transunet_shapes_deep_supervision_and_size():
    torch.manual_seed(0)
    net = build_model("prostate_transunet", "paper")
    # R50-ViT-B/16 TransUNet (TransUNet paper: 105.28 M) plus MicroSegNet's three 3x3 auxiliary heads
    assert sum(p.numel() for p in net.parameters()) == 105_279_956
    assert get_spec("prostate_transunet").input_size == (224, 224)
    x = torch.randn(2, 1, 224, 224)
    net.train()
    outs = net(x)
    assert isinstance(outs, tuple) and len(outs) == 4  # full + 28, 56, 112 (MicroSegNet's order)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 224, 224), (2, 1, 28, 28), (2, 1, 56, 56), (2, 1, 112, 112)]
    net.eval()
    with torch.no_grad():
        out = net(x[:1])
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 1, 224, 224)
    # the 14 x 14 token grid: patch 16 at 224
    assert tuple(net.pos_embed.shape) == (1, 196, 768)


def test_demo_transunet_gradients_reach_every_part_through_the_deep_supervision_loss():
    torch.manual_seed(0)
    net = build_model("prostate_transunet", "demo")
    net.train()
    x = torch.rand(2, 1, 224, 224)
    y = torch.zeros(2, 1, 224, 224)
    y[:, :, 60:160, 50:170] = 1
    ne = torch.zeros_like(y)
    ne[:, :, 64:164, 50:170] = 1
    outs = net(x)
    loss = deep_supervision_loss(L.AdaptiveFocalLoss(ks=4), outs, y, ne)
    loss.backward()
    for name, p in [
        ("stem", net.backbone.stem.conv.weight),
        ("transformer", net.blocks[0].attn.qkv.weight),
        ("pos_embed", net.pos_embed),
        ("head", net.head.weight),
    ] + [(f"aux{i}", h.weight) for i, h in enumerate(net.aux_heads)]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_forward_loss_sums_the_four_scales_with_microsegnets_kernels():
    from medseg_core.train import _forward_loss

    torch.manual_seed(1)
    net = build_model("prostate_transunet", "demo").train()
    x = torch.rand(2, 1, 224, 224)
    y = torch.zeros(2, 1, 224, 224)
    y[:, :, 40:180, 30:200] = 1
    ne = torch.zeros_like(y)
    ne[:, :, 48:180, 30:190] = 1
    loss_fn = L.AGBCELoss(w=4.0, ks=4, beta=0.5)
    torch.manual_seed(2)
    got = _forward_loss("seg2d", net, loss_fn, {"x": x, "y": y, "non_expert": ne}, None)
    torch.manual_seed(2)
    full, o28, o56, o112 = net(x)
    want = sum(
        loss_fn(o, resize_target(y, o.shape[-2:]), resize_target(ne, o.shape[-2:]), ks=k)
        for o, k in ((o28, 1), (o56, 2), (o112, 3), (full, 4))
    )
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    # eval mode: one tensor, the plain loss
    net.eval()
    with torch.no_grad():
        plain = _forward_loss("seg2d", net, loss_fn, {"x": x, "y": y, "non_expert": ne}, None)
        assert float(plain) == pytest.approx(float(loss_fn(net(x), y, ne)), rel=1e-6)


def test_resize_target_is_cv2_bilinear_then_truncation():
    # 4 x 4 -> 2 x 2: bilinear at half resolution averages each 2 x 2 block; truncation keeps only full blocks
    y = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)[None, None]
    assert resize_target(y, (2, 2)).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    assert resize_target(y, (4, 4)) is y


def test_hard_region_even_kernel_follows_cv2_anchor():
    # cv2.dilate with a 2x2 rect and the default anchor (1, 1): a pixel spreads down and right, not up/left
    e = torch.zeros(1, 1, 5, 5)
    n = torch.zeros(1, 1, 5, 5)
    n[0, 0, 2, 2] = 1
    h = L.hard_region(e, n, ks=2)[0, 0]
    assert h.nonzero().tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]
    h3 = L.hard_region(e, n, ks=3)[0, 0]
    assert int(h3.sum()) == 9 and h3[1:4, 1:4].all()


# ----------------------------------------------------------------------------- adaptive focal loss
Z = [[2.0, -1.0], [0.0, 1.0]]  # logits
YT = [[1, 0], [0, 1]]  # expert
YS = [[1, 1], [0, 1]]  # non-expert: disagrees at (0, 1) only


def _hand(difficulty, variability, n_pixels, theta=0.5, eps=1e-6):
    z, y = np.array(Z), np.array(YT, float)
    p = _sigmoid(z)
    pt = np.where(y == 1, p, 1 - p)
    gamma = difficulty + variability
    focal = -theta * (1 - pt) ** gamma * np.log(pt + eps)
    hard = np.array([[0, 1], [0, 0]], float)  # expert XOR non-expert, ks = 1 (no dilation)
    return (gamma * (focal * hard).sum() + (focal * (1 - hard)).sum() / gamma) / n_pixels, gamma


def _t(a, b=1):
    return torch.tensor(a, dtype=torch.float32)[None, None].repeat(b, 1, 1, 1)


def test_adaptive_focal_loss_report_reading_by_hand():
    """Section 3.3.6: difficulty = 1 - mean(y_pred) on the raw predictions: 1 - (2 - 1 + 0 + 1) / 4 = 0.5;
    variability = mean per-pixel std of (expert, non-expert) = (1 / 4) * 0.5 = 0.125; gamma = 0.625;
    N = H x W x C = 4."""
    want, gamma = _hand(difficulty=0.5, variability=0.125, n_pixels=4)
    assert gamma == pytest.approx(0.625)
    loss = L.AdaptiveFocalLoss(ks=1)
    assert float(loss.gamma(_t(Z), _t(YT), _t(YS))) == pytest.approx(0.625)
    assert float(loss(_t(Z), _t(YT), _t(YS))) == pytest.approx(want, rel=1e-5)
    # by hand: p_t = 0.880797, 0.731059, 0.5, 0.731059; focal = 0.5 (1 - p_t)^0.625 (-ln p_t) = 0.016796,
    # 0.068933 (hard), 0.224725, 0.068933; (0.625 x 0.068933 + 0.310454 / 0.625) / 4 = 0.134952
    assert want == pytest.approx(0.134952, abs=2e-6)
    # N = H x W x C leaves the batch out: a batch of two copies doubles the loss
    assert float(loss(_t(Z, 2), _t(YT, 2), _t(YS, 2))) == pytest.approx(2 * want, rel=1e-5)


def test_adaptive_focal_loss_public_code_reading_by_hand():
    """The report's public code: difficulty = 1 - mean(sigmoid), variability = mean(non-expert) = 3/4,
    N = B x H x W."""
    difficulty = 1 - _sigmoid(Z).mean()
    want, gamma = _hand(difficulty=difficulty, variability=0.75, n_pixels=4)
    loss = L.AdaptiveFocalLoss(ks=1, reading="public_code")
    assert float(loss.gamma(_t(Z), _t(YT), _t(YS))) == pytest.approx(gamma, rel=1e-6)
    assert float(loss(_t(Z), _t(YT), _t(YS))) == pytest.approx(want, rel=1e-5)
    assert float(loss(_t(Z, 2), _t(YT, 2), _t(YS, 2))) == pytest.approx(want, rel=1e-5)  # batch in N
    # the two readings differ on this example
    assert not math.isclose(want, _hand(0.5, 0.125, 4)[0], rel_tol=1e-3)


def test_adaptive_focal_loss_gamma_is_a_weight_and_is_clamped():
    z = _t(Z).requires_grad_(True)
    L.AdaptiveFocalLoss(ks=1)(z, _t(YT), _t(YS)).backward()
    assert torch.isfinite(z.grad).all() and float(z.grad.abs().sum()) > 0
    # mostly large positive logits: 1 - mean(logits) + variability < 0 under the report reading -> clamped
    big = torch.full((1, 1, 2, 2), 5.0)
    g = L.AdaptiveFocalLoss(ks=1, gamma_min=1e-3).gamma(big, _t(YT), _t(YS))
    assert float(g) == pytest.approx(1e-3)


# ----------------------------------------------------------------------------- medpy's pooled HD95
def test_hd95_pooled_differs_from_max_of_directed_on_a_hand_made_pair():
    """Lines of thickness one are all surface. Spacing (0.5, 0.25) mm.
    ref: row 0, columns 0-19 and one pixel at (5, 25); pred: row 0, columns 0-19 and pixels (9, 0), (9, 1).
    pred -> ref: 20 zeros and 2 x 4.5 mm (9 rows x 0.5); ref -> pred: 20 zeros and
    sqrt((5 x 0.5)^2 + (6 x 0.25)^2) = sqrt(8.5) (to (0, 19)).
    Directed 95th percentiles (numpy's linear interpolation): pred -> ref, 22 values, rank 0.95 x 21 = 19.95
    -> 0.95 x 4.5 = 4.275; ref -> pred, 21 values, rank 19 -> 0. max = 4.275.
    Pooled: 43 values, rank 0.95 x 42 = 39.9, between 0 (rank 39) and sqrt(8.5) (rank 40) -> 0.9 sqrt(8.5)."""
    ref = np.zeros((12, 30), bool)
    ref[0, :20] = True
    ref[5, 25] = True
    pred = np.zeros_like(ref)
    pred[0, :20] = True
    pred[9, 0:2] = True
    sp = (0.5, 0.25)
    assert M.hd95(pred, ref, sp) == pytest.approx(4.275)
    assert M.hd95_pooled(pred, ref, sp) == pytest.approx(0.9 * math.sqrt(8.5))
    assert M.hd95_pooled(pred, ref, sp) == pytest.approx(M.hd95_pooled(ref, pred, sp))  # symmetric
    assert math.isnan(M.hd95_pooled(pred, np.zeros_like(ref), sp))


def test_hd95_pooled_surface_is_connectivity_one_erosion():
    # a 5 x 5 square: its surface is the 16 border pixels (4-connected erosion keeps the 3 x 3 core);
    # against itself shifted one column right (0.25 mm), pooled distances: 0 or 0.25 mm
    a = np.zeros((9, 9), bool)
    a[2:7, 2:7] = True
    b = np.roll(a, 1, axis=1)
    d_ab, d_ba = M.surface_distances(a, b, (0.5, 0.25))
    assert d_ab.size == 16 and d_ba.size == 16
    # surface of a: its left column (5 px) is 0.25 mm from b's left column; the 3 inner pixels of its right
    # column lie inside b, 0.25 mm from b's right column; the other 8 (top and bottom rows, columns 3-6) lie on
    # b's surface: 8 x 0.25 and 8 x 0
    assert sorted(np.round(d_ab, 6).tolist()) == [0.0] * 8 + [0.25] * 8
    assert M.hd95_pooled(a, b, (0.5, 0.25)) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- rows table
def test_rows_table_004_matches_the_configs_and_covers_tables_1_to_3():
    from medseg_core import reproduce as R

    assert R.check("004") == []
    rows = R.rows_of("004")
    by_table = {t: [r for r in rows if r.table == t] for t in ("Table 1", "Table 2", "Table 3")}
    assert len(by_table["Table 1"]) == 30 and len(by_table["Table 2"]) == 126 and len(by_table["Table 3"]) == 6
    t3 = {(r.config, r.metric): r.value for r in by_table["Table 3"]}
    assert t3[("004_adaptive_focal", "dice")] == pytest.approx(0.940013)
    assert t3[("004_agbce", "hd95_mm")] == pytest.approx(2.000584)
    assert t3[("004_focal", "hd95_mm")] == pytest.approx(2.497254)
    # Table 2's per-case columns average to its Mean row (transcription check)
    for cfg in ("004_adaptive_focal", "004_focal", "004_agbce"):
        for metric in ("dice", "hd95_mm"):
            cases = [r.value for r in by_table["Table 2"] if r.config == cfg and r.metric == metric and r.row != "Mean"]
            mean = [r.value for r in by_table["Table 2"] if r.config == cfg and r.metric == metric and r.row == "Mean"]
            assert len(cases) == 20 and np.mean(cases) == pytest.approx(mean[0], abs=1e-6)
    table = R.load_table("004")
    assert "pooled" in table["protocol"]["hd95"] and "0.033586" in table["protocol"]["spacing_mm"]
