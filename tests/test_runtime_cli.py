"""The runtime's commands (predict, evaluate, bench, doctor), lightness, and the README example."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from runtime import ALL_CONFIGS, Classifier

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run ``cli.py`` in a scratch folder (its dataset cache goes there, not into the repo)."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        return CliRunner().invoke(app, [str(a) for a in args])

    return run


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    paths = [folder / "a.png", folder / "b.jpg"]
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(paths[1])
    return paths


# --- predict --------------------------------------------------------------------------------------

def test_predict_json_matches_the_library(run_cli, task1_artifacts, image_files):
    result = run_cli("predict", *image_files, "--artifacts", task1_artifacts, "--channels", "GB", "--top-k", 2,
                     "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    expected = Classifier(task1_artifacts, device="cpu").predict([str(p) for p in image_files], "GB", top_k=2)
    assert [o["image"] for o in out] == [str(p) for p in image_files]
    assert all(o["channels"] == "GB" for o in out)
    assert [[p["label"] for p in o["predictions"]] for o in out] == [[p.label for p in e] for e in expected]


def test_predict_text_and_errors(run_cli, task1_artifacts, image_files, tmp_path):
    ok = run_cli("predict", image_files[0], "--artifacts", task1_artifacts, "--device", "cpu", "--top-k", 1)
    assert ok.exit_code == 0 and re.match(r".*a\.png \[RGB\]: \S+ 0\.\d{3}$", ok.output.strip()), ok.output
    (tmp_path / "bad.png").write_text("not an image")
    bad = run_cli("predict", tmp_path / "bad.png", "--artifacts", task1_artifacts, "--device", "cpu")
    assert bad.exit_code == 2 and "not a readable image" in bad.output
    missing = run_cli("predict", image_files[0], "--artifacts", tmp_path / "none", "--device", "cpu")
    assert missing.exit_code == 2 and "no exported artifacts" in missing.output


# --- evaluate -------------------------------------------------------------------------------------

def test_evaluate_matches_pytorch_evaluation(run_cli, task1_artifacts, task1_run, synthetic_dataset):
    """>= 99.9% top-1 agreement with the checkpoint in PyTorch, accuracy within 0.1 points."""
    import torch

    from train.checkpoint import load_checkpoint, model_from_checkpoint
    from train.data import SplitTensors
    from train.engine import evaluate

    result = run_cli("evaluate", "--artifacts", task1_artifacts, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["channels"]: r for r in json.loads(result.output)["results"]}
    assert list(rows) == [c.name for c in ALL_CONFIGS]

    model = model_from_checkpoint(load_checkpoint(task1_run / "anychannel" / "best.pt"))
    test = SplitTensors(synthetic_dataset.splits["test"])
    clf = Classifier(task1_artifacts, device="cpu")
    for config in ALL_CONFIGS:
        _, torch_acc = evaluate(model, test, config)
        assert abs(rows[config.name]["accuracy"] - torch_acc) <= 0.001, config
        with torch.no_grad():
            torch_pred = torch.cat([model(x, c).argmax(1) for x, _, c in test.batches(256, config)]).numpy()
        onnx_pred = clf.predict_logits(synthetic_dataset.splits["test"].images, config).argmax(1)
        assert (torch_pred == onnx_pred).mean() >= 0.999, config


def test_evaluate_table_for_chosen_configurations(run_cli, task1_artifacts):
    result = run_cli("evaluate", "--artifacts", task1_artifacts, "--channels", "RGB,B", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert re.search(r"\| RGB \| \d+\.\d\d% \|", result.output) and "| B |" in result.output
    assert "| RG |" not in result.output


def test_evaluate_refuses_data_with_other_classes(run_cli, task1_artifacts, tmp_path):
    """Scores against another class list would be meaningless numbers, not an error."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for name in ("cat", "dog"):
            folder = tmp_path / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    result = run_cli("evaluate", "--artifacts", task1_artifacts, "--data", tmp_path / "pets", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "pets has classes cat, dog (2 classes), but the graphs" in result.output
    assert "evaluate them on data with the same classes" in result.output


# --- bench ----------------------------------------------------------------------------------------

def test_bench_reports_latency_providers_and_eager(run_cli, task1_artifacts):
    result = run_cli("bench", "--artifacts", task1_artifacts, "--channels", "RG", "--batch-sizes", "1,4",
                     "--runs", 5, "--warmup", 1, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["providers"] == ["CPUExecutionProvider"] and report["first_inference_ms"] > 0
    assert [r["batch_size"] for r in report["results"]] == [1, 4]
    for row in report["results"]:
        for runtime in ("onnxruntime", "torch_eager"):  # the checkpoint is found beside the graphs
            stats = row[runtime]
            assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] and stats["images_per_s"] > 0
        assert row["max_abs_logit_diff"] < 1e-3


def test_bench_without_a_checkpoint_notes_it(run_cli, task1_artifacts, task1_run, tmp_path):
    import shutil

    import torch

    alone = shutil.copytree(task1_artifacts, tmp_path / "elsewhere" / "onnx")  # no run folder beside it
    result = run_cli("bench", "--artifacts", alone, "--batch-sizes", "2", "--runs", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "PyTorch eager: skipped" in result.output and "| onnxruntime | 2 |" in result.output
    assert run_cli("bench", "--artifacts", task1_artifacts, "--batch-sizes", "0").exit_code == 2
    # A checkpoint asked for by name must exist and be the graphs' own: an error, not a skip.
    missing = run_cli("bench", "--artifacts", task1_artifacts, "--checkpoint", tmp_path / "none.pt", "--device", "cpu")
    assert missing.exit_code == 2 and "does not exist" in missing.output, missing.output
    other = torch.load(task1_run / "anychannel" / "best.pt", weights_only=True)
    other["model"] = "course"
    torch.save(other, tmp_path / "course.pt")
    wrong = run_cli("bench", "--artifacts", task1_artifacts, "--checkpoint", tmp_path / "course.pt", "--device", "cpu")
    assert wrong.exit_code == 2 and "holds model 'course', not 'anychannel'" in wrong.output, wrong.output


# --- doctor ---------------------------------------------------------------------------------------

def test_doctor_reports_the_install(run_cli):
    result = run_cli("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    import onnxruntime

    assert report["onnxruntime"]["version"] == onnxruntime.__version__
    assert report["available_providers"] == onnxruntime.get_available_providers()
    assert ["onnxruntime-gpu", onnxruntime.__version__] in report["onnxruntime"]["distributions"]
    assert report["duplicate_installs"] == []
    assert any(lib["component"] == "cuDNN" for lib in report["libraries"].values())
    assert report["torch"]["version"].startswith("2.")
    text = run_cli("doctor")
    assert text.exit_code == 0 and "available providers" in text.output and "cuDNN" in text.output


def test_doctor_names_artifacts_it_cannot_load(run_cli, tmp_path):
    result = run_cli("doctor", "--artifacts", tmp_path / "missing", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["problems"]
    assert any(p.startswith(f"--artifacts {tmp_path / 'missing'}: ") for p in found), found


def test_doctor_flags_duplicate_installs(monkeypatch):
    from runtime import doctor

    monkeypatch.setattr(doctor, "onnxruntime_distributions",
                        lambda: [("onnxruntime", "1.31.1"), ("onnxruntime-gpu", "1.31.1")])
    report = doctor.diagnose(preload=False)
    assert report["duplicate_installs"] == ["onnxruntime", "onnxruntime-gpu"]
    assert any("several onnxruntime packages" in p for p in doctor.problems(report))
    assert any("CUDA 11.8" in p for p in doctor.problems(report, torch_cuda="11.8"))


def test_doctor_report_adds_torch_sessions_and_problems(monkeypatch, tmp_path):
    """report() is what the command prints: diagnose(), sessions, then torch as its loader gives it, and problems."""
    from types import SimpleNamespace

    from runtime import doctor

    torch = SimpleNamespace(__version__="2.0.0", version=SimpleNamespace(cuda="11.8"),
                            cuda=SimpleNamespace(is_available=lambda: False))
    calls, diagnose, sessions_that_ran = [], doctor.diagnose, doctor.sessions_that_ran
    monkeypatch.setattr(doctor, "diagnose", lambda preload: calls.append("diagnose") or diagnose(preload))
    monkeypatch.setattr(doctor, "sessions_that_ran", lambda a: calls.append("sessions") or sessions_that_ran(a))
    report = doctor.report(tmp_path / "missing", load_torch=lambda: calls.append("torch") or torch, preload=False)
    # torch loads its own CUDA libraries: it comes last, or the library check would see them.
    assert calls == ["diagnose", "sessions", "torch"]
    assert report["torch"] == {"version": "2.0.0", "cuda": "11.8", "cuda_available": False}
    assert set(report["sessions"]) == set(report["devices"])
    assert any(p.startswith(f"--artifacts {tmp_path / 'missing'}: ") for p in report["problems"])
    if report["onnxruntime"]["built_for_cuda"] and not report["onnxruntime"]["built_for_cuda"].startswith("11."):
        assert any("torch uses CUDA 11.8" in p for p in report["problems"])


# --- light by design ------------------------------------------------------------------------------

def test_runtime_imports_only_numpy_pillow_onnxruntime():
    allowed = {"numpy", "PIL", "onnxruntime"} | set(sys.stdlib_module_names)
    for path in sorted((ROOT / "runtime").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_predicting_never_imports_torch(task1_artifacts):
    code = f"""
import sys
import numpy as np
from runtime import Classifier
clf = Classifier({str(task1_artifacts)!r}, device="cpu")
for config in clf.configs:
    image = np.zeros((20, 24, config.num_channels), dtype=np.uint8)
    assert len(clf.predict(image, channels=config)[0]) == 5
assert len(clf.configs) == 7
heavy = sorted(m for m in ("torch", "torchvision", "onnx", "train", "export", "runtime.doctor") if m in sys.modules)
print("heavy:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "heavy: []"


def test_readme_example_runs_as_written(task1_artifacts, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Runtime"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "artifacts" / "task1").mkdir(parents=True)
    (tmp_path / "artifacts" / "task1" / "onnx").symlink_to(task1_artifacts)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 and all(re.match(r"\S+: 0\.\d{3}$", line) for line in lines[:3])


# --- one warning per process, and which provider ran ------------------------------------------------

CUDA_WARNING = "CUDA was requested but onnxruntime runs on"


def _cuda_works(artifacts) -> bool:
    import onnxruntime

    from runtime import device

    works = ("CUDAExecutionProvider" in onnxruntime.get_available_providers()
             and "CUDAExecutionProvider" in Classifier(artifacts, device="auto", ort_log_severity=None).providers)
    device.reset_failures()
    return works


@pytest.mark.parametrize("command", ["bench", "evaluate", "predict"])
def test_each_command_warns_once_without_a_gpu(task1_artifacts, image_files, tmp_path, command):
    """A real process on the default device: the CUDA warning comes once, whatever the command loads."""
    if _cuda_works(task1_artifacts):
        pytest.skip("CUDA works here: nothing to warn about")
    args = {"bench": ["bench", "--batch-sizes", "1,2", "--runs", "2", "--warmup", "0", "--channels", "R"],
            "evaluate": ["evaluate", "--channels", "RGB,GB,B"],
            "predict": ["predict", *map(str, image_files), "--channels", "RG"]}[command]
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--artifacts", str(task1_artifacts)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (out.stdout + out.stderr).count(CUDA_WARNING) == 1, out.stderr
    assert "EP Error" not in out.stdout + out.stderr


def test_bench_warns_once_when_cuda_fails_at_session_creation(run_cli, task1_artifacts, fake_ort, caplog):
    """The GPU machine whose CUDA provider raises (no device, say): onnxruntime would print its own
    block per session; the runtime retries on the CPU quietly and warns once."""
    import logging

    fake_ort(raises={"CUDAExecutionProvider"})
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        result = run_cli("bench", "--artifacts", task1_artifacts, "--batch-sizes", "1,2", "--runs", 2,
                         "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    assert [r.name for r in caplog.records] == ["anychannel.runtime"]
    assert "EP Error" not in result.output
    assert json.loads(result.output[result.output.index("{"):])["provider"] == "CPUExecutionProvider"


def test_bench_says_which_provider_ran_and_whether_the_engine_was_cached(run_cli, task1_artifacts, fake_ort,
                                                                         tmp_path):
    import shutil

    fake_ort()
    alone = shutil.copytree(task1_artifacts, tmp_path / "elsewhere" / "onnx")  # no checkpoint: no eager run
    args = ("bench", "--artifacts", alone, "--device", "tensorrt", "--trt-cache-dir", tmp_path / "trt",
            "--batch-sizes", 1, "--runs", 2, "--warmup", 0, "--json")
    first = json.loads(run_cli(*args).output)
    assert first["provider"] == "TensorrtExecutionProvider" and first["device"] == "tensorrt"
    cache = Path(first["tensorrt"]["engine_cache"])
    assert first["tensorrt"]["engine_was_cached"] is False and cache.parent == tmp_path / "trt"
    (cache / "TensorrtExecutionProvider_main_graph_0_0_sm90.engine").write_bytes(b"")  # what a build leaves
    assert json.loads(run_cli(*args).output)["tensorrt"]["engine_was_cached"] is True
    text = run_cli(*args[:-1]).output
    assert "ran on TensorrtExecutionProvider" in text and "engine found: loaded" in text


def test_doctor_reports_the_install_case_and_the_provider_that_ran(run_cli, task1_artifacts, fake_ort):
    fake_ort(starts={"CUDAExecutionProvider"})
    result = run_cli("doctor", "--artifacts", task1_artifacts, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["install"]["expected"] in ("onnxruntime", "onnxruntime-gpu") and report["install"]["case"]
    assert report["devices"]["tensorrt"] == {"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                           "CPUExecutionProvider"],
                                             "wanted": "TensorrtExecutionProvider"}
    # TensorRT does not start in this fake: its session ran on CUDA, its fallback.
    assert report["sessions"]["tensorrt"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert report["sessions"]["cpu"] == ["CPUExecutionProvider"]
    text = run_cli("doctor", "--artifacts", task1_artifacts).output
    assert "`pip install .` brings" in text and "--device tensorrt" in text and "ran on: CUDAExecutionProvider" in text


def test_evaluate_validates_tensorrt_fp16_against_fp32(run_cli, task1_artifacts, fake_ort, tmp_path):
    from test_providers import _rounded, _wrong_half

    fake_ort(fp16=_rounded)
    args = ("evaluate", "--artifacts", task1_artifacts, "--channels", "RGB,R", "--device", "tensorrt",
            "--trt-fp16", "--trt-cache-dir", tmp_path)
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert [r["channels"] for r in rows] == ["RGB", "R"]
    for row in rows:
        check = row["fp32"]
        assert check["validated_on"] == "TensorrtExecutionProvider" and check["trt_fp16_top1"] == row["accuracy"]
        assert abs(check["change"]) <= 0.02 and check["top1_agreement_with_fp32"] > 0.95
    assert "| RGB |" in run_cli(*args).output
    fake_ort(fp16=_wrong_half)
    refused = run_cli(*args)
    assert refused.exit_code == 2 and "TensorRT fp16 loses" in refused.output
    assert run_cli("evaluate", "--artifacts", task1_artifacts, "--trt-fp16").exit_code == 2  # needs tensorrt


def test_every_option_is_a_request_field_with_its_default():
    """The commands' options are their requests' fields (none left to a silent default), defaulting to them."""
    from dataclasses import MISSING, fields
    from enum import Enum

    import typer

    import cli
    from export.request import ExportRequest
    from runtime.request import BenchRequest, EvaluateRequest, PredictRequest, RuntimeOptions, parse_batch_sizes
    from train.request import TrainRequest

    commands = typer.main.get_command(app).commands
    for name, request in [("train", TrainRequest), ("export", ExportRequest), ("predict", PredictRequest),
                          ("evaluate", EvaluateRequest), ("bench", BenchRequest)]:
        given = {p.name: p.default.value if isinstance(p.default, Enum) else p.default
                 for p in commands[name].params}
        wanted = {f.name: f.default for f in fields(request) if f.name != "runtime"}
        if name in ("predict", "evaluate", "bench"):
            wanted |= {f.name: f.default for f in fields(RuntimeOptions)}
        assert set(wanted) <= set(given), (name, set(wanted) - set(given))
        for field_name, default in wanted.items():
            if default is not MISSING:  # train's task is a required argument
                value = parse_batch_sizes(given[field_name]) if field_name == "batch_sizes" else given[field_name]
                assert value == default, (name, field_name)
    from runtime.device import DEVICES

    assert sorted(d.value for d in cli.RuntimeDevice) == sorted(DEVICES)


def test_the_cli_starts_without_torch_onnx_or_onnxruntime():
    """Every command's defaults are read at start; the heavy packages wait for the command that needs them."""
    code = "import sys, cli; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_console_command_is_the_cli():
    """`pip install .[train]` gives an `anychannel` command: the same app as `python cli.py`."""
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).parent / "anychannel"
    assert command.exists(), "the project is not installed (scripts/setup.sh installs it with its console command)"
    root = Path(__file__).resolve().parent.parent
    as_command = subprocess.run([str(command), "--help"], capture_output=True, text=True, cwd="/", check=True)
    as_script = subprocess.run([sys.executable, str(root / "cli.py"), "--help"], capture_output=True, text=True,
                               check=True)
    import re

    def commands(text: str) -> list[str]:
        return re.findall(r"^│ (\w+) ", text.split("Commands")[1], flags=re.M)

    assert "Usage: anychannel " in as_command.stdout
    assert commands(as_command.stdout) == commands(as_script.stdout) and "train" in commands(as_script.stdout)
