"""Augmentation: random transforms of training batches only (validation and test rows are never touched)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .models import IMAGE_SIDE


def random_shift(image: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with 0: (B, 784) -> (B, 784)."""
    if max_shift <= 0:
        return image
    b, s, side = len(image), max_shift, IMAGE_SIDE
    padded = F.pad(image.view(b, side, side), (s, s, s, s))  # (B, 28 + 2s, 28 + 2s)
    dy = torch.randint(0, 2 * s + 1, (b, 1), generator=gen).to(image.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1), generator=gen).to(image.device)
    ar = torch.arange(side, device=image.device)
    rows = (dy + ar)[:, :, None]  # (B, 28, 1)
    cols = (dx + ar)[:, None, :]  # (B, 1, 28)
    batch = torch.arange(b, device=image.device)[:, None, None]
    return padded[batch, rows, cols].reshape(b, side * side)


def add_noise(audio: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (in units of the standardised MFCCs) to each training row: (B, 507)."""
    if std <= 0:
        return audio
    return audio + std * torch.randn(audio.shape, generator=gen).to(audio.device)
