"""torchvision's ResNet34, from scratch, as the task-2 reference."""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet34

from runtime.channels import ChannelConfig

from .registry import register_model


@register_model("resnet34")
class ResNet34(nn.Module):
    """``torchvision.models.resnet34(weights=None)`` for RGB, with ``num_classes`` from the data."""

    multi_config = False
    config = ChannelConfig("RGB")
    supported_configs = (config,)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = resnet34(weights=None, num_classes=num_classes)

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        return self.net(x)

    def resolve(self, config: ChannelConfig) -> nn.Module:
        return self.net
