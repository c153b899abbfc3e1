"""Training on a CUDA GPU: parity with the CPU, bf16 autocast, and the streamed (pinned-memory) data path.

Skipped where torch sees no GPU (CI); run on a GPU machine by ``benchmarks/gpu_train_checks.sh``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_ANYCHANNEL, relative_difference
from train.checkpoint import load_checkpoint
from train.data import loader
from train.data.cache import Dataset, Split
from train.data.loader import SplitTensors
from train.engine import RunSpec, TrainConfig, fit
from train.models import create_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def small(synthetic_dataset) -> Dataset:
    s = synthetic_dataset.splits
    splits = {k: Split(np.asarray(s[k].images[:n]), np.asarray(s[k].labels[:n]))
              for k, n in (("train", 256), ("val", 128), ("test", 8))}
    return Dataset("tiny", synthetic_dataset.class_names, synthetic_dataset.image_size, splits, "fp")


@pytest.fixture
def no_tf32():
    # TF32 rounds matmul and convolution inputs to 10 mantissa bits; the CPU comparison needs float32.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _train(small: Dataset, out, device: str, amp: bool, epochs: int = 1) -> dict:
    torch.manual_seed(0)
    kwargs = {**TINY_ANYCHANNEL, "dropout": 0.0}  # dropout masks come from each device's own generator
    model = create_model("anychannel", num_classes=small.num_classes, **kwargs)
    spec = RunSpec("anychannel", "anychannel", kwargs)
    fit(model, spec, small, out, TrainConfig(epochs=epochs, batch_size=64, device=device, amp=amp), "task1",
        log=lambda _: None)
    return load_checkpoint(out / "last.pt")


def test_float32_training_on_cuda_matches_the_cpu(small, tmp_path, no_tf32):
    """Same seed, batches, crops and configurations on both devices (augmentation runs where the data is)."""
    cpu = _train(small, tmp_path / "cpu", "cpu", amp=False)
    gpu = _train(small, tmp_path / "gpu", "cuda", amp=False)
    assert gpu["history"][-1]["views"] == cpu["history"][-1]["views"]
    # Relative L2 over all weights after one epoch (29 steps); float32 on both, so what differs is
    # the kernels' summation order (cuDNN against oneDNN), which AdamW's normalised updates carry
    # along. Measured 1.17e-3 on an H200, the same in five runs; a first guess of 1e-3 failed on
    # it, so the limit, 5e-3, leaves about 4x headroom.
    relative = relative_difference(cpu, gpu)
    print(f"float32 CUDA vs CPU: relative {relative:.2e}")
    assert relative < 5e-3
    assert abs(gpu["history"][-1]["train_loss"] - cpu["history"][-1]["train_loss"]) < 1e-3


def test_bf16_autocast_trains_close_to_float32(small, tmp_path, no_tf32):
    fp32 = _train(small, tmp_path / "fp32", "cuda", amp=False, epochs=2)
    bf16 = _train(small, tmp_path / "bf16", "cuda", amp=True, epochs=2)
    assert bf16["train_config"]["amp"] is True
    # bf16 keeps 8 mantissa bits: the runs part, but stay on the same path. Measured on an H200
    # after 2 epochs: weights 2.55e-2 apart (relative), losses within 0.04%; the limits leave 2x
    # and 100x headroom.
    for a, b in zip(fp32["history"], bf16["history"]):
        assert np.isfinite(b["train_loss"])
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * a["train_loss"]
    relative = relative_difference(fp32, bf16)
    losses = [[round(h["train_loss"], 4) for h in run["history"]] for run in (fp32, bf16)]
    print(f"bf16 vs float32: relative {relative:.2e}, train loss {losses[0]} vs {losses[1]}")
    assert relative < 0.05
    assert all(v.dtype == torch.float32 for v in bf16["state_dict"].values() if v.is_floating_point())


def test_streamed_split_reads_the_same_pixels_through_pinned_memory(synthetic_dataset, monkeypatch):
    """A split over GPU_RESIDENT_BYTES is read per batch from the memory-mapped cache, pinned, then copied."""
    train = synthetic_dataset.splits["train"]
    assert isinstance(train.images, np.memmap)
    resident = SplitTensors(train, "cuda")
    monkeypatch.setattr(loader, "GPU_RESIDENT_BYTES", 0)
    streamed = SplitTensors(train, "cuda")
    assert streamed.on_disk and not resident.on_disk
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:100]
    a, b = resident.take(idx), streamed.take(idx)
    assert b.device.type == "cuda" and torch.equal(a, b)
    assert torch.equal(resident.take_labels(idx), streamed.take_labels(idx))


def test_drawing_a_training_step_never_waits_for_the_gpu(synthetic_dataset):
    """The host prepares step N+1 while the GPU runs step N only if nothing in between synchronises."""
    strategy = RunSpec("anychannel", "anychannel", {}).build_strategy()
    resident = SplitTensors(synthetic_dataset.splits["train"], "cuda")
    next(iter(strategy.steps(resident, 126, torch.Generator().manual_seed(0))))  # warm-up: caches, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        groups = next(iter(strategy.steps(resident, 126, torch.Generator().manual_seed(1))))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(groups) == 7 and all(g.inputs.is_cuda and g.labels.is_cuda for g in groups)


def test_model_step_synchronises_no_more_than_measured(synthetic_dataset, recwarn):
    """How often one training step of our model makes the host wait for the GPU (printed for the notes)."""
    from train.engine import StepModule

    spec = RunSpec("anychannel", "anychannel", {})
    strategy = spec.build_strategy()
    model = create_model("anychannel", num_classes=synthetic_dataset.num_classes).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = StepModule(model, strategy)
    split = SplitTensors(synthetic_dataset.splits["train"], "cuda")
    for seed in range(2):
        groups = next(iter(strategy.steps(split, 126, torch.Generator().manual_seed(seed))))
        torch.cuda.synchronize()
        if seed:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, _ = step(groups, 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in recwarn.list if "synchroniz" in str(w.message)]
    print(f"one bf16 training step of our model: {len(syncs)} synchronisation(s)",
          *sorted(set(s.splitlines()[0][:160] for s in syncs)), sep="\n  ")
    # A regression guard at what was measured on an H200 (torch 2.11): 2. The detector is a
    # prototype that does not see every synchronising operation, so this is a floor, not a count.
    assert len(syncs) <= 2
