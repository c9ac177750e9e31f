"""Fusions: the reference FusionModel (image + audio features, linear head) and its gated and attention variants,
with modality dropout."""

from __future__ import annotations

import torch
from torch import nn

from competition.data.load import N_CLASSES
from competition.models.encoders import EMBED_DIM, AudioEncoder, ImageEncoder, image_channels


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
        image_width: int = 1,
    ):
        super().__init__()
        _check_modality_dropout(modality_dropout)
        self.modality_dropout = modality_dropout
        self.image_encoder = ImageEncoder(image_kernel, image_dropout, image_channels(image_width))
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
