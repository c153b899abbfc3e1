"""The course's published design, re-implemented faithfully as a baseline.

Dynamic convolution (softmax attention over K=4 kernels) in every one of five stages
(32-64-128-256-512), each followed by batch norm, ReLU and max pooling, then three
fully-connected layers. An input with fewer than three channels is padded up to three
from its channel-wise average and max maps, through a small dynamic convolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.channels import ALL_CONFIGS, ChannelConfig

from .layers import DynamicConv2d
from .naive import _Fixed
from .registry import register_model


class ChannelPadding(nn.Module):
    """Pad a C<3 input to three channels with maps made from its channel-wise avg and max."""

    def __init__(self, target: int = 3, form: str = "sum") -> None:
        super().__init__()
        self.target = target
        self.conv = DynamicConv2d(2, target - 1, 3, form=form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = self.target - x.shape[1]
        if missing <= 0:
            return x
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.cat([x, self.conv(pooled)[:, :missing]], dim=1)


@register_model("course")
class CourseDynamicNet(nn.Module):
    multi_config = True
    supported_configs = ALL_CONFIGS

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256, 512),
                 hidden: tuple[int, ...] = (2900, 1024), num_kernels: int = 4, dropout: float = 0.5,
                 form: str = "sum") -> None:
        super().__init__()
        self.pad = ChannelPadding(3, form=form)
        stages: list[nn.Module] = []
        in_ch = 3
        for w in widths:
            stages += [DynamicConv2d(in_ch, w, 3, num_kernels=num_kernels, bias=False, form=form),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_ch = w
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(2)  # identity at 64 px, where five poolings leave 2x2
        dims = [in_ch * 4, *hidden]
        fc: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            fc += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.classifier = nn.Sequential(*fc, nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        x = self.pool(self.features(self.pad(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 2).flatten(1))

    def resolve(self, config: ChannelConfig) -> nn.Module:
        return _Fixed(self, config)
