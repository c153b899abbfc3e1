"""Real images for the parity gate (and int8 calibration), decoded exactly as the runtime decodes them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import InvalidImageError
from runtime.preprocess import load_rgb

from .errors import ExportError

#: The shared tiny-imagenet-50 photos next to the checkout, used when present.
REAL_IMAGES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-imagenet-50"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_COUNT = 32


@dataclass(frozen=True)
class ImageSet:
    """``N x H x W x 3`` uint8 RGB images and where they came from (recorded in the manifest)."""

    images: np.ndarray
    label: str


def _listed_files(folder: Path) -> list[Path]:
    """The files of a dataset folder: its val.txt/test.txt list if it has one, else every image in it."""
    for name in ("val.txt", "test.txt", "train.txt"):
        listing = folder / name
        if listing.is_file():
            lines = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()]
            return [folder / ln for ln in lines]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _spread(items: list[Path], count: int) -> list[Path]:
    """``count`` items evenly spaced over the list: lists are sorted by class, we want many classes."""
    if len(items) <= count:
        return items
    return [items[i * len(items) // count] for i in range(count)]


def load_image_folder(folder: "str | Path", image_size: int, count: int = DEFAULT_COUNT) -> ImageSet:
    folder = Path(folder)
    files = _spread(_listed_files(folder), count) if folder.is_dir() else []
    if not files:
        raise ExportError(f"no images found in {folder}")
    try:
        images = np.stack([load_rgb(f, image_size) for f in files])
    except InvalidImageError as exc:
        raise ExportError(f"cannot use parity image: {exc}") from None
    return ImageSet(images, f"images: {folder.name} ({len(files)})")


def synthetic_images(image_size: int, count: int = DEFAULT_COUNT) -> ImageSet:
    """The embedded synthetic validation images (for machines without the shared photos)."""
    from train.data.synthetic import generate

    images, _ = generate("val", 0, image_size)
    return ImageSet(images[:count], f"images: synthetic val ({min(count, len(images))})")


def parity_images(image_size: int, folder: "str | Path | None" = None, count: int = DEFAULT_COUNT) -> ImageSet:
    """Images from ``folder``; by default the shared photos, or the synthetic set without them."""
    if folder is not None:
        return load_image_folder(folder, image_size, count)
    if REAL_IMAGES_DIR.is_dir():
        return load_image_folder(REAL_IMAGES_DIR, image_size, count)
    return synthetic_images(image_size, count)
