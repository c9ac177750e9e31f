"""Backbones: optional timm image backbones in place of the reference image encoder."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from competition.data.load import IMAGE_SIDE
from competition.models.encoders import EMBED_DIM, ImageModel
from competition.models.fusion import GatedFusionModel
from competition.utils.errors import UserError

# --- timm image backbones: timm is optional (it needs a torchvision built for this torch), so it is
# imported only when such a model is built, and a missing or broken install is one clear error. ---
TIMM_BACKBONES = ("resnet18", "efficientnet_b0")


def _import_timm():
    try:
        import timm
    except Exception as e:  # ImportError, or torchvision's own errors when its build does not match torch
        raise UserError(
            f"timm could not be imported ({type(e).__name__}: {e}); fix: install timm and a torchvision "
            f"matching torch {torch.__version__.split('+')[0]} (pip install 'competition[timm]' with the "
            "torchvision wheel for your torch), or drop the timm_* models from --models"
        ) from None
    return timm


class TimmImageEncoder(nn.Module):
    """A timm backbone on the 1-channel 28x28 image -> its pooled features -> Linear -> ReLU -> (B, 64)."""

    def __init__(self, backbone: str, dropout: float = 0.5):
        super().__init__()
        timm = _import_timm()
        try:
            # num_classes=0: timm returns the pooled features; pretrained weights would need a download.
            self.backbone = timm.create_model(backbone, pretrained=False, in_chans=1, num_classes=0, drop_rate=dropout)
        except RuntimeError as e:  # timm's "Unknown model"
            raise UserError(f"timm backbone {backbone!r}: {e}; fix: use one of timm.list_models()") from None
        self.proj = nn.Sequential(nn.Linear(self.backbone.num_features, EMBED_DIM), nn.ReLU())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(image.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)))  # (B, 64)


def timm_image_model(backbone: str) -> Callable[..., nn.Module]:
    """Factory of an image-only model on a timm backbone (ImageModel with its encoder replaced)."""

    def factory(image_dropout: float = 0.5) -> nn.Module:
        model = ImageModel(image_dropout=image_dropout)
        model.image_encoder = TimmImageEncoder(backbone, image_dropout)
        return model

    factory.modalities = ImageModel.modalities
    return factory


def timm_gated_model(backbone: str) -> Callable[..., nn.Module]:
    """Factory of the gated fusion model with a timm image backbone and the reference audio encoder."""

    def factory(
        audio_kernel: int = 5, image_dropout: float = 0.5, audio_dropout: float = 0.5, modality_dropout: float = 0.0
    ) -> nn.Module:
        model = GatedFusionModel(5, audio_kernel, image_dropout, audio_dropout, modality_dropout)
        model.image_encoder = TimmImageEncoder(backbone, image_dropout)
        return model

    factory.modalities = GatedFusionModel.modalities
    return factory
