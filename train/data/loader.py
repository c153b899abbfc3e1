"""Batches from cached uint8 arrays: channel selection, augmentation and normalisation in torch.

A split in memory is one ``N x 3 x H x W`` uint8 tensor (on the training device when that is
a GPU), so batching is pure indexing. A split memory-mapped from the on-disk cache is read a
batch at a time with ``pread``: the kernel's page cache keeps hot files as fast as memory,
and the process's own memory does not grow with the number of images. Augmentation and
normalisation run wherever the batch is, so on a GPU they run on the GPU.
"""
from __future__ import annotations

import functools
import os
from typing import Iterator, Sequence

import numpy as np
import torch

from runtime.channels import ChannelConfig

from .cache import Split


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without making the host wait for the GPU.

    A plain copy from pageable memory to CUDA synchronises the stream: done a few times per
    group, the host could never prepare the next batch while the GPU runs the current step.
    """
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.lru_cache(maxsize=64)
def _mean_std(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    # Built outside inference mode: a cached inference tensor could not be saved for a backward pass.
    with torch.inference_mode(False):
        as_tensor = lambda v: to_device(torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1), device)  # noqa: E731
        return as_tensor(mean), as_tensor(std)


def select_channels(x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Planes ``indices`` of ``N x C x H x W`` ``x``: a strided view when they are evenly spaced
    (every configuration's are), so no index tensor is copied to a GPU."""
    indices = list(indices)
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    in_range = 0 <= indices[0] and indices[-1] < x.shape[1]  # else list indexing raises, as it should
    if in_range and step > 0 and indices == list(range(indices[0], indices[-1] + 1, step)):
        return x[:, indices[0] : indices[-1] + 1 : step]
    return x[:, indices]


def normalize(x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """``N x C x H x W`` uint8 planes of ``config`` to normalised float, by channel identity."""
    mean, std = _mean_std(tuple(config.mean), tuple(config.std), x.device)
    return (x.float() / 255.0 - mean) / std


def augment_params(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (``n x 2``) and flips (``n``) for :func:`apply_augment`, drawn from ``generator``.

    Drawn for a whole global batch, so every rank slices the same parameters for its images.
    """
    pad = max(1, size // 8)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def apply_augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop after reflect padding (1/8 of the side) and flip, as one gather on ``x``'s device (float out)."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    offsets, flips = to_device(offsets, x.device), to_device(flips, x.device)
    ys = torch.arange(h, device=x.device).view(1, h) + offsets[:, :1] - pad
    xs = torch.arange(w, device=x.device).view(1, w) + offsets[:, 1:] - pad
    xs = torch.where(flips.view(n, 1), xs.flip(1), xs)
    # Reflect padding without building the padded copy: -k -> k, (size-1)+k -> (size-1)-k.
    ys = (h - 1) - ((h - 1) - ys.abs()).abs()
    xs = (w - 1) - ((w - 1) - xs.abs()).abs()
    rows = torch.arange(n, device=x.device).view(n, 1, 1)
    out = x[rows, :, ys.view(n, h, 1), xs.view(n, 1, w)]  # N x h x w x C
    return out.permute(0, 3, 1, 2).float()


class DiskRows:
    """Rows of a C-contiguous memory-mapped ``.npy`` array, read with ``pread`` (no mapping kept).

    Reading through the mapping would leave every touched page counted in the process's
    resident memory; ``pread`` copies only the batch, and the page cache does the rest.
    """

    def __init__(self, array: np.memmap) -> None:
        root = array
        while isinstance(root.base, np.ndarray):
            root = root.base
        if not (isinstance(root, np.memmap) and array.flags.c_contiguous and root.filename):
            raise ValueError("DiskRows needs a C-contiguous view of a file-backed np.memmap")
        start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        self.path = root.filename
        self.offset = int(root.offset) + start
        self.shape = tuple(array.shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * array.dtype.itemsize
        self.dtype = array.dtype
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, idx: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``idx`` (in that order); consecutive indices are read in one call."""
        idx = np.asarray(idx, dtype=np.int64)
        if out is None:
            out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(idx), -1).view(np.uint8)
        order = np.argsort(idx, kind="stable")
        s = idx[order]
        if len(s) and (s[0] < 0 or s[-1] >= self.shape[0]):
            raise IndexError(f"row index out of range 0..{self.shape[0] - 1}")
        breaks = np.flatnonzero(np.diff(s) != 1) + 1
        for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(s)]])):
            data = os.pread(self._fd, int(b - a) * self.row_bytes, self.offset + int(s[a]) * self.row_bytes)
            flat[order[a:b]] = np.frombuffer(data, np.uint8).reshape(int(b - a), self.row_bytes)
        return out


#: A cached split up to this size is copied whole onto a GPU (indexing and augmenting there);
#: a larger one is read per batch.
GPU_RESIDENT_BYTES = 2 << 30


class SplitTensors:
    """A split's images and labels, batched as ``N x 3 x H x W`` uint8 tensors on ``device``.

    In-memory arrays become one tensor (moved to ``device``, so a GPU indexes and augments
    its own copy; so does a cached split of up to ``GPU_RESIDENT_BYTES`` on a GPU); a
    memory-mapped cache array otherwise stays on disk and is read per batch (into pinned
    memory and copied without blocking, on a GPU).
    """

    def __init__(self, split: Split, device: "torch.device | str" = "cpu") -> None:
        self.device = torch.device(device)
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        self._disk: DiskRows | None = None
        on_gpu = self.device.type == "cuda" and split.images.nbytes <= GPU_RESIDENT_BYTES
        if isinstance(split.images, np.memmap) and not on_gpu:
            try:
                self._disk = DiskRows(split.images)
            except ValueError:
                self._disk = None
        if self._disk is None:
            images = torch.from_numpy(np.ascontiguousarray(np.asarray(split.images).transpose(0, 3, 1, 2)))
            self.images = images.to(self.device)
        self._labels_on_device = self.labels.to(self.device)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def on_disk(self) -> bool:
        return self._disk is not None

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Images ``idx`` as ``len(idx) x 3 x H x W`` uint8 on the split's device."""
        if self._disk is None:
            return self.images[to_device(idx, self.images.device)]
        rows = torch.from_numpy(self._disk.read(idx.numpy())).permute(0, 3, 1, 2)
        return to_device(rows, self.device)

    def take_labels(self, idx: torch.Tensor) -> torch.Tensor:
        return self._labels_on_device[to_device(idx, self._labels_on_device.device)]

    def batches(self, batch_size: int, config: ChannelConfig) -> Iterator[tuple[torch.Tensor, torch.Tensor, ChannelConfig]]:
        """``(inputs, labels, config)`` in order, normalised, for evaluation.

        Training batches (shuffled, augmented, sharded across ranks) come from a strategy's
        ``steps`` (``train.strategies``).
        """
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            yield normalize(select_channels(self.take(idx), config.indices), config), self.take_labels(idx), config

    @property
    def image_size(self) -> int:
        return int(self._disk.shape[1] if self._disk is not None else self.images.shape[-1])
