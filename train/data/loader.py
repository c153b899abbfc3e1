"""Batches from cached uint8 arrays: channel selection, augmentation and normalisation in torch."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from runtime.channels import ChannelConfig

from .cache import Split


def normalize(x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """``N x C x H x W`` uint8 planes of ``config`` to normalised float, by channel identity."""
    mean = torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after reflect padding (1/8 of the side) and horizontal flip, per sample."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x, dtype=torch.float32)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


class SplitTensors:
    """A split held as one ``N x 3 x H x W`` uint8 tensor, so batching is pure indexing."""

    def __init__(self, split: Split) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(split.images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(
        self,
        batch_size: int,
        config: ChannelConfig,
        generator: torch.Generator | None = None,
        train: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, ChannelConfig]]:
        """``(inputs, labels, config)``: shuffled and augmented when ``train``, else in order."""
        order = torch.randperm(len(self), generator=generator) if train else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            if train and len(idx) < 2:
                continue  # batch norm cannot train on a single sample
            planes = self.images[idx][:, list(config.indices)]
            x = augment(planes, generator) if train else planes
            yield normalize(x, config), self.labels[idx], config
