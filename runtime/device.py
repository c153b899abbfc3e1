"""Execution providers: which to ask onnxruntime for, and why the one asked for is not in use when it is not.

Every session loads this module, so it holds only that; the checks behind ``python cli.py doctor``
are in :mod:`runtime.doctor`, which builds on it. Stdlib and onnxruntime only: torch is consulted
only when the app has already imported it.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
COREML = "CoreMLExecutionProvider"

#: ``device=`` value -> providers to ask for, preferred first. TensorRT falls back to CUDA, then
#: the CPU. TensorRT and CoreML are opt-in: a first-run engine build and different numerics should
#: not surprise ``auto``, which stays CUDA then CPU.
DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "auto": (CUDA, CPU),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
    "coreml": (COREML, CPU),
    "cpu": (CPU,),
}
DEVICES = tuple(DEVICE_PROVIDERS)
#: Providers that cannot start without the NVIDIA driver.
NVIDIA_PROVIDERS = frozenset({CUDA, TENSORRT})


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to request, and the one that must end up in use (``None``: nothing to report).

    ``wanted`` stays set when its provider was left out of ``providers`` (no driver, or it already
    failed in this process), so that the fallback is still reported, or refused by ``strict_device``.
    """

    providers: list[str]
    wanted: str | None

    @property
    def accelerated(self) -> bool:
        """Whether anything besides the CPU is requested (an attempt that can fail)."""
        return any(p != CPU for p in self.providers)


#: The NVIDIA driver's user-space library: without it no CUDA provider can start.
def driver_library(platform_name: str | None = None) -> str:
    """The NVIDIA driver's library on ``platform_name`` (``sys.platform`` by default)."""
    return "nvcuda.dll" if (platform_name or sys.platform) == "win32" else "libcuda.so.1"


DRIVER_LIBRARY = driver_library()

# --- one warning per process ------------------------------------------------------------------
# A provider that failed to start in this process fails again (its libraries do not appear
# mid-run): it is reported once, and later sessions, of any Classifier, skip it.
_failed: dict[str, str] = {}
_failed_lock = threading.Lock()


def record_failure(provider: str, message: str) -> bool:
    """Remember that ``provider`` was wanted but not in use; True only the first time in this process."""
    with _failed_lock:
        if provider in _failed:
            return False
        _failed[provider] = message
        return True


def failed_providers() -> frozenset[str]:
    """Providers that failed earlier in this process (see :func:`record_failure`)."""
    with _failed_lock:
        return frozenset(_failed)


def earlier_failure(provider: str) -> str | None:
    """The message recorded when ``provider`` failed earlier in this process, if it did."""
    with _failed_lock:
        return _failed.get(provider)


def reset_failures() -> None:
    """Forget earlier failures: the next session tries every provider again and may warn again."""
    with _failed_lock:
        _failed.clear()


def plan_providers(device: str) -> ProviderPlan:
    """The providers for ``device`` (see :data:`DEVICE_PROVIDERS`), keeping those this build has.

    ``auto`` wants CUDA only when this onnxruntime build has it (else the CPU, silently); the
    other devices always want their first provider. Where the NVIDIA driver does not load (a
    machine without a GPU), CUDA and TensorRT are not even tried: the attempt costs a cold start
    about 40 ms and cannot succeed. Providers that already failed in this process are skipped.
    """
    if device not in DEVICE_PROVIDERS:
        raise ValueError(f"device={device!r}; expected one of {', '.join(DEVICES)}")
    chain = DEVICE_PROVIDERS[device]
    available = ort.get_available_providers()
    wanted = chain[0] if chain[0] != CPU else None
    if device == "auto" and wanted not in available:
        return ProviderPlan([CPU], wanted=None)
    skip = failed_providers()
    if any(p in NVIDIA_PROVIDERS and p in available for p in chain) and try_load(DRIVER_LIBRARY) is not None:
        skip |= NVIDIA_PROVIDERS
    return ProviderPlan([p for p in chain if p == CPU or (p in available and p not in skip)], wanted)


#: Where TensorRT engines are cached unless ``trt_cache_dir`` says otherwise.
TRT_CACHE_ENV = "ANYCHANNEL_TRT_CACHE"


def default_trt_cache_dir() -> Path:
    """``$ANYCHANNEL_TRT_CACHE``, else ``$XDG_CACHE_HOME/anychannel/tensorrt`` (``~/.cache/...``)."""
    if os.environ.get(TRT_CACHE_ENV):
        return Path(os.environ[TRT_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anychannel" / "tensorrt"


def tensorrt_options(cache_dir: "str | os.PathLike[str]", input_name: str, input_chw: tuple[int, int, int],
                     max_batch: int, fp16: bool = False) -> dict[str, str]:
    """TensorRT provider options: an engine (and timing) cache in ``cache_dir``, so the engine build
    is paid on the first run only, and one optimisation profile for batches 1..``max_batch``, so
    that a new batch size does not rebuild the engine; it is tuned for batch 1, what an edge camera
    sends. ``fp16`` lets TensorRT pick float16 kernels."""
    shape = "x".join(str(d) for d in input_chw)
    return {
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": os.fspath(cache_dir),
        "trt_timing_cache_enable": "1", "trt_timing_cache_path": os.fspath(cache_dir),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_profile_min_shapes": f"{input_name}:1x{shape}",
        "trt_profile_opt_shapes": f"{input_name}:1x{shape}",
        "trt_profile_max_shapes": f"{input_name}:{max_batch}x{shape}",
    }


def with_provider_options(providers: list[str], tensorrt: dict[str, str] | None = None) -> list:
    """``providers`` as onnxruntime takes them: CUDA with TF32 off (results match the CPU and
    PyTorch's fp32 evaluation, not a 10-bit mantissa), TensorRT with ``tensorrt`` (see
    :func:`tensorrt_options`)."""
    options = {CUDA: {"use_tf32": "0"}, TENSORRT: tensorrt or {}}
    return [(p, options[p]) if options.get(p) else p for p in providers]


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's share), not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def onnxruntime_distributions() -> list[tuple[str, str]]:
    """Installed distributions that provide ``onnxruntime`` (name, version): more than one is a conflict.

    Read from the ``*.dist-info`` folder names on ``sys.path`` rather than ``importlib.metadata``,
    whose import alone costs the warning path about 40 ms.
    """
    found: dict[str, str] = {}
    for folder in sys.path:
        try:
            entries = os.listdir(folder or ".")
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info") or not entry.lower().startswith(("onnxruntime", "ort_nightly")):
                continue
            name, _, version = entry[:-len(".dist-info")].partition("-")
            name = name.lower().replace("_", "-")
            if "genai" not in name and "extensions" not in name:
                found.setdefault(name, version)
    return sorted(found.items())


#: onnxruntime's provider libraries (in ``onnxruntime/capi``), by provider.
PROVIDER_LIBRARIES = {CUDA: "cuda", TENSORRT: "tensorrt"}


def provider_library(provider: str = CUDA) -> Path:
    """onnxruntime's shared library for ``provider`` (CUDA or TensorRT; Linux/Windows name)."""
    capi = Path(ort.__file__).parent / "capi"
    stem = f"onnxruntime_providers_{PROVIDER_LIBRARIES[provider]}"
    return capi / (f"{stem}.dll" if sys.platform == "win32" else f"lib{stem}.so")


def try_load(library: "str | os.PathLike[str]") -> str | None:
    """None if the shared library loads, else the loader's message (which names a missing dependency)."""
    try:
        ctypes.CDLL(str(library))
        return None
    except OSError as exc:
        return str(exc)


def ort_cuda_major() -> str | None:
    version = getattr(ort, "cuda_version", "") or ""
    return version.split(".")[0] or None


def torch_cuda_major_if_imported() -> str | None:
    """torch's CUDA major, only if the app already imported torch (the runtime never imports it)."""
    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch else None
    return str(cuda).split(".")[0] if cuda else None


def cuda_unavailable_message(active: list[str]) -> str:
    """Why CUDA is probably not in use, and what to do: for the warning and DeviceUnavailableError."""
    lines = [f"CUDA was requested but onnxruntime runs on {', '.join(active)}."]
    dists = onnxruntime_distributions()
    if CUDA not in ort.get_available_providers():
        lines.append(f"This onnxruntime build has no CUDA provider (installed: "
                     f"{', '.join(f'{n} {v}' for n, v in dists) or 'unknown'}); install onnxruntime-gpu.")
    elif len(dists) > 1:
        lines.append(f"Several onnxruntime packages are installed ({', '.join(n for n, _ in dists)}); the CPU "
                     "'onnxruntime' one can shadow onnxruntime-gpu: pip uninstall onnxruntime onnxruntime-gpu, "
                     "then pip install onnxruntime-gpu.")
    driver = try_load(DRIVER_LIBRARY)
    if driver:
        lines.append(f"The NVIDIA driver does not load ({driver}): this machine has no GPU, or the driver is "
                     "not installed or not visible in this container.")
    elif provider_library().exists() and (reason := try_load(provider_library())):
        lines.append(f"The CUDA provider library does not load: {reason}.")
    major = ort_cuda_major()
    lines.append(f"Likely causes: CUDA {major or '?'}.x or cuDNN 9 libraries missing or not on the library path, "
                 "or no GPU/driver. Fixes: install them (the system CUDA toolkit and cuDNN, or pip install "
                 f"nvidia-cudnn-cu{major or '12'} and the nvidia CUDA runtime wheels), or call "
                 "onnxruntime.preload_dlls() before creating the Classifier to load them from those pip packages.")
    torch_major = torch_cuda_major_if_imported()
    if torch_major and major and torch_major != major:
        lines.append(f"torch uses CUDA {torch_major}.x but onnxruntime-gpu is built for CUDA {major}.x; "
                     "their libraries conflict: install matching builds.")
    lines.append("Run `python cli.py doctor` for a full report; pass device='cpu' to silence this warning.")
    return " ".join(lines)


#: TensorRT's core library (TensorRT 10), which onnxruntime's TensorRT provider links.
TENSORRT_LIBRARY = "nvinfer_10.dll" if sys.platform == "win32" else "libnvinfer.so.10"


def tensorrt_unavailable_message(active: list[str]) -> str:
    """Why TensorRT is probably not in use, and what to do."""
    lines = [f"TensorRT was requested but onnxruntime runs on {', '.join(active)}."]
    if TENSORRT not in ort.get_available_providers():
        lines.append("This onnxruntime build has no TensorRT provider: onnxruntime-gpu on x86-64 Linux and "
                     "Windows has it, and so has NVIDIA's onnxruntime build for Jetson.")
    elif driver := try_load(DRIVER_LIBRARY):
        lines.append(f"The NVIDIA driver does not load ({driver}): this machine has no GPU.")
    elif reason := try_load(TENSORRT_LIBRARY):
        lines.append(f"TensorRT's library does not load ({reason}): install TensorRT 10 (pip install tensorrt-cu12 "
                     "or the system packages) and put its libraries on the library path.")
    elif provider_library(TENSORRT).exists() and (reason := try_load(provider_library(TENSORRT))):
        lines.append(f"The TensorRT provider library does not load: {reason}.")
    if CUDA not in active:
        lines.append("CUDA, its fallback, is not in use either.")
    lines.append("Run `python cli.py doctor` for a full report; device='cuda' or 'auto' does not use TensorRT.")
    return " ".join(lines)


def coreml_unavailable_message(active: list[str]) -> str:
    """Why CoreML is probably not in use, and what to do."""
    lines = [f"CoreML was requested but onnxruntime runs on {', '.join(active)}."]
    if COREML not in ort.get_available_providers():
        lines.append("This onnxruntime build has no CoreML provider: it ships in the onnxruntime wheels for macOS "
                     f"(this is {sys.platform} {platform.machine()}).")
    lines.append("CoreML may also decline a graph whose operators it does not support; device='cpu' runs it anyway.")
    return " ".join(lines)


#: Wanted provider -> the message that explains its absence (the warning, and DeviceUnavailableError).
UNAVAILABLE_MESSAGES = {CUDA: cuda_unavailable_message, TENSORRT: tensorrt_unavailable_message,
                        COREML: coreml_unavailable_message}


def unavailable_message(wanted: str, active: list[str], errors: list[str] | tuple[str, ...] = ()) -> str:
    """Why ``wanted`` is not among the ``active`` providers; ``errors`` are session-creation errors seen."""
    message = UNAVAILABLE_MESSAGES[wanted](active)
    if errors:
        message += " Session creation failed with: " + "; ".join(e.strip().splitlines()[0] for e in errors if e.strip())
    return message
