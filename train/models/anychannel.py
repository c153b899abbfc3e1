"""``anychannel``, our model, with its compact backbone: one network for all seven channel configurations.

(With a torchvision backbone instead, the same model is :class:`train.models.backbone.BackboneNet`.)

A channel-adaptive dynamic stem (see :class:`ChannelAdaptiveStem`) feeds a shared body
whose batch norms are kept per configuration (:class:`ConfigBatchNorm2d`). Dynamic
convolution sits where it pays: in the stem, which is where the channels differ, and where
K kernels cost little. Export resolves the stem for one configuration, leaving a static
network behind it.

Bodies come from :data:`BODIES`: ``plain`` (the default: the naive baseline's own
conv-BN-ReLU-pool stages, so a comparison with it isolates the any-channel technique and
the training method, at the same FLOPs per image) and ``residual`` (a wider ResNet-style
body, 2.5x the FLOPs).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from runtime.channels import ALL_CONFIGS, ChannelConfig

from .blocks import BasicBlock, conv_bn_relu, scale_widths
from .layers import (ChannelAdaptiveStem, ConfigBatchNorm2d, ConfigCopies, ConfigLayer, activate_config,
                     activate_groups, select_config)
from .registry import register_model


class _PooledBody(nn.Module):
    """A body that opens with a 2x2 max pool (:attr:`pool`), then :attr:`blocks` and :attr:`head`."""

    pool: nn.Module
    blocks: nn.Module
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_pool(self.pool(x))

    def after_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The body from its pooled input on: what a grouped batch shares (see ``forward_groups``)."""
        return self.head(self.blocks(x))

    def after_pool_groups(self, x: torch.Tensor, per_slice: bool | None = None) -> torch.Tensor:
        """:meth:`after_pool` over a grouped batch, the body already prepared for its slices
        (:func:`~train.models.layers.activate_groups`). A body that can run more than its norms per
        slice says so with ``per_slice`` (None: its default)."""
        return self.after_pool(x)


class _Body(_PooledBody):
    def __init__(self, stem_width: int, widths: tuple[int, ...], strides: tuple[int, ...], num_classes: int,
                 dropout: float, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        # The stem runs at full resolution, then pools: a strided stem loses the fine detail
        # small images have, and the blocks cost a quarter of what they would at full size.
        self.pool = nn.MaxPool2d(2)
        blocks, in_ch = [], stem_width
        for w, s in zip(widths, strides):
            blocks.append(BasicBlock(in_ch, w, s, norm))
            in_ch = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))


class _PlainBody(_PooledBody):
    """The naive CNN's stages after its first convolution: [conv-BN-ReLU, max pool] per width."""

    def __init__(self, stem_width: int, widths: tuple[int, ...], strides: tuple[int, ...], num_classes: int,
                 dropout: float, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        del strides  # every stage halves the map by pooling
        self.pool = nn.MaxPool2d(2)
        layers: list[nn.Module] = []
        in_ch = stem_width
        for w in widths:
            layers += [nn.Conv2d(in_ch, w, 3, 1, 1, bias=False), norm(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_ch = w
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def after_pool_groups(self, x: torch.Tensor, per_slice: bool | None = None) -> torch.Tensor:
        """Each stage's convolution once over the grouped batch; with ``per_slice`` (the default on a
        CPU), its norm, ReLU and pool per slice.

        The norm is per configuration, so it runs per slice anyway; the ReLU and the pool are per
        image, so they follow it while the slice is still in cache, and the slices are joined after
        the pool, which copies a quarter of the map (forward, and the gradient backward) instead of
        all of it: 1.5% to 3.5% of a joint step on the 2-core CPU, in paired timings (docs/training.md).
        It costs a ReLU and a pool per slice, so elsewhere, where a small network's step is bound by
        kernel launches rather than by memory (a GPU), the default is one of each over the batch.
        A norm shared by all configurations (not kept per configuration) takes the whole batch.
        """
        if not (x.device.type == "cpu" if per_slice is None else per_slice):
            return self.after_pool(x)
        for conv, norm, relu, pool in zip(*[iter(self.blocks)] * 4):  # the stages __init__ builds
            y = conv(x)
            if isinstance(norm, ConfigCopies):
                x = norm.forward_each(y, lambda z: pool(relu(z)))
            else:
                x = pool(relu(norm(y)))
        return self.head(x)


#: Body name -> (class, default widths).
BODIES: dict[str, tuple[type[_PooledBody], tuple[int, ...]]] = {
    "plain": (_PlainBody, (64, 128, 256)),
    "residual": (_Body, (48, 96, 192, 384)),
}


def build_body(body: str, stem_width: int, widths: tuple[int, ...] | None, strides: tuple[int, ...],
               num_classes: int, dropout: float, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> _PooledBody:
    """The named body of :data:`BODIES`, with its default widths unless ``widths`` is given."""
    if body not in BODIES:
        raise ValueError(f"unknown body {body!r}; choose from {', '.join(BODIES)}")
    body_class, default_widths = BODIES[body]
    return body_class(stem_width, tuple(widths or default_widths), strides, num_classes, dropout, norm=norm)


def scaled_shape(stem_width: int, widths: tuple[int, ...] | None, body: str, width: float
                 ) -> tuple[int, tuple[int, ...] | None]:
    """The stem's and the body's widths (``widths`` or the body's defaults) times ``width``."""
    (stem_width,) = scale_widths((stem_width,), width)
    if body in BODIES:  # an unknown one fails in build_body, which names the choices
        widths = scale_widths(widths or BODIES[body][1], width)
    return stem_width, widths


def keep_last_convs_per_config(blocks: nn.Module, count: int) -> None:
    """Keep the last ``count`` convolutions of ``blocks`` per configuration (:class:`ConfigLayer`): each
    configuration its own weights there, at the same FLOPs per image; ``resolve`` keeps one copy."""
    convs = [(name, m) for name, m in blocks.named_modules() if isinstance(m, nn.Conv2d)]
    if not 0 <= count <= len(convs):
        raise ValueError(f"config_layers must be between 0 and the body's {len(convs)} convolutions, got {count}")
    for name, conv in convs[len(convs) - count:]:
        parent, _, child = name.rpartition(".")
        setattr(blocks.get_submodule(parent) if parent else blocks, child, ConfigLayer(conv))


@register_model("anychannel")
class AnyChannelNet(nn.Module):
    """Dynamic channel-adaptive stem + residual body; ``resolve(config)`` gives a static graph.

    ``config_layers``: how many of the body's last convolutions each configuration keeps for itself
    (0, the default: the body's convolutions are all shared).
    """

    multi_config = True
    supported_configs = ALL_CONFIGS

    def __init__(self, num_classes: int, stem_width: int = 32, widths: tuple[int, ...] | None = None,
                 strides: tuple[int, ...] = (1, 2, 2, 2), num_kernels: int = 4, dropout: float = 0.2,
                 body: str = "plain", width: float = 1.0, config_layers: int = 0) -> None:
        super().__init__()
        stem_width, widths = scaled_shape(stem_width, widths, body, width)
        self.stem = ChannelAdaptiveStem(stem_width, num_kernels=num_kernels)
        self.body = build_body(body, stem_width, widths, strides, num_classes, dropout, norm=ConfigBatchNorm2d)
        keep_last_convs_per_config(self.body.blocks, config_layers)

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        if config is None:
            raise ValueError("AnyChannelNet needs the input's channel configuration")
        activate_config(self.body, config)
        return self.body(self.stem(x, config))

    def forward_groups(self, inputs: Sequence[torch.Tensor], configs: Sequence[ChannelConfig]) -> list[torch.Tensor]:
        """The logits of each group, as ``[self(x, c) for x, c in zip(inputs, configs)]`` up to float error.

        Only the stem runs per group (the groups' channel counts differ), and of it only what depends on
        the channel count (:meth:`ChannelAdaptiveStem.forward_groups`); the shared body runs
        once over the concatenated batch, each configuration's batch norms on its own slice. A
        joint training step then launches the body's kernels once instead of once per configuration,
        on a batch as large as a naive model's. The body's opening max pool also runs per group: it
        is per image, and a group's full-resolution map is still in cache, and the concatenation
        then copies a quarter of it. The plain body does the same after each of its convolutions
        (:meth:`_PlainBody.after_pool_groups`).
        """
        stems = [self.body.pool(y) for y in self.stem.forward_groups(inputs, configs)]
        sizes = [len(x) for x in inputs]
        activate_groups(self.body, list(zip(configs, sizes)))
        try:
            logits = self.body.after_pool_groups(torch.cat(stems))
        finally:
            activate_config(self.body, configs[0])  # a later plain forward must not see the slices
        return list(logits.split(sizes))

    def resolve(self, config: ChannelConfig) -> nn.Module:
        """This model for ``config`` alone: no branches, no other configuration's weights."""
        return nn.Sequential(self.stem.resolve(config), select_config(self.body, config))


@register_model("static")
class StaticBackboneNet(nn.Module):
    """:class:`AnyChannelNet`'s body behind a plain conv stem: the cost baseline for its dynamic part."""

    multi_config = False

    def __init__(self, num_classes: int, channels: str = "RGB", stem_width: int = 32,
                 widths: tuple[int, ...] | None = None, strides: tuple[int, ...] = (1, 2, 2, 2),
                 dropout: float = 0.2, body: str = "plain", width: float = 1.0) -> None:
        super().__init__()
        self.config = ChannelConfig.parse(channels)
        stem_width, widths = scaled_shape(stem_width, widths, body, width)
        self.stem = conv_bn_relu(self.config.num_channels, stem_width, 3)
        self.body = build_body(body, stem_width, widths, strides, num_classes, dropout)  # AnyChannelNet's body

    @property
    def supported_configs(self) -> tuple[ChannelConfig, ...]:
        return (self.config,)

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        return self.body(self.stem(x))

    def resolve(self, config: ChannelConfig) -> nn.Module:
        return nn.Sequential(self.stem, self.body)
