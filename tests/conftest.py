"""Shared fixtures: a tiny task-1 model trained once per test session on synthetic data."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Test models are tiny: one thread is as fast, and leaves the other core to whatever else runs.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data" / "tiny-imagenet-50"
#: A small, fast variant of our model for tests.
TINY_ANYCHANNEL = {"stem_width": 8, "widths": (8, 16, 32)}


def first_body_norm(model):
    """The first per-configuration batch norm of an anychannel model's body."""
    from train.models.layers import ConfigBatchNorm2d

    return next(m for m in model.body.modules() if isinstance(m, ConfigBatchNorm2d))


def first_body_conv(model):
    return next(m for m in model.body.modules() if isinstance(m, torch.nn.Conv2d))


def relative_difference(a: dict, b: dict, suffix: str = "") -> float:
    """``|a - b| / |a|`` over the float tensors of two checkpoints' state dicts (names ending in ``suffix``)."""
    keys = [k for k, v in a["state_dict"].items() if v.is_floating_point() and k.endswith(suffix)]
    diff = torch.cat([(a["state_dict"][k].float() - b["state_dict"][k].float()).flatten() for k in keys])
    return float(diff.norm() / torch.cat([a["state_dict"][k].float().flatten() for k in keys]).norm())


#: How far a run may drift beyond the reference run's own rounding noise (relative L2 of the weights).
NOISE_MARGIN = 10
#: Below the smallest relative difference a real error makes: each rank normalising by its own
#: share's statistics (GlobalBatchNorm2d switched off) gave 7.1e-2 (joint) and 1.5e-2 (sampled),
#: against one process's noise of 3.1e-5 and 5.8e-7 (Intel Xeon, AVX-512).
ERROR_SCALE = 5e-3


def assert_within_rounding_noise(reference: dict, noise_run: dict, candidate: dict, what: str) -> None:
    """``candidate``'s weights differ from ``reference``'s by no more than rounding does on this machine.

    Training carries rounding along, and a rounding that tips a near-tie (a ReLU, a max pool) grows by
    an amount that depends on the CPU's kernels; so the tolerance is measured, not fixed: ``noise_run``
    is the reference run with only its summation order changed (2 threads instead of 1), and
    ``candidate`` must stay within NOISE_MARGIN times that difference.
    """
    floor = relative_difference(reference, noise_run)
    allowed = max(NOISE_MARGIN * floor, 1e-4)
    assert allowed < ERROR_SCALE, f"rounding noise {floor:.1e} on this machine hides real errors"
    relative = relative_difference(reference, candidate)
    assert relative < allowed, f"{what} differ by {relative:.1e}; the reference's own noise {floor:.1e}"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    from train.data import load_dataset

    return load_dataset(None, 16, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def task1_run(tmp_path_factory, synthetic_dataset):
    """A run folder holding ``anychannel/best.pt`` for a tiny model trained two epochs at 16 px."""
    import torch

    from train.engine import RunSpec, TrainConfig, fit
    from train.models import create_model

    out = tmp_path_factory.mktemp("task1")
    spec = RunSpec("anychannel", "anychannel", dict(TINY_ANYCHANNEL))
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=synthetic_dataset.num_classes, **TINY_ANYCHANNEL)
    fit(model, spec, synthetic_dataset, out / "anychannel", TrainConfig(epochs=2, batch_size=126), "task1",
        log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def task1_artifacts(task1_run):
    """``task1_run/onnx``: all seven graphs of the tiny model and their manifest, from the real exporter.

    Next to ``task1_run/anychannel/best.pt``, so tools that look for the checkpoint beside the
    graphs (``bench``) find it as they would under ``artifacts/task1/``.
    """
    from export import export_task

    return export_task("task1", "all", checkpoint=task1_run / "anychannel" / "best.pt", out=task1_run / "onnx").out_dir


@pytest.fixture(autouse=True)
def fresh_provider_failures():
    """Each test starts as a new process does: no provider has failed yet, so its one warning can come."""
    from runtime.device import reset_failures

    reset_failures()
    yield
    reset_failures()


@pytest.fixture
def fake_ort(monkeypatch):
    """Install a fake onnxruntime (``tests/fake_ort.py``) on a GPU machine (the NVIDIA driver loads).

    Returns ``install(available=..., starts=..., raises=..., fp16=...) -> FakeOrt``.
    """
    from fake_ort import EVERYTHING, FakeOrt
    from runtime import classifier, device, doctor

    # doctor imports try_load and onnxruntime itself: its report must describe the same fake machine.
    for module in (device, doctor):
        monkeypatch.setattr(module, "try_load", lambda lib: None)

    def install(available=EVERYTHING, starts=frozenset(EVERYTHING), raises=frozenset(), fp16=None) -> FakeOrt:
        fake = FakeOrt(list(available), set(starts), set(raises), fp16)
        for module in (device, classifier, doctor):
            monkeypatch.setattr(module, "ort", fake)
        return fake

    return install
