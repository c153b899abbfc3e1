"""Small building blocks: dynamic convolution, the channel-adaptive stem, per-configuration norms."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from runtime.channels import ALL_CONFIGS, ChannelConfig


class KernelAttention(nn.Module):
    """Softmax attention over K kernels from global-average-pooled input (Chen et al., 2020)."""

    def __init__(self, in_channels: int, num_kernels: int, reduction: int = 4, temperature: float = 1.0) -> None:
        super().__init__()
        hidden = max(4, in_channels // reduction)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, num_kernels)
        self.temperature = temperature

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_pooled(x.mean(dim=(2, 3)))

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The attention logits from the input already averaged over space (``B x C``)."""
        return self.fc2(F.relu(self.fc1(pooled)))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalise(self.logits(x), bias)

    def normalise(self, logits: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax over the kernels of ``logits`` (plus ``bias``) at this attention's temperature."""
        if bias is not None:
            logits = logits + bias
        return torch.softmax(logits / self.temperature, dim=1)


def dynamic_conv(
    x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
    form: str = "sum",
) -> torch.Tensor:
    """Dynamic convolution: ``sum_k a_k * conv(x, W_k)``, ``a`` the per-sample attention (``B x K``) and
    ``weight`` the K kernels (``K x O x I x kh x kw``), ``bias`` ``K x O``.

    Every form is exact (convolution is linear in its weights); they differ in cost and in what
    they export to:

    - ``sum``: one convolution with the K kernels stacked on the output axis, then the weighted
      sum; keeps a dynamic batch in ONNX.
    - ``aggregated``: the textbook definition, a per-sample kernel ``sum_k a_k W_k`` with the batch
      folded into groups (what the course used).
    - ``unfold``: the aggregated kernel as im2col and one batched matmul; for few input channels
      (a stem) several times faster to train on a CPU, as no gradient flows through the unfolded
      input. Its output is channels-last, as the body behind the stem runs. Not exported.
    - ``stacked``: one convolution over the K scaled copies of the input
      (:func:`conv_stacked`); for a stem it avoids ``sum``'s K-times-wider intermediate, and it is
      the form exported graphs use.
    """
    if form not in DYNAMIC_CONV_FORMS:
        raise ValueError(f"unknown dynamic convolution form {form!r}; choose from {', '.join(DYNAMIC_CONV_FORMS)}")
    return DYNAMIC_CONV_FORMS[form](x, attention, weight, bias, _pair(stride), _pair(padding), _pair(dilation))


Pair = tuple[int, int]


def _sum_form(x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
    k, out_ch = weight.shape[:2]
    y = F.conv2d(x, weight.reshape(k * out_ch, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                 stride=stride, padding=padding, dilation=dilation)
    y = y.view(y.shape[0], k, out_ch, y.shape[2], y.shape[3])
    return (y * attention[:, :, None, None, None]).sum(dim=1)


def _aggregated_form(x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
    b = x.shape[0]
    k, out_ch, in_ch, kh, kw = weight.shape
    w = torch.einsum("bk,koihw->boihw", attention, weight).reshape(b * out_ch, in_ch, kh, kw)
    bb = None if bias is None else (attention @ bias).reshape(-1)
    y = F.conv2d(x.reshape(1, b * in_ch, *x.shape[2:]), w, bb, stride=stride, padding=padding, dilation=dilation,
                 groups=b)
    return y.view(b, out_ch, y.shape[2], y.shape[3])


def _unfold_form(x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
    k, out_ch = weight.shape[:2]
    kernels = (attention @ weight.reshape(k, -1)).view(x.shape[0], out_ch, -1)
    return unfold_conv(x, kernels, None if bias is None else attention @ bias, weight.shape[-2:], stride, padding,
                       dilation)


def unfold_conv(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None, kernel_size: Pair,
                stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
    """A convolution with a kernel per sample (``kernels``: ``B x O x (C*kh*kw)``, ``bias``: ``B x O``),
    as im2col and one batched matmul: the ``unfold`` form of :func:`dynamic_conv` once the kernels are mixed.

    Its output is channels-last: an NCHW output ran the stem's norm, activation and first pool in NCHW
    and made the first body convolution convert its input, forward and backward (a quarter of a
    training step); so a permuted view of ``B x (H*W) x O``.
    """
    b, _, h, w = x.shape
    out_ch = kernels.shape[1]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # B x (C*kh*kw) x L
    y = torch.bmm(cols.transpose(1, 2), kernels.transpose(1, 2))  # B x L x O
    if bias is not None:
        y = y + bias.unsqueeze(1)
    out_h, out_w = _output_size(h, kh, sh, ph, dh), _output_size(w, kw, sw, pw, dw)
    return y.view(b, out_h, out_w, out_ch).permute(0, 3, 1, 2)


def _stacked_form(x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
    return conv_stacked(x, attention, stack_kernels(weight), bias, stride, padding, dilation)


#: Form name -> implementation, for :func:`dynamic_conv`.
DYNAMIC_CONV_FORMS = {"sum": _sum_form, "aggregated": _aggregated_form, "unfold": _unfold_form,
                      "stacked": _stacked_form}


# The exported form, in one place: ResolvedConv holds stack_kernels' weight and runs conv_stacked.

def conv_stacked(x: torch.Tensor, attention: torch.Tensor, stacked_weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: int | tuple[int, int], padding: int | tuple[int, int],
                 dilation: int | tuple[int, int] = 1) -> torch.Tensor:
    """The ``stacked`` form with the kernels already stacked (:func:`stack_kernels`)."""
    y = F.conv2d(stack_scaled_input(x, attention), stacked_weight, None, stride=stride, padding=padding,
                 dilation=dilation)
    return y if bias is None else y + (attention @ bias)[:, :, None, None]


def stack_scaled_input(x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``B x C x H x W`` and ``B x K`` to ``B x (K*C) x H x W``: copy k holds ``a_k * x``."""
    return (attention[:, :, None, None, None] * x[:, None]).flatten(1, 2)


def stack_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``K x O x C x kh x kw`` to ``O x (K*C) x kh x kw``, matching :func:`stack_scaled_input`."""
    k, out_ch, in_ch = weight.shape[:3]
    return weight.transpose(0, 1).reshape(out_ch, k * in_ch, *weight.shape[3:])


class DynamicConv2d(nn.Module):
    """Dynamic convolution: K kernels mixed per sample by softmax attention.

    ``form="sum"`` (default) is the exportable form; ``form="aggregated"`` is the
    grouped-convolution form the course used and ``"unfold"`` the im2col one, all exact.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, num_kernels: int = 4, bias: bool = True,
                 temperature: float = 1.0, form: str = "sum") -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel_size // 2 if padding is None else padding
        self.attention = KernelAttention(in_channels, num_kernels, temperature=temperature)
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_kernels, out_channels)) if bias else None
        for w in self.weight:
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dynamic_conv(x, self.attention(x), self.weight, self.bias, self.stride, self.padding, form=self.form)


class PerConfig(nn.Module):
    """A module that keeps parameters per channel configuration.

    The owning model points :attr:`active` at the input's configuration before each forward
    pass (:func:`activate_config`), so it can sit anywhere inside a network whose own
    ``forward`` knows nothing of configurations (a torchvision backbone); :meth:`resolve`
    gives the plain module for one configuration, for export (:func:`select_config`).
    """

    active: int

    def resolve(self, config: ChannelConfig) -> nn.Module:
        raise NotImplementedError

    def expand_plain(self, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors of this module that a tensor ``name`` of the plain module it replaces seeds."""
        raise NotImplementedError


class ConfigCopies(PerConfig):
    """Any module kept per channel configuration: each configuration its own copy, all starting equal.

    In a grouped batch (:func:`activate_groups`) each configuration's slice runs through its own
    copy. Subclasses name the copies (:attr:`copies_name`), which is how they appear in state dicts.
    """

    copies_name = "copies"

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.add_module(self.copies_name, nn.ModuleList(copy.deepcopy(module) for _ in ALL_CONFIGS))
        self.active = 0
        #: ``(configuration index, images)`` per slice of a grouped batch (:func:`activate_groups`), or None.
        self.groups: list[tuple[int, int]] | None = None

    @property
    def per_config(self) -> nn.ModuleList:
        return getattr(self, self.copies_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_each(x)

    def forward_each(self, x: torch.Tensor, then: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> torch.Tensor:
        """``then(self(x))`` where ``then`` acts per image (a ReLU, a pool): in a grouped batch it runs
        on each slice right after that slice's copy, and the slices are joined after it."""
        copies = self.per_config
        if self.groups is None:
            y = copies[self.active](x)
            return y if then is None else then(y)
        # A grouped batch: each configuration's slice through its own copy (and its statistics).
        slices = x.split([n for _, n in self.groups])
        outputs = [copies[i](part) for (i, _), part in zip(self.groups, slices)]
        return torch.cat(outputs if then is None else [then(y) for y in outputs])

    def select(self, config: ChannelConfig) -> nn.Module:
        """``config``'s own copy, a plain module of the wrapped type."""
        return self.per_config[config.index]

    resolve = select

    def expand_plain(self, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        # Every configuration's copy starts from the plain one.
        return {f"{self.copies_name}.{i}.{name}": tensor.clone() for i in range(len(self.per_config))}


class ConfigNorm(ConfigCopies):
    """Any normalisation layer, kept per channel configuration ("switchable" normalisation).

    Features of an R-only input have other statistics than those of an RGB input all
    through the network, so one shared set of statistics (and affine parameters) fits none
    of them well. Each configuration gets its own copy of ``norm``, all starting equal.
    """

    copies_name = "norms"


class ConfigLayer(ConfigCopies):
    """A layer of the body (a convolution) kept per channel configuration: capacity where the
    configurations compete, at no cost in FLOPs per image (``AnyChannelNet(config_layers=N)``)."""

    copies_name = "layers"


class ConfigBatchNorm2d(ConfigNorm):
    """``BatchNorm2d`` kept per configuration: what our own model's body and stem use."""

    def __init__(self, num_features: int) -> None:
        super().__init__(nn.BatchNorm2d(num_features))


def activate_config(module: nn.Module, config: ChannelConfig) -> None:
    """Point every :class:`PerConfig` module inside ``module`` at ``config``."""
    for m in module.modules():
        if isinstance(m, PerConfig):
            m.active = config.index
            if isinstance(m, ConfigCopies):
                m.groups = None


def activate_groups(module: nn.Module, groups: list[tuple[ChannelConfig, int]]) -> None:
    """Prepare ``module`` for one batch that concatenates ``groups`` (configuration, images) in order.

    Only modules kept as per-configuration copies (:class:`ConfigCopies`) can tell the slices apart; any
    other :class:`PerConfig` module inside ``module`` raises ``TypeError`` (it would apply one
    configuration's weights to all).
    """
    slices = [(config.index, n) for config, n in groups]
    for m in module.modules():
        if isinstance(m, ConfigCopies):
            m.groups = slices
        elif isinstance(m, PerConfig):
            raise TypeError(f"{type(m).__name__} keeps weights per configuration and cannot run a grouped batch")


def select_config(module: nn.Module, config: ChannelConfig) -> nn.Module:
    """A copy of ``module`` with each :class:`PerConfig` module replaced by ``config``'s plain one."""
    resolved = copy.deepcopy(module)
    for parent in list(resolved.modules()):
        for name, child in parent.named_children():
            if isinstance(child, PerConfig):
                setattr(parent, name, child.resolve(config))
    return resolved


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ChannelAdaptiveConv(PerConfig):
    """A convolution over any subset of R, G and B: the dynamic stem, convolution only.

    - Its K kernels are defined over R, G and B; a configuration uses its own planes'
      slices, rescaled by ``3 / C`` (channel dropout with rescaling), so each plane keeps
      its identity whatever its position in the input.
    - Kernel attention adds a learned per-configuration bias to the input-driven logits.

    Kernel size, stride, padding, dilation and bias are a plain ``Conv2d``'s, so it can
    replace a backbone's first convolution (:meth:`from_conv`). ``forward(x)`` without a
    configuration uses :attr:`active`. :meth:`resolve` freezes it into a static module.
    """

    def __init__(self, out_channels: int, kernel_size: int | tuple[int, int] = 3, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | None = None, num_kernels: int = 4, bias: bool = False,
                 dilation: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = tuple(k // 2 for k in self.kernel_size) if padding is None else _pair(padding)
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, 3, *self.kernel_size))
        for w in self.weight:
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(num_kernels, out_channels)) if bias else None
        self.attention = KernelAttention(3, num_kernels, reduction=1)
        self.config_bias = nn.Parameter(torch.zeros(len(ALL_CONFIGS), num_kernels))
        self.active = 0

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, num_kernels: int = 4) -> "ChannelAdaptiveConv":
        """The dynamic counterpart of ``conv`` (an RGB ``Conv2d``): same geometry and bias, fresh kernels."""
        if conv.in_channels != 3 or conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"cannot make {conv} channel-adaptive: it needs 3 input channels, groups=1 "
                             "and numeric zero padding")
        return cls(conv.out_channels, conv.kernel_size, conv.stride, conv.padding, num_kernels,
                   bias=conv.bias is not None, dilation=conv.dilation)

    def expand_plain(self, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        # A pretrained RGB kernel (or bias) seeds all K: the RGB output then equals the plain
        # convolution's whatever the attention, and each plane's slice is that plane's kernel.
        if name not in ("weight", "bias"):
            raise KeyError(f"a convolution has no tensor {name!r}")
        k = self.weight.shape[0]
        return {name: tensor.unsqueeze(0).expand(k, *tensor.shape).clone()}

    def _weight_for(self, config: ChannelConfig) -> torch.Tensor:
        return self.weight[:, :, _channel_slice(config)] * (3.0 / config.num_channels)

    def _attention(self, x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
        # Attention sees R, G and B at their own positions, an absent plane as zeros. Only the
        # planes' means reach it, so the zeros are placed after pooling: a zero-padded copy of
        # the images cost a fill, a scatter and its backward over every pixel.
        pooled = x.mean(dim=(2, 3))
        full = pooled.new_zeros(x.shape[0], 3)
        full[:, _channel_slice(config)] = pooled
        return self.attention.normalise(self.attention.from_pooled(full), self.config_bias[config.index])

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        config = config or ALL_CONFIGS[self.active]
        self._check_channels(x, config)
        attn = self._attention(x, config)
        # Training: the im2col form, the fastest to train here. Evaluation: the form the resolved,
        # exported stem computes, so the same rounding, which a deep backbone would otherwise amplify
        # into logit differences beyond the export's parity tolerance.
        return dynamic_conv(x, attn, self._weight_for(config), self.bias, self.stride, self.padding, self.dilation,
                            form="unfold" if self.training else "stacked")

    def _check_channels(self, x: torch.Tensor, config: ChannelConfig) -> None:
        if x.shape[1] != config.num_channels:
            raise ValueError(f"{config} input needs {config.num_channels} channels, got {x.shape[1]}")

    def forward_groups(self, inputs: Sequence[torch.Tensor], configs: Sequence[ChannelConfig]) -> list[torch.Tensor]:
        """``[self(x, c) for x, c in zip(inputs, configs)]`` (the convolution only), up to float error.

        In training, the kernel attention of all groups' images runs as one batch and one matrix
        product mixes every image's kernels over R, G and B; per group remain the planes' means, the
        selection and rescaling of its planes' kernels and the im2col product, whose width is its
        channel count. That cuts a grouped step's operator calls by about a quarter (``--step-time``
        counts them), which is what the CPU spends per operation and a GPU per launch. Nothing is
        copied from the host: a per-image index tensor would make every step wait for a GPU.
        In evaluation, one group at a time in the exported form (see :meth:`forward`).
        """
        if not self.training:
            return [ChannelAdaptiveConv.forward(self, x, c) for x, c in zip(inputs, configs)]
        for x, c in zip(inputs, configs):
            self._check_channels(x, c)
        bounds = [0]
        for x in inputs:
            bounds.append(bounds[-1] + len(x))
        parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        # Each group's plane means at their own positions among R, G and B, zeros elsewhere (as _attention).
        pooled = inputs[0].new_zeros(bounds[-1], 3)
        for x, c, part in zip(inputs, configs, parts):
            pooled[part, _channel_slice(c)] = x.mean(dim=(2, 3))
        config_bias = torch.cat([self.config_bias[c.index].expand(len(x), -1) for x, c in zip(inputs, configs)])
        attention = self.attention.normalise(self.attention.from_pooled(pooled), config_bias)
        k, out_ch = self.weight.shape[:2]
        kernels = (attention @ self.weight.reshape(k, -1)).view(bounds[-1], out_ch, 3, -1)
        bias = None if self.bias is None else attention @ self.bias
        outputs = []
        for x, c, part in zip(inputs, configs, parts):
            # _weight_for's selection (a strided slice, RB every second plane) and 3 / C rescaling, per image.
            own = (kernels[part, :, _channel_slice(c)] * (3.0 / c.num_channels)).reshape(len(x), out_ch, -1)
            outputs.append(unfold_conv(x, own, None if bias is None else bias[part], self.kernel_size,
                                       self.stride, self.padding, self.dilation))
        return outputs

    def resolve(self, config: ChannelConfig) -> "ResolvedConv":
        return ResolvedConv(self, config)


def _channel_slice(config: ChannelConfig) -> slice:
    """``config``'s planes among R, G and B as a slice, not an index list: no index tensor to build, and a
    slice's backward instead of a gather's (any subset of three planes is evenly spaced: RB is every
    second one)."""
    first, *rest = config.indices
    return slice(first, config.indices[-1] + 1, rest[0] - first if rest else 1)


class ChannelAdaptiveStem(ChannelAdaptiveConv):
    """Our own model's stem: :class:`ChannelAdaptiveConv`, then batch norm kept per
    configuration (:class:`ConfigBatchNorm2d`), then ReLU. :meth:`resolve` freezes all of it."""

    def __init__(self, out_channels: int, kernel_size: int = 3, stride: int = 1, num_kernels: int = 4) -> None:
        super().__init__(out_channels, kernel_size, stride, num_kernels=num_kernels)
        self.norm = ConfigBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
        return F.relu(self.norm.select(config)(super().forward(x, config)))

    def forward_groups(self, inputs: Sequence[torch.Tensor], configs: Sequence[ChannelConfig]) -> list[torch.Tensor]:
        """``[self(x, c) for x, c in zip(inputs, configs)]``: the convolutions batched where they can be
        (:meth:`ChannelAdaptiveConv.forward_groups`), then each group's own norm and ReLU."""
        return [F.relu(self.norm.select(c)(y)) for y, c in zip(super().forward_groups(inputs, configs), configs)]

    def resolve(self, config: ChannelConfig) -> "ResolvedStem":
        return ResolvedStem(self, config)


class ResolvedConv(nn.Module):
    """:class:`ChannelAdaptiveConv` frozen for one configuration: only that configuration's weights."""

    def __init__(self, conv: ChannelAdaptiveConv, config: ChannelConfig) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        with torch.no_grad():
            # Stacked once here, so the graph holds a plain convolution weight.
            self.weight = nn.Parameter(stack_kernels(conv._weight_for(config)).clone())
            self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
            # Attention sees only present planes: keep fc1's columns for them, fold the configuration's bias in.
            self.attention = copy.deepcopy(conv.attention)
            self.attention.fc1 = nn.Linear(config.num_channels, conv.attention.fc1.out_features)
            self.attention.fc1.weight.copy_(conv.attention.fc1.weight[:, _channel_slice(config)])
            self.attention.fc1.bias.copy_(conv.attention.fc1.bias)
            self.attention.fc2.bias.add_(conv.config_bias[config.index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_stacked(x, self.attention(x), self.weight, self.bias, self.stride, self.padding, self.dilation)


class ResolvedStem(ResolvedConv):
    """:class:`ChannelAdaptiveStem` frozen for one configuration."""

    def __init__(self, stem: ChannelAdaptiveStem, config: ChannelConfig) -> None:
        super().__init__(stem, config)
        self.norm = stem.norm.select(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(super().forward(x)))
