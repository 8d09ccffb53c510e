"""Report 003's 3D spleen models, built from MONAI's networks (configuration from its public code)."""
from __future__ import annotations


def unet3d(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, dropout=0.0, out_channels=2):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=out_channels, channels=tuple(channels), strides=tuple(strides),
                num_res_units=num_res_units, norm="batch", dropout=dropout)


def vnet3d(dropout_prob_down=0.5, dropout_prob_up=(0.5, 0.5), out_channels=2):
    """MONAI VNet (45.6 M parameters; no width option). Dropout sits in its deepest stages."""
    from monai.networks.nets import VNet

    return VNet(spatial_dims=3, in_channels=1, out_channels=out_channels, dropout_prob_down=dropout_prob_down,
                dropout_prob_up=tuple(dropout_prob_up))


def unetr3d(img_size=(96, 96, 96), feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12, dropout_rate=0.0,
            out_channels=2):
    from monai.networks.nets import UNETR

    return UNETR(in_channels=1, out_channels=out_channels, img_size=tuple(img_size), feature_size=feature_size,
                 hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, dropout_rate=dropout_rate)
