"""Turning what an app passes in (files, PIL images, arrays, lists) into a model input batch.

The rules, in order:

1. Files are decoded and PIL images (any mode) converted to RGB exactly as training does
   (:func:`runtime.preprocess.to_rgb`): they are 3-channel inputs. Grayscale becomes R = G = B.
2. Arrays are ``H x W`` (1 channel), ``H x W x C`` or a batch ``N x H x W x C``, with C in 1..3,
   of dtype uint8, or float in [0, 1] (converted to uint8 as ``round(x * 255)``, so a float image
   and its uint8 twin give identical results).
3. ``channels`` names what the input holds. A 3-channel input is RGB; with ``channels="RG"`` its
   R and G planes are used. A 1- or 2-channel input holds exactly the planes ``channels`` names;
   without ``channels`` it is ambiguous, unless the artifacts hold one graph of that channel count.
4. Every image is resized like training (shorter side, centre crop, bilinear) on an RGB canvas,
   then its planes are selected, scaled by 1/255 and normalised per channel identity.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from .channels import CONFIG_NAMES, ChannelConfig, configs_with
from .errors import AmbiguousChannelsError, ChannelMismatchError, InvalidImageError
from .preprocess import MAX_IMAGE_PIXELS, open_image, resize, to_rgb, uint8_batch_to_input

#: One image: a file path, a PIL image, or an array (H x W, H x W x C, or a batch N x H x W x C).
ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
#: What ``predict`` takes: one image input or a list of them.
Inputs = Union[ImageInput, Sequence[ImageInput]]

#: A loaded image: an RGB PIL image (files, PIL inputs) or an H x W x C uint8 array.
Loaded = Union[Image.Image, np.ndarray]


def load_inputs(inputs: Inputs) -> list[Loaded]:
    """Decode and validate every input, without resizing; raises :class:`InvalidImageError` subclasses."""
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    images: list[Loaded] = []
    for i, item in enumerate(items):
        label = f"input {i}" if len(items) > 1 else "input"
        images.extend(_load_one(item, label))
    if not images:
        raise InvalidImageError("empty batch: no images were given")
    return images


def _load_one(item: ImageInput, label: str) -> list[Loaded]:
    if isinstance(item, (str, os.PathLike)):
        return [to_rgb(open_image(item))]
    if isinstance(item, Image.Image):
        width, height = item.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InvalidImageError(f"{label}: {width}x{height} exceeds the limit of {MAX_IMAGE_PIXELS} pixels")
        return [to_rgb(item)]
    if isinstance(item, np.ndarray):
        return list(_array_to_uint8(item, label))
    raise InvalidImageError(f"{label}: unsupported type {type(item).__name__}; pass a file path, "
                            "a PIL image or a numpy array (H x W, H x W x C or N x H x W x C)")


def _array_to_uint8(arr: np.ndarray, label: str) -> np.ndarray:
    """Validate an array and return it as ``N x H x W x C`` uint8."""
    if arr.ndim == 2:
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:
        arr = arr[None]
    elif arr.ndim != 4:
        raise InvalidImageError(f"{label}: array of shape {arr.shape}; expected H x W, H x W x C or N x H x W x C")
    n, h, w, c = arr.shape
    if n == 0:
        raise InvalidImageError(f"{label}: empty batch (shape {arr.shape})")
    if h == 0 or w == 0:
        raise InvalidImageError(f"{label}: zero-sized image (shape {arr.shape})")
    if not 1 <= c <= 3:
        raise InvalidImageError(f"{label}: {c} channels (shape {arr.shape}); expected 1 to 3 in the last axis "
                                "(for RGBA or other modes pass a PIL image)")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidImageError(f"{label}: dtype {arr.dtype}; expected uint8, or float in [0, 1]")
    if not np.isfinite(arr).all():
        raise InvalidImageError(f"{label}: contains NaN or infinite values")
    low, high = float(arr.min()), float(arr.max())
    if low < 0.0 or high > 1.0:
        raise InvalidImageError(f"{label}: float values span [{low:g}, {high:g}]; expected [0, 1] "
                                "(divide 0..255 floats by 255, or pass uint8)")
    # Round as training's uint8 pipeline would have stored the pixel, so x = u / 255 maps back to u.
    return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)


def num_channels(image: Loaded) -> int:
    return 3 if isinstance(image, Image.Image) else int(image.shape[2])


def resolve_config(images: Sequence[Loaded], channels: "str | ChannelConfig | None",
                   exported: Iterable[ChannelConfig]) -> ChannelConfig:
    """The configuration a call's inputs are run through (see the module's rules)."""
    counts = sorted({num_channels(im) for im in images})
    if len(counts) > 1:
        raise ChannelMismatchError(f"inputs in one call have different channel counts {counts}; "
                                   "call once per kind of input")
    n = counts[0]
    if channels is not None:
        config = ChannelConfig.parse(channels)
        if n not in (3, config.num_channels):
            raise ChannelMismatchError(
                f"channels={config.name} names {config.num_channels} channel(s) but the input has {n}: pass an "
                f"RGB input (channels then selects its planes) or one with {config.num_channels} channel(s)")
        return config
    if n == 3:
        return ChannelConfig("RGB")
    exported_n = [c for c in exported if c.num_channels == n]
    if len(exported_n) == 1:
        return exported_n[0]
    choices = ", ".join(c.name for c in configs_with(n))
    raise AmbiguousChannelsError(
        f"a {n}-channel input is ambiguous: say which planes it holds with channels= one of {choices} "
        f"(exported: {', '.join(c.name for c in exported_n) or 'none'}; all configurations: {', '.join(CONFIG_NAMES)})")


def to_canvas(image: Loaded, config: ChannelConfig, size: int) -> np.ndarray:
    """``size x size x 3`` uint8 RGB, resized like training; planes missing from the input are zero.

    A 1- or 2-channel input is placed at its planes' RGB positions and resized on that canvas.
    Pillow resizes each band independently, so its planes come out exactly as an RGB file's would.
    """
    if isinstance(image, np.ndarray):
        if image.shape[2] != 3:
            rgb = np.zeros(image.shape[:2] + (3,), dtype=np.uint8)
            rgb[..., list(config.indices)] = image
            image = rgb
        if image.shape[:2] == (size, size):
            return image
        image = Image.fromarray(np.ascontiguousarray(image), "RGB")
    return np.asarray(resize(image, size), dtype=np.uint8)


def to_model_input(images: Sequence[Loaded], config: ChannelConfig, size: int,
                   mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The ``N x C x size x size`` float32 batch a graph for ``config`` takes."""
    batch = np.stack([to_canvas(im, config, size) for im in images])
    return uint8_batch_to_input(batch, config, mean, std)
