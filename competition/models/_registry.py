"""Registry: model name -> factory, and what a name's factory accepts and reads (timm's ``_registry.py``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``create_model(name, ...)`` build ``factory(...)``."""
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_hparams(name: str) -> list[str]:
    """The constructor arguments a model accepts; the config keys of the same names set them (``model_kwargs``)."""
    factory = get_factory(name)
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def model_modalities(name: str) -> tuple[str, ...]:
    """The modalities model ``name`` reads, e.g. ``("audio",)``, without building it (timm models import timm)."""
    return tuple(get_factory(name).modalities)


def get_factory(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **hparams) -> nn.Module:
    """Build a registered model by name, e.g. ``create_model("fusion", image_dropout=0.2)``."""
    factory = get_factory(name)
    unknown = set(hparams) - set(model_hparams(name))
    if unknown:
        raise TypeError(f"model {name!r} has no hyperparameter(s) {sorted(unknown)}; it takes {model_hparams(name)}")
    return factory(**hparams)
