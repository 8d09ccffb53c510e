"""Registry: every model builds and runs a forward pass on the CPU; contracts and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg_core.models import build_model, count_parameters, get_spec, list_models

torch.set_num_threads(2)

SMALL = {  # name -> (overrides, input shape)
    "unet3d": ({}, (1, 1, 32, 32, 32)),
    "vnet3d": ({}, (1, 1, 32, 32, 32)),
    "unetr3d": ({"img_size": (32, 32, 32)}, (1, 1, 32, 32, 32)),
    "ovary_unet": ({}, (2, 1, 64, 64)),
    "ovary_attention_unet": ({}, (2, 1, 64, 64)),
    "ovary_tl5": ({}, (2, 1, 64, 64)),
    "ovary_slice_classifier": ({}, (2, 1, 64, 64)),
    "us_mtl_effb0": ({}, (2, 1, 64, 96)),
    "us_mtl_unet": ({}, (2, 1, 64, 96)),
    "us_cascade": ({"crop_size": 64}, (2, 1, 64, 96)),
    "us_denoiser": ({}, (2, 1, 64, 96)),
    "gi_unetpp_effb3": ({}, (2, 1, 64, 64)),
    "prostate_microus": ({}, (2, 1, 64, 64)),
    "prostate_transunet": ({}, (2, 1, 64, 64)),
    # the deeper two pool seven times: 128 x 128 is the smallest input that keeps a pixel
    **{f"gi_scratch_{v}": ({}, (2, 1, 64, 64)) for v in ("simple", "bn_dropout")},
    **{f"gi_scratch_{v}": ({}, (1, 1, 128, 128)) for v in ("residual", "final")},
}


def test_every_registry_model_is_covered():
    assert set(SMALL) == set(list_models())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_pass_on_cpu(name):
    spec = get_spec(name)
    over, shape = SMALL[name]
    model = build_model(name, variant="demo", **over).eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        out = model(x, torch.tensor([[1.0, 0.0]] * shape[0])) if spec.clinical_inputs else model(x)
    if spec.task == "segmentation+classification":
        assert out["seg"].shape == (shape[0], 1, *shape[2:])
        assert out["cls"].shape == (shape[0], 2)
    elif spec.task == "classification":
        assert out.shape == (shape[0], 1)
    elif spec.activation == "softmax":
        assert out.shape == (shape[0], 2, *shape[2:])
    else:
        assert out.shape == (shape[0], len(spec.labels), *shape[2:])
    assert all(
        torch.isfinite(t).all() for t in (out.values() if isinstance(out, dict) else [out]) if torch.is_tensor(t)
    )


def test_spec_contract_fields():
    for n in list_models():
        s = get_spec(n)
        assert s.dims in ("2d", "3d") and s.modalities and s.labels and s.checkpoint.endswith(".safetensors")
        assert s.contract()
        if s.dims == "3d":
            assert s.mode == "sliding_window" and s.target_spacing is not None
        if s.mc_prefix:
            m = build_model(n, variant="demo")
            assert hasattr(m, "encode") and hasattr(m, "decode")


def test_paper_sizes_match_reports():
    # classic U-Net 64..1024 is 31.0 M; MONAI VNet is 45.6 M (issue 6); UNETR paper config ~92.8 M
    assert count_parameters(build_model("ovary_unet")) == pytest.approx(31.04e6, rel=0.01)
    assert count_parameters(build_model("vnet3d")) == pytest.approx(45.6e6, rel=0.01)
    assert count_parameters(build_model("unet3d", variant="demo")) < count_parameters(build_model("unet3d"))


def test_vnet_width_is_monais_vnet():
    """The width-configurable VNet is MONAI's VNet built from its own blocks: at width 16 with MONAI's
    skip dropout it has the same modules, keys and shapes and computes the same output from the same
    weights; the demo (width 8) has a quarter of the parameters and MONAI's layout scaled by 1/2."""
    from monai.networks.nets import VNet

    from medseg_core.models.monai3d import vnet_from_blocks

    ref = VNet(spatial_dims=3, in_channels=1, out_channels=2).eval()
    ours = vnet_from_blocks(16, shallow_skip_dropout=0.5).eval()
    assert str(ours) == str(ref)
    ours.load_state_dict(ref.state_dict())  # strict: same keys and shapes
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(ours(x), ref(x))
    demo = build_model("vnet3d", variant="demo")
    assert isinstance(demo, VNet)
    assert count_parameters(demo) == pytest.approx(count_parameters(ref) / 4, rel=0.01)
    half = {k: v.shape for k, v in demo.state_dict().items()}
    assert set(half) == set(ref.state_dict())
    assert half["in_tr.conv_block.conv.weight"] == (8, 1, 5, 5, 5)
    assert half["out_tr.conv_block.conv.weight"] == (2, 16, 5, 5, 5)
    drops = [m.p for m in demo.modules() if isinstance(m, torch.nn.Dropout3d)]
    assert drops and all(p == 0.1 for p in drops)


def test_effb0_stage_shapes_match_methods():
    m = build_model("us_mtl_effb0").eval()
    shapes = []
    x = torch.zeros(1, 1, 336, 544)
    with torch.inference_mode():
        for blk in m.features:
            x = blk(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [
        (32, 168, 272),
        (16, 168, 272),
        (24, 84, 136),
        (40, 42, 68),
        (80, 21, 34),
        (112, 21, 34),
        (192, 11, 17),
        (320, 11, 17),
        (1280, 11, 17),
    ]
    assert m.cls_head.head[0].in_features == 1408


def test_clinical_input_changes_classification():
    m = build_model("us_mtl_effb0", variant="demo").eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.inference_mode():
        a = m(x, torch.tensor([[0.0, 0.0]]))["cls"]
        b = m(x, torch.tensor([[1.0, 1.0]]))["cls"]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        m(x, None)


def test_attention_gates_on_every_skip():
    m = build_model("ovary_attention_unet", variant="demo")
    assert all(up.gate is not None for up in m.ups)
    assert all(up.gate is None for up in build_model("ovary_unet", variant="demo").ups)


def test_tl5_encoder_weights_from_local_file_only(tmp_path):
    from safetensors.torch import save_file

    src = build_model("ovary_tl5", variant="demo")
    w = {k: v.clone() for k, v in src.encoder.state_dict().items()}
    save_file(w, str(tmp_path / "resnet34.safetensors"))
    m = build_model("ovary_tl5", variant="demo", encoder_weights_path=str(tmp_path / "resnet34.safetensors"))
    for k, v in m.encoder.state_dict().items():
        torch.testing.assert_close(v, w[k])
    assert "resnet34.safetensors" in m.encoder_weights_note
    assert "no local pretrained weights" in build_model("ovary_tl5", variant="demo").encoder_weights_note


def test_cascade_crop_box_padding():
    from medseg_core.models.ultrasound import lesion_crop_box, square_crop

    mask = np.zeros((100, 200), np.uint8)
    mask[40:60, 50:90] = 1
    mask[5:7, 5:7] = 1  # a smaller component is ignored
    assert lesion_crop_box(mask) == (39, 61, 48, 92)  # 1 % of 100 rows = 1, of 200 cols = 2
    crop = square_crop(torch.ones(1, 100, 200), (39, 61, 48, 92), size=164)
    assert crop.shape == (1, 164, 164)
    assert lesion_crop_box(np.zeros((10, 10))) is None
