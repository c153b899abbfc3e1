"""Data-parallel training: 2 CPU processes (gloo) against one process with the same global batch and seed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train.checkpoint import load_checkpoint
from train.distributed import Shard, strip_option, torchrun_command

import ddp_worker
from conftest import assert_within_rounding_noise, relative_difference

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


@pytest.fixture(scope="module")
def tiny_npz(synthetic_dataset, tmp_path_factory):
    """The synthetic set's labels with uniform-noise pixels.

    Noise, not the shapes, because the shapes train chaotically at float precision: their flat
    saturated regions give max pooling exact ties, and which tied value wins depends on the
    convolution kernel's rounding, which changes with the batch shape and thread count (on an
    Intel Xeon's AVX-512 kernels). One tipped tie moved a gradient by 0.5% in one step, and
    AdamW carried it: one process at 1 and at 2 threads then differed as much as one and two
    processes (relative 1.5e-2, max 0.064 in a running variance). Noise pixels have no ties.
    """
    s = synthetic_dataset.splits
    rng = np.random.default_rng(0)
    sizes = {"train": 256, "val": 128, "test": 8}
    path = tmp_path_factory.mktemp("ddp") / "tiny.npz"
    np.savez(path, class_names=np.asarray(synthetic_dataset.class_names),
             **{f"{k}_images": rng.integers(0, 256, np.asarray(s[k].images[:n]).shape, dtype=np.uint8)
                for k, n in sizes.items()},
             **{f"{k}_labels": np.asarray(s[k].labels[:n]) for k, n in sizes.items()})
    return path


def _torchrun(args: list[str], max_restarts: int = 0) -> subprocess.CompletedProcess:
    cmd = torchrun_command(2, [str(WORKER), *args], max_restarts)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_every_rank_refuses_data_that_differs_from_rank_0(monkeypatch):
    """Machines decode their own caches; a mismatch fails on every rank at once, naming the ranks."""
    import torch.distributed as dist

    from train.distributed import DistContext, DistributedError, check_same_data_on_every_rank

    def gather(out, obj):  # what the other ranks would send
        out[:] = ["fp-a", "fp-a", "fp-b"]

    monkeypatch.setattr(dist, "all_gather_object", gather)
    for rank in range(3):  # rank 0 and 1 agree with each other, yet refuse too
        with pytest.raises(DistributedError, match=r"rank\(s\) \[2\] decoded other training data .*'fp-b'.* fp-a"):
            check_same_data_on_every_rank(DistContext(rank=rank, world=3), "fp-a")
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj] * len(out)))
    check_same_data_on_every_rank(DistContext(rank=1, world=2), "fp-a")
    check_same_data_on_every_rank(DistContext(), "fp-a")  # one process: nothing to compare


def test_shards_partition_every_global_batch():
    idx = torch.arange(9)
    parts = [Shard(r, 2).take(idx) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(9))
    assert [Shard(r, 2).weight(9) for r in range(2)] == [10 / 9, 8 / 9]  # 5 and 4 images
    assert strip_option(["train", "task1", "--nproc", "2", "--nproc=3", "--seed", "1"], "--nproc") == \
        ["train", "task1", "--seed", "1"]


def _one_and_two(tmp_path, tiny_npz, strategy: str, epochs: int) -> tuple[dict, dict]:
    """One process and two, trained on the same global batches; their weights agree to rounding noise.

    Nothing but the kernels' summation order differs (gradients averaged over ranks, batch-norm
    statistics summed over ranks), but training carries rounding along and a rounding that tips
    a near-tie (a ReLU, a max pool) grows, by an amount that depends on the CPU's kernels. So the
    tolerance comes from this machine: the same one-process run at 2 threads instead of 1 changes
    the summation order alone, and two processes must stay within conftest.NOISE_MARGIN times that.
    The global batches themselves are checked exactly, without training
    (test_every_rank_trains_its_share_of_the_one_process_batch).
    """
    ddp_worker.train(tiny_npz, tmp_path / "one", strategy, epochs=epochs)
    ddp_worker.train(tiny_npz, tmp_path / "one-2-threads", strategy, epochs=epochs, threads=2)
    _torchrun([str(tiny_npz), str(tmp_path / "two"), strategy, str(epochs)])
    one, floor_run, two = (load_checkpoint(tmp_path / name / "last.pt") for name in ("one", "one-2-threads", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["global_batch_size"] == one["global_batch_size"] == ddp_worker.BATCH
    for key in ("views", "train_flops"):  # same configurations drawn, as many views
        assert two["history"][-1][key] == one["history"][-1][key]
    assert_within_rounding_noise(one, floor_run, two, "two processes and one")
    # The reported loss is the global batch's, as in one process.
    assert two["history"][-1]["train_loss"] == pytest.approx(one["history"][-1]["train_loss"], rel=1e-3)
    assert abs(two["history"][-1]["val_acc"] - one["history"][-1]["val_acc"]) <= 2 / 128
    return one, two


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_killed_rank(tmp_path, tiny_npz):
    _, two = _one_and_two(tmp_path, tiny_npz, "joint", epochs=2)
    # Rank 1 dies in epoch 2; torchrun restarts both ranks, which resume from epoch 1's last.pt.
    proc = _torchrun([str(tiny_npz), str(tmp_path / "killed"), "joint", "2", "--kill"], max_restarts=1)
    assert "exitcode: 3" in proc.stderr  # torchrun saw rank 1 die, and restarted the group
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert resumed["epoch"] == 2
    for k, v in two["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k  # same world size: bit for bit


@pytest.mark.slow
def test_sampled_configurations_and_precise_bn_agree_across_ranks(tmp_path, tiny_npz):
    """One configuration per step (same on both ranks), unused batch norms, then precise BN (all-reduced)."""
    one, two = _one_and_two(tmp_path, tiny_npz, "sampled", epochs=1)
    # Precise BN ran on both: every configuration's running means are the global batches' ones
    # (measured on the shapes' pixels: 1.2e-3; 4.6e-2 with rank-local batch norm).
    assert relative_difference(one, two, "running_mean") < 1e-2
