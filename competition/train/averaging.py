"""Averaging: a running average of a model's weights, scored and saved in place of the last weights.

``ema`` is an exponential moving average updated every optimiser step (timm's ``--model-ema``), its decay warmed
up as ``min(decay, (1 + t) / (10 + t))`` (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) so that
the short runs of this competition (a few hundred steps) are not dominated by the random initialisation.
``swa`` (stochastic weight averaging, Izmailov et al. 2018) is the equal average of the weights at the end of
each of the last epochs. The models have no batch-norm statistics to
recompute, so an averaged copy is ready to predict as it is.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """A copy of ``model`` whose weights are a running average: ``decay`` > 0 makes it an EMA (``update`` each
    step), ``decay`` = 0 an equal average (``update`` once per averaged epoch)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.0):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.count = 0  # updates so far

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self.decay > 0:
            w = min(self.decay, (1 + self.count) / (10 + self.count))  # weight of the average so far
        else:
            w = self.count / (self.count + 1)  # equal weights: the running mean
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.is_floating_point():
                avg.mul_(w).add_(new.detach(), alpha=1 - w)
            else:
                avg.copy_(new)
        self.count += 1
