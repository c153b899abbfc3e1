"""The browser bundle (``export --web``) without a browser: its files, hashes, references and errors,
and the page's JavaScript preprocessing against Pillow and numpy (under node, when it is installed)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from export import web
from export.errors import OutputDirError
from export.web import OrtWebMissingError, WebBundleError, build_web_bundle
from runtime import Classifier, contract
from runtime.channels import ChannelConfig
from runtime.classifier import softmax
from runtime.preprocess import load_rgb, resize, uint8_batch_to_input
from web_fixtures import CLASSES, contract_export, contract_graph, fake_ort_dist

ROOT = Path(__file__).resolve().parent.parent
PAGE_SOURCES = [web.TEMPLATE_DIR / name for name in web.TEMPLATE_FILES]


@pytest.fixture
def ort_dist(tmp_path) -> Path:
    return fake_ort_dist(tmp_path / "npm")


@pytest.fixture
def export_dir(tmp_path) -> Path:
    return contract_export(tmp_path / "onnx")


def _bundle(export_dir: Path, out: Path, ort_dist: Path, **kwargs) -> web.WebBundle:
    return build_web_bundle(export_dir, out, ort_dist=ort_dist, **kwargs)


def test_bundle_holds_the_page_graphs_manifest_onnxruntime_web_and_selftest(export_dir, ort_dist, tmp_path):
    out = tmp_path / "site"
    bundle = _bundle(export_dir, out, ort_dist)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(bundle.files) == names
    graphs = {"task1-RGB.onnx", "task1-RG.onnx", "task1-B.onnx"}
    ort = {f"ort/{n}" for files in web.ORT_BACKENDS.values() for n in files} | {"ort/LICENSE.txt"}
    assert graphs | ort | set(web.TEMPLATE_FILES) | {"manifest.json", "web.json", "selftest/cases.json"} <= names
    assert not any(name.endswith(".int8.onnx") for name in names)  # fp32 unless asked
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left

    manifest = json.loads((out / "manifest.json").read_text())
    for name, entry in manifest["graphs"].items():
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        assert "int8" not in entry
    info = json.loads((out / "web.json").read_text())
    for name, meta in info["files"].items():
        data = (out / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["size"], meta["sha256"])
    assert info["graphs"] == [{"channels": c, "precision": "fp32"} for c in ("RGB", "RG", "B")]
    assert info["onnxruntime_web"]["version"] == "9.9.9"
    assert info["onnxruntime_web"]["backends"]["wasm"]["script"] == "ort/ort.wasm.min.js"
    assert info["preprocess"]["pillow_vertical_first"] == (int(Image.__version__.split(".")[0]) >= 13)
    assert set(info["orientation_probes"]) >= {"jpeg", "png"}
    for path in info["orientation_probes"].values():
        assert Image.open(out / path).getexif().get(0x0112) == 6
    assert bundle.graphs == [("RGB", "fp32"), ("RG", "fp32"), ("B", "fp32")]
    # The runtime reads the bundle's manifest as it reads an export's.
    assert [c.name for c in Classifier(out, device="cpu").configs] == ["RGB", "RG", "B"]


def test_selftest_references_are_what_the_python_runtime_gives_for_the_shipped_files(export_dir, ort_dist, tmp_path):
    out = tmp_path / "site"
    _bundle(export_dir, out, ort_dist)
    cases = json.loads((out / web.SELFTEST_CASES).read_text())
    assert cases["tolerance"] == 1e-4
    assert [(i["width"], i["height"]) for i in cases["images"]] == [s[:2] for s in web.fixture_shapes(8)]
    clf = Classifier(export_dir, device="cpu")  # the export itself, not the bundle's copy
    for graph in cases["graphs"]:
        for image, logits, top1 in zip(cases["images"], graph["logits"], graph["top1"]):
            path = out / image["file"]
            assert Image.open(path).getexif().get(0x0112, 1) == image["exif_orientation"]
            expected = clf.predict_logits(str(path), graph["channels"])[0]
            np.testing.assert_array_equal(np.float32(logits), expected)
            assert top1 == int(expected.argmax())
            resized = np.frombuffer((out / image["resized"]).read_bytes(), np.uint8).reshape(8, 8, 3)
            np.testing.assert_array_equal(resized, load_rgb(path, 8))
    check = cases["decode_checks"][0]
    decoded = np.frombuffer((out / check["decoded"]).read_bytes(), np.uint8)
    assert decoded.size == check["width"] * check["height"] * 3


def test_page_sources_name_no_url_outside_the_bundle():
    for path in PAGE_SOURCES:
        text = path.read_text()
        assert not re.search(r"https?:|//cdn|\bcdn\.|jsdelivr|unpkg|googleapis", text, re.I), path.name
        assert "import(" not in text.replace("import('./", "").replace('import("./', ""), path.name
    html = (web.TEMPLATE_DIR / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"[a-z]+:|//", ref), ref  # relative to the bundle only
    assert "default-src 'self'" in html  # and the browser enforces it
    app = (web.TEMPLATE_DIR / "app.js").read_text()
    assert "crypto.subtle" in (web.TEMPLATE_DIR / "anychannel.js").read_text()
    assert "wasmPaths" in app and "numThreads" in app


def test_missing_onnxruntime_web_names_the_npm_command_and_writes_nothing(export_dir, tmp_path):
    out = tmp_path / "site"
    with pytest.raises(OrtWebMissingError, match=r"npm ci --prefix web"):
        build_web_bundle(export_dir, out, ort_dist=tmp_path / "nowhere")
    assert not out.exists()


def test_destination_must_be_new_empty_or_an_earlier_bundle(export_dir, ort_dist, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="is not a web bundle"):
        _bundle(export_dir, taken, ort_dist)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputDirError):
        _bundle(export_dir, export_dir, ort_dist)  # never over the graphs it copies
    out = tmp_path / "site"
    _bundle(export_dir, out, ort_dist)
    (out / "stale.txt").write_text("from before")
    bundle = _bundle(export_dir, out, ort_dist, channels="B", webgpu=False)  # replaces the earlier bundle
    assert not (out / "stale.txt").exists() and not (out / "task1-RGB.onnx").exists()
    assert bundle.graphs == [("B", "fp32")] and not (out / "ort" / "ort.webgpu.min.js").exists()
    assert list(json.loads((out / "web.json").read_text())["onnxruntime_web"]["backends"]) == ["wasm"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_int8_graphs_only_when_asked_and_only_when_exported(export_dir, ort_dist, tmp_path):
    with pytest.raises(WebBundleError, match=r"no int8 graph .*--int8"):
        _bundle(export_dir, tmp_path / "a", ort_dist, int8=True)
    with pytest.raises(WebBundleError, match="has no graph for G"):
        _bundle(export_dir, tmp_path / "a", ort_dist, channels="G")
    quantised = contract_export(tmp_path / "q", configs=("RGB", "R"), int8=True)
    out = tmp_path / "site"
    bundle = _bundle(quantised, out, ort_dist, int8=True)
    assert bundle.graphs == [("RGB", "fp32"), ("R", "fp32"), ("RGB", "int8"), ("R", "int8")]
    assert (out / "task1-R.int8.onnx").is_file()
    assert json.loads((out / "manifest.json").read_text())["graphs"]["R"]["int8"]["file"] == "task1-R.int8.onnx"
    cases = json.loads((out / web.SELFTEST_CASES).read_text())
    assert [(g["channels"], g["precision"]) for g in cases["graphs"]] == bundle.graphs
    plain = _bundle(quantised, tmp_path / "plain", ort_dist)
    assert not any(name.endswith(".int8.onnx") for name in plain.files)


def test_cli_export_web_bundles_an_up_to_date_export_as_it_is(export_dir, ort_dist, tmp_path, monkeypatch):
    from cli import app

    monkeypatch.chdir(tmp_path)  # no artifacts/ here: no checkpoint could be newer than the graphs
    monkeypatch.setenv(web.ORT_DIST_ENV, str(ort_dist))
    before = {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()}
    result = CliRunner().invoke(app, ["export", "--out", str(export_dir), "--web", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert "bundling the existing export" in result.stdout and "web bundle in" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()} == before  # nothing re-exported
    assert (tmp_path / "site" / "index.html").is_file()
    monkeypatch.setenv(web.ORT_DIST_ENV, str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["export", "--out", str(export_dir), "--web", str(tmp_path / "site2")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: onnxruntime-web's files are missing") and result.stderr.count("\n") == 1


def test_an_export_older_than_its_checkpoint_is_not_reused(export_dir, tmp_path):
    import os

    assert web.up_to_date_export("task1", "all", None, None, export_dir, False, root=tmp_path) == export_dir
    ckpt = tmp_path / "task1" / "anychannel" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    later = (export_dir / contract.MANIFEST_NAME).stat().st_mtime + 60
    os.utime(ckpt, (later, later))
    assert web.up_to_date_export("task1", "all", None, None, export_dir, False, root=tmp_path) is None
    assert web.up_to_date_export("task1", "all", None, Path("x.pt"), export_dir, False, root=tmp_path) is None
    assert web.up_to_date_export("task1", "all", None, None, tmp_path / "missing", False, root=tmp_path) is None
    (export_dir / "task1-RG.onnx").write_bytes(b"damaged")
    os.utime(ckpt, (0, 0))
    assert web.up_to_date_export("task1", "all", None, None, export_dir, False, root=tmp_path) is None


# --- the page's JavaScript, under node -----------------------------------------------------------------


def _b64(data: bytes | np.ndarray) -> str:
    return base64.b64encode(data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()).decode()


def _encoded(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    img.save(buffer, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the page's JS is checked in "
                                                         "Chromium by test_web_browser.py)")
def test_page_javascript_reproduces_the_runtime_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    vertical_first = int(Image.__version__.split(".")[0]) >= web.PILLOW_VERTICAL_FIRST_SINCE
    resize_cases, expected_resize = [], []
    for i in range(120):  # wide, tall and square sources; up- and downscaling; odd and even crops
        size = int(rng.choice([1, 3, 8, 16, 32, 64]))
        w, h = (int(v) for v in rng.integers(1, 3 * size + 9, 2))
        if i % 3 == 0:
            w = int(rng.integers(1, 6))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        resize_cases.append({"rgb": _b64(image), "w": w, "h": h, "size": size, "vertical_first": vertical_first})
        expected_resize.append(np.asarray(resize(Image.fromarray(image, "RGB"), size), dtype=np.uint8))
    input_cases, expected_input = [], []
    for name in ("RGB", "RG", "GB", "RB", "R", "G", "B"):
        config = ChannelConfig(name)
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        input_cases.append({"rgb": _b64(image), "size": 8, "config": name, "mean": list(config.mean),
                            "std": list(config.std)})
        expected_input.append(uint8_batch_to_input(image[None], config)[0])
    logits = [[0.5, 2.0, 2.0, -1.0, 2.0], [3.0, 1.0, 0.0, 1.0, 3.0]]  # ties come out in class order
    payloads = [b"", b"abc", bytes(range(256)) * 3, rng.bytes(55), rng.bytes(56), rng.bytes(64), rng.bytes(1000)]
    graph = contract_graph(ChannelConfig("RB"), 4, seed=1)
    stored = Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8), "RGB")
    orientation_cases, expected_orientation, undo_cases = [], [], []
    for o in range(1, 9):
        for fmt, name in (("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")):
            orientation_cases.append(_b64(_encoded(stored, fmt, o)))
            expected_orientation.append([name, o])
        drawn = ImageOps.exif_transpose(Image.open(io.BytesIO(_encoded(stored, "PNG", o)))).convert("RGBA")
        undo_cases.append({"rgba": _b64(np.asarray(drawn)), "w": drawn.width, "h": drawn.height, "orientation": o})
    metadata = {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}
    entry = {"file": "task1-RB.onnx", "config": "RB", "precision": "fp32"}
    spec_cases = [{"metadata": metadata, "entry": entry, "class_names": list(CLASSES)},
                  {"metadata": metadata, "entry": {**entry, "config": "RG"}, "class_names": list(CLASSES)},
                  {"metadata": {**metadata, "anychannel.resize": "stretch"}, "entry": entry,
                   "class_names": list(CLASSES)},
                  {"metadata": {k: v for k, v in metadata.items() if k != "anychannel.std"}, "entry": entry,
                   "class_names": list(CLASSES)}]
    cases = {"resize": resize_cases, "input": input_cases,
             "topk": [{"logits": row, "names": list(CLASSES), "k": 5} for row in logits],
             "sha256": [_b64(p) for p in payloads], "metadata": [_b64(graph)],
             "orientation": orientation_cases, "undo": undo_cases, "specs": spec_cases}
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    module = (web.TEMPLATE_DIR / "anychannel.js").as_uri()
    run = subprocess.run(["node", str(ROOT / "tests" / "web_check.mjs"), module, str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)

    for case, want, out in zip(resize_cases, expected_resize, got["resize"]):
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(out), np.uint8).reshape(want.shape), want,
                                      err_msg=f"{case['w']}x{case['h']} -> {case['size']}")
    for want, out in zip(expected_input, got["input"]):  # float32 bits, not approximately
        assert np.frombuffer(base64.b64decode(out), np.float32).tobytes() == want.tobytes()
    order = np.argsort(-softmax(np.array(logits)), axis=1, kind="stable")
    assert got["topk"] == order.tolist()
    assert got["sha256"] == [hashlib.sha256(p).hexdigest() for p in payloads]
    assert got["metadata"] == [metadata]
    assert got["orientation"] == expected_orientation
    for case, out in zip(undo_cases, got["undo"]):
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(out["rgba"]), np.uint8)
                                      .reshape(out["h"], out["w"], 4)[..., :3], np.asarray(stored),
                                      err_msg=f"orientation {case['orientation']}")
    assert got["spec_errors"][0] == "0,2"  # RB: the R and B planes, by identity
    assert "it is for RB, but the manifest lists it for RG" in got["spec_errors"][1]
    assert "expects stretch/bilinear resizing" in got["spec_errors"][2]
    assert "lacks metadata 'anychannel.std'" in got["spec_errors"][3]


def test_bundle_summary_says_what_it_holds_and_how_to_serve_it(tmp_path):
    bundle = web.WebBundle(tmp_path / "site", [("RGB", "task1-RGB.onnx"), ("R", "task1-R.onnx")],
                           {"index.html": 2**19, "task1-RGB.onnx": 2**20})
    assert bundle.summary() == (f"web bundle in {tmp_path / 'site'}: 2 graph(s), 2 files, 1.5 MiB; serve it with "
                                f"`python -m http.server -d {tmp_path / 'site'}` and open http://localhost:8000/ "
                                "(#selftest checks it against the Python runtime)")
