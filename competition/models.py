"""Models: the reference image / audio encoders, the FusionModel, the gated and attention fusions, optional
timm image backbones, and a name -> model registry.

Every model splits ``forward_features`` (embeddings) from ``forward_head`` (logits), timm-style, so
the fusion model reuses the unimodal encoders and reports can read the embeddings of any model.
All models take the same two inputs, ``image`` (B, 784) in [0, 1] and ``audio`` (B, 507)
standardised; a model ignores the modality it does not use (``model.modalities`` says which).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .data import AUDIO_WIDTH, IMAGE_SIDE, N_CLASSES

EMBED_DIM = 64


def _check_kernel(name: str, k: int) -> None:
    # Odd kernels with padding k // 2 keep the spatial size, so the pooled sizes stay those of the
    # reference; an even kernel would silently shift every feature map by half a pixel.
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (3, 5, 7, ...), got {k}")


class ImageEncoder(nn.Module):
    """2-D CNN: (B, 784) pixels -> (B, 64) features (reference layout at default arguments)."""

    def __init__(self, kernel: int = 5, dropout: float = 0.5, channels: tuple[int, int] = (16, 32)):
        super().__init__()
        _check_kernel("image kernel", kernel)
        c1, c2 = channels
        pad = kernel // 2
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, kernel, stride=1, padding=pad), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Dropout(dropout),
            nn.Conv2d(c1, c2, kernel, stride=1, padding=pad), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Dropout(dropout),
        )  # fmt: skip
        flat = c2 * (IMAGE_SIDE // 4) ** 2  # 32 * 7 * 7 = 1568
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, EMBED_DIM), nn.ReLU()
        )  # fmt: skip

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)  # (B, 1, 28, 28)
        return self.fc(self.conv(x))  # (B, 64)


class AudioEncoder(nn.Module):
    """1-D CNN over the 507 MFCC values: (B, 507) -> (B, 64) features (reference layout by default)."""

    def __init__(self, kernel: int = 5, dropout: float = 0.5, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        _check_kernel("audio kernel", kernel)
        c1, c2 = channels
        pad = kernel // 2
        self.conv = nn.Sequential(
            nn.Conv1d(1, c1, kernel, stride=1, padding=pad), nn.ReLU(), nn.MaxPool1d(2), nn.Dropout(dropout),
            nn.Conv1d(c1, c2, kernel, stride=1, padding=pad), nn.ReLU(), nn.MaxPool1d(2), nn.Dropout(dropout),
        )  # fmt: skip
        flat = c2 * ((AUDIO_WIDTH // 2) // 2)  # 64 * 126 = 8064
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, EMBED_DIM), nn.ReLU()
        )  # fmt: skip

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(audio.unsqueeze(1)))  # (B, 1, 507) -> (B, 64)


class ImageModel(nn.Module):
    """Image-only baseline: ImageEncoder -> Linear(64 -> 10)."""

    modalities = ("image",)

    def __init__(self, image_kernel: int = 5, image_dropout: float = 0.5):
        super().__init__()
        self.image_encoder = ImageEncoder(image_kernel, image_dropout)
        self.head = nn.Linear(EMBED_DIM, N_CLASSES)

    def forward_features(self, image: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.image_encoder(image)  # (B, 64)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (B, 10)

    def forward(self, image: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(image, audio))


class AudioModel(nn.Module):
    """Audio-only baseline: AudioEncoder -> Linear(64 -> 10)."""

    modalities = ("audio",)

    def __init__(self, audio_kernel: int = 5, audio_dropout: float = 0.5):
        super().__init__()
        self.audio_encoder = AudioEncoder(audio_kernel, audio_dropout)
        self.head = nn.Linear(EMBED_DIM, N_CLASSES)

    def forward_features(self, image: torch.Tensor | None, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_encoder(audio)  # (B, 64)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (B, 10)

    def forward(self, image: torch.Tensor | None, audio: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image, audio))


def drop_modalities(
    img: torch.Tensor, aud: torch.Tensor, p: float, training: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Modality dropout: blank the image features of a share p / 2 of the rows and the audio features of
    another p / 2 (never both), while training; (B, D) each, unchanged in eval mode."""
    if not training or p == 0:
        return img, aud
    r = torch.rand(len(img), 1, device=img.device)  # (B, 1)
    return img * (r >= p / 2), aud * ((r < p / 2) | (r >= p))


def _check_modality_dropout(p: float) -> None:
    if not 0 <= p < 1:
        raise ValueError(f"modality_dropout must be in [0, 1), got {p}")


class FusionModel(nn.Module):
    """The reference FusionModel: concat(image 64, audio 64) -> (B, 128) -> Linear(128 -> 10).

    ``modality_dropout`` (0 in the reference) blanks one modality's features for that fraction of the
    training rows, half image and half audio. Training rows repeat each recording ~4.5 times, so without
    it the head learns to trust memorised audio and the image encoder stays lazy; unseen recordings
    then fail where the image alone was right.
    """

    modalities = ("image", "audio")

    def __init__(
        self,
        image_kernel: int = 5,
        audio_kernel: int = 5,
        image_dropout: float = 0.5,
        audio_dropout: float = 0.5,
        modality_dropout: float = 0.0,
    ):
        super().__init__()
        _check_modality_dropout(modality_dropout)
        self.modality_dropout = modality_dropout
        self.image_encoder = ImageEncoder(image_kernel, image_dropout)
        self.audio_encoder = AudioEncoder(audio_kernel, audio_dropout)
        self.head = nn.Linear(2 * EMBED_DIM, N_CLASSES)
        self._init_fusion()

    def _init_fusion(self) -> None:
        """Build the fusion's own layers (after the encoders and head); concatenation has none."""

    def _fuse(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        return torch.cat([img, aud], dim=1)  # (B, 128)

    def encode(self, image: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each modality's embedding and the fused one, for the embedding analysis."""
        img, aud = self.image_encoder(image), self.audio_encoder(audio)  # (B, 64) each
        return {"image": img, "audio": aud, "fused": self._fuse(img, aud)}  # fused (B, 128)

    def forward_features(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        img, aud = self.image_encoder(image), self.audio_encoder(audio)  # (B, 64) each
        return self._fuse(*drop_modalities(img, aud, self.modality_dropout, self.training))  # (B, 128)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (B, 10)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image, audio))


class _WeightedFusion(FusionModel):
    """The reference encoders and head over concat(w_image * image, w_audio * audio) -> (B, 128) -> Linear(128
    -> 10), with per-row modality weights (B, 2) from ``modality_weights``: the reference FusionModel is the
    case w = (1, 1). Subclasses build the weighting layers in ``_init_fusion`` (so all share FusionModel's
    constructor signature, which ``create_model`` reads) and say how the weights are computed.
    """

    def modality_weights(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """(B, 2) weights of the image and audio embeddings, (B, 64) each."""
        raise NotImplementedError

    def _fuse(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        w = self.modality_weights(img, aud)  # (B, 2)
        return torch.cat([w[:, :1] * img, w[:, 1:] * aud], dim=1)  # (B, 128)


class GatedFusionModel(_WeightedFusion):
    """Gated fusion: a small network reads both embeddings and gives each modality its own weight in (0, 1)
    per row (sigmoid gates, as in gated multimodal units, Arevalo et al. 2017).

    Concatenation adds the two modalities' votes with fixed weights, so a confidently wrong modality wins;
    gates can turn a modality down row by row. They learn when to only if training shows unreliable rows:
    use them with modality dropout and augmentation.
    """

    def _init_fusion(self) -> None:
        self.gate = nn.Sequential(nn.Linear(2 * EMBED_DIM, 32), nn.ReLU(), nn.Linear(32, 2))

    def modality_weights(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(torch.cat([img, aud], dim=1)))  # (B, 2)


class AttentionFusionModel(_WeightedFusion):
    """Attention fusion: each modality's embedding is a token, scored by additive attention (Bahdanau-style,
    a tanh projection per modality and a shared scoring vector); a softmax over the two scores gives the
    weights, so the modalities compete for one unit of trust per row (the gates above are independent).
    The weights are scaled by 2 so that equal trust is the reference model's concatenation.
    """

    def _init_fusion(self) -> None:
        self.image_key = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.audio_key = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.score = nn.Linear(EMBED_DIM, 1, bias=False)

    def modality_weights(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        keys = torch.stack([self.image_key(img), self.audio_key(aud)], dim=1).tanh()  # (B, 2, 64)
        return 2 * self.score(keys).squeeze(-1).softmax(dim=1)  # (B, 2), summing to 2


# --- timm image backbones: timm is optional (it needs a torchvision built for this torch), so it is
# imported only when such a model is built, and a missing or broken install is one clear error. ---
TIMM_BACKBONES = ("resnet18", "efficientnet_b0")


def _import_timm():
    from .errors import UserError

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
        from .errors import UserError

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


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``create_model(name, ...)`` build ``factory(...)``."""
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_hparams(name: str) -> list[str]:
    """The constructor arguments a model accepts; the config keys of the same names set them (``model_kwargs``)."""
    import inspect

    factory = get_factory(name)
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def model_modalities(name: str) -> tuple[str, ...]:
    """The modalities model ``name`` reads, e.g. ``("audio",)``, without building it (timm models import timm)."""
    return tuple(get_factory(name).modalities)


def get_factory(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **hparams) -> nn.Module:
    """Build a registered model by name, e.g. ``create_model("fusion", image_dropout=0.2)``."""
    factory = get_factory(name)
    unknown = set(hparams) - set(model_hparams(name))
    if unknown:
        raise TypeError(f"model {name!r} has no hyperparameter(s) {sorted(unknown)}; it takes {model_hparams(name)}")
    return factory(**hparams)


register_model("fusion", FusionModel)
register_model("image", ImageModel)
register_model("audio", AudioModel)
register_model("gated", GatedFusionModel)
register_model("attention", AttentionFusionModel)
for _backbone in TIMM_BACKBONES:
    register_model(f"timm_{_backbone}", timm_image_model(_backbone))
    register_model(f"timm_{_backbone}_gated", timm_gated_model(_backbone))
