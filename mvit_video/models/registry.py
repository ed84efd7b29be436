"""The one model registry: a dict of named builders (torchvision's ``_api`` style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override its config (``num_classes``, ``num_frames``, ...)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    model.preset = name  # recorded in checkpoints
    return model
