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
