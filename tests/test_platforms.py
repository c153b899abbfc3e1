"""Dependencies by platform: exactly one onnxruntime package everywhere, and the right one.

pyproject.toml's environment markers are evaluated with the ``packaging`` library, as pip does,
for the platforms an edge runtime meets; ``runtime.doctor``, which names the expected package, must agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from runtime import doctor
from runtime.device import CPU, CUDA

ROOT = Path(__file__).resolve().parent.parent
ONNXRUNTIMES = {"onnxruntime", "onnxruntime-gpu"}

#: name -> (PEP 508 environment, the onnxruntime package it must get). Python's own values:
#: sys.platform and platform.machine() on each.
PLATFORMS = {
    "x86-64 Linux": ({"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
                      "os_name": "posix"}, "onnxruntime-gpu"),
    "aarch64 Linux (Raspberry Pi, Jetson)": ({"sys_platform": "linux", "platform_machine": "aarch64",
                                              "platform_system": "Linux", "os_name": "posix"}, "onnxruntime"),
    "macOS arm64": ({"sys_platform": "darwin", "platform_machine": "arm64", "platform_system": "Darwin",
                     "os_name": "posix"}, "onnxruntime"),
    "Windows x86-64": ({"sys_platform": "win32", "platform_machine": "AMD64", "platform_system": "Windows",
                        "os_name": "nt"}, "onnxruntime-gpu"),
    # Not promised by the issue, but each must still get exactly one package.
    "macOS x86-64": ({"sys_platform": "darwin", "platform_machine": "x86_64", "platform_system": "Darwin",
                      "os_name": "posix"}, "onnxruntime"),
    "Windows ARM64": ({"sys_platform": "win32", "platform_machine": "ARM64", "platform_system": "Windows",
                       "os_name": "nt"}, "onnxruntime"),
    "armv7 Linux": ({"sys_platform": "linux", "platform_machine": "armv7l", "platform_system": "Linux",
                     "os_name": "posix"}, "onnxruntime"),
}


def _project() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(text)["project"]


def _installed(requirements: list[str], environment: dict[str, str], extra: str = "") -> list[str]:
    """The onnxruntime packages ``requirements`` bring in ``environment`` (with ``extra`` requested)."""
    found = []
    for line in requirements:
        req = Requirement(line)
        if req.name in ONNXRUNTIMES and (req.marker is None or req.marker.evaluate({**environment, "extra": extra})):
            found.append(req.name)
    return found


@pytest.mark.parametrize("name", PLATFORMS)
def test_base_install_brings_exactly_the_right_onnxruntime(name):
    environment, expected = PLATFORMS[name]
    assert _installed(_project()["dependencies"], environment) == [expected]


@pytest.mark.parametrize("name", PLATFORMS)
def test_no_extra_adds_a_second_onnxruntime(name):
    project, (environment, expected) = _project(), PLATFORMS[name]
    for extra, requirements in project["optional-dependencies"].items():
        assert _installed(project["dependencies"] + requirements, environment, extra) == [expected], extra


@pytest.mark.parametrize("name", PLATFORMS)
def test_runtime_agrees_with_the_markers(name):
    """doctor's expected package comes from runtime.doctor, which must match what pip installs."""
    environment, expected = PLATFORMS[name]
    assert doctor.expected_onnxruntime(environment["sys_platform"], environment["platform_machine"]) == expected


@pytest.mark.parametrize("installed, expected, case", [
    ([("onnxruntime-gpu", "1.31.1")], "onnxruntime-gpu", "its CPU provider"),
    ([("onnxruntime", "1.31.1")], "onnxruntime", "no CUDA wheels for this platform"),
    ([("onnxruntime-gpu", "1.23.0")], "onnxruntime", "Jetson"),
    ([("onnxruntime", "1.31.1")], "onnxruntime-gpu", "CPU only"),
    ([("onnxruntime", "1.31.1"), ("onnxruntime-gpu", "1.31.1")], "onnxruntime-gpu", "several"),
])
def test_install_cases(installed, expected, case):
    report = doctor.install_case(installed, expected)
    assert case in report["case"] and report["expected"] == expected
    assert report["installed"] == [n for n, _ in installed]


def test_doctor_problems_follow_the_platform(monkeypatch):
    """A CPU onnxruntime is a problem where onnxruntime-gpu belongs, and expected elsewhere."""
    report = {"duplicate_installs": [], "available_providers": [CPU], "libraries": {},
              "onnxruntime": {"distributions": [("onnxruntime", "1.31.1")]}}
    monkeypatch.setattr(doctor, "is_jetson", lambda: False)

    def found(expected: str) -> list[str]:
        return doctor.problems({**report, "install": doctor.install_case([("onnxruntime", "1.31.1")], expected)})

    assert any("install onnxruntime-gpu" in p for p in found("onnxruntime-gpu"))
    assert found("onnxruntime") == []
    monkeypatch.setattr(doctor, "is_jetson", lambda: True)
    assert any("NVIDIA's onnxruntime build" in p and "--no-deps" in p for p in found("onnxruntime"))


@pytest.mark.parametrize("platform_name,driver", [("linux", "libcuda.so.1"), ("win32", "nvcuda.dll")])
def test_doctor_looks_for_the_driver_library_of_the_platform(monkeypatch, platform_name, driver):
    """On Windows the driver is nvcuda.dll: a missing libcuda.so.1 there says nothing."""
    monkeypatch.setattr(doctor, "is_jetson", lambda: False)
    monkeypatch.setattr(doctor.sys, "platform", platform_name)
    install = doctor.install_case([("onnxruntime-gpu", "1.31.1")], "onnxruntime-gpu")
    assert install["platform"].startswith(platform_name)
    other = "nvcuda.dll" if driver == "libcuda.so.1" else "libcuda.so.1"
    report = {"duplicate_installs": [], "available_providers": [CUDA, CPU], "install": install,
              "cuda_provider_library": {"error": None}, "onnxruntime": {"distributions": []}}
    missing = {"loads": False, "error": "cannot open shared object file"}
    found = doctor.problems({**report, "libraries": {driver: missing}})
    assert any(f"no NVIDIA driver ({driver} does not load)" in p for p in found)
    assert not any("NVIDIA driver" in p for p in doctor.problems({**report, "libraries": {other: missing}}))
