"""anychannel's runtime: numpy, pillow and onnxruntime only. Never imports torch."""
from .channels import ALL_CONFIGS, CONFIG_NAMES, ChannelConfig, parse_channel_list
from .errors import (AmbiguousChannelsError, AnyChannelError, ArtifactError, ChannelMismatchError,
                     ConfigurationNotExportedError, DeviceUnavailableError, InvalidChannelsError, InvalidImageError)

__all__ = [
    "ALL_CONFIGS", "CONFIG_NAMES", "ChannelConfig", "parse_channel_list",
    "AnyChannelError", "AmbiguousChannelsError", "ArtifactError", "ChannelMismatchError",
    "ConfigurationNotExportedError", "DeviceUnavailableError", "InvalidChannelsError", "InvalidImageError",
]
