"""A faked onnxruntime for provider tests: which providers a "build" has, which start, which raise.

Sessions still run the real graph on onnxruntime's CPU provider, so results are real.
"""
from __future__ import annotations

import onnxruntime as real_ort

from runtime.device import COREML, CPU, CUDA, TENSORRT

EVERYTHING = [TENSORRT, CUDA, COREML, CPU]


class FakeSession:
    """A real CPU session that claims the providers the fake build started."""

    def __init__(self, session: real_ort.InferenceSession, active: list[str], transform=None) -> None:
        self._session, self._active, self._transform = session, active, transform
        self.fallback_enabled = False
        self.batches: list[int] = []

    def get_providers(self) -> list[str]:
        return list(self._active)

    def enable_fallback(self) -> None:
        self.fallback_enabled = True

    def run(self, outputs, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        results = self._session.run(outputs, feeds)
        return [self._transform(results[0])] + results[1:] if self._transform else results

    def __getattr__(self, name):
        return getattr(self._session, name)


class FakeOrt:
    """Stands in for the ``onnxruntime`` module: ``available`` providers, of which ``starts`` start
    (the CPU always does) and ``raises`` make session creation raise."""

    __version__ = real_ort.__version__
    __file__ = real_ort.__file__  # where the provider libraries are looked for
    cuda_version = getattr(real_ort, "cuda_version", "")
    SessionOptions = real_ort.SessionOptions

    def __init__(self, available: list[str], starts: set[str] = frozenset(), raises: set[str] = frozenset(),
                 fp16=None):
        self.available, self.starts, self.raises = available, starts, raises
        self.fp16 = fp16  # what TensorRT's fp16 mode does to the logits
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
        fp16 = active[0] == TENSORRT and dict(requested)[TENSORRT].get("trt_fp16_enable") == "1"
        session = FakeSession(real_ort.InferenceSession(data, options, providers=[CPU]), active,
                              self.fp16 if fp16 else None)
        self.sessions.append(session)
        return session
