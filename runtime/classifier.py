"""``Classifier``: exported graphs behind one call that takes images in any channel configuration."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnxruntime as ort

from . import contract as C
from .artifacts import Artifacts, GraphSpec, graph_spec, load_artifacts, read_verified
from .channels import ChannelConfig
from .device import (CPU, CUDA, available_cores, cuda_unavailable_message, plan_providers,
                     with_provider_options)
from .errors import ArtifactError, DeviceUnavailableError
from .inputs import Inputs, load_inputs, resolve_config, to_model_input

log = logging.getLogger("anychannel.runtime")


@dataclass(frozen=True)
class Prediction:
    """One of an image's top-k classes."""

    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class _Graph:
    session: ort.InferenceSession
    spec: GraphSpec


class Classifier:
    """Runs the exported graph that matches each call's channels; safe to share between threads.

    Args:
        path: an artifacts folder (``<dir>/manifest.json`` plus graphs) or the manifest itself.
        device: ``"auto"`` (CUDA when this onnxruntime build has it, else CPU), ``"cuda"`` or ``"cpu"``.
        strict_device: raise :class:`DeviceUnavailableError` when CUDA was wanted but is not in
            use, instead of logging one warning (``anychannel.runtime`` logger). The first graph is
            then loaded at construction, so the error comes early.
        preload: load, verify and warm up every graph now instead of on first use.
        precision: which exported graphs to run: ``"fp32"`` (always there), or an optional
            ``"int8"`` or ``"fp16"`` variant (``export --int8`` / ``--fp16``); int8 suits CPUs,
            fp16 suits CUDA.
        threads: intra-op threads of each session; default: the cores this process may use.
        ort_log_severity: onnxruntime's process-wide log level, set once here (0 verbose ..
            4 fatal). The default 3 drops its warnings (our own warning explains a CPU fallback);
            ``None`` leaves it alone.

    Raises:
        ArtifactError: no manifest, a malformed one, or a graph it lists is missing.
    """

    def __init__(self, path: "str | os.PathLike[str]", device: str = "auto", strict_device: bool = False,
                 preload: bool = False, *, precision: str = "fp32", threads: int | None = None,
                 ort_log_severity: int | None = 3) -> None:
        self.artifacts: Artifacts = load_artifacts(path, precision)
        missing = [str(g.path) for g in self.artifacts.graphs.values() if not g.path.is_file()]
        if missing:
            raise ArtifactError(f"graphs listed in the manifest are missing: {', '.join(missing)}; re-export them")
        self.device = device
        self.strict_device = strict_device
        self._plan = plan_providers(device)
        self._threads = threads or available_cores()
        self._graphs: dict[str, _Graph] = {}
        self._lock = threading.Lock()
        self._cuda_failed = False
        self._ort_log_severity = ort_log_severity
        if ort_log_severity is not None:
            ort.set_default_logger_severity(ort_log_severity)
        if preload:
            for config in self.configs:
                self.warm_up(config)
        elif strict_device and self._plan.wants_cuda:
            self._graph(self.configs[0])

    # --- what the artifacts hold ---------------------------------------------------------------

    @property
    def configs(self) -> list[ChannelConfig]:
        """The exported configurations, widest first."""
        return self.artifacts.configs

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.artifacts.class_names

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use (``session.get_providers()``), preferred first.

        Loads the first configuration's graph if none is loaded yet, so the answer is never a guess.
        """
        if not self._graphs:
            self._graph(self.configs[0])
        seen: list[str] = []
        for graph in list(self._graphs.values()):
            seen.extend(p for p in graph.session.get_providers() if p not in seen)
        return seen

    def spec(self, channels: "str | ChannelConfig") -> GraphSpec:
        """The metadata of ``channels``' graph (loading it): preprocessing parameters and labels."""
        return self._graph(ChannelConfig.parse(channels)).spec

    # --- inference ---------------------------------------------------------------------------

    def preprocess(self, inputs: Inputs, channels: "str | ChannelConfig | None" = None
                   ) -> tuple[np.ndarray, ChannelConfig]:
        """Inputs to the ``N x C x H x W`` float32 batch of the graph they resolve to, and its configuration."""
        images = load_inputs(inputs)
        config = resolve_config(images, channels, self.configs)
        spec = self._graph(config).spec
        return to_model_input(images, config, spec.image_size, spec.mean, spec.std), config

    def run(self, batch: np.ndarray, channels: "str | ChannelConfig") -> np.ndarray:
        """Logits for an already preprocessed batch, in one session call."""
        graph = self._graph(ChannelConfig.parse(channels))
        return graph.session.run([C.OUTPUT_NAME], {C.INPUT_NAME: batch})[0]

    def predict_logits(self, inputs: Inputs, channels: "str | ChannelConfig | None" = None) -> np.ndarray:
        """``N x num_classes`` float32 logits, one row per image, in input order."""
        batch, config = self.preprocess(inputs, channels)
        return self.run(batch, config)

    def predict(self, inputs: Inputs, channels: "str | ChannelConfig | None" = None,
                top_k: int = 5) -> list[list[Prediction]]:
        """The ``top_k`` most probable classes per image (a list per image, even for one image)."""
        if top_k < 1:
            raise ValueError(f"top_k={top_k}; expected 1 or more")
        return self.top_k(self.predict_logits(inputs, channels), top_k)

    def top_k(self, logits: np.ndarray, k: int = 5) -> list[list[Prediction]]:
        """Logits (``N x num_classes``) to each row's ``k`` most probable classes, most probable first."""
        probabilities = softmax(logits)
        k = min(k, probabilities.shape[1])
        # Stable sort so ties come out in class order, the same on every run.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[Prediction(self.class_names[i], int(i), float(row[i])) for i in top]
                for row, top in zip(probabilities, order)]

    def warm_up(self, channels: "str | ChannelConfig") -> None:
        """Load ``channels``' graph and run it once, so the first real call pays no setup."""
        config = ChannelConfig.parse(channels)
        size = self._graph(config).spec.image_size
        self.run(np.zeros((1, config.num_channels, size, size), dtype=np.float32), config)

    # --- sessions ----------------------------------------------------------------------------

    def _graph(self, config: ChannelConfig) -> _Graph:
        graph = self._graphs.get(config.name)
        if graph is None:
            with self._lock:  # two threads asking for a new configuration build one session
                graph = self._graphs.get(config.name)
                if graph is None:
                    graph = self._load(config)
                    self._graphs[config.name] = graph
        return graph

    def _load(self, config: ChannelConfig) -> _Graph:
        entry = self.artifacts.entry(config)
        data = read_verified(entry)
        try:
            with self._quiet_provider_errors():
                session = ort.InferenceSession(data, self._session_options(), providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
            names = [p if isinstance(p, str) else p[0] for p in self._providers()]
            raise ArtifactError(f"onnxruntime {ort.__version__} cannot load {entry.path} with {', '.join(names)}: "
                                f"{exc}") from None
        self._check_device(session.get_providers())
        spec = graph_spec(session.get_modelmeta().custom_metadata_map, entry)
        _check_signature(session, spec, entry.path)
        if spec.class_names != self.artifacts.class_names:
            raise ArtifactError(f"graph {entry.path} has different class names from its manifest; re-export")
        return _Graph(session, spec)

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1  # these graphs are one chain of ops: nothing to run side by side
        options.log_severity_level = 3
        return options

    def _providers(self) -> list:
        if self._cuda_failed:  # it will fail again: skip the retry, its cost and its log lines
            return [CPU]
        return with_provider_options(self._plan.providers)

    @contextlib.contextmanager
    def _quiet_provider_errors(self) -> Iterator[None]:
        """Silence onnxruntime's stderr lines about a CUDA provider that does not load.

        Our one warning (or DeviceUnavailableError) reports the same loader error with causes and fixes.
        """
        if self._ort_log_severity is None or not self._plan.wants_cuda or self._cuda_failed:
            yield
            return
        ort.set_default_logger_severity(4)
        try:
            yield
        finally:
            ort.set_default_logger_severity(self._ort_log_severity)

    def _check_device(self, active: list[str]) -> None:
        if not self._plan.wants_cuda or CUDA in active or self._cuda_failed:
            return
        message = cuda_unavailable_message(active)
        if self.strict_device:
            raise DeviceUnavailableError(message)
        self._cuda_failed = True  # warn once; later sessions go straight to the CPU
        log.warning(message)

    def __repr__(self) -> str:
        loaded = ", ".join(self._graphs) or "none yet"
        return (f"Classifier({str(self.artifacts.root)!r}, task={self.artifacts.task!r}, "
                f"configs={[c.name for c in self.configs]}, precision={self.artifacts.precision!r}, "
                f"device={self.device!r}, loaded: {loaded})")


def _check_signature(session: ort.InferenceSession, spec: GraphSpec, path: os.PathLike) -> None:
    """The graph takes ``input`` [batch, C, S, S] and gives ``logits`` [batch, classes], as the contract says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = [spec.config.num_channels, spec.image_size, spec.image_size]
    if (len(inputs) != 1 or inputs[0].name != C.INPUT_NAME or list(inputs[0].shape[1:]) != expected
            or not any(o.name == C.OUTPUT_NAME for o in outputs)):
        got = [(i.name, i.shape) for i in inputs]
        raise ArtifactError(f"graph {path} does not follow the contract: inputs {got}, outputs "
                            f"{[o.name for o in outputs]}; expected {C.INPUT_NAME} [batch, {', '.join(map(str, expected))}]"
                            f" -> {C.OUTPUT_NAME}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)
