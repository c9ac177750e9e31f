"""Batched units: train the units of one model of a cv run (its folds, and seeds with seed bagging) as one program,
their parameters stacked and run with ``torch.func.vmap``, then write each unit's files as ``train_unit`` does.

Each unit keeps what makes it the sequential unit: its initial weights, training rows, audio scaler, batch order
and augmentation stream (its own generator seeded with ``unit_seed``, drawn in the same order), its steps per
epoch and its learning-rate schedule. Only the dropout masks differ: vmap draws them for all units at once from
torch's global generator (``randomness="different"``), so a batched unit's figures differ from the sequential
one's within fold-to-fold noise, and depend on which units train together.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from competition.config import Config
from competition.data.load import N_CLASSES
from competition.metrics import scores
from competition.models import create_model
from competition.store.runs import UnitResult
from competition.train.augment import augment_batch, tta_views
from competition.train.learner import check_finite, class_weights, model_kwargs, seed_everything
from competition.train.progress import EpochEvent, EventSink
from competition.train.stacked_adam import StackedAdam
from competition.train.unit import CVJob, planned_epochs, unit_audio, unit_checkpoint, unit_seed, write_unit

# The models and devices where the batched path was measured faster than unit-by-unit training; batch_units=auto
# batches only these. CPU (2 cores): slower for every model (bench/results/batched.md). CUDA: not measured in the
# shipped results; bench/gpu.sh measures it, and batch_units=on turns it on.
MEASURED_FASTER: dict[str, frozenset[str]] = {"cpu": frozenset(), "cuda": frozenset()}
# Rows per evaluation call over all K units: small on CPU (see learner.EVAL_BATCH), large on a GPU.
EVAL_ROWS = {"cpu": 256, "cuda": 16384}


def unsupported(cfg: Config, model: str) -> str | None:
    """Why the batched path cannot train ``model`` with recipe ``cfg`` (its per-model keys applied), or None."""
    cfg = cfg.for_model(model)
    reasons = [
        (cfg.early_stop, "early_stop"),
        (cfg.ema > 0, "ema"),
        (cfg.swa_epochs > 0, "swa_epochs"),
        ((cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mix_p > 0, "mixup/cutmix"),
        (model.startswith("timm_"), "timm backbones"),
        (bool(cfg.pseudo) and cfg.pseudo_init == "source", "pseudo_init=source"),
    ]
    found = [name for on, name in reasons if on]
    if not found and any(True for _ in create_model(model, **model_kwargs(model, cfg)).buffers()):
        found = ["models with buffers (batch norm)"]
    return f"{', '.join(found)} not supported by the batched path" if found else None


def _wanted(cfg: Config, model: str, device: str) -> bool:
    """``batch_units`` asks for ``model``'s units batched: on, or auto where measured faster."""
    return cfg.batch_units == "on" or (cfg.batch_units == "auto" and model in MEASURED_FASTER.get(device, ()))


def batches(cfg: Config, model: str, device: str) -> bool:
    """Whether the units of ``model`` train batched: asked for (``batch_units``) and the recipe supported."""
    return _wanted(cfg, model, device) and unsupported(cfg, model) is None


def fallback_lines(cfg: Config, device: str) -> list[str]:
    """One line per model that would train batched but whose recipe the batched path does not support."""
    lines = []
    for m in cfg.models:
        why = unsupported(cfg, m) if _wanted(cfg, m, device) else None
        if why:
            lines.append(f"{m}: trains unit by unit, not batched (batch_units={cfg.batch_units}): {why}")
    return lines


def schedule_table(cfg: Config, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr, beta1) of each of the ``cfg.epochs x steps`` optimiser steps of a unit, as its torch.optim schedule
    sets them (OneCycleLR also cycles Adam's beta1 between 0.85 and 0.95)."""
    total = cfg.epochs * steps
    if cfg.schedule != "onecycle":
        return np.full(total, cfg.lr), np.full(total, 0.9)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    lr, beta1 = np.empty(total), np.empty(total)
    for t in range(total):
        lr[t], beta1[t] = opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
        if t < total - 1:
            opt.step()  # no gradient: nothing moves; keeps the scheduler's order check quiet
            sched.step()
    return lr, beta1


def stacked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """(K,) each unit's cross-entropy over its real rows, F.cross_entropy's weighted mean with label smoothing:
    ``logits`` (K, B, 10), ``target`` (K, B), ``rows`` (K, B) 1 for a real row and 0 for padding, ``weight``
    (K, 10) class weights (ones without class_weight)."""
    logp = logits.float().log_softmax(-1)  # (K, B, 10)
    w_row = weight.gather(1, target) * rows  # (K, B): the class weight of each real row
    nll = -logp.gather(2, target[..., None]).squeeze(-1)  # (K, B)
    smooth = -(logp * weight[:, None, :]).sum(-1) / N_CLASSES  # (K, B)
    per_row = (1 - smoothing) * nll * w_row + smoothing * smooth * rows
    return per_row.sum(1) / w_row.sum(1).clamp_min(1e-12)  # a unit without rows: 0, and no gradient


class UnitGroup:
    """K units of one model trained together: ``units`` [(fold, seed)], each with its training rows (and
    ``cv --pseudo`` test rows) and its own audio scaler; ``fit`` trains them, ``predict`` scores rows."""

    def __init__(self, job: CVJob, model: str, units: list[tuple[int, int]], threads: int):
        torch.set_num_threads(threads)
        comp, cfg = job.comp, job.cfg.for_model(model)
        self.job, self.model_name, self.cfg, self.units = job, model, cfg, units
        self.device = dev = job.device
        n = comp.n_train
        self.seeds = [unit_seed(cfg.seed, model, fold, seed) for fold, seed in units]
        self.scalers, audio, targets, self.train_rows, self.val_rows = [], [], [], [], []
        for fold, _ in units:
            tr = np.flatnonzero(job.fold_of != fold)
            scaler, train_audio, test_audio = unit_audio(comp, cfg, tr)  # as fit_unit
            self.scalers.append(scaler)
            audio.append(np.concatenate([train_audio, test_audio]))  # (N + M, 507)
            target = np.concatenate([comp.y, np.zeros(comp.n_test, dtype=comp.y.dtype)])
            extra = job.pseudo.get(fold)
            if extra is not None:  # cv --pseudo: the fold's test rows with their pseudo-labels, after its own rows
                target[n + extra[0]] = extra[1]
                tr = np.concatenate([tr, n + extra[0]])
            targets.append(target)
            self.train_rows.append(tr)
            self.val_rows.append(np.flatnonzero(job.fold_of == fold))
        # The data, resident on the device: train rows then test rows; audio standardised per unit.
        self.image = torch.tensor(np.concatenate([comp.image, comp.test_image]), device=dev)  # (N + M, 784)
        self.audio = torch.tensor(np.stack(audio), device=dev)  # (K, N + M, 507)
        self.target = torch.tensor(np.stack(targets), dtype=torch.int64, device=dev)  # (K, N + M)
        self.test_rows = np.arange(n, n + comp.n_test)

        models = []
        for s in self.seeds:
            seed_everything(s)  # each unit's initial weights are the sequential unit's
            models.append(create_model(model, **model_kwargs(model, cfg)))
        self.base = models[0].to(dev)
        self.names = [name for name, _ in models[0].named_parameters()]
        shapes = [p.shape for p in models[0].parameters()]
        flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models])  # (K, P)
        self.flat = flat.to(dev)
        self.params, offset = {}, 0  # name -> (K, ...) view into flat: the optimiser updates flat in place
        for name, shape in zip(self.names, shapes, strict=True):
            size = shape.numel()
            self.params[name] = self.flat[:, offset : offset + size].view(len(units), *shape).requires_grad_()
            offset += size

        def forward(params: dict, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.base, params, (image, audio))

        # randomness="different": each unit its own dropout masks
        self.forward = torch.func.vmap(forward, randomness="different")  # (K, B, ...) -> (K, B, 10)

    def fit(self, on_epoch: Callable[[int, dict], None] | None = None) -> UnitGroup:
        """Train every unit for ``cfg.epochs``; each unit's history in ``histories_``, its last validation pass's
        logits in ``val_logits_``. ``on_epoch(k, row)`` after each epoch of unit k."""
        cfg, dev, k_units, bs = self.cfg, self.device, len(self.units), self.cfg.batch_size
        torch.manual_seed(self.seeds[0])  # the dropout masks of the group
        gens = [torch.Generator().manual_seed(s) for s in self.seeds]  # batch order and augmentation, per unit
        steps = [-(-len(tr) // bs) for tr in self.train_rows]
        tables = [schedule_table(cfg, s) for s in steps]
        weight = torch.ones(k_units, N_CLASSES, device=dev)  # (K, 10)
        for k, tr in enumerate(self.train_rows):  # over each unit's training rows, as Learner.fit
            w = class_weights(self.target[k, tr].cpu().numpy(), cfg.class_weight, dev)
            if w is not None:
                weight[k] = w
        opt = StackedAdam.like(self.flat, cfg.weight_decay)
        leaves = list(self.params.values())
        img_buf = torch.zeros(k_units, bs, self.image.shape[1], device=dev)  # (K, B, 784)
        aud_buf = torch.zeros(k_units, bs, self.audio.shape[2], device=dev)  # (K, B, 507)
        tgt_buf = torch.zeros(k_units, bs, dtype=torch.int64, device=dev)  # (K, B)
        row_buf = torch.zeros(k_units, bs, device=dev)  # (K, B): 1 for a real row, 0 for padding
        rows_of = [torch.as_tensor(tr, device=dev) for tr in self.train_rows]
        self.histories_ = [[] for _ in self.units]
        for epoch in range(1, cfg.epochs + 1):
            self.base.train()
            perms = [rows_of[k][torch.randperm(len(rows_of[k]), generator=gens[k]).to(dev)] for k in range(k_units)]
            longest = max(steps)
            # this epoch's per-step rates of each unit, (max steps, K, 1); units past their last step never read
            lr = np.zeros((longest, k_units)), np.zeros((longest, k_units))
            for k, (rates, betas) in enumerate(tables):
                lr[0][: steps[k], k] = rates[(epoch - 1) * steps[k] : epoch * steps[k]]
                lr[1][: steps[k], k] = betas[(epoch - 1) * steps[k] : epoch * steps[k]]
            rate = torch.tensor(lr[0], dtype=torch.float32, device=dev)[..., None]
            beta1 = torch.tensor(lr[1], dtype=torch.float32, device=dev)[..., None]
            active_of = torch.tensor([[i < s for s in steps] for i in range(longest)], device=dev)[..., None]
            loss_sum = torch.zeros(k_units, device=dev)
            correct = torch.zeros(k_units, device=dev)
            for i in range(longest):
                for k in range(k_units):
                    if i >= steps[k]:
                        row_buf[k] = 0  # no batch left: the unit's loss is 0 and the optimiser skips it
                        continue
                    idx = perms[k][i * bs : (i + 1) * bs]
                    b = len(idx)
                    x_img, x_aud = augment_batch(self.image[idx], self.audio[k, idx], cfg, gens[k])
                    img_buf[k, :b], aud_buf[k, :b], tgt_buf[k, :b] = x_img, x_aud, self.target[k, idx]
                    row_buf[k, :b], row_buf[k, b:] = 1, 0  # a short last batch: padding rows weigh 0
                logits = self.forward(self.params, img_buf, aud_buf)  # (K, B, 10)
                loss = stacked_cross_entropy(logits, tgt_buf, row_buf, weight, cfg.label_smoothing)  # (K,)
                grads = torch.autograd.grad(loss.sum(), leaves)  # units are independent: the sum's gradient is each's
                grad = torch.cat([g.reshape(k_units, -1) for g in grads], 1)  # (K, P)
                opt.step_(self.flat, grad, rate[i], beta1[i], active_of[i])
                with torch.no_grad():
                    n_rows = row_buf.sum(1)  # (K,)
                    loss_sum += loss.detach() * n_rows
                    correct += ((logits.argmax(-1) == tgt_buf) * row_buf).sum(1)
            self.steps_ = opt.step[:, 0].long().tolist()  # the optimiser steps each unit has taken
            val = self.predict(self.val_rows, tta=epoch == cfg.epochs)  # TTA on the last epoch only, as Learner
            self.val_logits_ = val
            losses, right = loss_sum.cpu().numpy(), correct.cpu().numpy()
            for k in range(k_units):
                n = len(self.train_rows[k])
                row = {"epoch": epoch, "train_loss": float(losses[k]) / n, "train_accuracy": float(right[k]) / n}
                check_finite(self.model_name, cfg, epoch, row["train_loss"], val[k])
                y = self.job.comp.y[self.val_rows[k]]
                s = scores(y, val[k])
                row |= {
                    "val_loss": F.cross_entropy(torch.from_numpy(val[k]), torch.as_tensor(y)).item(),
                    "val_accuracy": s["accuracy"],
                    "val_macro_f1": s["macro_f1"],
                }
                self.histories_[k].append(row)
                if on_epoch is not None:
                    on_epoch(k, row)
        return self

    @torch.no_grad()
    def predict(self, rows: list[np.ndarray], tta: bool = True) -> list[np.ndarray]:
        """Each unit's (len(rows[k]), 10) float32 logits of its ``rows`` (positions in the train-then-test table),
        in eval mode, in large batches across the units; with ``tta``, the mean over the test-time views."""
        k_units, dev = len(rows), self.device
        longest = max(len(r) for r in rows)
        padded = np.zeros((k_units, longest), dtype=np.int64)  # (K, V): short units padded with row 0
        for k, r in enumerate(rows):
            padded[k, : len(r)] = r
        idx_all = torch.as_tensor(padded, device=dev)
        unit = torch.arange(k_units, device=dev)[:, None]  # (K, 1)
        chunk = max(1, EVAL_ROWS.get(dev, EVAL_ROWS["cuda"]) // k_units)
        self.base.eval()
        out = []
        for i in range(0, longest, chunk):
            idx = idx_all[:, i : i + chunk]  # (K, c)
            c = idx.shape[1]
            img = self.image[idx].view(k_units * c, -1)  # (K c, 784)
            aud = self.audio[unit, idx].view(k_units * c, -1)  # (K c, 507)
            views = tta_views(img, aud, self.cfg) if tta else [(img, aud)]
            logits = [self.forward(self.params, v[0].view(k_units, c, -1), v[1].view(k_units, c, -1)) for v in views]
            out.append((logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)).float().cpu())  # (K, c, 10)
        self.base.train()
        logits = torch.cat(out, 1).numpy()  # (K, V, 10)
        return [logits[k, : len(r)] for k, r in enumerate(rows)]

    def checkpoint(self, k: int) -> dict:
        """Unit k's checkpoint, the same dict as a sequential unit's (``unit_checkpoint``)."""
        state = {name: self.params[name][k].detach().cpu().clone() for name in self.base.state_dict()}
        return unit_checkpoint(self.model_name, self.cfg, state, self.scalers[k])


def train_group(
    job: CVJob, model: str, units: list[tuple[int, int]], threads: int, events: EventSink | None = None
) -> list[UnitResult]:
    """Train the units [(fold, seed)] of ``model`` as one batch and write each unit's files as ``train_unit``
    does (fold file last); each unit's ``seconds`` is its share of the group's time."""
    t0 = time.perf_counter()
    cfg = job.cfg.for_model(model)
    group = UnitGroup(job, model, units, threads)

    def on_epoch(k: int, row: dict) -> None:
        if events is not None:
            fold, seed = units[k]
            events.put(EpochEvent(model, fold, planned_epochs(cfg, model), row, seed))

    group.fit(on_epoch)
    test = group.predict([group.test_rows] * len(units))
    check_finite(model, cfg, cfg.epochs, *test)
    seconds = (time.perf_counter() - t0) / len(units)
    results = []
    for k, (fold, seed) in enumerate(units):
        oof, history = group.val_logits_[k], group.histories_[k]
        results.append(write_unit(job, model, fold, seed, history, oof, test[k], group.checkpoint(k), seconds))
    return results
