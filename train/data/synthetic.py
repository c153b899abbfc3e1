"""The embedded default dataset: coloured shapes on textured backgrounds, made from a seed.

Six classes are told apart by shape alone (their colour is random); four are the same
filled disk in red, green, blue or yellow, told apart by colour alone. So every
configuration keeps the shape classes, but dropping planes merges some colour classes:
R alone cannot tell red from yellow, nor green from blue; RG loses nothing of them.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "square", "triangle", "cross", "ring", "h-stripes", "v-stripes",
    "red-disk", "green-disk", "blue-disk", "yellow-disk",
)
_DISK_COLOURS = {6: (1.0, 0.1, 0.1), 7: (0.1, 1.0, 0.1), 8: (0.1, 0.1, 1.0), 9: (1.0, 1.0, 0.1)}
SPLIT_SIZES = {"train": 150, "val": 60, "test": 60}  # per class: small, so the quick start is quick
VERSION = 2


def _shape_mask(label: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    r = rng.uniform(0.22, 0.36) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    dy, dx = yy - cy, xx - cx
    if label == 0:
        return (np.abs(dy) < r * 0.8) & (np.abs(dx) < r * 0.8)
    if label == 1:
        return (dy > -r) & (dy < r * 0.8) & (np.abs(dx) < (dy + r) * 0.6)
    if label == 2:
        arm = r * 0.3
        return ((np.abs(dy) < arm) & (np.abs(dx) < r)) | ((np.abs(dx) < arm) & (np.abs(dy) < r))
    if label == 3:
        d = np.hypot(dy, dx)
        return (d < r) & (d > r * 0.55)
    if label in (4, 5):
        period = rng.uniform(0.18, 0.3) * size
        axis = yy if label == 4 else xx
        box = (np.abs(dy) < r) & (np.abs(dx) < r)
        return box & (np.mod(axis + rng.uniform(0, period), period) < period / 2)
    return np.hypot(dy, dx) < r


def render(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One ``size x size x 3`` uint8 image of class ``label``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Background: low-contrast coloured noise, so no plane is empty or uninformative.
    base = rng.uniform(0.05, 0.35, size=3)
    img = base + rng.normal(0, 0.06, size=(size, size, 3))
    mask = _shape_mask(label, yy, xx, rng, size)
    if label in _DISK_COLOURS:
        colour = np.asarray(_DISK_COLOURS[label]) * rng.uniform(0.75, 1.0)
        colour = colour + rng.normal(0, 0.05, size=3)
    else:
        colour = rng.uniform(0.45, 1.0, size=3) * rng.permutation([1.0, rng.uniform(0.3, 1.0), rng.uniform(0.0, 1.0)])
        colour = np.maximum(colour, base + 0.35)
    img[mask] = colour + rng.normal(0, 0.04, size=(int(mask.sum()), 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def generate(split: str, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x size x size x 3`` (uint8) and labels ``N`` (int64), balanced and shuffled."""
    split_offset = {"train": 0, "val": 1, "test": 2}[split]
    rng = np.random.default_rng([seed, split_offset, VERSION])
    per_class = SPLIT_SIZES[split]
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    rng.shuffle(labels)
    images = np.stack([render(int(lbl), rng, size) for lbl in labels])
    return images, labels.astype(np.int64)
