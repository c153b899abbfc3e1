"""Task 2: a network with four weight layers on its main path.

By default three 3x3 convolutions at 32, 16 and 8 pixels (2x2 max pooling between them, as in
the naive CNN), global average pooling and a linear layer. Layers 2 and 3 train with RepVGG
branches (3x3, 1x1 and, where shapes allow, identity, each with its own batch norm) that
:meth:`ShallowNet.reparameterize` folds into one 3x3 convolution, so the inference graph holds
exactly four weight layers.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.channels import ChannelConfig

from .registry import register_model


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepConv(nn.Module):
    """3x3 conv + BN, plus a 1x1 conv + BN and an identity BN branch while training."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.in_ch, self.stride = in_ch, stride
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn_id = nn.BatchNorm2d(out_ch) if in_ch == out_ch and stride == 1 else None
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        return y + self.bn_id(x) if self.bn_id is not None else y

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold every branch into one 3x3 convolution with bias (exact in eval mode)."""
        k3, b3 = _fuse_bn(self.conv3.weight, self.bn3)
        k1, b1 = _fuse_bn(F.pad(self.conv1.weight, (1, 1, 1, 1)), self.bn1)
        kernel, bias = k3 + k1, b3 + b1
        if self.bn_id is not None:
            eye = torch.zeros_like(self.conv3.weight)
            eye[torch.arange(self.in_ch), torch.arange(self.in_ch), 1, 1] = 1.0
            kid, bid = _fuse_bn(eye, self.bn_id)
            kernel, bias = kernel + kid, bias + bid
        fused = nn.Conv2d(self.in_ch, kernel.shape[0], 3, self.stride, 1, bias=True)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.fused = fused
        del self.conv3, self.bn3, self.conv1, self.bn1, self.bn_id
        self.bn_id = None


#: How the shallow net halves its maps: "stride" (a 4x4 stride-2 patchify stem, then a stride-2
#: 3x3 layer: 16x16 and 8x8 maps at 32 px) or "maxpool" (stride-1 3x3 layers at full resolution,
#: each followed by 2x2 max pooling, as the naive CNN does: 32x32, 16x16 and 8x8 maps). Pooling
#: holds no weights, so both layouts keep four weight layers.
DOWNSAMPLE = ("stride", "maxpool")


@register_model("shallow")
class ShallowNet(nn.Module):
    """Three convolutions (the last two re-parameterisable 3x3), global pooling and a linear head."""

    multi_config = False
    config = ChannelConfig("RGB")
    supported_configs = (config,)

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (64, 128, 256), dropout: float = 0.3,
                 downsample: str = "maxpool") -> None:
        super().__init__()
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE}, not {downsample!r}")
        w1, w2, w3 = widths
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        if downsample == "stride":
            self.layer1 = nn.Sequential(nn.Conv2d(3, w1, 4, 2, 1, bias=False), nn.BatchNorm2d(w1), relu())
            self.layer2 = nn.Sequential(RepConv(w1, w2, stride=2), relu())
        else:
            self.layer1 = nn.Sequential(nn.Conv2d(3, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), relu(),
                                        nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(RepConv(w1, w2), relu(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(RepConv(w2, w3, stride=1), relu())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.layer4 = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(self.dropout(self.pool(x).flatten(1)))

    def reparameterize(self) -> "ShallowNet":
        """A copy with the RepVGG branches folded: the inference form, four weight layers."""
        fused = copy.deepcopy(self).eval()
        for module in fused.modules():
            if isinstance(module, RepConv):
                module.fuse()
        return fused

    def resolve(self, config: ChannelConfig) -> nn.Module:
        return self.reparameterize()

    def weight_layer_count(self) -> int:
        """Convolutions and fully-connected layers on the main path of the inference form."""
        return count_weight_layers(self.reparameterize())


def count_weight_layers(module: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
