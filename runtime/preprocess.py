"""Decoding and preprocessing shared by training, export checks and the runtime.

Numpy and Pillow only. Training caches :func:`load_rgb` output as uint8 and the runtime
runs the same function, so both sides see identical pixels.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .channels import ChannelConfig
from .errors import InvalidImageError

#: How images are resized to the model's input size, for training and inference alike.
RESIZE_MODE = "resize_shorter_center_crop"
INTERPOLATION = "bilinear"
_PIL_INTERPOLATION = Image.Resampling.BILINEAR

#: Images whose declared size exceeds this many pixels are refused before decoding.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def open_image(path: "str | os.PathLike[str]") -> Image.Image:
    """Open and fully decode an image file, refusing decompression bombs before decoding."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidImageError(
                    f"{path}: declared size {width}x{height} exceeds the limit of "
                    f"{MAX_IMAGE_PIXELS} pixels (possible decompression bomb)"
                )
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA")
    except InvalidImageError:
        raise
    except FileNotFoundError as exc:
        raise InvalidImageError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{path}: not a readable image ({exc})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, RGBA, CMYK, P, I;16, ...) to RGB."""
    if img.width == 0 or img.height == 0:
        raise InvalidImageError("zero-sized image")
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite on black so transparent pixels do not leak hidden colour.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def resize(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``."""
    if img.size == (size, size):
        return img
    return ImageOps.fit(img, (size, size), method=_PIL_INTERPOLATION)


def load_rgb(path: "str | os.PathLike[str]", size: int) -> np.ndarray:
    """Decode a file into an ``size x size x 3`` uint8 RGB array."""
    return np.asarray(resize(to_rgb(open_image(path)), size), dtype=np.uint8)


def normalize(planes: np.ndarray, config: ChannelConfig, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> np.ndarray:
    """Map ``N x C x H x W`` values in [0, 1] to the model's input, by channel identity.

    ``mean`` and ``std`` default to ``config``'s; the runtime passes the values a graph's
    metadata records, which export wrote from the same table.
    """
    mean_ = np.asarray(config.mean if mean is None else mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_ = np.asarray(config.std if std is None else std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((planes.astype(np.float32) - mean_) / std_).astype(np.float32)


def uint8_batch_to_input(images: np.ndarray, config: ChannelConfig, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None) -> np.ndarray:
    """``N x H x W x 3`` uint8 RGB to the normalised, contiguous ``N x C x H x W`` float32 model input.

    Same operations in the same order as training's torch loader (select, /255, -mean, /std),
    so the float32 results are bit-identical.
    """
    planes = images[..., list(config.indices)].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(normalize(planes.astype(np.float32) / 255.0, config, mean, std))

