"""One rank of the data-parallel tests (tests/test_distributed.py): run by torchrun, or called in-process.

``python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py DATA.npz OUT STRATEGY EPOCHS [--kill]``
trains the tiny anychannel model on the arrays in ``DATA.npz``. ``--kill``: on torchrun's first
attempt, rank 1 dies abruptly inside epoch 2 (``os._exit``, no clean-up), as a lost machine would.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY_ANYCHANNEL  # noqa: E402
from train import distributed  # noqa: E402
from train.data.cache import Dataset, Split  # noqa: E402
from train.engine import RunSpec, TrainConfig, fit  # noqa: E402
from train.models import create_model  # noqa: E402

BATCH = 64
STEPS_PER_EPOCH = {"joint": 256 // (BATCH // 7) + 1, "sampled": 256 // BATCH}


def small_dataset(path: Path) -> Dataset:
    with np.load(path) as z:
        splits = {s: Split(z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "val", "test")}
        names = tuple(str(n) for n in z["class_names"])
    return Dataset("tiny", names, 16, splits, "fp")


def train(data: Path, out: Path, strategy: str, epochs: int, kill: bool = False,
          ctx: distributed.DistContext | None = None, threads: int = 1) -> None:
    """``threads``: torch's intra-op threads; another count changes only the kernels' summation order."""
    torch.set_num_threads(threads)
    dataset = small_dataset(data)
    torch.manual_seed(0)
    # No dropout: its masks come from each rank's own stream, so 2 processes cannot draw one
    # process's masks; everything else is drawn for the global batch.
    kwargs = {**TINY_ANYCHANNEL, "dropout": 0.0}
    model = create_model("anychannel", num_classes=dataset.num_classes, **kwargs)
    spec = RunSpec("anychannel", "anychannel", kwargs, strategy=strategy)
    calls = {"n": 0}

    def loss_fn(logits, y, x, config):
        calls["n"] += 1
        per_step = 7 if strategy == "joint" else 1
        if kill and ctx.rank == 1 and not distributed.restarted() and calls["n"] == per_step * (
                STEPS_PER_EPOCH[strategy] + 3):
            os._exit(3)  # epoch 2, step 4
        return torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    fit(model, spec, dataset, out, TrainConfig(epochs=epochs, batch_size=BATCH), "task1",
        loss_fn=loss_fn, log=lambda _: None, ctx=ctx)


if __name__ == "__main__":
    ctx = distributed.setup("cpu")
    try:
        train(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), "--kill" in sys.argv, ctx)
    finally:
        distributed.teardown()
