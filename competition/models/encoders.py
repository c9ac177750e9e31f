"""Encoders: the reference image and audio CNNs, and the image-only and audio-only models built on them.

Every model splits ``forward_features`` (embeddings) from ``forward_head`` (logits), timm-style; all take
``image`` (B, 784) in [0, 1] and ``audio`` (B, 507) standardised and ignore the modality they do not use.
"""

from __future__ import annotations

import torch
from torch import nn

from competition.data.load import AUDIO_WIDTH, IMAGE_SIDE, N_CLASSES

EMBED_DIM = 64
# The model arguments that change the weights' shapes: a model can load another's weights only where these agree.
SHAPE_HPARAMS = ("image_kernel", "audio_kernel", "image_width")


def image_channels(width: int) -> tuple[int, int]:
    """The image encoder's two convolutions' channels at ``width`` times the reference's (16, 32)."""
    if width < 1:
        raise ValueError(f"image_width must be a positive integer (1 = the reference), got {width}")
    return 16 * width, 32 * width


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

    def __init__(self, image_kernel: int = 5, image_dropout: float = 0.5, image_width: int = 1):
        super().__init__()
        self.image_encoder = ImageEncoder(image_kernel, image_dropout, image_channels(image_width))
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
