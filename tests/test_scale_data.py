"""Datasets larger than memory: the memory-mapped cache, pread batches, parallel decoding; the --nproc launcher."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.channels import ChannelConfig
from train.data import DatasetError, Split, SplitTensors, load_dataset
from train.data.cache import fingerprint
from train.data.loader import DiskRows, apply_augment, augment_params
from train.strategies import FixedConfig


def _folder(root, count: int, size: int = 12, bad: int | None = None) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 4), ("test", 4)):
        for i in range(n):
            path = root / split / f"c{i % 2}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if split == "train" and i == bad:
                path.write_bytes(b"not a png")
            else:
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def test_cache_is_memory_mapped_and_batches_are_read_from_disk(tmp_path, monkeypatch):
    # 600 images: more than two decoding chunks, so worker processes decode them.
    from train.data import cache

    _folder(tmp_path / "d", 600)
    ds = load_dataset(tmp_path / "d", 8, cache_dir=tmp_path / "cache", show_progress=False)
    assert cache._decode_workers(608) >= min(2, len(__import__("os").sched_getaffinity(0)))
    train = ds.splits["train"]
    assert isinstance(train.images, np.memmap) and train.images.shape == (600, 8, 8, 3)
    # The fingerprint in meta.json is the one of the decoded pixels, computed while streaming.
    assert ds.fingerprint == fingerprint(np.asarray(train.images), train.labels)
    split = SplitTensors(train)
    assert split.on_disk  # no N x 3 x H x W copy in memory
    idx = torch.tensor([599, 3, 4, 5, 0])
    expected = torch.from_numpy(np.asarray(train.images)[idx.numpy()]).permute(0, 3, 1, 2)
    assert torch.equal(split.take(idx), expected)
    # A slice of the memmap (as tests and tools cut splits) reads the right rows too.
    part = SplitTensors(Split(train.images[100:200], train.labels[100:200]))
    assert part.on_disk and torch.equal(part.take(torch.tensor([0, 99])), torch.from_numpy(
        np.asarray(train.images)[[100, 199]]).permute(0, 3, 1, 2))
    # Same batches whether the split is on disk or in memory.
    memory = SplitTensors(Split(np.asarray(train.images), train.labels))
    gb = FixedConfig((ChannelConfig("GB"),))
    (a,) = next(gb.steps(split, 32, torch.Generator().manual_seed(0)))
    (b,) = next(gb.steps(memory, 32, torch.Generator().manual_seed(0)))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    # A second load reuses the cache (no decoding).
    monkeypatch.setattr(cache, "_decode_into", lambda *a: pytest.fail("decoded again"))
    assert load_dataset(tmp_path / "d", 8, cache_dir=tmp_path / "cache").fingerprint == ds.fingerprint


def test_a_bad_image_is_named_from_a_decoding_worker_and_leaves_no_cache(tmp_path):
    _folder(tmp_path / "d", 600, bad=450)
    with pytest.raises(DatasetError, match=r"450\.png"):
        load_dataset(tmp_path / "d", 8, cache_dir=tmp_path / "cache", show_progress=False)
    assert not list((tmp_path / "cache").glob("*/meta.json"))
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # the temporary folder is gone


def test_damaged_cache_is_rebuilt(tmp_path):
    _folder(tmp_path / "d", 6)
    ds = load_dataset(tmp_path / "d", 8, cache_dir=tmp_path / "cache")
    (meta,) = (tmp_path / "cache").glob("*/meta.json")
    (meta.parent / "train_images.npy").write_bytes(b"\x93NUMPY garbage")
    again = load_dataset(tmp_path / "d", 8, cache_dir=tmp_path / "cache")
    assert again.fingerprint == ds.fingerprint


def test_augmentation_runs_on_the_batch_device_and_slices_per_rank():
    x = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    offsets, flips = augment_params(10, 16, torch.Generator().manual_seed(0))
    whole = apply_augment(x, offsets, flips)
    # Rank 1 of 2 augments its share with its share of the parameters: the same pixels.
    assert torch.equal(apply_augment(x[1::2], offsets[1::2], flips[1::2]), whole[1::2])
    if torch.cuda.is_available():
        assert torch.equal(apply_augment(x.cuda(), offsets, flips).cpu(), whole)


def test_diskrows_refuses_arrays_not_backed_by_a_file():
    with pytest.raises(ValueError):
        DiskRows(np.zeros((2, 2, 2, 3), np.uint8))


def test_nproc_runs_the_same_command_under_torchrun(monkeypatch):
    from typer.testing import CliRunner

    import cli
    from train import distributed

    calls = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv, restarts: calls.append((n, argv, restarts)) or 0)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr("sys.argv", ["cli.py", "train", "task1", "--nproc", "2", "--max-restarts", "3",
                                     "--epochs", "1"])
    result = CliRunner().invoke(cli.app, ["train", "task1", "--nproc", "2", "--max-restarts", "3", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    # cli.py by its path, so that the `anychannel` console command relaunches the same app.
    assert calls == [(2, [str(Path(cli.__file__).resolve()), "train", "task1", "--epochs", "1"], 3)]
    cmd = distributed.torchrun_command(2, ["cli.py", "train"], 3)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in cmd and "--max-restarts=3" in cmd


def test_channel_selection_is_a_view_for_every_configuration():
    from runtime.channels import ALL_CONFIGS
    from train.data.loader import select_channels, to_device

    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    for config in ALL_CONFIGS:
        planes = select_channels(x, config.indices)
        assert torch.equal(planes, x[:, list(config.indices)]) and planes.data_ptr() >= x.data_ptr(), config
        assert planes.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # no copy, no index tensor
    assert torch.equal(select_channels(x, (2, 0)), x[:, [2, 0]])  # other orders still work (a copy)
    with pytest.raises(IndexError):
        select_channels(x[:, :2], (0, 2))  # as list indexing does, never a silently shorter view
    assert to_device(x, x.device) is x
