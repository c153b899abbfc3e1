"""Execution providers with a faked onnxruntime: order per device, TensorRT's engine cache and
options, fallbacks, strict_device and one warning per process.

The fake (``tests/fake_ort.py``, installed by the ``fake_ort`` fixture) reports which providers its
"build" has and which of them start; sessions still run the real graph on onnxruntime's CPU
provider, so results are real.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from runtime import Classifier, DeviceUnavailableError
from runtime import device as device_module
from runtime.device import COREML, CPU, CUDA, TENSORRT, ProviderPlan, plan_providers


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


# --- TensorRT fp16, validated like export's fp16 graphs ---------------------------------------------

def _rounded(logits: np.ndarray) -> np.ndarray:
    """What fp16 kernels do, roughly: float16 rounding of the logits."""
    return logits.astype(np.float16).astype(np.float32)


def _wrong_half(logits: np.ndarray) -> np.ndarray:
    """An fp16 mode gone bad: the top class moves on every other image."""
    out = logits.copy()
    out[::2] = np.roll(out[::2], 1, axis=1)
    return out


def test_compare_top1_fields_match_the_manifest():
    from runtime.validation import compare_top1

    labels = np.array([0, 1, 2, 3])
    fp32 = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]
    reduced = np.eye(4, dtype=np.float32)[[0, 1, 1, 0]]
    check = compare_top1(fp32, reduced, labels, split="val", max_drop=0.2, validated_on=TENSORRT)
    assert (check.fp32_top1, check.top1, check.agreement, check.max_abs_logit_diff) == (0.75, 0.5, 0.75, 1.0)
    assert check.change == -0.25 and not check.passed
    assert check.to_dict("trt_fp16") == {
        "split": "val", "images": 4, "fp32_top1": 0.75, "trt_fp16_top1": 0.5, "change": -0.25, "max_drop": 0.2,
        "top1_agreement_with_fp32": 0.75, "max_abs_logit_diff": 1.0, "validated_on": TENSORRT}


def test_tensorrt_fp16_passes_validation_against_fp32_on_the_cpu(fake_ort, task1_artifacts, tmp_path,
                                                                  synthetic_dataset):
    from runtime.validation import validate_precision

    fake_ort(fp16=_rounded)
    test = synthetic_dataset.splits["test"]
    half = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path, trt_fp16=True)
    checks = validate_precision(half, Classifier(task1_artifacts, device="cpu"), test.images, test.labels,
                                configs=["RGB", "R"], split="synthetic test")
    assert list(checks) == ["RGB", "R"]
    for check in checks.values():
        assert check.validated_on == TENSORRT and check.images == len(test.labels)
        assert 0 < check.max_abs_logit_diff < 0.05 and check.agreement > 0.95 and check.passed


def test_tensorrt_fp16_that_loses_accuracy_is_refused(fake_ort, task1_artifacts, tmp_path, synthetic_dataset):
    from runtime.validation import PrecisionDropError, validate_precision

    fake_ort(fp16=_wrong_half)
    test = synthetic_dataset.splits["test"]
    half = Classifier(task1_artifacts, device="tensorrt", trt_cache_dir=tmp_path, trt_fp16=True)
    with pytest.raises(PrecisionDropError, match=r"^RGB: TensorRT fp16 loses .* top-1 on synthetic test") as info:
        validate_precision(half, Classifier(task1_artifacts, device="cpu"), test.images, test.labels,
                           split="synthetic test")
    assert info.value.config == "RGB" and info.value.check.change < -0.02
