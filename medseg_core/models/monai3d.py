"""Report 003's 3D spleen models, built from MONAI's networks (configuration from its public code).

Every builder takes MONAI's own keyword arguments (defaults: medseg's registry configuration), so
a MONAI bundle's ``network_def`` maps onto a builder exactly (:mod:`medseg_core.bundle`), plus
``axis_order``: medseg feeds 3D models ``(B, C, Z, Y, X)`` tensors; a network trained by MONAI on
RAS-oriented arrays saw the same voxels with the axes reversed, ``(B, C, X, Y, Z)``.
``axis_order="xyz"`` transposes the input on the way in and the output back on the way out
(forward hooks: the module, its class and its state dict stay MONAI's); ``"zyx"`` (the default,
how medseg trains) leaves both untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

AXIS_ORDERS = ("zyx", "xyz")


def _plain_arg(v: Any) -> Any:
    """A JSON value (list) as the tuple MONAI expects for ``act``/``norm``-style arguments."""
    if isinstance(v, list):
        return tuple(_plain_arg(x) for x in v)
    return v


def _xyz_in(module: nn.Module, args: tuple) -> tuple:
    return (args[0].transpose(2, 4), *args[1:])


def _xyz_out(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return out.transpose(2, 4)


def _with_axis_order(net: nn.Module, axis_order: str) -> nn.Module:
    if axis_order not in AXIS_ORDERS:
        raise ValueError(f"axis_order must be one of {AXIS_ORDERS}, got {axis_order!r}")
    if axis_order == "xyz":
        net.register_forward_pre_hook(_xyz_in)
        net.register_forward_hook(_xyz_out)
    return net


def unet3d(
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    dropout: float = 0.0,
    out_channels: int = 2,
    in_channels: int = 1,
    kernel_size: int = 3,
    up_kernel_size: int = 3,
    act: str = "PRELU",
    norm: str = "batch",
    bias: bool = True,
    adn_ordering: str = "NDA",
    axis_order: str = "zyx",
) -> nn.Module:
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        kernel_size=_plain_arg(kernel_size),
        up_kernel_size=_plain_arg(up_kernel_size),
        num_res_units=num_res_units,
        act=_plain_arg(act),
        norm=_plain_arg(norm),
        dropout=dropout,
        bias=bias,
        adn_ordering=adn_ordering,
    )
    return _with_axis_order(net, axis_order)


_VNET_ACT = ("elu", {"inplace": True})


def vnet3d(
    dropout_prob_down: float = 0.5,
    dropout_prob_up: Sequence[float] = (0.5, 0.5),
    out_channels: int = 2,
    width: int = 16,
    in_channels: int = 1,
    act: str | tuple = _VNET_ACT,
    dropout_dim: int = 3,
    bias: bool = False,
    axis_order: str = "zyx",
) -> nn.Module:
    """MONAI VNet. ``width`` is the number of channels of the first stage (MONAI fixes it at 16:
    45.6 M parameters); every stage keeps VNet's doubling, 5^3 residual convolutions, PReLU/ELU and
    convolution counts, built from MONAI's own VNet blocks, so ``width=16`` is MONAI's VNet exactly
    (same state-dict keys and shapes). ``width=8`` has a quarter of the parameters.

    Dropout as in MONAI: ``dropout_prob_down`` in the two deepest down stages, ``dropout_prob_up`` in
    the two deepest up stages; the channel dropout MONAI applies to the skip input of the two shallow
    up stages is 0.5 at ``width=16`` (MONAI's fixed value) and ``dropout_prob_up[1]`` otherwise.
    ``in_channels``, ``act``, ``dropout_dim`` and ``bias`` are MONAI's (width 16 only)."""
    from monai.networks.nets import VNet

    if width == 16:
        net = VNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            act=_plain_arg(act),
            dropout_prob_down=dropout_prob_down,
            dropout_prob_up=tuple(dropout_prob_up),
            dropout_dim=dropout_dim,
            bias=bias,
        )
        return _with_axis_order(net, axis_order)
    if (in_channels, _plain_arg(act), dropout_dim, bias) != (1, _VNET_ACT, 3, False):
        raise ValueError("in_channels, act, dropout_dim and bias can be changed only at MONAI's width 16")
    return _with_axis_order(
        vnet_from_blocks(int(width), dropout_prob_down, tuple(dropout_prob_up), out_channels), axis_order
    )


def vnet_from_blocks(
    width: int,
    dropout_prob_down: float = 0.5,
    dropout_prob_up: Sequence[float] = (0.5, 0.5),
    out_channels: int = 2,
    shallow_skip_dropout: float | None = None,
) -> nn.Module:
    """MONAI's VNet (its class, forward and blocks) with the first stage ``width`` channels wide.
    ``shallow_skip_dropout`` defaults to ``dropout_prob_up[1]``; MONAI's own VNet uses 0.5."""
    import torch.nn as nn
    from monai.networks.nets import VNet
    from monai.networks.nets.vnet import DownTransition, InputTransition, OutputTransition, UpTransition

    w, act = width, ("elu", {"inplace": True})
    up = (float(dropout_prob_up[0]), float(dropout_prob_up[1]))
    skip = up[1] if shallow_skip_dropout is None else shallow_skip_dropout
    net = VNet.__new__(VNet)
    nn.Module.__init__(net)
    net.in_tr = InputTransition(3, 1, w, act)
    net.down_tr32 = DownTransition(3, w, 1, act)
    net.down_tr64 = DownTransition(3, 2 * w, 2, act)
    net.down_tr128 = DownTransition(3, 4 * w, 3, act, dropout_prob=dropout_prob_down)
    net.down_tr256 = DownTransition(3, 8 * w, 2, act, dropout_prob=dropout_prob_down)
    net.up_tr256 = UpTransition(3, 16 * w, 16 * w, 2, act, dropout_prob=up)
    net.up_tr128 = UpTransition(3, 16 * w, 8 * w, 2, act, dropout_prob=up)
    net.up_tr64 = UpTransition(3, 8 * w, 4 * w, 1, act, dropout_prob=(None, skip))
    net.up_tr32 = UpTransition(3, 4 * w, 2 * w, 1, act, dropout_prob=(None, skip))
    net.out_tr = OutputTransition(3, 2 * w, out_channels, act)
    return net


def unetr3d(
    img_size: Sequence[int] = (96, 96, 96),
    feature_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    dropout_rate: float = 0.0,
    out_channels: int = 2,
    in_channels: int = 1,
    proj_type: str = "conv",
    norm_name: str = "instance",
    conv_block: bool = True,
    res_block: bool = True,
    qkv_bias: bool = False,
    save_attn: bool = False,
    axis_order: str = "zyx",
) -> nn.Module:
    """MONAI UNETR (``proj_type`` is what MONAI before 1.3 called ``pos_embed``)."""
    from monai.networks.nets import UNETR

    net = UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=tuple(img_size),
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        proj_type=proj_type,
        norm_name=_plain_arg(norm_name),
        conv_block=conv_block,
        res_block=res_block,
        dropout_rate=dropout_rate,
        spatial_dims=3,
        qkv_bias=qkv_bias,
        save_attn=save_attn,
    )
    return _with_axis_order(net, axis_order)
