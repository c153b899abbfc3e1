from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.channels import ChannelConfig
from train.data import DatasetError, SplitTensors, load_dataset
from train.data import synthetic


def _write_image(path: Path, mode: str, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new(mode, (20, 12), colour)
    img.save(path, format="JPEG" if mode in ("L", "CMYK") else "PNG")


def _filelist_dataset(root: Path) -> None:
    modes = [("RGB", (200, 10, 10), "png"), ("L", 128, "jpg"), ("RGBA", (10, 200, 10, 128), "png"),
             ("CMYK", (0, 0, 255, 0), "jpg")]
    for split in ("train", "val", "test"):
        lines = []
        for i, (mode, colour, ext) in enumerate(modes):
            rel = f"images/c{i % 2}/{split}_{i}.{ext}"
            _write_image(root / rel, mode, colour)
            lines.append(f"{rel} {i % 2}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("0\tn001\tgoldfish, Carassius auratus\n1\tn002\ttabby cat\n")


def test_filelist_layout_decodes_every_mode_to_rgb(tmp_path):
    _filelist_dataset(tmp_path / "d")
    ds = load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("goldfish", "tabby cat")
    train = ds.splits["train"]
    assert train.images.shape == (4, 16, 16, 3) and train.images.dtype == np.uint8
    assert list(train.labels) == [0, 1, 0, 1]
    grey = train.images[1]
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])  # L -> equal planes
    assert train.images[0, 0, 0, 0] > 150 and train.images[0, 0, 0, 1] < 60  # red stays red
    cmyk = train.images[3].mean(axis=(0, 1))  # CMYK (0, 0, 255, 0) is pure yellow
    assert cmyk[0] > 150 and cmyk[1] > 150 and cmyk[2] < 60


def test_cache_is_reused_and_fingerprint_stable(tmp_path):
    _filelist_dataset(tmp_path / "d")
    a = load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 1
    b = load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")
    assert a.fingerprint == b.fingerprint


def test_corrupt_file_is_named_with_its_list_line_before_training(tmp_path):
    _filelist_dataset(tmp_path / "d")
    (tmp_path / "d/images/c1/val_1.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")
    assert "val.txt:2" in str(err.value) and "val_1.jpg" in str(err.value)


def test_missing_file_is_named(tmp_path):
    _filelist_dataset(tmp_path / "d")
    (tmp_path / "d/images/c0/test_2.png").unlink()
    with pytest.raises(DatasetError, match=r"test.txt:3.*does not exist"):
        load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")


def test_bad_list_line(tmp_path):
    _filelist_dataset(tmp_path / "d")
    (tmp_path / "d/train.txt").write_text("images/c0/train_0.png zero\n")
    with pytest.raises(DatasetError, match=r"train.txt:1: label 'zero'"):
        load_dataset(tmp_path / "d", 16, cache_dir=tmp_path / "cache")


def test_imagefolder_layout(tmp_path):
    for split in ("train", "val", "test"):
        _write_image(tmp_path / "f" / split / "cat" / "a.png", "RGB", (1, 2, 3))
        _write_image(tmp_path / "f" / split / "dog" / "b.jpg", "L", 40)
    ds = load_dataset(tmp_path / "f", 8, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("cat", "dog")
    assert list(ds.splits["val"].labels) == [0, 1]


def test_unknown_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="unknown layout"):
        load_dataset(tmp_path / "empty", 8, cache_dir=tmp_path / "cache")


def test_synthetic_is_deterministic_and_colour_matters():
    a, la = synthetic.generate("val", seed=3, size=16)
    b, lb = synthetic.generate("val", seed=3, size=16)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    c, _ = synthetic.generate("val", seed=4, size=16)
    assert not np.array_equal(a, c)
    # Red and yellow disks share their R plane statistics; G tells them apart.
    red = a[la == 6].reshape(-1, 3).max(0)
    yellow = a[la == 9].reshape(-1, 3).max(0)
    assert red[0] > 150 and yellow[0] > 150 and yellow[1] > red[1] + 60


def test_batches_select_planes_by_identity(synthetic_dataset):
    split = SplitTensors(synthetic_dataset.splits["val"])
    x_gb, _, cfg = next(split.batches(4, ChannelConfig("GB")))
    x_rgb, _, _ = next(split.batches(4, ChannelConfig("RGB")))
    assert cfg.name == "GB" and x_gb.shape[1] == 2
    import torch

    g_from_rgb = (x_rgb[:, 1] * 0.224 + 0.456)
    assert torch.allclose(x_gb[:, 0] * 0.224 + 0.456, g_from_rgb, atol=1e-6)
