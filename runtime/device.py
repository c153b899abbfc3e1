"""Execution providers: which to ask onnxruntime for, and why CUDA is not in use when it is not.

Also the checks behind ``python cli.py doctor``. Stdlib and onnxruntime only: torch is
consulted only when the app has already imported it.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to request, and whether CUDA was wanted (so its absence must be reported)."""

    providers: list[str]
    wants_cuda: bool


#: The NVIDIA driver's user-space library: without it no CUDA provider can start.
DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def plan_providers(device: str) -> ProviderPlan:
    """``auto``: CUDA when this onnxruntime build has it, else CPU; ``cuda``: CUDA (with CPU fallback); ``cpu``.

    Where the NVIDIA driver does not load (a machine without a GPU), CUDA is not even tried:
    the attempt costs a cold start about 40 ms and cannot succeed. It still counts as wanted,
    so the fallback is reported.
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ProviderPlan([CPU], wants_cuda=False)
    cuda_build = CUDA in ort.get_available_providers()
    if device == "auto" and not cuda_build:
        return ProviderPlan([CPU], wants_cuda=False)
    usable = cuda_build and try_load(DRIVER_LIBRARY) is None
    return ProviderPlan([CUDA, CPU] if usable else [CPU], wants_cuda=True)


def with_provider_options(providers: list[str]) -> list:
    """``providers`` as onnxruntime takes them, CUDA with TF32 off: results match the CPU and
    PyTorch's fp32 evaluation, not a 10-bit mantissa."""
    return [(p, {"use_tf32": "0"}) if p == CUDA else p for p in providers]


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


def provider_library() -> Path:
    """onnxruntime's CUDA provider library (Linux/Windows name)."""
    capi = Path(ort.__file__).parent / "capi"
    name = "onnxruntime_providers_cuda.dll" if sys.platform == "win32" else "libonnxruntime_providers_cuda.so"
    return capi / name


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


# --- doctor ------------------------------------------------------------------------------------

def cuda_library_names() -> dict[str, list[str]]:
    """The CUDA and cuDNN shared libraries onnxruntime's CUDA provider needs, per component."""
    major = ort_cuda_major() or "12"
    if sys.platform == "win32":
        return {"CUDA runtime": [f"cudart64_{major}.dll"], "cuBLAS": [f"cublas64_{major}.dll"],
                "cuDNN": ["cudnn64_9.dll"], "CUDA driver": [DRIVER_LIBRARY]}
    # What libonnxruntime_providers_cuda.so links (readelf -d), plus cuDNN, which it opens later.
    return {"CUDA driver": [DRIVER_LIBRARY], "CUDA runtime": [f"libcudart.so.{major}"],
            "cuBLAS": [f"libcublas.so.{major}", f"libcublasLt.so.{major}"], "cuRAND": ["libcurand.so.10"],
            "cuDNN": ["libcudnn.so.9"]}


def diagnose(preload: bool = True) -> dict:
    """Everything ``doctor`` prints, as a JSON-able dict (no torch here: the CLI adds it)."""
    report: dict = {
        "onnxruntime": {"version": ort.__version__, "distributions": onnxruntime_distributions(),
                        "built_for_cuda": getattr(ort, "cuda_version", None) or None},
        "available_providers": ort.get_available_providers(),
        "available_cores": available_cores(),
    }
    dists = report["onnxruntime"]["distributions"]
    report["duplicate_installs"] = [n for n, _ in dists] if len(dists) > 1 else []
    # Which libraries load as the process starts, then which load after onnxruntime.preload_dlls()
    # (it finds them in the nvidia-* pip packages): the difference tells the app to call it.
    names = {name: component for component, group in cuda_library_names().items() for name in group}
    before = {name: try_load(name) for name in names}
    if preload and hasattr(ort, "preload_dlls") and any(before.values()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                ort.preload_dlls()
                report["preload_dlls"] = out.getvalue().strip() or "ran"
            except Exception as exc:  # it raises for odd layouts; a report, not a crash
                report["preload_dlls"] = f"failed: {exc}"
    report["libraries"] = {}
    for name, component in names.items():
        error = try_load(name) if before[name] else None
        loads = "at start" if before[name] is None else None if error else "after preload_dlls"
        report["libraries"][name] = {"component": component, "loads": loads, "error": error}
    lib = provider_library()
    report["cuda_provider_library"] = {"path": str(lib), "exists": lib.exists(),
                                       "error": try_load(lib) if lib.exists() else "missing"}
    return report


def problems(report: dict, torch_cuda: str | None = None) -> list[str]:
    """What is wrong in a :func:`diagnose` report, each with its fix; ``torch_cuda`` is ``torch.version.cuda``."""
    found = []
    if report["duplicate_installs"]:
        found.append(f"several onnxruntime packages are installed ({', '.join(report['duplicate_installs'])}); "
                     "keep only onnxruntime-gpu: pip uninstall -y onnxruntime onnxruntime-gpu && "
                     "pip install onnxruntime-gpu")
    if CUDA not in report["available_providers"]:
        found.append("this onnxruntime has no CUDA provider: install onnxruntime-gpu")
    elif report["libraries"].get("libcuda.so.1", {}).get("error"):
        found.append("no NVIDIA driver (libcuda.so.1 does not load): this machine has no GPU, or its driver is not "
                     "installed or not mounted into the container; sessions fall back to CPU")
    elif report["cuda_provider_library"]["error"]:
        found.append(f"the CUDA provider cannot load ({report['cuda_provider_library']['error']}): install the "
                     "missing CUDA/cuDNN libraries or put them on the library path; sessions fall back to CPU")
    if any(lib["loads"] == "after preload_dlls" for lib in report["libraries"].values()):
        found.append("some CUDA libraries load only after onnxruntime.preload_dlls(): call it before creating "
                     "a Classifier (or put them on LD_LIBRARY_PATH)")
    if torch_cuda and ort_cuda_major() and torch_cuda.split(".")[0] != ort_cuda_major():
        found.append(f"torch uses CUDA {torch_cuda} but onnxruntime-gpu is built for CUDA {ort_cuda_major()}: "
                     "in one process their libraries conflict")
    return found
