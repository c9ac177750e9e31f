"""Probe: measure what the plan needs. The data (sizes, class balance, duplicate audio, adversarial
validation, cached in the workdir as cv caches it) and this machine (a few timed training batches of each
model, one thread as a cv unit trains on CPU, so the plan's seconds are measured, not guessed)."""

from __future__ import annotations

import time

import numpy as np

from competition.config import Config
from competition.data.duplicates import duplicate_summary
from competition.data.load import N_CLASSES, Competition
from competition.pipeline.plan import Profile, Speeds
from competition.splits import adversarial

PROBE_BATCHES = 4  # timed batches per model, after one warm-up batch


def measure_profile(comp: Competition, cfg: Config, workdir, workers: int) -> Profile:
    """The data's profile for ``cfg`` (the base recipe); runs adversarial validation unless cached."""
    counts = np.bincount(comp.y, minlength=N_CLASSES) / max(1, comp.n_train)
    dup = duplicate_summary(comp)["audio"]
    adv = adversarial.load_or_run(comp, workdir)
    auc = lambda m: float(adv[m].auc) if m in adv else None  # noqa: E731
    return Profile(
        n_train=comp.n_train,
        n_test=comp.n_test,
        folds=cfg.folds,
        models=tuple(cfg.models),
        epochs=cfg.epochs,
        max_epochs=cfg.max_epochs,
        workers=max(1, workers),
        class_min_share=float(counts.min()),
        class_max_share=float(counts.max()),
        duplicate_share=dup["rows_in_duplicate_sets"] / max(1, dup["rows"]),
        test_seen_share=dup["test_rows_seen_in_train"] / max(1, comp.n_test),
        audio_auc=auc("audio"),
        image_auc=auc("image"),
    )


def probe_speeds(comp: Competition, cfg: Config, device: str, batches: int = PROBE_BATCHES) -> Speeds:
    """Seconds per training row per epoch of each model of ``cfg`` on ``device``: a warm-up batch, then
    ``batches`` timed training steps (forward, backward, Adam) of ``cfg.batch_size`` training rows."""
    import torch
    import torch.nn.functional as F

    from competition.models import create_model
    from competition.train.learner import model_kwargs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each cv unit trains on CPU
    try:
        rng = np.random.default_rng(0)
        speeds = {}
        for name in cfg.models:
            mcfg = cfg.for_model(name)
            bs = min(mcfg.batch_size, comp.n_train)
            model = create_model(name, **model_kwargs(name, mcfg)).to(device)
            opt = torch.optim.Adam(model.parameters(), lr=mcfg.lr)
            rows = rng.choice(comp.n_train, size=(batches + 1, bs))
            img = torch.tensor(comp.image[rows.ravel()], dtype=torch.float32, device=device).view(batches + 1, bs, -1)
            aud = torch.tensor(comp.audio[rows.ravel()], dtype=torch.float32, device=device).view(batches + 1, bs, -1)
            y = torch.as_tensor(comp.y[rows.ravel()], device=device).view(batches + 1, bs)
            t0 = 0.0
            for i in range(batches + 1):
                if i == 1:
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                loss = F.cross_entropy(model(img[i], aud[i]), y[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            speeds[name] = (time.perf_counter() - t0) / (batches * bs)
        return speeds
    finally:
        torch.set_num_threads(threads)
