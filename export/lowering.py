"""Export-time lowering: a convolution with a tiny output map becomes a gather and one matrix product.

onnxruntime's CPU convolution kernels are slow on maps of a few pixels. Measured at batch 32 on
one thread, a 3x3 convolution from 384 to 384 channels on 2x2 maps took 8.5 ms, while the
same products written as one matrix product took 2.5 ms (and about the same at batch 1). Such
a convolution is exactly an im2col gather followed by one GEMM, which is what
:func:`lower_small_convs` writes into the module before export: same products, another
summation order, standard ONNX operators (Pad, Transpose, Gather, MatMul), batch kept dynamic.
The parity gate then checks the graph against the untouched model like any other.

It is opt-in (``export --lower``): each lowered convolution adds a few small operators, so at
batch 1 a model with many tiny-map convolutions gets slower (torchvision's ResNet34 at 32 px,
18 of them). It pays off for batched CPU serving of a model with few, wide ones, such as the
task-1 network's last stage.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Convolutions whose output map has at most this many positions are lowered.
MAX_POSITIONS = 4


class Im2colConv2d(nn.Module):
    """``conv`` on inputs of spatial size ``in_size``, as a gather of input columns and one matmul."""

    def __init__(self, conv: nn.Conv2d, in_size: tuple[int, int]) -> None:
        super().__init__()
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        height, width = in_size
        self.out_size = ((height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1)
        self.padding = (pw, pw, ph, ph)
        padded_width = width + 2 * pw
        positions = [(oy * sh, ox * sw) for oy in range(self.out_size[0]) for ox in range(self.out_size[1])]
        # Taps that read only padding at every output position contribute nothing: leave them out
        # (on a 1x1 map a 3x3 kernel keeps only its centre).
        taps = [(i, j) for i in range(kh) for j in range(kw)
                if any(ph <= y + i < ph + height and pw <= x + j < pw + width for y, x in positions)]
        # Row (position, tap) of the columns reads this pixel of the padded, flattened input.
        index = [(y + i) * padded_width + x + j for y, x in positions for i, j in taps]
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        # (out, in, kh, kw) -> (taps * in, out): rows in the columns' (tap, channel) order.
        kept = torch.stack([conv.weight.detach()[:, :, i, j] for i, j in taps])  # taps, out, in
        self.register_buffer("weight", kept.permute(0, 2, 1).reshape(-1, conv.out_channels).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.out_size
        pixels = F.pad(x, self.padding).flatten(2).transpose(1, 2)  # N, padded H*W, C
        columns = pixels.index_select(1, self.index).reshape(-1, self.weight.shape[0])  # N*H*W, taps*C
        y = columns @ self.weight
        if self.bias is not None:
            y = y + self.bias
        # Contiguous, so later views of it (flatten after pooling) export as Reshape, not as_strided arithmetic.
        return y.reshape(-1, height, width, y.shape[1]).permute(0, 3, 1, 2).contiguous()


def _lowerable(conv: nn.Conv2d) -> bool:
    return (conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and conv.kernel_size != (1, 1))


def lower_small_convs(module: nn.Module, example: torch.Tensor,
                      max_positions: int = MAX_POSITIONS) -> tuple[nn.Module, int]:
    """A copy of ``module`` whose convolutions with at most ``max_positions`` output pixels
    (for inputs shaped like ``example``) are :class:`Im2colConv2d`; and how many were lowered.

    1x1 convolutions are left alone: they are already a matrix product for onnxruntime.
    """
    module = copy.deepcopy(module).eval()
    in_sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_conv: nn.Module, args: tuple, output: torch.Tensor) -> None:
            height, width = output.shape[-2:]
            if height * width <= max_positions:
                in_sizes.setdefault(name, tuple(args[0].shape[-2:]))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in module.named_modules()
             if name and isinstance(m, nn.Conv2d) and _lowerable(m)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    for name, in_size in in_sizes.items():
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent), leaf, Im2colConv2d(module.get_submodule(name), in_size))
    return module, len(in_sizes)
