"""anychannel's runtime: numpy, pillow and onnxruntime only. Never imports torch.

``Classifier`` and ``Prediction`` are imported on first use, so that training code importing
``runtime.channels`` does not load onnxruntime.
"""
from typing import TYPE_CHECKING

from .channels import ALL_CONFIGS, CONFIG_NAMES, ChannelConfig, parse_channel_list
from .errors import (AmbiguousChannelsError, AnyChannelError, ArtifactError, ChannelMismatchError,
                     ConfigurationNotExportedError, DeviceUnavailableError, InvalidChannelsError, InvalidImageError)

if TYPE_CHECKING:
    from .classifier import Classifier, Prediction

__all__ = [
    "ALL_CONFIGS", "CONFIG_NAMES", "ChannelConfig", "parse_channel_list",
    "AnyChannelError", "AmbiguousChannelsError", "ArtifactError", "ChannelMismatchError",
    "ConfigurationNotExportedError", "DeviceUnavailableError", "InvalidChannelsError", "InvalidImageError",
    "Classifier", "Prediction",
]


def __getattr__(name: str):
    if name in ("Classifier", "Prediction"):
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
