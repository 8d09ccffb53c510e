"""Report 003's 3D spleen models, built from MONAI's networks (configuration from its public code)."""
from __future__ import annotations


def unet3d(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, dropout=0.0, out_channels=2):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=out_channels, channels=tuple(channels), strides=tuple(strides),
                num_res_units=num_res_units, norm="batch", dropout=dropout)


def vnet3d(dropout_prob_down=0.5, dropout_prob_up=(0.5, 0.5), out_channels=2, width=16):
    """MONAI VNet. ``width`` is the number of channels of the first stage (MONAI fixes it at 16:
    45.6 M parameters); every stage keeps VNet's doubling, 5^3 residual convolutions, PReLU/ELU and
    convolution counts, built from MONAI's own VNet blocks, so ``width=16`` is MONAI's VNet exactly
    (same state-dict keys and shapes). ``width=8`` has a quarter of the parameters.

    Dropout as in MONAI: ``dropout_prob_down`` in the two deepest down stages, ``dropout_prob_up`` in
    the two deepest up stages; the channel dropout MONAI applies to the skip input of the two shallow
    up stages is 0.5 at ``width=16`` (MONAI's fixed value) and ``dropout_prob_up[1]`` otherwise."""
    from monai.networks.nets import VNet

    if width == 16:
        return VNet(spatial_dims=3, in_channels=1, out_channels=out_channels, dropout_prob_down=dropout_prob_down,
                    dropout_prob_up=tuple(dropout_prob_up))
    return vnet_from_blocks(int(width), dropout_prob_down, tuple(dropout_prob_up), out_channels)


def vnet_from_blocks(width: int, dropout_prob_down=0.5, dropout_prob_up=(0.5, 0.5), out_channels=2,
                     shallow_skip_dropout: float | None = None):
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


def unetr3d(img_size=(96, 96, 96), feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12, dropout_rate=0.0,
            out_channels=2):
    from monai.networks.nets import UNETR

    return UNETR(in_channels=1, out_channels=out_channels, img_size=tuple(img_size), feature_size=feature_size,
                 hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, dropout_rate=dropout_rate)
