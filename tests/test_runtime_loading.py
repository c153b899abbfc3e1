"""runtime.Classifier: artifacts and checksums, lazy thread-safe sessions, providers and threads."""
from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime import ALL_CONFIGS, ArtifactError, Classifier, DeviceUnavailableError
from runtime import device as device_module
from runtime.contract import MANIFEST_NAME, META_CHANNELS, graph_filename, sha256_file
from runtime.channels import ChannelConfig

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture
def artifacts(task1_artifacts, tmp_path) -> Path:
    """A private copy of the exported folder, for tests that damage it."""
    return Path(shutil.copytree(task1_artifacts, tmp_path / "onnx"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def _graph_path(folder: Path, name: str) -> Path:
    return folder / graph_filename("task1", ChannelConfig(name))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)


# --- artifacts ----------------------------------------------------------------------------------

def test_folder_or_manifest_path(task1_artifacts):
    by_folder = Classifier(task1_artifacts, device="cpu")
    by_file = Classifier(task1_artifacts / MANIFEST_NAME, device="cpu")
    assert by_folder.configs == by_file.configs == list(ALL_CONFIGS)
    assert by_folder.class_names == by_file.class_names and len(by_folder.class_names) == 10


@pytest.mark.parametrize("where", ["missing-folder", "empty-folder", "missing-manifest-file"])
def test_missing_artifacts(tmp_path, where):
    path = {"missing-folder": tmp_path / "nope", "empty-folder": tmp_path,
            "missing-manifest-file": tmp_path / MANIFEST_NAME}[where]
    with pytest.raises(ArtifactError, match="no exported artifacts.*cli.py export"):
        Classifier(path, device="cpu")


def test_missing_graph_file_is_reported_at_construction(artifacts):
    _graph_path(artifacts, "GB").unlink()
    with pytest.raises(ArtifactError, match="missing.*task1-GB.onnx"):
        Classifier(artifacts, device="cpu")


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate"])
def test_tampered_or_truncated_graph_is_refused(artifacts, images, damage):
    path = _graph_path(artifacts, "RG")
    data = bytearray(path.read_bytes())
    if damage == "flip-a-byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    path.write_bytes(bytes(data))
    clf = Classifier(artifacts, device="cpu")
    clf.predict(images)  # other graphs are unaffected
    with pytest.raises(ArtifactError, match="task1-RG.onnx does not match its manifest checksum"):
        clf.predict(images, channels="RG")


@pytest.mark.parametrize("edit, match", [
    (lambda m: "{not json", "not a readable manifest"),
    (lambda m: [1, 2], "not an anychannel manifest"),
    (lambda m: {**m, "contract_version": 99}, "contract version 99"),
    (lambda m: {**m, "graphs": {}}, "lists no graphs"),
    (lambda m: {k: v for k, v in m.items() if k != "class_names"}, "malformed.*class_names"),
    (lambda m: {**m, "graphs": {"X": {**m["graphs"]["RGB"], "channels": "X"}}}, "malformed"),
])
def test_malformed_manifest(artifacts, edit, match):
    result = edit(_manifest(artifacts))
    (artifacts / MANIFEST_NAME).write_text(result if isinstance(result, str) else json.dumps(result))
    with pytest.raises(ArtifactError, match=match):
        Classifier(artifacts, device="cpu")


def test_manifest_cannot_point_outside_its_folder(artifacts, tmp_path):
    manifest = _manifest(artifacts)
    shutil.copy(_graph_path(artifacts, "RGB"), tmp_path / "outside.onnx")
    manifest["graphs"]["RGB"]["file"] = "../outside.onnx"
    (artifacts / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="missing"):
        Classifier(artifacts, device="cpu")


def test_graph_metadata_must_agree_with_the_manifest(artifacts, images):
    """A graph re-labelled for another configuration (checksum updated) is still refused."""
    import onnx

    path = _graph_path(artifacts, "RG")
    model = onnx.load(path)
    next(p for p in model.metadata_props if p.key == META_CHANNELS).value = "GB"
    onnx.save(model, path)
    manifest = _manifest(artifacts)
    manifest["graphs"]["RG"]["sha256"] = sha256_file(path)
    (artifacts / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="it is for GB, but the manifest lists it for RG"):
        Classifier(artifacts, device="cpu").predict(images, channels="RG")


def test_preprocessing_comes_from_graph_metadata(task1_artifacts):
    spec = Classifier(task1_artifacts, device="cpu").spec("RB")
    assert spec.config == ChannelConfig("RB") and spec.image_size == 16
    assert spec.mean == pytest.approx((0.485, 0.406)) and spec.std == pytest.approx((0.229, 0.225))
    assert (spec.resize, spec.interpolation) == ("resize_shorter_center_crop", "bilinear")


# --- sessions -----------------------------------------------------------------------------------

def test_sessions_are_created_lazily_per_configuration(task1_artifacts, images):
    clf = Classifier(task1_artifacts, device="cpu")
    assert clf._graphs == {}
    clf.predict(images[..., :2], channels="GB")
    assert list(clf._graphs) == ["GB"]


def test_preload_loads_and_warms_up_everything(task1_artifacts, monkeypatch):
    warmed = []
    real = Classifier.run
    monkeypatch.setattr(Classifier, "run", lambda self, x, c: warmed.append(str(c)) or real(self, x, c))
    clf = Classifier(task1_artifacts, device="cpu", preload=True)
    assert list(clf._graphs) == [c.name for c in ALL_CONFIGS] == warmed


def test_concurrent_first_use_builds_one_session(task1_artifacts, images, monkeypatch):
    clf = Classifier(task1_artifacts, device="cpu")
    loads = []
    real = Classifier._load
    monkeypatch.setattr(Classifier, "_load", lambda self, c: loads.append(c.name) or real(self, c))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: clf.predict_logits(images, "RB"), range(16)))
    assert loads == ["RB"]


def test_threads_share_one_classifier_with_serial_results(task1_artifacts):
    rng = np.random.default_rng(3)
    jobs = [(rng.integers(0, 256, (int(rng.integers(1, 5)), 20, 18, 3), dtype=np.uint8), c)
            for c in ALL_CONFIGS for _ in range(4)]
    serial = [Classifier(task1_artifacts, device="cpu").predict_logits(x, c) for x, c in jobs]
    shared = Classifier(task1_artifacts, device="cpu")
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda job: shared.predict_logits(*job), jobs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_cpu_threads_follow_the_affinity_mask(task1_artifacts, monkeypatch):
    monkeypatch.setattr(device_module.os, "sched_getaffinity", lambda pid: {0})
    clf = Classifier(task1_artifacts, device="cpu")
    clf.warm_up("R")
    assert clf._graphs["R"].session.get_session_options().intra_op_num_threads == 1


# --- providers ----------------------------------------------------------------------------------

def _cuda_really_works(task1_artifacts) -> bool:
    return CUDA in Classifier(task1_artifacts, device="auto", ort_log_severity=None).providers


def test_cpu_device_uses_the_cpu_without_warning(task1_artifacts, caplog):
    with caplog.at_level(logging.WARNING):
        clf = Classifier(task1_artifacts, device="cpu")
        assert clf.providers == [CPU]
    assert not caplog.records


def test_cuda_fallback_logs_one_warning_with_causes(task1_artifacts, images, caplog, capfd):
    if CUDA not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    if _cuda_really_works(task1_artifacts):
        pytest.skip("CUDA works here: nothing falls back")
    device_module.reset_failures()  # the probe above warned: start again as a fresh process
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        clf = Classifier(task1_artifacts, device="auto")
        for config in ALL_CONFIGS:
            clf.predict(images, channels=config)
        # A second Classifier in the same process does not warn again, and skips CUDA.
        other = Classifier(task1_artifacts, device="cuda")
        other.predict(images)
    assert clf.providers == other.providers == [CPU]
    warnings = [r for r in caplog.records if r.name == "anychannel.runtime"]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    for cause in ("cuDNN", "onnxruntime.preload_dlls()", "cli.py doctor", "device='cpu'"):
        assert cause in text
    # onnxruntime's own lines about the failed provider are silenced: ours says it all.
    assert "onnxruntime" not in capfd.readouterr().err


def test_strict_device_raises_instead(task1_artifacts):
    if CUDA in ort.get_available_providers() and _cuda_really_works(task1_artifacts):
        pytest.skip("CUDA works here")
    with pytest.raises(DeviceUnavailableError, match="CUDA was requested"):
        Classifier(task1_artifacts, device="cuda", strict_device=True)


def test_auto_on_a_cpu_only_build_does_not_warn(task1_artifacts, monkeypatch, caplog):
    monkeypatch.setattr(device_module.ort, "get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.WARNING):
        assert Classifier(task1_artifacts, device="auto", strict_device=True).providers == [CPU]
    assert not caplog.records


def test_cuda_on_a_cpu_only_build_says_to_install_onnxruntime_gpu(task1_artifacts, monkeypatch, caplog):
    monkeypatch.setattr(device_module.ort, "get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        assert Classifier(task1_artifacts, device="cuda").providers == [CPU]
    assert "install onnxruntime-gpu" in caplog.records[0].getMessage()


def test_duplicate_onnxruntime_installs_are_named(monkeypatch):
    monkeypatch.setattr(device_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(device_module, "onnxruntime_distributions",
                        lambda: [("onnxruntime", "1.31.1"), ("onnxruntime-gpu", "1.31.1")])
    message = device_module.cuda_unavailable_message([CPU])
    assert "pip uninstall onnxruntime onnxruntime-gpu" in message


def test_cuda_is_not_tried_without_a_driver(monkeypatch):
    """No NVIDIA driver: the plan skips the CUDA attempt (it cannot work) but still wants CUDA."""
    monkeypatch.setattr(device_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(device_module, "try_load", lambda lib: "libcuda.so.1: cannot open shared object file")
    for device in ("auto", "cuda"):
        assert device_module.plan_providers(device) == device_module.ProviderPlan([CPU], wanted=CUDA)
    assert "The NVIDIA driver does not load (libcuda.so.1" in device_module.cuda_unavailable_message([CPU])
    monkeypatch.setattr(device_module, "try_load", lambda lib: None)
    assert device_module.plan_providers("auto").providers == [CUDA, CPU]


def test_onnxruntime_distributions_are_read_from_dist_info(tmp_path, monkeypatch):
    for folder in ("onnxruntime_gpu-1.31.1.dist-info", "onnxruntime-1.30.0.dist-info",
                   "onnxruntime_genai-0.5.0.dist-info", "numpy-2.0.0.dist-info", "onnxruntime"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(device_module.sys, "path", [str(tmp_path), str(tmp_path / "missing")])
    assert device_module.onnxruntime_distributions() == [("onnxruntime", "1.30.0"), ("onnxruntime-gpu", "1.31.1")]


def test_invalid_device():
    with pytest.raises(ValueError, match="auto, cuda, tensorrt, coreml, cpu"):
        device_module.plan_providers("gpu")
