"""Stacked Adam: Adam(W) over the flat parameters of K units trained together, (K, P), with a learning rate, a beta1,
a step counter and a mask per unit, so that a unit without a batch this step does not move at all."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StackedAdam:
    """The optimiser state of K units: ``exp_avg`` and ``exp_avg_sq`` (K, P) like torch.optim.Adam's, and each
    unit's own step count (K, 1). torch.optim would move a masked unit through its momentum; this does not."""

    exp_avg: torch.Tensor  # (K, P)
    exp_avg_sq: torch.Tensor  # (K, P)
    step: torch.Tensor  # (K, 1) float: the steps each unit has taken
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # > 0: decoupled (AdamW)

    @classmethod
    def like(cls, flat: torch.Tensor, weight_decay: float = 0.0) -> StackedAdam:
        """Zero state for the stacked parameters ``flat`` (K, P)."""
        zeros = torch.zeros_like(flat)
        step = torch.zeros(len(flat), 1, dtype=flat.dtype, device=flat.device)
        return cls(zeros, zeros.clone(), step, weight_decay=weight_decay)

    @torch.no_grad()
    def step_(
        self, flat: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor, beta1: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """One Adam(W) step of every unit whose ``mask`` (K, 1) bool is set, in place on ``flat`` (K, P) and the
        state; ``lr`` and ``beta1`` are (K, 1) (each unit is at its own point of its schedule). Units not masked
        in keep their parameters, moments and step count bit for bit."""
        step = self.step + mask  # (K, 1)
        t = step.clamp_min(1)  # a unit that never stepped: no division by 1 - beta^0 = 0 (its result is discarded)
        new = flat * (1 - lr * self.weight_decay) if self.weight_decay > 0 else flat
        m = self.exp_avg.lerp(grad, 1 - beta1)  # as torch's Adam: m + (1 - beta1) (g - m)
        v = self.exp_avg_sq * self.beta2 + (1 - self.beta2) * grad * grad
        bias1 = 1 - beta1**t
        bias2_sqrt = (1 - self.beta2**t).sqrt()
        new = new - (lr / bias1) * m / (v.sqrt() / bias2_sqrt + self.eps)
        flat.copy_(torch.where(mask, new, flat))
        self.exp_avg.copy_(torch.where(mask, m, self.exp_avg))
        self.exp_avg_sq.copy_(torch.where(mask, v, self.exp_avg_sq))
        self.step = step
