"""Training: one model on one split, as a scikit-learn style estimator (``fit`` returns self, state ends in ``_``).

The whole loop is in ``Learner.fit``: data held as tensors on the device, a seeded permutation per
epoch, Adam(W) with an optional one-cycle schedule, and a validation pass per epoch for the history.

With ``early_stop`` the length adapts to the data: a warm-up/stable/decay schedule (``WSD``) keeps the learning
rate constant while the loss of an inner split of the training rows (never the validation rows) improves, then
decays it to 0 over ~30% more epochs, during which the inner rows join the training rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from competition.config import Config
from competition.data.load import N_CLASSES
from competition.metrics import scores
from competition.models import create_model, model_hparams
from competition.train.augment import augment_batch, mix_rows, tta_views
from competition.train.averaging import WeightAverage
from competition.utils.errors import UserError

# Evaluation batch: 256 rows keep the conv activations in reused allocator memory; 2048-row batches
# allocate ~130 MB tensors that glibc maps and unmaps each time, and ran 2.5x slower (page faults).
EVAL_BATCH = 256


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; asking for cuda without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch; fix: use --device cpu or auto")
    return device


def model_kwargs(name: str, cfg: Config) -> dict:
    """The config's values for the hyperparameters model ``name`` takes (e.g. image_dropout for fusion)."""
    values = cfg.to_dict()
    return {k: values[k] for k in model_hparams(name) if k in values}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class TrainingDiverged(UserError):
    """A non-finite loss or non-finite logits: the recipe (usually the learning rate) made the model diverge."""


def check_finite(model_name: str, cfg: Config, epoch: int, *values) -> None:
    """Stop a unit whose loss or logits are NaN/inf: its scores would be meaningless, not a result."""
    if not all(np.isfinite(v).all() for v in values):
        raise TrainingDiverged(
            f"{model_name}: training diverged (NaN/inf loss or logits at epoch {epoch}, lr {cfg.lr:g}); "
            "fix: lower the learning rate (--set lr=...) or change the recipe"
        )


class WSD:
    """Warm-up/stable/decay learning rate and when to decay: one warm-up epoch (linear to ``lr``), constant ``lr``
    while the inner loss improves by ``MIN_GAIN`` (relative), then a cosine decay to 0 over ``DECAY_SHARE`` of
    the epochs so far (at least one), started after ``patience`` epochs without improvement or when the decay
    would otherwise overrun ``max_epochs``."""

    MIN_GAIN = 1e-3
    DECAY_SHARE = 0.3

    def __init__(self, lr: float, max_epochs: int, patience: int):
        self.lr, self.max_epochs, self.patience = lr, max_epochs, patience
        self.phase, self.best, self.stale = "warmup", math.inf, 0
        self.last_epoch = max_epochs  # set to the decay's last epoch once it starts

    def rate(self, epoch: int, step: int, steps: int) -> float:
        """Learning rate of step ``step`` (0-based) of ``steps`` in epoch ``epoch`` (1-based)."""
        if self.phase == "warmup":
            return self.lr * (step + 1) / steps
        if self.phase == "stable":
            return self.lr
        t = (epoch - 1 - self.decay_from + step / steps) / (self.last_epoch - self.decay_from)  # [0, 1)
        return self.lr * 0.5 * (1 + math.cos(math.pi * t))

    def end_epoch(self, epoch: int, inner_loss: float) -> None:
        """After a warm-up or stable epoch: note the inner loss; start the decay when it stopped improving."""
        if inner_loss < self.best * (1 - self.MIN_GAIN):
            self.best, self.stale = inner_loss, 0
        else:
            self.stale += 1
        self.phase = "stable"
        decay = max(1, round(self.DECAY_SHARE * epoch))
        if self.stale >= self.patience or epoch + decay >= self.max_epochs:
            self.phase, self.decay_from = "decay", epoch
            self.last_epoch = min(epoch + decay, self.max_epochs)


# class_weight=auto weighs the classes when the largest has at least this many times the rows of the smallest: on
# imbalanced training rows (18 to 180 a digit) balanced weights raised held-out macro-F1 by 0.045 and 0.17
# (bench/results/label_shift.md); folds of balanced data stay far below it, so their training is unchanged.
IMBALANCE_RATIO = 2.0


def class_weights(y: np.ndarray, kind: str, device) -> torch.Tensor | None:
    """The loss's per-class weights: None (every row counts once), or ``balanced``, N / (10 x rows of the class)
    over the rows trained on, so that each class weighs the same in the loss however rare it is; ``auto`` is
    ``balanced`` when the classes of ``y`` are imbalanced (``IMBALANCE_RATIO``), else None."""
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    present = counts[counts > 0]
    if kind == "auto":
        kind = "balanced" if len(present) and present.max() >= IMBALANCE_RATIO * present.min() else "none"
    if kind == "none":
        return None
    w = len(y) / (N_CLASSES * np.maximum(counts, 1.0))  # a class without rows: its weight never used
    return torch.as_tensor(w, dtype=torch.float32, device=device)


class Learner:
    """Train model ``model_name`` with recipe ``cfg`` and seed ``seed``; ``fit`` then ``predict_logits``."""

    def __init__(self, model_name: str, cfg: Config, seed: int = 0, device: str = "cpu"):
        self.model_name = model_name
        self.cfg = cfg
        self.seed = seed
        self.device = device

    def _tensors(self, image: np.ndarray, audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.tensor copies: the arrays may be read-only memory maps shared by worker processes.
        return (torch.tensor(image, device=self.device), torch.tensor(audio, device=self.device))

    def fit(
        self,
        image: np.ndarray,
        audio: np.ndarray,
        y: np.ndarray,
        val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        inner: np.ndarray | None = None,
        init: dict | None = None,
    ) -> Learner:
        """Train on the rows given (with ``cfg.early_stop``: all but ``inner``, indices of the inner rows, until
        the decay phase); ``val`` rows are only scored, each epoch, for the history and the last epoch's logits.
        ``init``: a state dict to start from instead of a fresh initialisation."""
        cfg, dev = self.cfg, self.device
        seed_everything(self.seed)  # model initialisation and dropout masks
        gen = torch.Generator().manual_seed(self.seed)  # batch order
        model = create_model(self.model_name, **model_kwargs(self.model_name, cfg))
        if init is not None:
            model.load_state_dict(init)
        model = model.to(dev)
        img, aud = self._tensors(image, audio)  # (N, 784), (N, 507)
        target = torch.as_tensor(y, device=dev)  # (N,)
        weight = class_weights(y, cfg.class_weight, dev)  # (10,) or None
        n, bs = len(target), cfg.batch_size
        everything = torch.arange(n, device=dev)
        rows = everything  # the rows trained on; with early stopping, not the inner rows until the decay
        if cfg.early_stop:
            if inner is None:
                raise ValueError("early_stop needs the inner rows (Learner.fit(..., inner=...))")
            rows = torch.as_tensor(np.setdiff1d(np.arange(n), inner), device=dev)
        # Plain Adam is the reference optimiser; decoupled weight decay (AdamW) only when asked for.
        # fused=True: one kernel for all parameters, 0.6 ms instead of 3.9 ms a step on CPU for fusion.
        if cfg.weight_decay > 0:
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
        sched, wsd = None, None
        if cfg.early_stop:
            wsd = WSD(cfg.lr, cfg.max_epochs, cfg.patience)
        elif cfg.schedule == "onecycle":
            steps = -(-n // bs)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
        # ema: averaged every step from the start; swa: from the first epoch of the averaged window on
        avg = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
        self.history_ = []
        for epoch in range(1, (cfg.max_epochs if wsd else cfg.epochs) + 1):
            model.train()
            phase = wsd.phase if wsd else None
            if phase == "decay":
                rows = everything  # the inner rows join: the final model has seen every training row
            perm = rows[torch.randperm(len(rows), generator=gen).to(dev)]
            steps = -(-len(perm) // bs)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev)
            for i in range(steps):
                idx = perm[i * bs : (i + 1) * bs]
                if wsd is not None:
                    for group in opt.param_groups:
                        group["lr"] = wsd.rate(epoch, i, steps)
                x_img, x_aud = augment_batch(img[idx], aud[idx], cfg, gen)  # training rows only
                x_img, x_aud, partner, lam = mix_rows(x_img, x_aud, cfg, gen)
                logits = model(x_img, x_aud)  # (B, 10)
                loss = F.cross_entropy(logits, target[idx], weight=weight, label_smoothing=cfg.label_smoothing)
                if partner is not None:  # mixup/cutmix: the loss mixed as the rows are
                    other = F.cross_entropy(
                        logits, target[idx][partner], weight=weight, label_smoothing=cfg.label_smoothing
                    )
                    loss = lam * loss + (1 - lam) * other
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                if avg is not None and cfg.ema > 0:
                    avg.update(model)
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == target[idx]).sum()
            row = {"epoch": epoch} | ({"phase": phase} if wsd else {})
            row |= {"train_loss": loss_sum.item() / len(perm), "train_accuracy": correct.item() / len(perm)}
            check_finite(self.model_name, cfg, epoch, row["train_loss"])
            last = wsd.last_epoch if wsd is not None else cfg.epochs  # with early stopping: known once it decays
            if cfg.swa_epochs > 0 and epoch > last - cfg.swa_epochs and (wsd is None or phase == "decay"):
                avg = avg or WeightAverage(model)
                avg.update(model)
            self.model_ = model if avg is None else avg.model  # the averaged model is the one scored and saved
            if wsd is not None and phase != "decay":  # the inner rows steer the length; never the validation rows
                row |= self._evaluate("inner", image[inner], audio[inner], y[inner], epoch)
                wsd.end_epoch(epoch, row["inner_loss"])
            if val is not None:  # for the history; test-time augmentation on the last epoch only, as for test rows
                tta = epoch == (wsd.last_epoch if wsd is not None else cfg.epochs)
                row |= self._evaluate("val", *val, epoch, tta)
            self.history_.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if wsd is not None and epoch == wsd.last_epoch:
                break
        self.epochs_ = len(self.history_)
        return self

    def _evaluate(
        self, name: str, image: np.ndarray, audio: np.ndarray, y: np.ndarray, epoch: int, tta: bool = False
    ) -> dict:
        """``<name>_loss``, ``_accuracy`` and ``_macro_f1`` of rows the model does not train on now; the
        validation pass keeps its logits (the last epoch's are the fold's out-of-fold logits)."""
        logits = self.predict_logits(image, audio, tta)  # (n_rows, 10)
        check_finite(self.model_name, self.cfg, epoch, logits)
        if name == "val":
            self.val_logits_ = logits
        loss = F.cross_entropy(torch.from_numpy(logits), torch.as_tensor(y)).item()
        s = scores(y, logits)
        return {f"{name}_loss": loss, f"{name}_accuracy": s["accuracy"], f"{name}_macro_f1": s["macro_f1"]}

    @torch.no_grad()
    def predict_logits(self, image: np.ndarray, audio: np.ndarray, tta: bool = True) -> np.ndarray:
        """(N, 10) float32 logits, computed in eval mode (dropout off) in large batches; with ``tta`` (and
        ``tta_shift`` or ``tta_mask`` set) the mean logits over the test-time views of each row."""
        model = self.model_
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(image), EVAL_BATCH):
            img, aud = self._tensors(image[i : i + EVAL_BATCH], audio[i : i + EVAL_BATCH])
            views = tta_views(img, aud, self.cfg) if tta else [(img, aud)]
            if len(views) == 1:
                out.append(model(img, aud).float().cpu())
            else:
                out.append(torch.stack([model(*v).float() for v in views]).mean(0).cpu())
        model.train(was_training)
        return torch.cat(out).numpy()
