"""Decode a dataset once into memory-mapped uint8 arrays on disk, with a fingerprint of its training split.

The cache of one dataset at one size is a folder: ``<split>_images.npy`` (``N x H x W x 3``
uint8, opened with ``np.load(mmap_mode="r")``), ``<split>_labels.npy`` and ``meta.json``
(format, class names, counts, fingerprint). It is built in a temporary folder and renamed
into place, so a crash never leaves a half-written cache that looks whole. Decoding runs
in worker processes, each writing its own rows of the memory-mapped arrays; nothing holds
the whole dataset in memory, so 100,000 images at 224 px (15 GB) train in bounded memory.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.errors import InvalidImageError
from runtime.preprocess import load_rgb

from . import synthetic
from .sources import SPLITS, SYNTHETIC, DatasetError, DatasetSource, Sample, discover

DEFAULT_CACHE_DIR = Path("artifacts/cache")
_CACHE_FORMAT = 2  # 2: a folder of memory-mapped .npy arrays (1 was one .npz, loaded whole)
#: Images per decoding task; below two tasks' worth, decoding stays in this process.
_CHUNK = 256


@dataclass
class Split:
    images: np.ndarray  # N x H x W x 3, uint8 RGB (an np.memmap when it comes from the cache)
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


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read(fh)
        return fh.tell()


def _file_fingerprint(images_path: Path, labels: np.ndarray) -> str:
    """:func:`fingerprint` of an ``.npy`` file's array, read in chunks (the process's memory stays flat)."""
    digest = hashlib.sha256()
    with open(images_path, "rb") as fh:
        fh.seek(_npy_data_offset(images_path))
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
    digest.update(np.ascontiguousarray(labels.astype(np.int64)).data)
    return digest.hexdigest()


def _open_images(path: Path, count: int) -> np.ndarray:
    if count == 0:  # an empty file cannot be mapped
        return np.load(path)
    return np.load(path, mmap_mode="r")


def _load_cached(folder: Path, size: int) -> tuple[dict[str, Split], dict] | None:
    """The cached splits (images memory-mapped) and meta, or None when absent or damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != _CACHE_FORMAT:
            return None
        splits = {}
        for split in SPLITS:
            n = int(meta["counts"][split])
            images = _open_images(folder / f"{split}_images.npy", n)
            labels = np.load(folder / f"{split}_labels.npy")
            if images.shape != (n, size, size, 3) or images.dtype != np.uint8 or labels.shape != (n,):
                return None
            splits[split] = Split(images, labels.astype(np.int64, copy=False))
        return splits, meta
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache is rebuilt, never trusted


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_cache(folder: Path, class_names: tuple[str, ...], labels: dict[str, np.ndarray], size: int,
                 fill: Callable[[Path], None], train_fingerprint: str | None = None) -> None:
    """Build the cache in a temporary folder (``fill`` writes the pre-sized image files), then rename it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for split in SPLITS:
            np.lib.format.open_memmap(tmp / f"{split}_images.npy", "w+", np.uint8,
                                      (len(labels[split]), size, size, 3)).flush()
            np.save(tmp / f"{split}_labels.npy", labels[split].astype(np.int64))
        fill(tmp)
        fp = train_fingerprint or _file_fingerprint(tmp / "train_images.npy", labels["train"])
        meta = {"format": _CACHE_FORMAT, "class_names": list(class_names), "image_size": size,
                "counts": {s: int(len(labels[s])) for s in SPLITS}, "fingerprint": fp}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            _fsync(f)
        if folder.exists():  # damaged, or another process finished first: keep a valid one
            if _load_cached(folder, size) is not None:
                return
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _decode_rows(images_path: str, start: int, items: list[tuple[str, str]], size: int) -> int:
    """Decode ``items`` (path, origin) into rows ``start...`` of the cache file; runs in a worker process."""
    out = np.load(images_path, mmap_mode="r+")
    for i, (path, origin) in enumerate(items):
        out[start + i] = _decode(Sample(Path(path), 0, origin), size)
    out.flush()
    return len(items)


def _decode_workers(total: int) -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)), -(-total // _CHUNK)))


def _decode_into(folder: Path, source: DatasetSource, size: int, show_progress: bool,
                 progress: Callable[[str, int], None] | None) -> None:
    """Decode every split into the pre-sized arrays under ``folder``: chunks in worker processes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(len(source.splits[s].samples) for s in SPLITS)
    workers = _decode_workers(total)
    jobs = []
    for split in SPLITS:
        items = [(str(s.path), s.origin) for s in source.splits[split].samples]
        for start in range(0, len(items), _CHUNK):
            jobs.append((split, str(folder / f"{split}_images.npy"), start, items[start : start + _CHUNK]))
    done = {s: 0 for s in SPLITS}
    with Progress(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not (show_progress and sys.stderr.isatty())) as bar:
        task = bar.add_task("decode", total=total)

        def finished(split: str, n: int) -> None:
            bar.advance(task, n)
            done[split] += n
            if progress is not None and done[split] == len(source.splits[split].samples):
                progress(split, done[split])

        if workers == 1:
            for split, path, start, items in jobs:
                finished(split, _decode_rows(path, start, items, size))
            return
        # fork: the workers need only PIL and numpy, already imported, and start at once.
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_decode_rows, path, start, items, size): split
                       for split, path, start, items in jobs}
            try:
                for future in as_completed(futures):
                    finished(futures[future], future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise


def _check_files(source: DatasetSource) -> None:
    # Every file must exist, so a missing one is reported before minutes of decoding.
    for split in SPLITS:
        for s in source.splits[split].samples:
            if not s.path.is_file():
                raise DatasetError(f"{s.origin}: image file {s.path} does not exist")


def load_dataset(
    data: "str | os.PathLike[str] | None" = None,
    image_size: int | None = None,
    cache_dir: "str | os.PathLike[str]" = DEFAULT_CACHE_DIR,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Load the embedded synthetic set (``data`` None or ``"synthetic"``) or a dataset folder.

    Every image is decoded, converted to RGB and resized once, into the on-disk cache, so a
    bad file stops the run before training with a message naming the file and its list line.
    The splits' images are memory-mapped from that cache. ``progress(split, n)`` is called as
    each split finishes; ``show_progress`` draws a progress bar on a terminal.
    """
    cache_dir = Path(cache_dir)
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image size must be at least 1 pixel, got {image_size}")
    if data is None or str(data) == SYNTHETIC:
        size = 32 if image_size is None else image_size
        name = SYNTHETIC
        folder = cache_dir / f"synthetic-v{synthetic.VERSION}-seed{seed}-{size}px"
        if _load_cached(folder, size) is None:
            arrays = {split: synthetic.generate(split, seed, size) for split in SPLITS}

            def fill(tmp: Path) -> None:
                for split, (images, _) in arrays.items():
                    out = np.load(tmp / f"{split}_images.npy", mmap_mode="r+") if len(images) else None
                    if out is not None:
                        out[:] = images
                        out.flush()

            _write_cache(folder, synthetic.CLASS_NAMES, {s: a[1] for s, a in arrays.items()}, size, fill,
                         fingerprint(*arrays["train"]))
    else:
        source = discover(data)
        size = 64 if image_size is None else image_size
        name = Path(data).resolve().name
        folder = cache_dir / f"{name}-{_source_key(source, size)}-{size}px"
        if _load_cached(folder, size) is None:
            _check_files(source)
            labels = {s: np.asarray([x.label for x in source.splits[s].samples], dtype=np.int64) for s in SPLITS}
            _write_cache(folder, source.class_names, labels, size,
                         lambda tmp: _decode_into(tmp, source, size, show_progress, progress))
    loaded = _load_cached(folder, size)
    if loaded is None:
        raise DatasetError(f"the cache {folder} was written but cannot be read back; delete it and retry")
    splits, meta = loaded
    class_names = tuple(meta["class_names"])
    for split_name, split in splits.items():
        bad = split.labels[(split.labels < 0) | (split.labels >= len(class_names))]
        if len(bad):
            raise DatasetError(f"{split_name} split has label {int(bad[0])} outside 0..{len(class_names) - 1}")
    return Dataset(name, class_names, size, splits, meta["fingerprint"])
