"""The runtime's exceptions: one small hierarchy, so apps can catch :class:`AnyChannelError`."""
from __future__ import annotations


class AnyChannelError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidChannelsError(AnyChannelError, ValueError):
    """A channel configuration that is not one of RGB, RG, GB, RB, R, G, B."""


class InvalidImageError(AnyChannelError, ValueError):
    """An input that is not a usable image: unreadable, empty, zero-sized, NaN, too large."""


class ChannelMismatchError(InvalidImageError):
    """The input's channel count contradicts the ``channels`` it was given with."""


class AmbiguousChannelsError(InvalidImageError):
    """A 1- or 2-channel input without ``channels``, where several configurations fit."""


class ArtifactError(AnyChannelError, RuntimeError):
    """Missing, unreadable or tampered artifacts (manifest, ONNX graph)."""


class ConfigurationNotExportedError(ArtifactError, KeyError):
    """The artifacts hold no graph for the requested channel configuration."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DeviceUnavailableError(AnyChannelError, RuntimeError):
    """The device's provider (CUDA, TensorRT, CoreML) was required (``strict_device=True``) but the
    session runs elsewhere, or TensorRT's engine cache folder cannot be created."""
