"""The course's naive baseline: a plain CNN trained once per channel configuration."""
from __future__ import annotations

import torch
import torch.nn as nn

from runtime.channels import ChannelConfig

from .blocks import conv_bn_relu, scale_widths
from .registry import register_model


@register_model("naive")
class NaiveCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool stages and a linear head, for one fixed configuration."""

    multi_config = False

    def __init__(self, num_classes: int, channels: str = "RGB", widths: tuple[int, ...] = (32, 64, 128, 256),
                 dropout: float = 0.2, width: float = 1.0) -> None:
        super().__init__()
        self.config = ChannelConfig.parse(channels)
        layers: list[nn.Module] = []
        in_ch = self.config.num_channels
        for w in scale_widths(widths, width):
            layers += [conv_bn_relu(in_ch, w), nn.MaxPool2d(2)]
            in_ch = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    @property
    def supported_configs(self) -> tuple[ChannelConfig, ...]:
        return (self.config,)

    def _check(self, config: ChannelConfig | None) -> None:
        if config is not None and config != self.config:
            raise ValueError(f"this naive model was trained for {self.config}, not {config}")

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        self._check(config)
        return self.head(self.features(x))

    def resolve(self, config: ChannelConfig) -> nn.Module:
        self._check(config)
        return _Fixed(self, config)


class _Fixed(nn.Module):
    """Any multi-configuration model bound to one configuration, with a plain ``forward(x)``."""

    def __init__(self, model: nn.Module, config: ChannelConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.config)
