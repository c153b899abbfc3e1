"""Execution providers with a faked onnxruntime: order per device, TensorRT's engine cache and
options, fallbacks, strict_device and one warning per process.

The fake reports which providers its "build" has and which of them start; sessions still run the
real graph on onnxruntime's CPU provider, so results are real.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as real_ort
import pytest

from runtime import Classifier, DeviceUnavailableError
from runtime import classifier as classifier_module
from runtime import device as device_module
from runtime.device import COREML, CPU, CUDA, TENSORRT, ProviderPlan, plan_providers

EVERYTHING = [TENSORRT, CUDA, COREML, CPU]


class FakeSession:
    """A real CPU session that claims the providers the fake build started."""

    def __init__(self, session: real_ort.InferenceSession, active: list[str]) -> None:
        self._session, self._active = session, active
        self.fallback_enabled = False
        self.batches: list[int] = []

    def get_providers(self) -> list[str]:
        return list(self._active)

    def enable_fallback(self) -> None:
        self.fallback_enabled = True

    def run(self, outputs, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self._session.run(outputs, feeds)

    def __getattr__(self, name):
        return getattr(self._session, name)


class FakeOrt:
    """Stands in for the ``onnxruntime`` module: ``available`` providers, of which ``starts`` start
    (the CPU always does) and ``raises`` make session creation raise."""

    __version__ = real_ort.__version__
    __file__ = real_ort.__file__  # where the provider libraries are looked for
    cuda_version = getattr(real_ort, "cuda_version", "")
    SessionOptions = real_ort.SessionOptions

    def __init__(self, available: list[str], starts: set[str] = frozenset(), raises: set[str] = frozenset()):
        self.available, self.starts, self.raises = available, starts, raises
        self.calls: list[dict] = []  # providers and options of each InferenceSession() call
        self.sessions: list[FakeSession] = []

    def get_available_providers(self) -> list[str]:
        return list(self.available)

    def set_default_logger_severity(self, level: int) -> None:
        pass

    def InferenceSession(self, data, options=None, providers=(), **kwargs):  # noqa: N802 (onnxruntime's name)
        requested = [(p, {}) if isinstance(p, str) else p for p in providers]
        self.calls.append({"providers": [name for name, _ in requested], "options": dict(requested),
                           "enable_fallback": kwargs.get("enable_fallback", 1)})
        for name, _ in requested:
            if name in self.raises:
                raise RuntimeError(f"{name}: failed to create the provider")
        active = [name for name, _ in requested if name in self.starts or name == CPU]
        session = FakeSession(real_ort.InferenceSession(data, options, providers=[CPU]), active)
        self.sessions.append(session)
        return session


@pytest.fixture
def fake_ort(monkeypatch):
    """Install a fake onnxruntime (a GPU machine: the NVIDIA driver loads); returns a factory."""
    monkeypatch.setattr(device_module, "try_load", lambda lib: None)

    def install(available=EVERYTHING, starts=frozenset(EVERYTHING), raises=frozenset()) -> FakeOrt:
        fake = FakeOrt(list(available), set(starts), set(raises))
        monkeypatch.setattr(device_module, "ort", fake)
        monkeypatch.setattr(classifier_module, "ort", fake)
        return fake

    return install


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "anychannel.runtime"]


# --- provider order ---------------------------------------------------------------------------------

@pytest.mark.parametrize("device, providers, wanted", [
    ("auto", [CUDA, CPU], CUDA),            # TensorRT and CoreML are opt-in, even where available
    ("cuda", [CUDA, CPU], CUDA),
    ("tensorrt", [TENSORRT, CUDA, CPU], TENSORRT),  # CUDA is TensorRT's fallback
    ("coreml", [COREML, CPU], COREML),
    ("cpu", [CPU], None),
])
def test_provider_order_per_device(fake_ort, device, providers, wanted):
    fake_ort()
    assert plan_providers(device) == ProviderPlan(providers, wanted)


@pytest.mark.parametrize("available, device, providers", [
    ([CUDA, CPU], "tensorrt", [CUDA, CPU]),       # a build without TensorRT: CUDA, and TensorRT still wanted
    ([CPU], "tensorrt", [CPU]),
    ([CPU], "coreml", [CPU]),
    ([COREML, CPU], "auto", [CPU]),               # macOS: auto is the CPU, silently (wanted None)
])
def test_providers_this_build_lacks_are_not_requested(fake_ort, available, device, providers):
    fake_ort(available)
    plan = plan_providers(device)
    assert plan.providers == providers
    assert plan.wanted == (None if device == "auto" else device_module.DEVICE_PROVIDERS[device][0])


def test_without_a_driver_neither_cuda_nor_tensorrt_is_tried(fake_ort, monkeypatch):
    fake_ort()
    monkeypatch.setattr(device_module, "try_load", lambda lib: "libcuda.so.1: cannot open shared object file")
    assert plan_providers("tensorrt") == ProviderPlan([CPU], TENSORRT)
    assert plan_providers("coreml") == ProviderPlan([COREML, CPU], COREML)  # CoreML needs no NVIDIA driver


# --- TensorRT options and engine cache --------------------------------------------------------------

def test_tensorrt_gets_an_engine_cache_and_cuda_as_fallback(fake_ort, task1_artifacts, tmp_path, images):
    fake = fake_ort()
    clf = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path / "engines")
    clf.predict(images[..., :1], channels="R")
    call = fake.calls[-1]
    assert call["providers"] == [TENSORRT, CUDA, CPU]
    trt = call["options"][TENSORRT]
    cache = clf.engine_cache("R")
    assert cache.is_dir() and cache.parent == tmp_path / "engines"
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == str(cache)
    assert trt["trt_timing_cache_enable"] == "1" and trt["trt_fp16_enable"] == "0"
    # One profile for batches 1..32 of the R graph's input: no rebuild when the batch size changes.
    assert trt["trt_profile_min_shapes"] == "input:1x1x16x16"
    assert trt["trt_profile_max_shapes"] == "input:32x1x16x16"
    assert call["options"][CUDA] == {"use_tf32": "0"}
    assert clf.providers == [TENSORRT, CUDA, CPU]



def test_engine_cache_folders_separate_graphs_and_modes(fake_ort, task1_artifacts, tmp_path):
    fake_ort()
    fp32 = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path)
    fp16 = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path, trt_fp16=True)
    folders = {clf.engine_cache(c) for clf in (fp32, fp16) for c in fp32.configs}
    assert len(folders) == 2 * len(fp32.configs)  # seven graphs share node names: never one engine for two
    assert "fp16" in fp16.engine_cache("RGB").name and "fp32" in fp32.engine_cache("RGB").name
    assert Classifier(task1_artifacts, device="cpu").engine_cache("RGB") is None


def test_tensorrt_fp16_mode_is_passed_on(fake_ort, task1_artifacts, tmp_path, images):
    fake = fake_ort()
    Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path, trt_fp16=True).predict(images)
    assert fake.calls[-1]["options"][TENSORRT]["trt_fp16_enable"] == "1"


def test_default_engine_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(device_module.TRT_CACHE_ENV, str(tmp_path / "trt"))
    assert device_module.default_trt_cache_dir() == tmp_path / "trt"
    monkeypatch.delenv(device_module.TRT_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert device_module.default_trt_cache_dir() == tmp_path / "anychannel" / "tensorrt"


def test_batches_beyond_the_engine_profile_run_in_chunks(fake_ort, task1_artifacts, tmp_path):
    fake = fake_ort()
    clf = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path, trt_max_batch=4)
    x = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    logits = clf.predict_logits(x)
    assert fake.sessions[-1].batches == [4, 4, 2]
    np.testing.assert_allclose(logits, Classifier(task1_artifacts, device="cpu").predict_logits(x), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"device": "cuda", "trt_fp16": True}, "device='tensorrt'"),
    ({"device": "auto", "trt_cache_dir": "x"}, "device='tensorrt'"),
    ({"device": "tensorrt", "trt_fp16": True, "precision": "int8"}, "already reduced"),
    ({"device": "tensorrt", "trt_max_batch": 0}, "trt_max_batch"),
])
def test_tensorrt_options_are_validated(task1_artifacts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Classifier(task1_artifacts, **kwargs)


def test_an_unwritable_engine_cache_leaves_tensorrt_with_the_reason(fake_ort, task1_artifacts, tmp_path, images,
                                                                    caplog):
    """Like any provider that cannot start: CUDA takes over with one warning; strict_device raises."""
    fake_ort()
    (tmp_path / "file").write_text("")
    blocked = tmp_path / "file" / "engines"
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        clf = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=blocked)
        clf.predict(images)
    assert clf.providers == [CUDA, CPU]
    assert "engine cache folder" in _warnings(caplog)[0] and "--trt-cache-dir" in _warnings(caplog)[0]
    with pytest.raises(DeviceUnavailableError, match="engine cache folder"):
        Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=blocked, strict_device=True)


# --- fallbacks, strict_device, one warning --------------------------------------------------------

def test_tensorrt_that_does_not_start_falls_back_to_cuda_with_one_warning(fake_ort, task1_artifacts, images,
                                                                         caplog, tmp_path):
    fake = fake_ort(starts={CUDA})
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        clf = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path)
        for config in clf.configs:
            clf.predict(images, channels=config)
        Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path).predict(images)  # same process
    assert clf.providers == [CUDA, CPU]
    (message,) = _warnings(caplog)
    assert message.startswith("TensorRT was requested but onnxruntime runs on CUDAExecutionProvider")
    # Only the first session asked for TensorRT: the others went straight to its fallback.
    assert [c["providers"] for c in fake.calls] == [[TENSORRT, CUDA, CPU]] + [[CUDA, CPU]] * 7


def test_a_provider_that_raises_at_creation_is_dropped_quietly(fake_ort, task1_artifacts, images, caplog,
                                                              capfd, tmp_path):
    """onnxruntime's own retry prints a block to stdout per session; ours retries without the provider."""
    fake = fake_ort(raises={TENSORRT})
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        clf = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path)
        clf.predict(images)
    assert [c["providers"] for c in fake.calls] == [[TENSORRT, CUDA, CPU], [CUDA, CPU]]
    assert all(c["enable_fallback"] == 0 for c in fake.calls)
    assert fake.sessions[-1].fallback_enabled  # onnxruntime's run-time fallback stays on without strict_device
    (message,) = _warnings(caplog)
    assert "Session creation failed with: TensorrtExecutionProvider" in message
    assert "EP Error" not in capfd.readouterr().out


def test_cuda_that_raises_at_creation_falls_back_to_the_cpu(fake_ort, task1_artifacts, images, caplog):
    fake = fake_ort(raises={CUDA})
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        clf = Classifier(task1_artifacts, device="auto")
        clf.predict(images)
        clf.predict(images[..., :2], channels="RG")
    assert clf.providers == [CPU]
    assert [c["providers"] for c in fake.calls] == [[CUDA, CPU], [CPU], [CPU]]
    assert len(_warnings(caplog)) == 1 and "CUDA was requested" in _warnings(caplog)[0]


@pytest.mark.parametrize("device, starts, match", [
    ("tensorrt", {CUDA}, "TensorRT was requested"),
    ("cuda", set(), "CUDA was requested"),
    ("coreml", set(), "CoreML was requested"),
])
def test_strict_device_applies_to_each_provider(fake_ort, task1_artifacts, tmp_path, device, starts, match):
    fake_ort(starts=starts)
    extra = {"trt_cache_dir": tmp_path} if device == "tensorrt" else {}
    with pytest.raises(DeviceUnavailableError, match=match):
        Classifier(task1_artifacts, device=device, strict_device=True, **extra)


def test_strict_device_keeps_onnxruntime_run_fallback_off(fake_ort, task1_artifacts, tmp_path):
    fake = fake_ort()
    Classifier(task1_artifacts, device="tensorrt", strict_device=True, trt_cache_dir=tmp_path)
    assert not fake.sessions[-1].fallback_enabled


def test_coreml_runs_when_the_build_has_it(fake_ort, task1_artifacts, images, caplog):
    fake = fake_ort(available=[COREML, CPU], starts={COREML})
    with caplog.at_level(logging.WARNING):
        clf = Classifier(task1_artifacts, device="coreml", strict_device=True)
        clf.predict(images)
    assert clf.providers == [COREML, CPU] and fake.calls[-1]["providers"] == [COREML, CPU]
    assert not caplog.records


def test_coreml_missing_from_the_build_says_where_it_ships(fake_ort, task1_artifacts, images, caplog):
    fake_ort(available=[CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="anychannel.runtime"):
        Classifier(task1_artifacts, device="coreml").predict(images)
    (message,) = _warnings(caplog)
    assert "no CoreML provider" in message and "macOS" in message
