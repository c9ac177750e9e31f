"""Augmentation: random transforms of training batches only (validation and test rows are never touched).

One function per transform, each taking the batch, its magnitude (0 = off: the batch is returned as is and
nothing is drawn), the share ``p`` of rows it applies to, and a ``torch.Generator``, so a seeded Learner
augments the same way every time. ``augment_batch`` applies the ones a Config turns on, in a fixed order.
Images are (B, 784) pixels in [0, 1]; audio is (B, 507) standardised MFCCs, 39 frames x 13 coefficients,
frame-major. Random numbers are drawn on the CPU generator and moved to the batch's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from competition.config import Config
from competition.data.load import AUDIO_COEFS, AUDIO_FRAMES, IMAGE_SIDE  # AUDIO_WIDTH = 507 values, frame-major


def _uniform(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(device)


def _chosen(b: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """(B, 1) bool: the rows a transform applies to; None means every row (p >= 1, and nothing is drawn,
    so the random stream of a p = 1 config is the one it had before probabilities existed)."""
    if p >= 1:
        return None
    return _uniform((b, 1), gen, device) < p


def _apply(new: torch.Tensor, old: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return new if rows is None else torch.where(rows, new, old)


def random_shift(image: torch.Tensor, max_shift: int, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with 0: (B, 784) -> (B, 784)."""
    if max_shift <= 0 or p <= 0:
        return image
    b, s, side = len(image), max_shift, IMAGE_SIDE
    padded = F.pad(image.view(b, side, side), (s, s, s, s))  # (B, 28 + 2s, 28 + 2s)
    dy = torch.randint(0, 2 * s + 1, (b, 1), generator=gen).to(image.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1), generator=gen).to(image.device)
    ar = torch.arange(side, device=image.device)
    rows = (dy + ar)[:, :, None]  # (B, 28, 1)
    cols = (dx + ar)[:, None, :]  # (B, 1, 28)
    batch = torch.arange(b, device=image.device)[:, None, None]
    shifted = padded[batch, rows, cols].reshape(b, side * side)
    return _apply(shifted, image, _chosen(b, p, gen, image.device))


def random_rotate(image: torch.Tensor, max_degrees: float, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Rotate each image about its centre by an angle uniform in +-``max_degrees`` (bilinear, 0 outside)."""
    if max_degrees <= 0 or p <= 0:
        return image
    b, dev = len(image), image.device
    angle = (2 * _uniform((b,), gen, dev) - 1) * math.radians(max_degrees)  # (B,)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    x = image.view(b, 1, IMAGE_SIDE, IMAGE_SIDE)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view(b, -1)
    return _apply(rotated, image, _chosen(b, p, gen, dev))


def random_erase(image: torch.Tensor, max_area: float, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017, torchvision's ranges): one rectangle per image covering 2% to
    ``max_area`` of it, aspect ratio 0.3-3.3, filled with one random grey level (an occluding object)."""
    if max_area <= 0 or p <= 0:
        return image
    b, dev, side = len(image), image.device, IMAGE_SIDE
    u = _uniform((b, 5), gen, dev)
    area = (0.02 + u[:, 0] * max(max_area - 0.02, 0.0)) * side * side
    ratio = torch.exp(math.log(0.3) + u[:, 1] * (math.log(3.3) - math.log(0.3)))
    h = (area * ratio).sqrt().round().clamp(1, side)
    w = (area / ratio).sqrt().round().clamp(1, side)
    top = (u[:, 2] * (side - h + 1)).floor()[:, None, None]  # (B, 1, 1)
    left = (u[:, 3] * (side - w + 1)).floor()[:, None, None]
    ar = torch.arange(side, device=dev, dtype=image.dtype)
    r, c = ar[None, :, None], ar[None, None, :]
    box = (r >= top) & (r < top + h[:, None, None]) & (c >= left) & (c < left + w[:, None, None])  # (B, 28, 28)
    erased = torch.where(box.view(b, -1), u[:, 4:5], image)
    return _apply(erased, image, _chosen(b, p, gen, dev))


def add_pixel_noise(image: torch.Tensor, std: float, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (pixels in [0, 1]) to each image, clipped back to [0, 1]."""
    if std <= 0 or p <= 0:
        return image
    noisy = (image + std * torch.randn(image.shape, generator=gen).to(image.device)).clamp(0, 1)
    return _apply(noisy, image, _chosen(len(image), p, gen, image.device))


def _band(b: int, length: int, max_width: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, length) bool: one band of 0..max_width consecutive positions per row, SpecAugment-style."""
    u = _uniform((b, 2), gen, device)
    width = (u[:, 0] * (max_width + 1)).floor().clamp(max=length)[:, None]  # (B, 1)
    start = (u[:, 1] * (length - width[:, 0] + 1)).floor()[:, None]
    pos = torch.arange(length, device=device)[None, :]
    return (pos >= start) & (pos < start + width)


def time_mask(audio: torch.Tensor, max_frames: int, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Set up to ``max_frames`` consecutive frames (all 13 coefficients) to 0, the standardised mean."""
    if max_frames <= 0 or p <= 0:
        return audio
    b = len(audio)
    band = _band(b, AUDIO_FRAMES, max_frames, gen, audio.device)[:, :, None]  # (B, 39, 1)
    masked = audio.view(b, AUDIO_FRAMES, AUDIO_COEFS).masked_fill(band, 0.0).view(b, -1)
    return _apply(masked, audio, _chosen(b, p, gen, audio.device))


def freq_mask(audio: torch.Tensor, max_coefs: int, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Set up to ``max_coefs`` consecutive MFCC coefficients (in every frame) to 0, the standardised mean."""
    if max_coefs <= 0 or p <= 0:
        return audio
    b = len(audio)
    band = _band(b, AUDIO_COEFS, max_coefs, gen, audio.device)[:, None, :]  # (B, 1, 13)
    masked = audio.view(b, AUDIO_FRAMES, AUDIO_COEFS).masked_fill(band, 0.0).view(b, -1)
    return _apply(masked, audio, _chosen(b, p, gen, audio.device))


def mix_audio(audio: torch.Tensor, max_gain: float, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Mix another row of the batch into each row, an interfering talker (babble augmentation): its
    amplitude relative to the row is uniform in 0..``max_gain`` (1 = 0 dB SNR, 3.16 = -10 dB); label kept."""
    if max_gain <= 0 or p <= 0:
        return audio
    b, dev = len(audio), audio.device
    other = audio[torch.randperm(b, generator=gen).to(dev)]
    rms = audio.pow(2).mean(dim=1, keepdim=True).sqrt()  # (B, 1)
    other_rms = other.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)
    gain = _uniform((b, 1), gen, dev) * max_gain * rms / other_rms
    return _apply(audio + gain * other, audio, _chosen(b, p, gen, dev))


def add_noise(audio: torch.Tensor, std: float, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (in units of the standardised MFCCs) to each training row: (B, 507)."""
    if std <= 0 or p <= 0:
        return audio
    noisy = audio + std * torch.randn(audio.shape, generator=gen).to(audio.device)
    return _apply(noisy, audio, _chosen(len(audio), p, gen, audio.device))


def augment_batch(
    image: torch.Tensor, audio: torch.Tensor, cfg: Config, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every augmentation ``cfg`` turns on, applied to one training batch; returns new tensors (inputs kept)."""
    image = random_shift(image, cfg.shift, gen, cfg.shift_p)
    image = random_rotate(image, cfg.rotate, gen, cfg.rotate_p)
    image = random_erase(image, cfg.erase, gen, cfg.erase_p)
    image = add_pixel_noise(image, cfg.image_noise, gen, cfg.image_noise_p)
    audio = mix_audio(audio, cfg.audio_mix, gen, cfg.audio_mix_p)
    audio = time_mask(audio, cfg.time_mask, gen, cfg.time_mask_p)
    audio = freq_mask(audio, cfg.freq_mask, gen, cfg.freq_mask_p)
    audio = add_noise(audio, cfg.audio_noise, gen, cfg.audio_noise_p)
    return image, audio


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from ``gen``'s stream (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix_rows(
    image: torch.Tensor, audio: torch.Tensor, cfg: Config, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Mixup or cutmix across the rows of a batch: ``(image, audio, partner, lam)``; the loss is ``lam`` on each
    row's label plus ``1 - lam`` on its partner row's (``partner`` None: the batch is not mixed).

    Both modalities of a row take the same share of its partner: mixup blends pixels and MFCCs by ``lam``;
    cutmix pastes a box of the partner's image and as large a share of its frames (one band of consecutive
    frames), ``lam`` then being the share actually kept. Nothing is drawn when both are off."""
    if (cfg.mixup <= 0 and cfg.cutmix <= 0) or cfg.mix_p <= 0:
        return image, audio, None, 1.0
    if cfg.mix_p < 1 and float(torch.rand((), generator=gen)) >= cfg.mix_p:
        return image, audio, None, 1.0
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup <= 0 or float(torch.rand((), generator=gen)) < 0.5)
    lam = _beta(cfg.cutmix if use_cutmix else cfg.mixup, gen)
    b, dev = len(image), image.device
    partner = torch.randperm(b, generator=gen).to(dev)
    if not use_cutmix:
        return lam * image + (1 - lam) * image[partner], lam * audio + (1 - lam) * audio[partner], partner, lam
    side = IMAGE_SIDE
    cut = math.sqrt(1 - lam)  # CutMix (Yun et al. 2019): a box of side ratio sqrt(1 - lam), clipped at the border
    h, w = round(side * cut), round(side * cut)
    cy, cx = (int(v) for v in torch.randint(0, side, (2,), generator=gen))
    top, bottom = max(cy - h // 2, 0), min(cy + (h - h // 2), side)
    left, right = max(cx - w // 2, 0), min(cx + (w - w // 2), side)
    share = (bottom - top) * (right - left) / (side * side)  # of the image taken from the partner
    img = image.view(b, side, side).clone()
    img[:, top:bottom, left:right] = image.view(b, side, side)[partner, top:bottom, left:right]
    frames = round(share * AUDIO_FRAMES)
    start = int(torch.randint(0, AUDIO_FRAMES - frames + 1, (1,), generator=gen))
    aud = audio.view(b, AUDIO_FRAMES, AUDIO_COEFS).clone()
    aud[:, start : start + frames] = audio.view(b, AUDIO_FRAMES, AUDIO_COEFS)[partner, start : start + frames]
    # lam: the share of the row kept, the mean of the two modalities' (equal up to rounding the frames)
    lam = 1 - (share + frames / AUDIO_FRAMES) / 2
    return img.view(b, -1), aud.view(b, -1), partner, lam


def tta_views(image: torch.Tensor, audio: torch.Tensor, cfg: Config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The deterministic views test-time augmentation averages the logits of: the rows as they are, then (with
    ``tta_shift``) the images shifted by that many pixels right, left, down and up, then (with ``tta_mask``) the
    audio with that many frames blanked at the start, middle and end. The same views for every row, so
    validation and test rows are treated alike."""
    views = [(image, audio)]
    b, s, side = len(image), cfg.tta_shift, IMAGE_SIDE
    if s > 0:
        padded = F.pad(image.view(b, side, side), (s, s, s, s))  # zeros come in where the digit moves away
        for dy, dx in ((0, s), (0, -s), (s, 0), (-s, 0)):
            shifted = padded[:, s - dy : s - dy + side, s - dx : s - dx + side]  # content moved by (dy, dx)
            views.append((shifted.reshape(b, -1), audio))
    m = cfg.tta_mask
    if m > 0:
        for start in (0, (AUDIO_FRAMES - m) // 2, AUDIO_FRAMES - m):
            masked = audio.view(b, AUDIO_FRAMES, AUDIO_COEFS).clone()
            masked[:, start : start + m] = 0.0  # the standardised mean, as time_mask blanks
            views.append((image, masked.view(b, -1)))
    return views
