"""The one registry of models: ``list_models()``, ``get_spec(name)``, ``build_model(name, ...)``.

A :class:`ModelSpec` says what a model is and how it must be fed: task, 2D slice-wise or 3D
sliding-window, input contract (channels, size or spacing, intensity), accepted modalities, default
pre- and post-processing, output labels and activation, where its dropout sits (for MC-dropout
uncertainty) and which checkpoint file (with its model card) it ships with.

Every model has two configurations: ``variant="paper"`` (the report's architecture) and
``variant="demo"`` (narrower, trained on this CPU on the synthetic phantoms; the shipped
checkpoints use it and their cards say so). Keyword ``overrides`` change either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    family: str  # spleen | ovary | ultrasound | gi | prostate
    report: str
    task: str  # segmentation | segmentation+classification | classification | restoration
    dims: str  # "2d" or "3d"
    mode: str  # "slicewise" (2D over all slices), "image" (one 2D image), "sliding_window" (3D)
    builder: Callable[..., nn.Module]
    in_channels: int
    input_size: tuple[int, ...]  # (H, W) for 2D, sliding-window roi (D, H, W) for 3D
    modalities: tuple[str, ...]
    intensity: str
    preprocessing: str
    postprocessing: tuple[str, ...]
    labels: tuple[str, ...]
    activation: str  # sigmoid | softmax
    dropout: str  # where dropout sits, in words
    mc_prefix: bool  # True: model has encode()/decode() and dropout only in decode()
    paper_kwargs: dict = field(default_factory=dict)
    demo_kwargs: dict = field(default_factory=dict)
    target_spacing: tuple[float, float, float] | None = None  # (z, y, x) mm, 3D models
    clinical_inputs: tuple[str, ...] = ()
    threshold: float = 0.5
    class_threshold: float | None = None  # operating threshold on p(malignant)
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    notes: str = ""
    #: ovary-side masking (report 000) applies to this model
    side_masking: bool = False
    #: the registry builder (differs from ``name`` for a checkpoint's own spec, see cards.spec_from_card)
    architecture: str = ""
    #: keyword parameters of the preprocessing step (a card may set them)
    preprocessing_params: dict = field(default_factory=dict)
    #: the full builder kwargs of a checkpoint (set from its card; empty for registry specs)
    arch_kwargs: dict = field(default_factory=dict)
    #: 2D slice-wise models: an in-plane geometry step applied to the volume before slicing
    #: (report 000's 0.35 mm resampling and pelvis crop: keywords of
    #: :func:`medseg_core.preprocessing.plan_geometry`); empty = none (every card written before it)
    geometry: dict = field(default_factory=dict)
    #: an architecture the reports' reproductions train (configs/reproduce/) for which medseg ships no
    #: demo checkpoint: the app offers it once a user has trained one (by path or MEDSEG_MODELS)
    reproduction_only: bool = False

    @property
    def builder_name(self) -> str:
        return self.architecture or self.name

    @property
    def checkpoint(self) -> str:
        return f"{self.name}.safetensors"

    @property
    def card(self) -> str:
        return f"{self.name}.json"

    def contract(self) -> str:
        size = " x ".join(map(str, self.input_size))
        sp = f", resampled to {' x '.join(f'{s:g}' for s in self.target_spacing)} mm" if self.target_spacing else ""
        return f"{self.dims.upper()} {self.in_channels} x {size}{sp}; {', '.join(self.modalities)}; {self.intensity}"


def _ovary_unet(**kw):
    from .ovary import UNet2D

    return UNet2D(**kw)


def _tl5(**kw):
    from .ovary import TL5

    return TL5(**kw)


def _slice_clf(**kw):
    from .ovary import SliceClassifier

    return SliceClassifier(**kw)


def _effb0(**kw):
    from .ultrasound import EffB0MultiTask

    return EffB0MultiTask(**kw)


def _unet_mtl(**kw):
    from .ultrasound import UNetMultiTask

    return UNetMultiTask(**kw)


def _cascade(**kw):
    from .ultrasound import Cascade

    return Cascade(**kw)


def _denoiser(**kw):
    from .ultrasound import denoiser

    return denoiser(**kw)


def _unetpp(encoder_name="efficientnet-b3", classes=3, decoder_channels=(256, 128, 64, 32, 16), **kw):
    import segmentation_models_pytorch as smp

    m = smp.UnetPlusPlus(
        encoder_name=encoder_name,
        encoder_weights=None,
        in_channels=1,
        classes=classes,
        decoder_channels=tuple(decoder_channels),
        **kw,
    )
    # The EfficientNet encoder keeps its ImageNet classifier's dropout, which segmentation never
    # calls; left in place it would make MC dropout "work" while every sample is identical.
    if hasattr(m.encoder, "_dropout"):
        m.encoder._dropout = nn.Identity()
    return m


def _gi_scratch(**kw):
    from .gi_scratch import GIScratchCNN

    return GIScratchCNN(**kw)


def _unet2d_monai(channels=(16, 32, 64, 128, 256), dropout=0.0, num_res_units=2):
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
    )


def _transunet(**kw):
    from .transunet import TransUNet

    return TransUNet(**kw)


def _m3d(fn):
    def build(**kw):
        from . import monai3d

        return getattr(monai3d, fn)(**kw)

    return build


_SPLEEN: dict[str, Any] = dict(
    family="spleen",
    report="003",
    task="segmentation",
    dims="3d",
    mode="sliding_window",
    in_channels=1,
    modalities=("CT",),
    intensity="HU windowed -57..164 to 0..1",
    preprocessing="ct_window",
    postprocessing=("largest_3d",),
    labels=("spleen",),
    activation="softmax",
    target_spacing=(2.0, 1.5, 1.5),
    mc_prefix=False,
)
_OVARY: dict[str, Any] = dict(
    family="ovary",
    report="000",
    dims="2d",
    mode="slicewise",
    in_channels=1,
    input_size=(256, 256),
    modalities=("MR",),
    labels=("ovary",),
    activation="sigmoid",
    mc_prefix=True,
    side_masking=True,
)
_US: dict[str, Any] = dict(
    family="ultrasound",
    report="001",
    dims="2d",
    mode="image",
    in_channels=1,
    modalities=("US",),
    intensity="grey 0..255 scaled to 0..1",
    preprocessing="minmax",
)

_SPECS = [
    ModelSpec(
        name="unet3d",
        title="3D U-Net (MONAI)",
        builder=_m3d("unet3d"),
        input_size=(96, 96, 96),
        dropout="in every residual unit (MONAI UNet dropout); MC needs full passes",
        paper_kwargs={},
        demo_kwargs={"channels": (8, 16, 32, 64, 128), "dropout": 0.1},
        notes="Report 003 Dice 0.77 (5 test cases).",
        **_SPLEEN,
    ),
    ModelSpec(
        name="vnet3d",
        title="3D V-Net (MONAI)",
        builder=_m3d("vnet3d"),
        input_size=(96, 96, 96),
        dropout="two deepest down and up stages, skip input of every up stage (MONAI VNet); MC needs full passes",
        paper_kwargs={},
        demo_kwargs={"width": 8, "dropout_prob_down": 0.1, "dropout_prob_up": (0.1, 0.1)},
        sw_batch_size=1,
        notes="MONAI VNet: 45.6 M parameters at its fixed width 16 (the demo is width 8, 11.4 M); "
        "report 003 Dice 0.215.",
        **_SPLEEN,
    ),
    ModelSpec(
        name="unetr3d",
        title="UNETR (MONAI)",
        builder=_m3d("unetr3d"),
        input_size=(96, 96, 96),
        dropout="transformer blocks (dropout_rate); MC needs full passes",
        paper_kwargs={},
        demo_kwargs={
            "img_size": (64, 64, 64),
            "feature_size": 8,
            "hidden_size": 192,
            "mlp_dim": 768,
            "num_heads": 4,
            "dropout_rate": 0.1,
        },
        notes="Report 003 Dice 0.944 (5 test cases).",
        **_SPLEEN,
    ),
    ModelSpec(
        name="ovary_unet",
        title="Ovary U-Net (Model 1)",
        builder=_ovary_unet,
        task="segmentation",
        intensity="z-score per slice",
        preprocessing="plain",
        postprocessing=(),
        dropout="Dropout2d in each decoder stage (decoder only)",
        paper_kwargs={"base": 64},
        demo_kwargs={"base": 16, "dropout": 0.1},
        notes="Report 000 Table 1: Dice 0.275 / 0.392 masked.",
        **_OVARY,
    ),
    ModelSpec(
        name="ovary_attention_unet",
        title="Ovary Attention U-Net (Model 2)",
        builder=_ovary_unet,
        task="segmentation",
        intensity="z-score per slice",
        preprocessing="plain",
        postprocessing=(),
        dropout="Dropout2d in each decoder stage (decoder only)",
        paper_kwargs={"base": 64, "attention": True},
        demo_kwargs={"base": 16, "attention": True, "dropout": 0.1},
        notes="Report 000 Table 1: Dice 0.247 / 0.381 masked.",
        **_OVARY,
    ),
    ModelSpec(
        name="ovary_tl5",
        title="Ovary TL-5 (ResNet34 + attention decoder)",
        builder=_tl5,
        task="segmentation",
        intensity="RAovSeg remap to 0..1",
        preprocessing="raovseg",
        postprocessing=(),
        dropout="Dropout2d in each decoder stage (decoder only)",
        paper_kwargs={"decoder_base": 32},
        demo_kwargs={"decoder_base": 16, "dropout": 0.1},
        notes="ImageNet encoder weights only from a local file (encoder_weights_path); report 000 Dice 0.365 / 0.420.",
        **_OVARY,
    ),
    ModelSpec(
        name="ovary_slice_classifier",
        title="RAovSeg slice classifier",
        builder=_slice_clf,
        task="classification",
        intensity="RAovSeg remap to 0..1",
        preprocessing="raovseg",
        postprocessing=(),
        dropout="before the final linear layer (0.2)",
        paper_kwargs={},
        demo_kwargs={},
        threshold=0.6,
        notes="Gate before the ovary segmenter: slices below the threshold are left empty.",
        **{**_OVARY, "labels": ("ovary_present",), "side_masking": False},
    ),
    ModelSpec(
        name="us_mtl_effb0",
        title="US multitask EfficientNet-B0 + clinical",
        builder=_effb0,
        task="segmentation+classification",
        input_size=(336, 544),
        postprocessing=("largest_2d",),
        labels=("lesion",),
        activation="sigmoid",
        clinical_inputs=("menopausal", "oncology_center"),
        class_threshold=0.5,
        dropout="classification head (0.25); optional decoder Dropout2d",
        mc_prefix=True,
        paper_kwargs={},
        demo_kwargs={"decoder_dropout": 0.1},
        notes="Public code calls malignant at p >= 0.2 (sensitivity); the threshold is a parameter.",
        **_US,
    ),
    ModelSpec(
        name="us_mtl_unet",
        title="US multitask U-Net + clinical",
        builder=_unet_mtl,
        task="segmentation+classification",
        input_size=(336, 544),
        postprocessing=("largest_2d",),
        labels=("lesion",),
        activation="sigmoid",
        clinical_inputs=("menopausal", "oncology_center"),
        class_threshold=0.5,
        dropout="classification head (0.25); optional decoder Dropout2d",
        mc_prefix=True,
        # report 001 Figure 7: the head pools the last two encoder blocks; the shipped demo pools the bottleneck
        paper_kwargs={"base": 64, "cls_pool": "last_two"},
        demo_kwargs={"base": 16, "decoder_dropout": 0.1, "cls_pool": "bottleneck"},
        **_US,
    ),
    ModelSpec(
        name="us_cascade",
        title="US cascade: segment, crop 164 x 164, classify",
        builder=_cascade,
        task="segmentation+classification",
        input_size=(336, 544),
        postprocessing=("largest_2d",),
        labels=("lesion",),
        activation="sigmoid",
        clinical_inputs=("menopausal", "oncology_center"),
        class_threshold=0.5,
        dropout="classifier head (0.25)",
        mc_prefix=False,
        # report 001 section 5.3: the segmenter is the segmentation-only EfficientNet-B0; the shipped demo a U-Net
        paper_kwargs={"seg_base": 64, "segmenter": "effb0"},
        demo_kwargs={"seg_base": 16, "segmenter": "unet"},
        notes="Report 001: AUC 0.9367 with clinical data.",
        **_US,
    ),
    ModelSpec(
        name="us_denoiser",
        title="US annotation removal (U-Net)",
        builder=_denoiser,
        task="restoration",
        input_size=(336, 544),
        postprocessing=(),
        labels=("clean",),
        activation="identity",
        dropout="none by default (MONAI UNet dropout parameter)",
        mc_prefix=False,
        paper_kwargs={"channels": (32, 64, 128, 256)},
        demo_kwargs={"channels": (16, 32, 64, 128)},
        notes="Weighted MSE, alpha 300 on annotation pixels, beta 1 elsewhere.",
        **{**_US, "preprocessing": "scale255", "intensity": "grey 0..255 divided by 255"},
    ),
    ModelSpec(
        name="gi_unetpp_effb3",
        title="GI UNet++ EfficientNet-B3",
        builder=_unetpp,
        family="gi",
        report="002",
        task="segmentation",
        dims="2d",
        mode="slicewise",
        in_channels=1,
        input_size=(256, 256),
        modalities=("MR",),
        intensity="CLAHE (clip 2.0) then 0..1",
        preprocessing="clahe",
        postprocessing=(),
        labels=("large_bowel", "small_bowel", "stomach"),
        activation="sigmoid",
        dropout="none (smp UNet++); MC dropout unavailable",
        mc_prefix=False,
        paper_kwargs={},
        demo_kwargs={"decoder_channels": (64, 32, 16, 16, 8)},
        notes="Report 002: test Dice 0.8248.",
    ),
    *[
        ModelSpec(
            name=f"gi_scratch_{version}",
            title=f"GI from-scratch CNN ({title}, report 002 section {sec})",
            builder=_gi_scratch,
            family="gi",
            report="002",
            task="segmentation",
            dims="2d",
            mode="slicewise",
            in_channels=1,
            input_size=(224, 224),
            modalities=("MR",),
            intensity="CLAHE (clip 2.0) then 0..1",
            preprocessing="clahe",
            postprocessing=(),
            labels=("large_bowel", "small_bowel", "stomach"),
            activation="sigmoid",
            dropout=drop,
            mc_prefix=False,
            paper_kwargs={"version": version, "base": 64},
            demo_kwargs={"base": 16},
            reproduction_only=True,
            notes=f"Report 002 section {sec}: {result}.",
        )
        for version, title, sec, result, drop in (
            ("simple", "simple CNN", "3.1.1", "validation Dice 0.4677", "none"),
            (
                "bn_dropout",
                "with dropout and batch norm",
                "3.1.2",
                "validation Dice 0.6940",
                "Dropout2d(0.1) after every activation; MC needs full passes",
            ),
            (
                "residual",
                "with residuals and skips",
                "3.1.3",
                "validation Dice 0.6995",
                "Dropout2d(0.1) after every encoder activation; MC needs full passes",
            ),
            (
                "final",
                "final",
                "3.1.4",
                "test Dice 0.8054, 25,436,486 parameters at 3 input channels",
                "Dropout2d(0.1) after every encoder activation; MC needs full passes",
            ),
        )
    ],
    ModelSpec(
        name="prostate_microus",
        title="Micro-US prostate U-Net (adaptive focal loss)",
        builder=_unet2d_monai,
        family="prostate",
        report="004",
        task="segmentation",
        dims="2d",
        mode="slicewise",
        in_channels=1,
        input_size=(224, 224),
        modalities=("US",),
        intensity="0..254 scaled to 0..1",
        preprocessing="minmax",
        postprocessing=("largest_2d",),
        labels=("prostate",),
        activation="sigmoid",
        dropout="in every residual unit (MONAI UNet); MC needs full passes",
        mc_prefix=False,
        paper_kwargs={"channels": (32, 64, 128, 256, 512)},
        demo_kwargs={"channels": (8, 16, 32, 64, 128), "dropout": 0.1},
        notes="Report 004: adaptive focal Dice 0.9400, HD95 1.949 mm.",
    ),
    ModelSpec(
        name="prostate_transunet",
        title="Micro-US prostate TransUNet (MicroSegNet, deep supervision)",
        builder=_transunet,
        family="prostate",
        report="004",
        task="segmentation",
        dims="2d",
        mode="slicewise",
        in_channels=1,
        input_size=(224, 224),
        modalities=("US",),
        intensity="0..254 divided by 255 (0..1)",
        preprocessing="scale255",
        postprocessing=(),
        labels=("prostate",),
        activation="sigmoid",
        dropout="transformer blocks (dropout 0.1); MC needs full passes",
        mc_prefix=False,
        paper_kwargs={},
        demo_kwargs={
            "resnet_layers": (1, 1, 1),
            "resnet_channels": (64, 128, 256),
            "stem_channels": 32,
            "hidden_size": 128,
            "depth": 2,
            "num_heads": 4,
            "mlp_dim": 256,
            "head_channels": 128,
            "decoder_channels": (64, 32, 16, 8),
            "gn_groups": 8,
        },
        reproduction_only=True,
        notes="R50-ViT-B/16 TransUNet as MicroSegNet's public code (105.3 M parameters, patch 16, 224 x 224, "
        "deep supervision at 28/56/112/224 in training); evaluated without post-processing. "
        "Report 004: adaptive focal Dice 0.9400, HD95 1.949 mm.",
    ),
]
_REGISTRY = {s.name: s for s in _SPECS}


def list_models(family: str | None = None) -> list[str]:
    """Registry names, optionally of one family."""
    return [s.name for s in _SPECS if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def model_kwargs(name: str, variant: str = "paper", **overrides: Any) -> dict:
    spec = get_spec(name)
    if variant not in ("paper", "demo"):
        raise ValueError("variant must be 'paper' or 'demo'")
    kw = dict(spec.paper_kwargs if variant == "paper" else {**spec.paper_kwargs, **spec.demo_kwargs})
    kw.update(overrides)
    return kw


def build_model(name: str, variant: str = "paper", **overrides: Any) -> nn.Module:
    """A freshly initialised model (no weights loaded; see ``inference.load_model``)."""
    spec = get_spec(name)
    return spec.builder(**model_kwargs(name, variant, **overrides))


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """The architecture a checkpoint's spec describes (its card's full builder kwargs)."""
    return get_spec(spec.builder_name).builder(**spec.arch_kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
