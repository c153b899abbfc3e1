"""The browser bundle in a real browser: headless Chromium runs index.html#selftest, served from
127.0.0.1, and must give runtime.Classifier's top-1 and logits (within 1e-4) for every graph."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from export.web import ORT_BACKENDS, build_web_bundle, ort_dist_dir
from export.webcheck import HeadlessChromium, find_chromium, run_selftest, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium; "
                                                       "scripts/setup.sh does it as root)"),
    pytest.mark.skipif(not (ort_dist_dir() / ORT_BACKENDS["wasm"][0]).is_file(),
                       reason="onnxruntime-web is not installed: run `npm ci --prefix web` (scripts/setup.sh does)"),
]


def _small(dataset, train: int = 512):
    """The first images of each split: one epoch on them takes about a second."""
    from train.data import Dataset, Split

    cut = lambda split, n: Split(split.images[:n], split.labels[:n])  # noqa: E731
    s = dataset.splits
    return Dataset("tiny", dataset.class_names, dataset.image_size,
                   {"train": cut(s["train"], train), "val": cut(s["val"], 128), "test": cut(s["test"], 64)}, "tiny")


@pytest.fixture(scope="module")
def task1_export(tmp_path_factory, synthetic_dataset) -> Path:
    """All seven graphs of a tiny task-1 model trained one epoch at 16 px."""
    from conftest import TINY_ANYCHANNEL
    from export import export_task
    from train.engine import RunSpec, TrainConfig, fit
    from train.models import create_model

    out = tmp_path_factory.mktemp("web-task1")
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=synthetic_dataset.num_classes, **TINY_ANYCHANNEL)
    fit(model, RunSpec("anychannel", "anychannel", dict(TINY_ANYCHANNEL)), _small(synthetic_dataset), out / "anychannel",
        TrainConfig(epochs=1, batch_size=126), "task1", log=lambda _: None)
    return export_task("task1", "all", checkpoint=out / "anychannel" / "best.pt", out=out / "onnx").out_dir


def _assert_all_ok(summary: dict, count: int) -> None:
    line = f"selftest: {count}/{count} ok"
    assert (summary["line"], summary["title"], summary["selftest_text"]) == (line, line, line), summary
    assert summary["backend"] == "wasm" and summary["csp_violations"] == []
    for graph in summary["graphs"]:
        assert graph["ok"], graph
        assert graph["max_abs_diff"] <= 1e-4 and graph["pixels_differ"] == 0
        assert graph["top1_match"] == graph["images"] == summary["images"]
        assert graph["sha256_by"] == "WebCrypto" and graph["latency"]["p50_ms"] > 0


def test_seven_task1_graphs_match_the_python_runtime_in_chromium(task1_export, tmp_path):
    site = tmp_path / "site"
    bundle = build_web_bundle(task1_export, site)
    summary = run_selftest(site)
    _assert_all_ok(summary, 7)
    assert [g["channels"] for g in summary["graphs"]] == ["RGB", "RG", "GB", "RB", "R", "G", "B"]
    assert all("error" not in check for check in summary["decode_checks"])  # the JPEG decoded at all
    assert len(bundle.graphs) == 7

    # A graph that fails its checksum is refused, with the runtime's message; the others still run.
    graph = site / "task1-G.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    summary = run_selftest(site)
    assert summary["line"] == "selftest: 6/7 ok"
    failed = [g for g in summary["graphs"] if not g["ok"]]
    assert [g["channels"] for g in failed] == ["G"]
    assert "task1-G.onnx does not match its manifest checksum" in failed[0]["error"]

    # The camera (Chromium's fake one): a frame through the RB graph, its top 5 and latency on the page.
    shutil.copy(task1_export / "task1-G.onnx", graph)
    camera = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    with serve(site) as base, HeadlessChromium(flags=camera) as page:
        page.open(f"{base}index.html")
        page.wait_for("document.getElementById('status').textContent.startsWith('Ready')", 60)
        page.evaluate("document.getElementById('channels').value = 'RB'; document.getElementById('camera').click()")
        page.wait_for("document.getElementById('video').videoWidth", 30)
        page.evaluate("document.getElementById('capture').click()")
        page.wait_for("!document.getElementById('result').hidden || document.getElementById('message').textContent", 30)
        assert page.evaluate("document.getElementById('message').textContent") == ""
        assert page.evaluate("document.querySelectorAll('#top5 tbody tr').length") == 5
        assert "task1-RB.onnx: sha256 verified" in page.evaluate("document.getElementById('verified').textContent")
        assert page.evaluate("document.getElementById('latency').textContent").startswith("latency: inference")

    # An image the browser cannot decode, and a browser without WebAssembly: a clear message each.
    (site / "selftest" / "case-1.png").write_bytes(b"not an image")
    summary = run_selftest(site)
    assert summary["line"] == "selftest: 0/7 ok"
    assert summary["message"].startswith("cannot read selftest/case-1.png: this browser cannot decode it")
    summary = run_selftest(site, flags=("--js-flags=--jitless",))  # V8 without a JIT has no WebAssembly
    assert summary["message"].startswith("this browser has no WebAssembly")
    assert summary["line"].startswith("selftest: failed")


def test_task2_single_rgb_graph_through_the_cli(synthetic_dataset, tmp_path):
    from cli import app
    from train.engine import RunSpec, TrainConfig, fit
    from train.models import create_model
    from runtime.channels import ChannelConfig

    torch.manual_seed(0)
    kwargs = {"widths": (16, 32, 64), "downsample": "stride"}
    model = create_model("shallow", num_classes=synthetic_dataset.num_classes, **kwargs)
    fit(model, RunSpec("shallow", "shallow", kwargs, (ChannelConfig("RGB"),)), _small(synthetic_dataset, 256),
        tmp_path / "shallow", TrainConfig(epochs=1, batch_size=64), "task2", log=lambda _: None)
    checkpoint = tmp_path / "shallow" / "best.pt"
    result = CliRunner().invoke(app, ["export", "--task", "task2", "--checkpoint", str(checkpoint),
                                      "--out", str(tmp_path / "onnx"), "--web", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert "1 graph(s) in" in result.stdout and "web bundle in" in result.stdout
    summary = run_selftest(tmp_path / "site")
    _assert_all_ok(summary, 1)
    assert summary["graphs"][0]["channels"] == "RGB"
