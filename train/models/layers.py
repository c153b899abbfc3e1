"""Small building blocks: dynamic convolution and the channel-adaptive stem."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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
        return self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        z = self.logits(x)
        if bias is not None:
            z = z + bias
        return torch.softmax(z / self.temperature, dim=1)


def dynamic_conv_sum(
    x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: int, padding: int,
) -> torch.Tensor:
    """``sum_k a_k * conv(x, W_k)``: one convolution with the K kernels stacked on the output axis.

    Exact, because convolution is linear in its weights, and it keeps a dynamic batch in
    ONNX (no batch-sized ``group``). ``weight`` is ``K x O x I x kh x kw``.
    """
    k, out_ch = weight.shape[:2]
    y = F.conv2d(x, weight.reshape(k * out_ch, *weight.shape[2:]),
                 None if bias is None else bias.reshape(-1), stride=stride, padding=padding)
    y = y.view(y.shape[0], k, out_ch, y.shape[2], y.shape[3])
    return (y * attention[:, :, None, None, None]).sum(dim=1)


def dynamic_conv_aggregated(
    x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: int, padding: int,
) -> torch.Tensor:
    """The textbook definition: per-sample kernel ``sum_k a_k W_k``, batch folded into groups."""
    b = x.shape[0]
    k, out_ch, in_ch, kh, kw = weight.shape
    w = torch.einsum("bk,koihw->boihw", attention, weight).reshape(b * out_ch, in_ch, kh, kw)
    bb = None if bias is None else (attention @ bias).reshape(-1)
    y = F.conv2d(x.reshape(1, b * in_ch, *x.shape[2:]), w, bb, stride=stride, padding=padding, groups=b)
    return y.view(b, out_ch, y.shape[2], y.shape[3])


def dynamic_conv_unfold(
    x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: int, padding: int,
) -> torch.Tensor:
    """The aggregated-kernel definition as im2col and one batched matmul: exact, and for few
    input channels (a stem) several times faster to train on a CPU than the other forms,
    since no gradient flows through the unfolded input. Not used in exported graphs.
    """
    b, _, h, w = x.shape
    k, out_ch, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # B x (I*kh*kw) x L
    kernels = (attention @ weight.reshape(k, -1)).view(b, out_ch, -1)
    y = torch.bmm(kernels, cols)
    if bias is not None:
        y = y + (attention @ bias).unsqueeze(-1)
    return y.view(b, out_ch, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1)


def dynamic_conv_stacked_input(
    x: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: int, padding: int,
) -> torch.Tensor:
    """``sum_k conv(a_k x, W_k)`` as one convolution over the K scaled copies of the input.

    Exact, exports with a dynamic batch, and for a stem (few input channels, many output
    channels) it avoids the K-times-wider intermediate of :func:`dynamic_conv_sum`: this is
    the form exported graphs use.
    """
    y = F.conv2d(stack_scaled_input(x, attention), stack_kernels(weight), None, stride=stride, padding=padding)
    return y if bias is None else y + (attention @ bias)[:, :, None, None]


def stack_scaled_input(x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``B x C x H x W`` and ``B x K`` to ``B x (K*C) x H x W``: copy k holds ``a_k * x``."""
    return (attention[:, :, None, None, None] * x[:, None]).flatten(1, 2)


def stack_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``K x O x C x kh x kw`` to ``O x (K*C) x kh x kw``, matching :func:`stack_scaled_input`."""
    k, out_ch, in_ch = weight.shape[:3]
    return weight.transpose(0, 1).reshape(out_ch, k * in_ch, *weight.shape[3:])


DYNAMIC_CONV_FORMS = {"sum": dynamic_conv_sum, "aggregated": dynamic_conv_aggregated, "unfold": dynamic_conv_unfold,
                      "stacked": dynamic_conv_stacked_input}


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
        return DYNAMIC_CONV_FORMS[self.form](x, self.attention(x), self.weight, self.bias, self.stride, self.padding)


class ConfigBatchNorm2d(nn.Module):
    """Batch norm kept per channel configuration ("switchable" batch norm).

    Features of an R-only input have other statistics than those of an RGB input all
    through the network, so one shared set of running statistics fits none of them well.
    The owning model sets :attr:`active` before each forward pass; :meth:`select` returns
    one configuration's plain ``BatchNorm2d`` for export.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in ALL_CONFIGS)
        self.active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.active](x)

    def select(self, config: ChannelConfig) -> nn.BatchNorm2d:
        return self.norms[config.index]


def activate_config(module: nn.Module, config: ChannelConfig) -> None:
    """Point every :class:`ConfigBatchNorm2d` inside ``module`` at ``config``."""
    for m in module.modules():
        if isinstance(m, ConfigBatchNorm2d):
            m.active = config.index


def select_config(module: nn.Module, config: ChannelConfig) -> nn.Module:
    """A copy of ``module`` with each :class:`ConfigBatchNorm2d` replaced by ``config``'s own."""
    import copy

    resolved = copy.deepcopy(module)
    for parent in list(resolved.modules()):
        for name, child in parent.named_children():
            if isinstance(child, ConfigBatchNorm2d):
                setattr(parent, name, child.select(config))
    return resolved


class ChannelAdaptiveStem(nn.Module):
    """The channel-dependent branch of our model: a dynamic stem that knows which planes it sees.

    - Its K kernels are defined over R, G and B; a configuration uses its own planes'
      slices, rescaled by ``3 / C`` (channel dropout with rescaling), so each plane keeps
      its identity whatever its position in the input.
    - Kernel attention adds a learned per-configuration bias to the input-driven logits.
    - Batch norm is kept per configuration, as the statistics differ (:class:`ConfigBatchNorm2d`).

    :meth:`resolve` freezes all of this for one configuration into a static module.
    """

    def __init__(self, out_channels: int, kernel_size: int = 3, stride: int = 1, num_kernels: int = 4) -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, 3, kernel_size, kernel_size))
        for w in self.weight:
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        self.attention = KernelAttention(3, num_kernels, reduction=1)
        self.config_bias = nn.Parameter(torch.zeros(len(ALL_CONFIGS), num_kernels))
        self.norm = ConfigBatchNorm2d(out_channels)

    def _weight_for(self, config: ChannelConfig) -> torch.Tensor:
        return self.weight[:, :, list(config.indices)] * (3.0 / config.num_channels)

    def _attention_input(self, x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
        # Place the present planes at their RGB positions, zeros elsewhere.
        full = x.new_zeros(x.shape[0], 3, *x.shape[2:])
        full[:, list(config.indices)] = x
        return full

    def forward(self, x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
        if x.shape[1] != config.num_channels:
            raise ValueError(f"{config} input needs {config.num_channels} channels, got {x.shape[1]}")
        attn = self.attention(self._attention_input(x, config), self.config_bias[config.index])
        # Training uses the im2col form (fast here); the resolved, exported stem the stacked-input form.
        y = dynamic_conv_unfold(x, attn, self._weight_for(config), None, self.stride, self.padding)
        return F.relu(self.norm.select(config)(y))

    def resolve(self, config: ChannelConfig) -> "ResolvedStem":
        return ResolvedStem(self, config)


class ResolvedStem(nn.Module):
    """:class:`ChannelAdaptiveStem` frozen for one configuration: only that configuration's weights."""

    def __init__(self, stem: ChannelAdaptiveStem, config: ChannelConfig) -> None:
        super().__init__()
        self.stride, self.padding = stem.stride, stem.padding
        with torch.no_grad():
            # Stacked once here, so the graph holds a plain convolution weight.
            self.weight = nn.Parameter(stack_kernels(stem._weight_for(config)).clone())
            # Attention sees only present planes: keep fc1's columns for them, fold the bias in.
            fc1 = nn.Linear(config.num_channels, stem.attention.fc1.out_features)
            fc1.weight.copy_(stem.attention.fc1.weight[:, list(config.indices)])
            fc1.bias.copy_(stem.attention.fc1.bias)
            fc2 = nn.Linear(stem.attention.fc2.in_features, stem.attention.fc2.out_features)
            fc2.weight.copy_(stem.attention.fc2.weight)
            fc2.bias.copy_(stem.attention.fc2.bias + stem.config_bias[config.index])
        self.fc1, self.fc2, self.temperature = fc1, fc2, stem.attention.temperature
        self.norm = stem.norm.select(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))) / self.temperature, dim=1)
        y = F.conv2d(stack_scaled_input(x, attn), self.weight, None, stride=self.stride, padding=self.padding)
        return F.relu(self.norm(y))
