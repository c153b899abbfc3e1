"""Decode a dataset once into uint8 arrays, cached on disk, with a fingerprint of its training split."""
from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import InvalidImageError
from runtime.preprocess import load_rgb

from . import synthetic
from .sources import SPLITS, SYNTHETIC, DatasetError, DatasetSource, Sample, discover

DEFAULT_CACHE_DIR = Path("artifacts/cache")
_CACHE_FORMAT = 1


@dataclass
class Split:
    images: np.ndarray  # N x H x W x 3, uint8 RGB
    labels: np.ndarray  # N, int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """Decoded splits, class names and a fingerprint identifying the training data."""

    name: str
    class_names: tuple[str, ...]
    image_size: int
    splits: dict[str, Split]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode(sample: Sample, size: int) -> np.ndarray:
    try:
        return load_rgb(sample.path, size)
    except InvalidImageError as exc:
        raise DatasetError(f"{sample.origin}: cannot use {sample.path}: {exc}") from None


def _source_key(source: DatasetSource, size: int) -> str:
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{source.layout}|{source.root.resolve()}|{size}".encode())
    for split in SPLITS:
        for s in source.splits[split].samples:
            try:
                st = s.path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{split}|{s.path}|{s.label}|{stamp}\n".encode())
    return digest.hexdigest()[:20]


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the decoded training pixels and labels: what a model was trained on."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels.astype(np.int64)).data)
    return digest.hexdigest()


def _load_cached(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged cache is rebuilt, never trusted


def _decode_source(source: DatasetSource, size: int, progress=None) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    # Check every file exists first, so a missing one is reported before minutes of decoding.
    for split in SPLITS:
        for s in source.splits[split].samples:
            if not s.path.is_file():
                raise DatasetError(f"{s.origin}: image file {s.path} does not exist")
    workers = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        for split in SPLITS:
            samples = source.splits[split].samples
            images = list(pool.map(lambda s: _decode(s, size), samples))
            if progress is not None:
                progress(split, len(samples))
            arrays[f"{split}_images"] = np.stack(images)
            arrays[f"{split}_labels"] = np.asarray([s.label for s in samples], dtype=np.int64)
    arrays["class_names"] = np.asarray(json.dumps(list(source.class_names)))
    return arrays


def load_dataset(
    data: "str | os.PathLike[str] | None" = None,
    image_size: int | None = None,
    cache_dir: "str | os.PathLike[str]" = DEFAULT_CACHE_DIR,
    seed: int = 0,
    progress=None,
) -> Dataset:
    """Load the embedded synthetic set (``data`` None or ``"synthetic"``) or a dataset folder.

    Every image is decoded, converted to RGB and resized up front, so a bad file stops the
    run before training with a message naming the file and its list line.
    """
    cache_dir = Path(cache_dir)
    if data is None or str(data) == SYNTHETIC:
        size = image_size or 32
        name = SYNTHETIC
        path = cache_dir / f"synthetic-v{synthetic.VERSION}-seed{seed}-{size}px.npz"
        arrays = _load_cached(path)
        if arrays is None:
            arrays = {}
            for split in SPLITS:
                arrays[f"{split}_images"], arrays[f"{split}_labels"] = synthetic.generate(split, seed, size)
            arrays["class_names"] = np.asarray(json.dumps(list(synthetic.CLASS_NAMES)))
            _atomic_save_npz(path, **arrays)
    else:
        source = discover(data)
        size = image_size or 64
        name = Path(data).resolve().name
        path = cache_dir / f"{name}-{_source_key(source, size)}-{size}px.npz"
        arrays = _load_cached(path)
        if arrays is None:
            arrays = _decode_source(source, size, progress)
            _atomic_save_npz(path, **arrays)
    class_names = tuple(json.loads(str(arrays["class_names"])))
    splits = {s: Split(arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}
    for split_name, split in splits.items():
        bad = split.labels[(split.labels < 0) | (split.labels >= len(class_names))]
        if len(bad):
            raise DatasetError(f"{split_name} split has label {int(bad[0])} outside 0..{len(class_names) - 1}")
    fp = fingerprint(splits["train"].images, splits["train"].labels)
    return Dataset(name, class_names, size, splits, fp)
