"""The benchmark scripts are documented commands: they must at least import and parse options."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main) and module.__doc__


def test_gpu_checks_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_checks.sh")], check=True)


def test_a_benchmark_parses_its_options():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/task2_real.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--epochs" in out and "--image-size" in out


def test_gpu_script_tensorrt_section_runs_on_a_faked_onnxruntime(task1_artifacts, fake_ort, monkeypatch, tmp_path):
    """The TensorRT check cannot run without a GPU; its code path can, on the fake (real CPU numbers)."""
    import argparse

    import numpy as np

    from benchmarks import runtime_gpu
    from runtime import Classifier

    fake_ort(fp16=lambda logits: logits.astype(np.float16).astype(np.float32))
    monkeypatch.chdir(tmp_path)  # the synthetic dataset's cache goes here
    # The fresh process would load the real onnxruntime: time the cached load in this one instead.
    monkeypatch.setattr(runtime_gpu, "engine_times_in_a_new_process", runtime_gpu.engine_times)
    args = argparse.Namespace(artifacts=task1_artifacts, trt_cache_dir=tmp_path / "trt", runs=2)
    cpu = Classifier(task1_artifacts, device="cpu")
    gpu = Classifier(task1_artifacts, device="cuda", strict_device=True)
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    text = "\n".join(runtime_gpu.tensorrt_section(args, cpu, gpu, images))
    assert "| RGB | fp32 |" in text and "| B | fp16 |" in text and "second run (cached)" in text
    assert "TensorRT fp16 against fp32 on the CPU" in text and text.count(" pt |") == 7  # one row per graph
    assert (tmp_path / "trt" / "fp32").is_dir() and (tmp_path / "trt" / "fp16").is_dir()
