"""The checks behind ``python cli.py doctor``: which onnxruntime belongs on this platform, which is
installed, which CUDA, cuDNN and TensorRT libraries load, and what is wrong, with its fix.

Apart from :mod:`runtime.device` so that sessions never load it: only ``doctor`` does. Stdlib and
onnxruntime only, like the rest of the runtime: torch is looked at when the caller has it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import onnxruntime as ort

from .classifier import Classifier
from .device import (CUDA, DEVICES, DRIVER_LIBRARY, TENSORRT, TENSORRT_LIBRARY, available_cores, default_trt_cache_dir,
                     driver_library, onnxruntime_distributions, ort_cuda_major, plan_providers, provider_library,
                     try_load)
from .errors import AnyChannelError

# --- which onnxruntime package belongs here ------------------------------------------------------

#: (sys.platform, machine) where onnxruntime publishes CUDA wheels. pyproject.toml's environment
#: markers choose onnxruntime-gpu there and the CPU onnxruntime elsewhere; a test keeps them in step.
CUDA_WHEEL_PLATFORMS = frozenset({("linux", "x86_64"), ("win32", "amd64")})


def expected_onnxruntime(platform_name: str | None = None, machine: str | None = None) -> str:
    """The onnxruntime package ``pip install .`` brings on this platform (or the one given)."""
    key = (platform_name or sys.platform, (machine or platform.machine()).lower())
    return "onnxruntime-gpu" if key in CUDA_WHEEL_PLATFORMS else "onnxruntime"


def is_jetson() -> bool:
    """An NVIDIA Jetson (L4T): NVIDIA's own onnxruntime build belongs there, not PyPI's."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="ignore").lower()
    except OSError:
        return False


#: (package ``pip install .`` would choose, package installed) -> which case this is.
INSTALL_CASES: dict[tuple[str, str], str] = {
    ("onnxruntime-gpu", "onnxruntime-gpu"): "CUDA wheels exist for this platform: onnxruntime-gpu, which runs "
                                            "on its CPU provider where there is no GPU",
    ("onnxruntime", "onnxruntime"): "no CUDA wheels for this platform: the CPU onnxruntime (with CoreML on macOS)",
    ("onnxruntime", "onnxruntime-gpu"): "a vendor GPU build where PyPI has none (NVIDIA's Jetson build, say): keep "
                                        "it, and install the runtime with --no-deps",
    ("onnxruntime-gpu", "onnxruntime"): "the CPU onnxruntime where onnxruntime-gpu is the default: CPU only",
}


def install_case(distributions: list[tuple[str, str]], expected: str | None = None) -> dict:
    """Which install this is: the expected package, the installed one(s), and what that means."""
    expected = expected or expected_onnxruntime()
    names = [n for n, _ in distributions]
    if len(names) > 1:
        case = "several onnxruntime packages: one shadows the other"
    elif not names:
        case = "onnxruntime imports but no package metadata was found (a source build?)"
    else:
        case = INSTALL_CASES.get((expected, names[0]), f"{names[0]}: an onnxruntime build this project does not know")
    return {"platform": f"{sys.platform} {platform.machine()}", "jetson": is_jetson(), "expected": expected,
            "installed": names, "case": case}


# --- what loads, and what is wrong ---------------------------------------------------------------

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
    """The install, providers and libraries as a JSON-able dict (:func:`report` adds torch and sessions)."""
    report: dict = {
        "onnxruntime": {"version": ort.__version__, "distributions": onnxruntime_distributions(),
                        "built_for_cuda": getattr(ort, "cuda_version", None) or None},
        "available_providers": ort.get_available_providers(),
        "available_cores": available_cores(),
    }
    dists = report["onnxruntime"]["distributions"]
    report["duplicate_installs"] = [n for n, _ in dists] if len(dists) > 1 else []
    report["install"] = install_case(dists)
    # What each device= value would ask for here (sessions are not created: no graph at hand).
    report["devices"] = {device: {"providers": plan.providers, "wanted": plan.wanted}
                         for device, plan in ((d, plan_providers(d)) for d in DEVICES)}
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
    if TENSORRT in report["available_providers"]:
        trt = provider_library(TENSORRT)
        report["tensorrt"] = {"library": TENSORRT_LIBRARY, "error": try_load(TENSORRT_LIBRARY),
                              "provider_library_error": try_load(trt) if trt.exists() else "missing",
                              "engine_cache": str(default_trt_cache_dir())}
    return report


def problems(report: dict, torch_cuda: str | None = None) -> list[str]:
    """What is wrong in a :func:`diagnose` report, each with its fix; ``torch_cuda`` is ``torch.version.cuda``."""
    found = []
    install = report.get("install") or install_case(report["onnxruntime"]["distributions"])
    keep = install["expected"]
    if report["duplicate_installs"]:
        found.append(f"several onnxruntime packages are installed ({', '.join(report['duplicate_installs'])}); "
                     f"keep only {keep}: pip uninstall -y onnxruntime onnxruntime-gpu && pip install {keep}"
                     + (" (on a Jetson: NVIDIA's onnxruntime-gpu build instead)" if install["jetson"] else ""))
    if CUDA not in report["available_providers"]:
        if install["jetson"]:
            found.append("a Jetson without NVIDIA's onnxruntime build: install it (with CUDA and TensorRT), "
                         "then the runtime with pip install --no-deps . plus numpy and pillow")
        elif keep == "onnxruntime-gpu":
            found.append("this onnxruntime has no CUDA provider: install onnxruntime-gpu")
        return found + _torch_problem(torch_cuda)  # CPU build where it is the default: nothing CUDA to check
    elif report["libraries"].get(driver := driver_library(install["platform"].split()[0]), {}).get("error"):
        found.append(f"no NVIDIA driver ({driver} does not load): this machine has no GPU, or its driver is not "
                     "installed or not mounted into the container; sessions fall back to CPU")
    elif report["cuda_provider_library"]["error"]:
        found.append(f"the CUDA provider cannot load ({report['cuda_provider_library']['error']}): install the "
                     "missing CUDA/cuDNN libraries or put them on the library path; sessions fall back to CPU")
    if any(lib["loads"] == "after preload_dlls" for lib in report["libraries"].values()):
        found.append("some CUDA libraries load only after onnxruntime.preload_dlls(): call it before creating "
                     "a Classifier (or put them on LD_LIBRARY_PATH)")
    return found + _torch_problem(torch_cuda)


def _torch_problem(torch_cuda: str | None) -> list[str]:
    """torch and onnxruntime-gpu built for different CUDA majors: one process cannot hold both."""
    if torch_cuda and ort_cuda_major() and torch_cuda.split(".")[0] != ort_cuda_major():
        return [f"torch uses CUDA {torch_cuda} but onnxruntime-gpu is built for CUDA {ort_cuda_major()}: "
                "in one process their libraries conflict"]
    return []


# --- the whole report ----------------------------------------------------------------------------

def sessions_that_ran(artifacts: Path) -> dict[str, "list[str] | str"]:
    """Per device value: the providers a session on the first graph actually runs on (or the error)."""
    # Trying every device is the point here: their fallback warnings would only repeat the report.
    logger = logging.getLogger("anychannel.runtime")
    level, ran = logger.level, {}
    logger.setLevel(logging.ERROR)
    try:
        for device in DEVICES:
            try:
                ran[device] = Classifier(artifacts, device=device).providers
            except AnyChannelError as exc:
                ran[device] = f"error: {exc}"
    finally:
        logger.setLevel(level)
    return ran


def report(artifacts: Path | None = None, load_torch: Callable[[], ModuleType | None] | None = None,
           preload: bool = True) -> dict:
    """What ``doctor`` prints: :func:`diagnose`'s dict, ``sessions`` (with ``artifacts``), ``torch`` and
    ``problems``.

    Args:
        artifacts: a graphs' folder: also create a session on its first graph with each device value
            and report the providers that ran (TensorRT may build an engine: slow once).
        load_torch: returns the torch module (or None), for its version and CUDA build. It is called
            only after the libraries and sessions are checked: importing torch loads its own CUDA
            libraries, which would hide what onnxruntime finds without it. By default torch only if
            the app already imported it (the runtime never imports it: ``cli.py`` passes a loader).
        preload: whether libraries that do not load may be retried after ``onnxruntime.preload_dlls()``.
    """
    found = diagnose(preload)
    if artifacts is not None:
        found["sessions"] = sessions_that_ran(artifacts)
    torch = load_torch() if load_torch else sys.modules.get("torch")
    torch_cuda = torch.version.cuda if torch else None
    found["torch"] = ({"version": torch.__version__, "cuda": torch_cuda, "cuda_available": torch.cuda.is_available()}
                      if torch else None)
    found["problems"] = problems(found, torch_cuda)
    cpu_session = found.get("sessions", {}).get("cpu")
    if isinstance(cpu_session, str):  # the CPU provider is always there: the graphs themselves are the problem
        found["problems"].append(f"--artifacts {artifacts}: {cpu_session.removeprefix('error: ')}")
    return found


def format_report(report: dict) -> str:
    """:func:`report`'s dict as the lines ``doctor`` prints: install, providers, what each device value
    requests (and ran on), the libraries, torch, then the problems found."""
    ort_info, install = report["onnxruntime"], report["install"]
    lines = [f"onnxruntime {ort_info['version']} (built for CUDA {ort_info['built_for_cuda'] or '-'}); "
             f"installed: {', '.join(f'{n} {v}' for n, v in ort_info['distributions'])}",
             f"platform {install['platform']}{' (Jetson)' if install['jetson'] else ''}: `pip install .` brings "
             f"{install['expected']}; installed: {', '.join(install['installed']) or 'none found'}: {install['case']}",
             f"available providers: {', '.join(report['available_providers'])}; "
             f"cores available: {report['available_cores']}"]
    for device, plan in report["devices"].items():
        ran = report.get("sessions", {}).get(device)
        ran_text = "" if ran is None else f"; ran on: {ran if isinstance(ran, str) else ', '.join(ran)}"
        lines.append(f"  --device {device:<8} requests {', '.join(plan['providers'])}"
                     f"{' (wants ' + plan['wanted'] + ')' if plan['wanted'] else ''}{ran_text}")
    if "preload_dlls" in report:
        lines.append(f"onnxruntime.preload_dlls(): {report['preload_dlls']}")
    for name, lib in report["libraries"].items():
        state = {"at start": "loads", "after preload_dlls": "loads only after onnxruntime.preload_dlls()",
                 None: f"MISSING: {lib['error']}"}[lib["loads"]]
        lines.append(f"  {lib['component']:<12} {name:<20} {state}")
    lib = report["cuda_provider_library"]
    lines.append(f"  CUDA provider library: {'loads' if lib['error'] is None else 'FAILS: ' + lib['error']}")
    if trt := report.get("tensorrt"):
        state = "loads" if trt["error"] is None else "MISSING: " + trt["error"]
        lines += [f"  TensorRT     {trt['library']:<20} {state}",
                  "  TensorRT provider library: "
                  f"{'loads' if trt['provider_library_error'] is None else 'FAILS: ' + trt['provider_library_error']}"
                  f"; engine cache {trt['engine_cache']}"]
    torch_info = report["torch"]
    lines.append("torch: not installed" if torch_info is None else
                 f"torch {torch_info['version']}, CUDA {torch_info['cuda'] or 'none (CPU build)'}, "
                 f"GPU visible: {torch_info['cuda_available']}")
    found = report["problems"]
    lines.append("problems:\n" + "\n".join(f"  - {p}" for p in found) if found else "no problems found")
    return "\n".join(lines)
