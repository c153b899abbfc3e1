"""Export-time lowering of convolutions on tiny maps (export.lowering)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from export.lowering import Im2colConv2d, lower_small_convs


@pytest.mark.parametrize("in_size,kernel,stride,padding,bias", [
    ((2, 2), 3, 1, 1, False), ((4, 4), 3, 2, 1, True), ((1, 1), 3, 1, 1, True), ((3, 5), (3, 2), (2, 1), (1, 0), True),
    ((2, 2), 3, 2, 1, True), ((1, 2), 5, 1, 2, False),
])
def test_im2col_conv_equals_the_convolution(in_size, kernel, stride, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel, stride, padding, bias=bias)
    x = torch.randn(3, 6, *in_size)
    lowered = Im2colConv2d(conv, in_size)
    torch.testing.assert_close(lowered(x), conv(x), rtol=1e-5, atol=1e-5)


def test_taps_that_only_read_padding_are_dropped():
    conv = nn.Conv2d(4, 6, 3, 1, 1)
    assert Im2colConv2d(conv, (1, 1)).weight.shape == (4, 6)  # the centre tap alone
    assert Im2colConv2d(conv, (2, 2)).weight.shape == (9 * 4, 6)  # every tap reaches some pixel


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Conv2d(3, 8, 3, 2, 1)       # 8x8 -> 4x4: 16 positions, kept
        self.small = nn.Conv2d(8, 8, 3, 2, 1)     # 4x4 -> 2x2: 4 positions, lowered
        self.point = nn.Conv2d(8, 8, 1)           # 1x1 kernels are a matmul already, kept
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.point(self.small(self.big(x))).mean((2, 3)))


def test_only_tiny_output_maps_are_lowered_and_the_model_is_unchanged():
    model = Tiny().eval()
    lowered, count = lower_small_convs(model, torch.zeros(1, 3, 8, 8))
    assert count == 1 and isinstance(lowered.small, Im2colConv2d)
    assert isinstance(lowered.big, nn.Conv2d) and isinstance(lowered.point, nn.Conv2d)
    assert isinstance(model.small, nn.Conv2d)  # the original is left alone
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(lowered(x), model(x), rtol=1e-5, atol=1e-5)
