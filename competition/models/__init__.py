"""Models: the reference encoders and FusionModel, gated and attention fusions, optional timm image backbones,
and a name -> model registry: ``create_model("fusion", image_dropout=0.2)``."""

from competition.models._registry import (
    create_model,
    get_factory,
    list_models,
    model_hparams,
    model_modalities,
    register_model,
)
from competition.models.backbones import TIMM_BACKBONES, TimmImageEncoder, timm_gated_model, timm_image_model
from competition.models.encoders import (
    EMBED_DIM,
    SHAPE_HPARAMS,
    AudioEncoder,
    AudioModel,
    ImageEncoder,
    ImageModel,
)
from competition.models.fusion import AttentionFusionModel, FusionModel, GatedFusionModel, drop_modalities

register_model("fusion", FusionModel)
register_model("image", ImageModel)
register_model("audio", AudioModel)
register_model("gated", GatedFusionModel)
register_model("attention", AttentionFusionModel)
for _backbone in TIMM_BACKBONES:
    register_model(f"timm_{_backbone}", timm_image_model(_backbone))
    register_model(f"timm_{_backbone}_gated", timm_gated_model(_backbone))

__all__ = [
    "EMBED_DIM", "SHAPE_HPARAMS", "TIMM_BACKBONES", "AttentionFusionModel", "AudioEncoder", "AudioModel", "FusionModel",
    "GatedFusionModel", "ImageEncoder", "ImageModel", "TimmImageEncoder", "create_model", "drop_modalities",
    "get_factory", "list_models", "model_hparams", "model_modalities", "register_model",
]  # fmt: skip
