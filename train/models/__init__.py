"""Model families, one per file, looked up by name through the registry."""
from . import anychannel, backbone, course, naive, resnet, shallow  # noqa: F401  (registers the families)
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
