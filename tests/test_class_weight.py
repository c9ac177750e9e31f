"""``class_weight``: the loss weighs each class by N / (10 x its rows) when ``balanced``; ``none`` is the plain loss;
``auto`` (the default) is balanced only on clearly imbalanced rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from competition.config import load_config
from competition.train import learner
from competition.train.learner import Learner, class_weights
from competition.utils.errors import UserError


def test_balanced_weights_make_every_class_weigh_the_same():
    y = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 10, 20, 40, 80, 160])
    w = class_weights(y, "balanced", "cpu").numpy()
    per_class = w * np.bincount(y)  # each class's total weight in the loss
    np.testing.assert_allclose(per_class, per_class[0], rtol=1e-6)
    assert class_weights(y, "none", "cpu") is None
    with pytest.raises(UserError, match="class_weight must be one of auto, none, balanced"):
        load_config(None, {"class_weight": "inverse"})


def test_the_loss_receives_the_weights_only_when_asked(monkeypatch):
    seen = []
    real = learner.F.cross_entropy

    def spy(logits, target, weight=None, **kw):
        seen.append(None if weight is None else weight.clone())
        return real(logits, target, weight=weight, **kw)

    monkeypatch.setattr(learner.F, "cross_entropy", spy)
    rng = np.random.default_rng(0)
    img, aud = rng.random((40, 784), dtype=np.float32), rng.standard_normal((40, 507)).astype(np.float32)
    y = np.repeat(np.arange(10), [13, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    for kind in ("none", "balanced"):
        seen.clear()
        cfg = load_config(None, {"epochs": 1, "batch_size": 20, "class_weight": kind, "device": "cpu"})
        Learner("image", cfg, seed=0).fit(img, aud, y)
        assert seen and all((w is None) == (kind == "none") for w in seen)
    assert torch.isclose(seen[0][0] * 13, seen[0][1] * 3)  # the common class weighs as much as a rare one


def test_auto_weighs_only_clearly_imbalanced_classes():
    assert load_config(None, {}).class_weight == "auto"
    imbalanced = np.repeat(np.arange(10), [18, 20, 30, 40, 60, 80, 100, 120, 150, 180])
    balanced = class_weights(imbalanced, "balanced", "cpu")
    np.testing.assert_array_equal(class_weights(imbalanced, "auto", "cpu"), balanced)
    # a balanced competition's folds: classes within a few percent (and up to 1.9x) train unweighted, as before
    near = np.repeat(np.arange(10), [95, 100, 104, 98, 101, 99, 97, 103, 100, 102])
    assert class_weights(near, "auto", "cpu") is None
    assert class_weights(np.repeat(np.arange(10), [100] * 9 + [190]), "auto", "cpu") is None
    assert class_weights(np.repeat(np.arange(10), [100] * 9 + [200]), "auto", "cpu") is not None
