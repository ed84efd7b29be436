"""MViTv2 models: ``build_model(name, **overrides)`` and ``list_models()``."""

from . import mvitv2  # noqa: F401  (registers the presets)
from .mvitv2 import MViTv2, MViTv2Config
from .registry import build_model, list_models, register_model

__all__ = ["MViTv2", "MViTv2Config", "build_model", "list_models", "register_model"]
