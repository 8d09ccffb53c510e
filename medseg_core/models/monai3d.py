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

AXIS_ORDERS = ("zyx", "xyz")


def _plain_arg(v):
    """A JSON value (list) as the tuple MONAI expects for ``act``/``norm``-style arguments."""
    if isinstance(v, list):
        return tuple(_plain_arg(x) for x in v)
    return v


def _xyz_in(module, args):
    return (args[0].transpose(2, 4), *args[1:])


def _xyz_out(module, args, out):
    return out.transpose(2, 4)


def _with_axis_order(net, axis_order: str):
    if axis_order not in AXIS_ORDERS:
        raise ValueError(f"axis_order must be one of {AXIS_ORDERS}, got {axis_order!r}")
    if axis_order == "xyz":
        net.register_forward_pre_hook(_xyz_in)
        net.register_forward_hook(_xyz_out)
    return net


def unet3d(
    channels=(16, 32, 64, 128, 256),
    strides=(2, 2, 2, 2),
    num_res_units=2,
    dropout=0.0,
    out_channels=2,
    in_channels=1,
    kernel_size=3,
    up_kernel_size=3,
    act="PRELU",
    norm="batch",
    bias=True,
    adn_ordering="NDA",
    axis_order="zyx",
):
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
    dropout_prob_down=0.5,
    dropout_prob_up=(0.5, 0.5),
    out_channels=2,
    width=16,
    in_channels=1,
    act=_VNET_ACT,
    dropout_dim=3,
    bias=False,
    axis_order="zyx",
):
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
    dropout_prob_down=0.5,
    dropout_prob_up=(0.5, 0.5),
    out_channels=2,
    shallow_skip_dropout: float | None = None,
):
    """MONAI's VNet (its class, forward and blocks) with the first stage ``width`` channels wide.
    ``shallow_skip_dropout`` defaults to ``dropout_prob_up[1]``; MONAI's own VNet uses 0.5."""
    import torch.nn as nn
    from monai.networks.nets import VNet
    from monai.networks.nets.vnet import DownTransition, InputTransition, OutputTransition, UpTransition

    w, act, up = width, ("elu", {"inplace": True}), tuple(dropout_prob_up)
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
    img_size=(96, 96, 96),
    feature_size=16,
    hidden_size=768,
    mlp_dim=3072,
    num_heads=12,
    dropout_rate=0.0,
    out_channels=2,
    in_channels=1,
    proj_type="conv",
    norm_name="instance",
    conv_block=True,
    res_block=True,
    qkv_bias=False,
    save_attn=False,
    axis_order="zyx",
):
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
