"""Models: the reference image / audio encoders, the FusionModel and a name -> model registry.

Every model splits ``forward_features`` (embeddings) from ``forward_head`` (logits), timm-style, so
the fusion model reuses the unimodal encoders and reports can read the embeddings of any model.
All models take the same two inputs, ``image`` (B, 784) in [0, 1] and ``audio`` (B, 507)
standardised; a model ignores the modality it does not use (``model.modalities`` says which).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

IMAGE_SIDE = 28
IMAGE_WIDTH = IMAGE_SIDE * IMAGE_SIDE  # 784 pixels
AUDIO_WIDTH = 507  # 39 frames x 13 MFCC coefficients, frame-major
N_CLASSES = 10
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
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.image_encoder = ImageEncoder(image_kernel, image_dropout)
        self.audio_encoder = AudioEncoder(audio_kernel, audio_dropout)
        self.head = nn.Linear(2 * EMBED_DIM, N_CLASSES)

    def _drop_modalities(self, img: torch.Tensor, aud: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.modality_dropout == 0:
            return img, aud
        r = torch.rand(len(img), 1, device=img.device)  # (B, 1)
        p = self.modality_dropout
        return img * (r >= p / 2), aud * ((r < p / 2) | (r >= p))  # never both blanked

    def encode(self, image: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each modality's embedding and the fused one, for the embedding analysis."""
        img, aud = self.image_encoder(image), self.audio_encoder(audio)  # (B, 64) each
        return {"image": img, "audio": aud, "fused": torch.cat([img, aud], dim=1)}  # fused (B, 128)

    def forward_features(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        img, aud = self._drop_modalities(self.image_encoder(image), self.audio_encoder(audio))  # (B, 64) each
        return torch.cat([img, aud], dim=1)  # (B, 128)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (B, 10)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image, audio))


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``create_model(name, ...)`` build ``factory(...)``."""
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_hparams(name: str) -> list[str]:
    """The constructor arguments a model accepts (what ``--set model.<name>...`` may tune)."""
    import inspect

    factory = get_factory(name)
    return [p for p in inspect.signature(factory).parameters if p != "self"]


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
