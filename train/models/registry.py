"""A registry of model families, so training, export and the CLI look models up by name."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from runtime.contract import current_model_name

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class or factory decorator: ``@register_model("naive")``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names list the known ones.

    A model's earlier name (``runtime.contract.RENAMED_MODELS``: ``adaptive``) builds it under its
    current one, so checkpoints written before a rename still load.
    """
    name = current_model_name(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def list_models() -> list[str]:
    return sorted(_REGISTRY)
