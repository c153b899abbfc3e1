"""Dataset layouts: the embedded synthetic set, the course's file lists, and ImageFolder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runtime.errors import AnyChannelError

SPLITS: tuple[str, ...] = ("train", "val", "test")
SYNTHETIC = "synthetic"


class DatasetError(AnyChannelError, ValueError):
    """A dataset that cannot be used: missing lists, bad lines, unreadable images."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    origin: str  # where the sample was declared, e.g. "train.txt:12", for error messages


@dataclass(frozen=True)
class SplitSource:
    name: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class DatasetSource:
    root: Path
    layout: str  # "filelist" or "imagefolder"
    class_names: tuple[str, ...]
    splits: dict[str, SplitSource]


def filelist_lines(list_path: Path) -> Iterator[tuple[int, str, str, int]]:
    """``(line number, line as written, path, label)`` for each entry of a ``<path> <label>`` list,
    skipping blank and ``#`` lines; ``DatasetError`` names the first malformed line."""
    for lineno, raw in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{list_path}:{lineno}: expected '<path> <label>', got {raw!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise DatasetError(f"{list_path}:{lineno}: label {parts[1]!r} is not an integer") from None
        if label < 0:
            raise DatasetError(f"{list_path}:{lineno}: negative label {label}")
        yield lineno, raw, parts[0], label


def _read_filelist(list_path: Path) -> list[Sample]:
    samples = [Sample(list_path.parent / path, label, f"{list_path.name}:{lineno}")
               for lineno, _, path, label in filelist_lines(list_path)]
    if not samples:
        raise DatasetError(f"{list_path}: no samples listed")
    return samples


def _read_class_names(path: Path, num_classes: int) -> tuple[str, ...]:
    """Names from ``classes.txt``: ``<label>\t<id>\t<name, synonyms>`` lines, or one name per line."""
    names = [f"class_{i}" for i in range(num_classes)]
    if not path.exists():
        return tuple(names)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for position, line in enumerate(lines):
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip().isdigit():
            index, name = int(fields[0]), fields[-1].split(",")[0].strip()
        else:
            index, name = position, line.strip()
        if 0 <= index < num_classes and name:
            names[index] = name
    return tuple(names)


def _filelist(root: Path) -> DatasetSource:
    splits = {}
    for split in SPLITS:
        list_path = root / f"{split}.txt"
        if not list_path.exists():
            raise DatasetError(f"{root}: file-list layout needs {split}.txt, which is missing")
        splits[split] = SplitSource(split, tuple(_read_filelist(list_path)))
    num_classes = 1 + max(s.label for split in splits.values() for s in split.samples)
    return DatasetSource(root, "filelist", _read_class_names(root / "classes.txt", num_classes), splits)


def _imagefolder(root: Path) -> DatasetSource:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    class_names, class_to_idx = find_classes(str(root / "train"))
    splits = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"{root}: ImageFolder layout needs a {split}/ folder, which is missing")
        extra = set(find_classes(str(folder))[0]) - set(class_names)
        if extra:
            raise DatasetError(f"{folder}: classes {sorted(extra)} do not appear in train/")
        pairs = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not pairs:
            raise DatasetError(f"{folder}: no images found")
        samples = tuple(Sample(Path(p), lbl, f"{split}/{Path(p).relative_to(folder)}") for p, lbl in pairs)
        splits[split] = SplitSource(split, samples)
    return DatasetSource(root, "imagefolder", tuple(class_names), splits)


def discover(root: "str | Path") -> DatasetSource:
    """Recognise the layout under ``root``: ``train.txt`` lists, or ``train/<class>/`` folders."""
    if not Path(root).is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    root = Path(root).resolve()  # one cache key however the folder is spelled
    if (root / "train.txt").exists():
        return _filelist(root)
    if (root / "train").is_dir():
        return _imagefolder(root)
    raise DatasetError(
        f"{root}: unknown layout; expected train.txt/val.txt/test.txt file lists, "
        "or train/ val/ test/ folders with one subfolder per class"
    )
