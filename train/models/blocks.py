"""Plain convolution blocks shared by the model families."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_width(factor: float, name: str = "a width multiplier") -> None:
    """Refuse a width multiplier that is not a finite positive number, naming it as ``name``."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{name} must be a positive number, got {factor}")


def scale_widths(widths: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """``widths`` times ``factor``, rounded, at least 1 each: a model's ``width`` multiplier."""
    check_width(factor)
    return tuple(max(1, round(w * factor)) for w in widths)


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with a projected shortcut when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = norm(out_ch)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), norm(out_ch))
            if stride != 1 or in_ch != out_ch else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)
