"""runtime.Classifier: inputs, channel rules, preprocessing parity with training, outputs, errors."""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import (ALL_CONFIGS, AmbiguousChannelsError, AnyChannelError, ChannelConfig, ChannelMismatchError,
                     Classifier, ConfigurationNotExportedError, InvalidChannelsError, InvalidImageError, Prediction)
from runtime.contract import MANIFEST_NAME
from runtime.preprocess import load_rgb

SIZE = 16  # the fixture model's input side


@pytest.fixture(scope="module")
def clf(task1_artifacts) -> Classifier:
    return Classifier(task1_artifacts, device="cpu")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four RGB images at a size the model does not take (so resizing is exercised)."""
    return np.random.default_rng(0).integers(0, 256, (4, 23, 31, 3), dtype=np.uint8)


def subset_artifacts(src: Path, dst: Path, names: list[str]) -> Path:
    """A copy of ``src`` whose manifest lists only the configurations ``names``."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    manifest["graphs"] = {k: v for k, v in manifest["graphs"].items() if k in names}
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest))
    return dst


def training_input(uint8_rgb: np.ndarray, config: ChannelConfig) -> np.ndarray:
    """What training feeds the model for these decoded images (train.data's torch path)."""
    import torch

    from train.data import SplitTensors, normalize
    from train.data.cache import Split

    split = SplitTensors(Split(uint8_rgb, np.zeros(len(uint8_rgb), dtype=np.int64)))
    return normalize(split.images[:, list(config.indices)], config).numpy()


# --- outputs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ALL_CONFIGS, ids=str)
def test_predict_every_configuration(clf, images, config):
    results = clf.predict(images, channels=config.name, top_k=3)
    assert len(results) == len(images)
    for preds in results:
        assert [type(p) for p in preds] == [Prediction] * 3
        probs = [p.probability for p in preds]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert all(clf.class_names[p.index] == p.label for p in preds)
    logits = clf.predict_logits(images, channels=config.name)
    assert logits.shape == (len(images), len(clf.class_names)) and logits.dtype == np.float32
    assert [r[0].index for r in results] == list(logits.argmax(1))


def test_logits_match_the_trained_model(clf, task1_run, images):
    """Graph logits equal the PyTorch model's on the same preprocessed input, for every configuration."""
    import torch

    from train.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(task1_run / "anychannel" / "best.pt"))
    for config in ALL_CONFIGS:
        x, _ = clf.preprocess(images, config)
        with torch.no_grad():
            expected = model(torch.from_numpy(x), config).numpy()
        np.testing.assert_allclose(clf.run(x, config), expected, atol=1e-4, rtol=0)


def test_top_k_is_clamped_and_validated(clf, images):
    assert len(clf.predict(images[0], top_k=100)[0]) == len(clf.class_names)
    assert sum(p.probability for p in clf.predict(images[0], top_k=100)[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        clf.predict(images[0], top_k=0)


def test_a_batch_is_one_session_call(task1_artifacts, images, monkeypatch):
    clf = Classifier(task1_artifacts, device="cpu")
    calls = []
    real_run = Classifier.run
    monkeypatch.setattr(Classifier, "run", lambda self, x, c: calls.append(len(x)) or real_run(self, x, c))
    clf.predict(list(images) + [images[0]], channels="RG")
    assert calls == [len(images) + 1]


# --- preprocessing matches training -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "CMYK"])
def test_files_are_preprocessed_exactly_like_training(clf, tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 21, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65535, (37, 21), dtype=np.uint16))
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    decoded = load_rgb(path, SIZE)[None]  # what training caches for this file
    for config in (ChannelConfig("RGB"), ChannelConfig("GB"), ChannelConfig("R")):
        x, used = clf.preprocess(str(path), channels=config)
        assert used == config
        np.testing.assert_array_equal(x, training_input(decoded, config))
    # A PIL image (any mode) gives what its file gives.
    np.testing.assert_array_equal(clf.preprocess(Image.open(path))[0], clf.preprocess(path)[0])


def test_arrays_are_resized_like_files(clf, images, tmp_path):
    """A non-square array of any size gives what the same pixels saved as a PNG give."""
    path = tmp_path / "a.png"
    Image.fromarray(images[0]).save(path)
    np.testing.assert_array_equal(clf.preprocess(images[0])[0], clf.preprocess(path)[0])


def test_float_input_equals_its_uint8_twin(clf, images):
    as_float = images.astype(np.float32) / 255.0
    np.testing.assert_array_equal(clf.predict_logits(as_float), clf.predict_logits(images))
    np.testing.assert_array_equal(clf.predict_logits(as_float.astype(np.float64), "RB"),
                                  clf.predict_logits(images, "RB"))


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if c.num_channels < 3], ids=str)
def test_planes_alone_equal_the_same_planes_selected_from_rgb(clf, images, config):
    planes = images[..., list(config.indices)]
    np.testing.assert_array_equal(clf.predict_logits(planes, config), clf.predict_logits(images, config))


def test_single_plane_may_be_hxw(clf, images):
    np.testing.assert_array_equal(clf.predict_logits(images[0, :, :, 1], "G"), clf.predict_logits(images[0], "G"))


def test_batch_list_and_single_images_agree(clf, images):
    batch = clf.predict_logits(images, "RG")
    np.testing.assert_array_equal(clf.predict_logits(list(images), "RG"), batch)
    np.testing.assert_allclose(np.concatenate([clf.predict_logits(im, "RG") for im in images]), batch, atol=1e-5)


def test_rgb_is_the_default_for_three_channels(clf, images):
    assert clf.preprocess(images)[1] == ChannelConfig("RGB")
    assert clf.preprocess(Image.fromarray(images[0]).convert("L"))[1] == ChannelConfig("RGB")  # gray: R = G = B


# --- channel rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, choices", [((SIZE, SIZE), "R, G, B"), ((SIZE, SIZE, 1), "R, G, B"),
                                            ((2, SIZE, SIZE, 2), "RG, GB, RB")])
def test_one_or_two_channels_without_channels_is_ambiguous(clf, shape, choices):
    with pytest.raises(AmbiguousChannelsError, match=choices):
        clf.predict(np.zeros(shape, dtype=np.uint8))


def test_one_graph_of_that_count_resolves_the_ambiguity(task1_artifacts, tmp_path, images):
    clf = Classifier(subset_artifacts(task1_artifacts, tmp_path / "a", ["RGB", "GB", "R"]), device="cpu")
    assert clf.preprocess(images[..., :1])[1] == ChannelConfig("R")
    assert clf.preprocess(images[..., :2])[1] == ChannelConfig("GB")


@pytest.mark.parametrize("shape, channels", [((SIZE, SIZE, 2), "R"), ((SIZE, SIZE, 1), "RG"),
                                             ((SIZE, SIZE, 2), "RGB"), ((SIZE, SIZE), "GB")])
def test_channel_count_contradicting_channels(clf, shape, channels):
    with pytest.raises(ChannelMismatchError, match=f"channels={channels}"):
        clf.predict(np.zeros(shape, dtype=np.uint8), channels=channels)


def test_mixed_channel_counts_in_one_call(clf, images):
    with pytest.raises(ChannelMismatchError, match="different channel counts"):
        clf.predict([images[0], images[1][..., :1]], channels="R")


def test_invalid_channels(clf, images):
    with pytest.raises(InvalidChannelsError, match="RGB, RG"):
        clf.predict(images, channels="BGR")


def test_configuration_not_exported(task1_artifacts, tmp_path, images):
    clf = Classifier(subset_artifacts(task1_artifacts, tmp_path / "a", ["RGB"]), device="cpu")
    with pytest.raises(ConfigurationNotExportedError, match="RG was not exported.*exported: RGB"):
        clf.predict(images, channels="RG")


# --- bad input ------------------------------------------------------------------------------------

def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for a huge image with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("bad, match", [
    ([], "empty batch"),
    (np.zeros((0, SIZE, SIZE, 3), np.uint8), "empty batch"),
    (np.zeros((0, 5, 3), np.uint8), "zero-sized"),
    (np.full((SIZE, SIZE, 3), np.nan, np.float32), "NaN or infinite"),
    (np.full((SIZE, SIZE, 3), np.inf, np.float64), "NaN or infinite"),
    (np.full((SIZE, SIZE, 3), 2.0, np.float32), r"expected \[0, 1\]"),
    (np.zeros((SIZE, SIZE, 3), np.int64), "dtype int64"),
    (np.zeros((SIZE, SIZE, 4), np.uint8), "4 channels"),
    (np.zeros((1, 1, SIZE, SIZE, 3), np.uint8), "shape"),
    ({"not": "an image"}, "unsupported type dict"),
    (Image.new("RGB", (0, 4)), "zero-sized"),
])
def test_bad_inputs_raise_typed_errors(clf, bad, match):
    with pytest.raises(InvalidImageError, match=match):
        clf.predict(bad)


def test_bad_files(clf, tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InvalidImageError, match="not a readable image"):
        clf.predict(tmp_path / "text.png")
    with pytest.raises(InvalidImageError, match="file not found"):
        clf.predict(str(tmp_path / "missing.jpg"))
    (tmp_path / "cut.png").write_bytes(_png_declaring(8, 8)[:30])
    with pytest.raises(InvalidImageError):
        clf.predict(tmp_path / "cut.png")


def test_decompression_bomb_is_refused_before_decoding(clf, tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))
    from PIL import ImageFile

    for cls in (Image.Image, ImageFile.ImageFile):
        monkeypatch.setattr(cls, "load", lambda self: pytest.fail("decoded a decompression bomb"))
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        clf.predict(path)


def test_every_error_is_an_anychannel_error():
    for cls in (AmbiguousChannelsError, ChannelMismatchError, ConfigurationNotExportedError, InvalidChannelsError,
                InvalidImageError):
        assert issubclass(cls, AnyChannelError)


def test_library_evaluates_and_benchmarks_without_the_cli(task1_artifacts):
    """What `cli.py evaluate` and `bench` print comes from runtime.validation and runtime.bench."""
    from runtime.bench import benchmark
    from runtime.validation import accuracy_rows, batched_logits

    clf = Classifier(task1_artifacts, device="cpu")
    rng = np.random.default_rng(0)
    size = clf.artifacts.image_size
    images = rng.integers(0, 256, (10, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(clf.class_names), 10)
    rows = accuracy_rows(clf, images, labels, ["RGB", "R"], batch_size=4)
    assert [r["channels"] for r in rows] == ["RGB", "R"] and all(r["images"] == 10 for r in rows)
    expected = float((clf.predict_logits(images, "R").argmax(1) == labels).mean())
    assert rows[1]["accuracy"] == expected
    assert batched_logits(clf, images, ChannelConfig("R"), 3).shape == (10, len(clf.class_names))
    seen = []
    report = benchmark(lambda: clf, ChannelConfig("RG"), [1, 2], runs=2, warmup=0,
                       eager_for=lambda c: seen.append(c) or (lambda x, threads: c.run(x, ChannelConfig("RG")), "same"),
                       threads=1)
    assert seen == [clf] and report["channels"] == "RG" and report["torch_eager"] == "same"
    assert [r["batch_size"] for r in report["results"]] == [1, 2]
    assert all(r["max_abs_logit_diff"] == 0.0 and r["onnxruntime"]["runs"] == 2 for r in report["results"])


# --- runtime.request: what predict, evaluate and bench run, without the CLI -------------------------

def test_request_defaults_are_the_classifiers(task1_artifacts):
    """RuntimeOptions and PredictRequest default to what Classifier itself defaults to."""
    import inspect

    from runtime.request import PredictRequest, RuntimeOptions

    init = inspect.signature(Classifier.__init__).parameters
    for name in ("device", "precision", "trt_fp16", "trt_cache_dir"):
        assert getattr(RuntimeOptions, name) == init[name].default, name
    assert PredictRequest.top_k == inspect.signature(Classifier.predict).parameters["top_k"].default
    clf = RuntimeOptions(device="cpu").classifier(task1_artifacts)
    assert clf.device == "cpu" and clf.artifacts.precision == "fp32"


def test_predict_request_gives_each_file_its_top_k(task1_artifacts, tmp_path):
    from runtime.request import PredictRequest, RuntimeOptions, predict

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    rng = np.random.default_rng(3)
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    result = predict(PredictRequest(paths, task1_artifacts, "GB", top_k=2, runtime=RuntimeOptions(device="cpu")))
    expected = Classifier(task1_artifacts, device="cpu").predict([str(p) for p in paths], "GB", top_k=2)
    assert result.paths == [str(p) for p in paths] and result.channels == "GB" and result.predictions == expected
    as_json = json.loads(result.to_json())
    assert [o["image"] for o in as_json] == result.paths
    assert as_json[1]["predictions"][0]["label"] == expected[1][0].label
    lines = result.to_text().splitlines()
    assert lines[0] == f"{paths[0]} [GB]: {expected[0][0].label} {expected[0][0].probability:.3f}, " \
                       f"{expected[0][1].label} {expected[0][1].probability:.3f}"


class _Split:
    """A labelled split as runtime.request.evaluate reads it: images, labels and a length."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


def _fake_dataset(clf: Classifier, class_names=None, n: int = 6):
    """What ``train.data.load_dataset`` returns, as far as runtime.request.evaluate reads it."""
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    size = clf.artifacts.image_size
    test = _Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, len(clf.class_names), n))
    return SimpleNamespace(name="fake", class_names=list(class_names or clf.class_names), splits={"test": test})


def test_evaluate_request_scores_a_loaded_split_and_refuses_other_classes(clf, task1_artifacts):
    from runtime.request import EvaluateRequest, RuntimeOptions, evaluate
    from runtime.validation import ClassMismatchError

    dataset = _fake_dataset(clf)
    asked = []
    request = EvaluateRequest(task1_artifacts, data="somewhere", channels="RGB,R", batch_size=4,
                              runtime=RuntimeOptions(device="cpu"))
    result = evaluate(request, lambda data, size: asked.append((data, size)) or dataset)
    assert asked == [("somewhere", clf.artifacts.image_size)]
    test = dataset.splits["test"]
    expected = float((clf.predict_logits(test.images, "R").argmax(1) == test.labels).mean())
    assert [r["channels"] for r in result.rows] == ["RGB", "R"] and result.rows[1]["accuracy"] == expected
    assert json.loads(result.to_json())["split"] == "test" and json.loads(result.to_json())["data"] == "fake"
    text = result.to_text().splitlines()
    assert text[0] == f"fake test split, 6 images, graphs in {task1_artifacts} (CPUExecutionProvider)"
    assert text[1:3] == ["| channels | top-1 accuracy |", "|---|---|"] and text[4] == f"| R | {100 * expected:.2f}% |"
    other = _fake_dataset(clf, class_names=["cat", "dog"])
    with pytest.raises(ClassMismatchError, match=r"fake has classes cat, dog \(2 classes\), but the graphs"):
        evaluate(request, lambda data, size: other)


def test_evaluation_text_with_tensorrt_fp16_shows_the_fp32_comparison():
    from runtime.validation import Evaluation

    check = {"fp32_top1": 0.5, "change": -0.01, "top1_agreement_with_fp32": 0.98, "max_abs_logit_diff": 0.003}
    text = Evaluation("a/onnx", "d", 10, ["TensorrtExecutionProvider"], True,
                      [{"channels": "RGB", "images": 10, "accuracy": 0.49, "fp32": check}]).to_text()
    assert text.splitlines() == [
        "d test split, 10 images, graphs in a/onnx (TensorrtExecutionProvider, TensorRT fp16)",
        "| channels | top-1 accuracy | fp32 (CPU) | change | top-1 agreement | max logit diff |",
        "|---|---|---|---|---|---|",
        "| RGB | 49.00% | 50.00% | -1.00 pt | 0.9800 | 3.00e-03 |"]


def test_bench_request_reports_the_request_and_the_measurements(task1_artifacts):
    from runtime.request import BenchRequest, RuntimeOptions, bench, parse_batch_sizes

    assert parse_batch_sizes("32, 1,1") == (1, 32)
    for bad in ("0", "", "a,2", "-1"):
        with pytest.raises(ValueError, match="expected positive integers such as 1,32"):
            parse_batch_sizes(bad)
    seen = []
    request = BenchRequest(task1_artifacts, "GB", (1, 2), runs=2, warmup=0, runtime=RuntimeOptions(device="cpu"))
    report = bench(request, lambda clf, config: seen.append(config.name) or (None, "skipped: none here"))
    assert seen == ["GB"]
    as_dict = report.to_dict()
    assert list(as_dict)[:4] == ["artifacts", "precision", "device", "channels"] and "eager_threads" not in as_dict
    assert as_dict["device"] == "cpu" and [r["batch_size"] for r in as_dict["results"]] == [1, 2]
    assert json.loads(report.to_json()) == as_dict
    text = report.to_text().splitlines()
    assert text[0].startswith(f"GB graph from {task1_artifacts}, ")
    assert "device cpu: ran on CPUExecutionProvider" in text[0]
    assert text[2].startswith("PyTorch eager: skipped: none here (best of ")
    assert text[3] == "| runtime | batch | threads | p50 ms | p90 ms | p99 ms | images/s |"
    assert [line.split(" | ")[:2] for line in text[5:]] == [["| onnxruntime", "1"], ["| onnxruntime", "2"]]


def test_bench_text_names_the_tensorrt_engine_cache_and_the_eager_difference():
    from runtime.bench import BenchReport

    timing = {"batch_size": 4, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "images_per_s": 4000.0}
    result = {"channels": "R", "image_size": 16, "provider": "TensorrtExecutionProvider",
              "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"], "threads": 8,
              "eager_threads": [1, 8], "first_inference_ms": 12.34, "torch_eager": "ckpt.pt",
              "tensorrt": {"fp16": True, "engine_cache": "/c", "engine_was_cached": False, "max_batch": 32},
              "results": [{"batch_size": 4, "onnxruntime": timing, "torch_eager": timing | {"threads": 1},
                           "max_abs_logit_diff": 1e-6}]}
    lines = BenchReport("g", "fp32", "tensorrt", result).to_text().splitlines()
    assert lines[1] == "TensorRT engine cache /c (empty: engine built in the first inference), fp16 on"
    assert lines[2] == "first inference (load, verify, create session, run 1 image): 12.3 ms"
    assert lines[3] == "PyTorch eager: ckpt.pt (best of [1, 8] threads)"
    assert lines[6:] == ["| onnxruntime | 4 | 8 | 1.000 | 2.000 | 3.000 | 4000 |",
                         "| torch_eager | 4 | 1 | 1.000 | 2.000 | 3.000 | 4000 |",
                         "  batch 4: max |logit difference| onnxruntime vs eager 1.00e-06"]


def test_doctor_report_as_text_lists_devices_libraries_and_problems():
    from runtime import doctor

    report = doctor.report(None, load_torch=lambda: None, preload=False)
    report["problems"] = ["first", "second"]
    text = doctor.format_report(report)
    assert text.startswith(f"onnxruntime {report['onnxruntime']['version']} (built for CUDA ")
    assert "\n  --device cpu      requests CPUExecutionProvider\n" in text  # the one plan alike everywhere
    assert "torch: not installed" in text and text.endswith("problems:\n  - first\n  - second")
    report["problems"] = []
    assert doctor.format_report(report).endswith("\nno problems found")
