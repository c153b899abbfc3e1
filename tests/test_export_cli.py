"""``python cli.py export``: default locations, the summary table, and one-line errors for bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from runtime import contract


@pytest.fixture(scope="module")
def checkpoint(task1_run) -> Path:
    return task1_run / "anychannel" / "best.pt"


def _export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _write_ckpt(path: Path, source: Path, **changes) -> Path:
    ckpt = torch.load(source, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


def test_export_with_defaults_writes_the_graph_the_manifest_and_a_table(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "artifacts" / "task1" / "anychannel"
    run.mkdir(parents=True)
    shutil.copy(checkpoint, run / "best.pt")
    result = _export("--channels", "r")
    assert result.exit_code == 0, result.output
    out = tmp_path / "artifacts" / "task1" / "onnx"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "task1-R.onnx"]
    assert list(json.loads((out / contract.MANIFEST_NAME).read_text())["graphs"]) == ["R"]
    lines = result.stdout.splitlines()
    assert lines[0] == "| channels | file | size | parity max diff | simplified |"
    assert lines[2].startswith("| R | task1-R.onnx | ") and lines[2].endswith(" | yes |")
    assert "1 graph(s) in artifacts/task1/onnx" in lines[3]


def _assert_fails(result, message: str, out: Path | None = None) -> None:
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr, result.stderr
    if out is not None:
        assert not out.exists() or not list(out.glob("*.onnx"))


def test_bad_input_gets_one_line_and_a_non_zero_exit(checkpoint, tmp_path):
    out = tmp_path / "onnx"
    ok = ("--checkpoint", str(checkpoint), "--out", str(out))
    _assert_fails(_export("--channels", "RX", *ok), "invalid channel configuration 'RX'", out)
    _assert_fails(_export("--checkpoint", str(tmp_path / "missing.pt")), "does not exist")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    _assert_fails(_export("--checkpoint", str(tmp_path / "corrupt.pt"), "--out", str(out)), "is corrupt", out)
    _assert_fails(_export("--task", "task2", *ok), "is from 'task1', not 'task2'", out)
    future = _write_ckpt(tmp_path / "future.pt", checkpoint, format=99)
    _assert_fails(_export("--checkpoint", str(future), "--out", str(out)), "has format 99", out)
    other_shape = _write_ckpt(tmp_path / "kwargs.pt", checkpoint, model_kwargs={})
    _assert_fails(_export("--checkpoint", str(other_shape), "--out", str(out)), "does not match model", out)
    rgb_only = _write_ckpt(tmp_path / "rgb.pt", checkpoint, configs=["RGB"])
    _assert_fails(_export("--checkpoint", str(rgb_only), "--channels", "R", "--out", str(out)),
                  "supports RGB, not R", out)
    _assert_fails(_export("--model", "course", *ok), "holds model 'anychannel', not 'course'", out)
    _assert_fails(_export("--opset", "16", *ok), "opset 16 is too old", out)
    _assert_fails(_export("--opset", "99", *ok), "opset 99 is newer than onnx", out)
    _assert_fails(_export("--model", "bogus", "--out", str(out)), "unknown model 'bogus' for task1", out)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _assert_fails(_export("--checkpoint", str(checkpoint), "--out", str(blocker / "onnx")), "is not writable")


def test_an_opset_onnxruntime_cannot_load_is_one_line_not_a_traceback(checkpoint, tmp_path, monkeypatch):
    import export.parity as parity

    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : official support\n for domain ai.onnx is till opset 26")

    monkeypatch.setattr(parity.ort, "InferenceSession", refuse)
    out = tmp_path / "onnx"
    result = _export("--checkpoint", str(checkpoint), "--channels", "R", "--out", str(out))
    _assert_fails(result, "cannot load the exported graph: [ONNXRuntimeError] : 1 : FAIL : official support for "
                          "domain ai.onnx is till opset 26", out)


def test_lower_says_when_it_lowers_nothing(checkpoint, tmp_path, monkeypatch):
    """The default 32 px body has no map small enough: ``--lower`` must say it changed nothing."""
    import warnings

    import export.onnx as onnx_export
    from export import export_task

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="--lower")  # the tiny model's 16 px maps are lowered: none
        export_task("task1", "R", checkpoint=checkpoint, out=tmp_path / "lowered", lower=True)
    monkeypatch.setattr(onnx_export, "lower_small_convs", lambda module, example: (module, 0))
    with pytest.warns(UserWarning, match="--lower: no convolution of the R graph"):
        export_task("task1", "R", checkpoint=checkpoint, out=tmp_path / "onnx", lower=True)


def test_parity_failure_aborts_with_the_configuration_and_the_difference(checkpoint, tmp_path, monkeypatch):
    import export.parity as parity

    real = parity.torch_logits
    monkeypatch.setattr(parity, "torch_logits", lambda reference, x: real(reference, x) + 2e-3)
    out = tmp_path / "onnx"
    result = _export("--channels", "R", "--checkpoint", str(checkpoint), "--out", str(out))
    _assert_fails(result, "error: R: parity check failed: max |logits diff| 0.002 (tolerance 0.0001)", out)
    assert not list(out.iterdir())  # nothing installed, no temporary file left


def test_export_request_runs_without_the_cli_and_echoes_the_table(checkpoint, tmp_path):
    """export.request.run is what the command calls: the table's header, a row per graph, then the summary."""
    from export.request import ExportRequest, run

    lines: list[str] = []
    out = run(ExportRequest(channels="RGB,R", checkpoint=checkpoint, out=tmp_path / "onnx"), echo=lines.append)
    assert out == tmp_path / "onnx" and sorted(p.name for p in out.glob("*.onnx")) == ["task1-R.onnx", "task1-RGB.onnx"]
    assert lines[0] == "| channels | file | size | parity max diff | simplified |\n|---|---|---|---|---|"
    assert [line.split(" | ")[:2] for line in lines[1:3]] == [["| RGB", "task1-RGB.onnx"], ["| R", "task1-R.onnx"]]
    assert lines[3] == f"2 graph(s) in {out}; manifest {out / 'manifest.json'}" and len(lines) == 4


def test_graph_record_rows_show_size_parity_and_each_variants_top1_change():
    from export.manifest import GraphRecord

    record = GraphRecord("task1-R.onnx", "0" * 64, 2048, 18, [], [], "R", [0], [0.5], [0.2], "fp32", False,
                         "onnxsim failed", {"max_abs_diff": 1.5e-6}, {}, "", "",
                         extra={"int8": {"file": "task1-R.int8.onnx", "size": 1024,
                                         "accuracy": {"change": -0.0125, "validated_on": "CPUExecutionProvider"}}})
    assert record.table_rows() == [
        "| R | task1-R.onnx | 2.0 KiB | 1.50e-06 | no: onnxsim failed |",
        "| R int8 | task1-R.int8.onnx | 1.0 KiB | val top-1 -1.25 pt (CPUExecutionProvider) | - |"]
