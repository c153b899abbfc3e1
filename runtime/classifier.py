"""``Classifier``: exported graphs behind one call that takes images in any channel configuration."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnxruntime as ort

from . import contract as C
from .artifacts import Artifacts, GraphSpec, graph_spec, load_artifacts, read_verified
from .channels import ChannelConfig
from .device import (CPU, TENSORRT, ProviderPlan, available_cores, default_trt_cache_dir, earlier_failure,
                     plan_providers, record_failure, tensorrt_options, unavailable_message,
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
class FilePredictions:
    """Image files' top-k classes, all through one configuration: what ``cli.py predict`` prints."""

    paths: list[str]
    channels: str
    predictions: list[list[Prediction]]

    def to_json(self) -> str:
        """``predict --json``: a list with, per image, its path, the configuration and its predictions."""
        return json.dumps([{"image": path, "channels": self.channels, "predictions": [asdict(p) for p in preds]}
                           for path, preds in zip(self.paths, self.predictions)], indent=2)

    def to_text(self) -> str:
        """One line per image: ``path [RG]: label 0.912, label 0.031, ...``."""
        return "\n".join(f"{path} [{self.channels}]: " + ", ".join(f"{p.label} {p.probability:.3f}" for p in preds)
                         for path, preds in zip(self.paths, self.predictions))


@dataclass(frozen=True)
class _Graph:
    session: ort.InferenceSession
    spec: GraphSpec
    #: Largest batch one call may take (TensorRT's optimisation profile); None: any.
    max_batch: int | None = None


class Classifier:
    """Runs the exported graph that matches each call's channels; safe to share between threads.

    Args:
        path: an artifacts folder (``<dir>/manifest.json`` plus graphs) or the manifest itself.
        device: ``"auto"`` (CUDA when this onnxruntime build has it, else CPU), ``"cuda"``,
            ``"tensorrt"`` (TensorRT, then CUDA, then CPU), ``"coreml"`` (CoreML, then CPU) or ``"cpu"``.
            TensorRT and CoreML are only used when asked for.
        strict_device: raise :class:`DeviceUnavailableError` when the device's provider (CUDA,
            TensorRT, CoreML) was wanted but is not in use, instead of logging one warning per
            process (``anychannel.runtime`` logger). The first graph is then loaded at
            construction, so the error comes early.
        preload: load, verify and warm up every graph now instead of on first use.
        precision: which exported graphs to run: ``"fp32"`` (always there), or an optional
            ``"int8"`` or ``"fp16"`` variant (``export --int8`` / ``--fp16``); int8 suits CPUs,
            fp16 suits CUDA.
        threads: intra-op threads of each session; default: the cores this process may use.
        ort_log_severity: onnxruntime's process-wide log level, set once here (0 verbose ..
            4 fatal). The default 3 drops its warnings (our own warning explains a CPU fallback);
            ``None`` leaves it alone.
        trt_fp16: with ``device="tensorrt"``, let TensorRT run float16 kernels. Logits move; check
            top-1 with :func:`runtime.validation.validate_precision` (``cli.py evaluate --trt-fp16``).
        trt_cache_dir: with ``device="tensorrt"``, where built engines are kept (one folder per
            graph, fp16 mode and batch limit), so only the first run pays the build. Default:
            :func:`runtime.device.default_trt_cache_dir`.
        trt_max_batch: with ``device="tensorrt"``, the largest batch of the engine's profile;
            larger batches are run in chunks of this size.

    Raises:
        ArtifactError: no manifest, a malformed one, or a graph it lists is missing.
        ValueError: an unknown ``device``, or TensorRT options without ``device="tensorrt"``.
    """

    def __init__(self, path: "str | os.PathLike[str]", device: str = "auto", strict_device: bool = False,
                 preload: bool = False, *, precision: str = "fp32", threads: int | None = None,
                 ort_log_severity: int | None = 3, trt_fp16: bool = False,
                 trt_cache_dir: "str | os.PathLike[str] | None" = None, trt_max_batch: int = 32) -> None:
        if device != "tensorrt" and (trt_fp16 or trt_cache_dir is not None):
            raise ValueError(f"trt_fp16 and trt_cache_dir apply to device='tensorrt', not {device!r}")
        if trt_fp16 and precision != "fp32":
            raise ValueError(f"trt_fp16 lowers an fp32 graph; precision={precision!r} graphs are already reduced")
        if trt_max_batch < 1:
            raise ValueError(f"trt_max_batch={trt_max_batch}; expected 1 or more")
        self.artifacts: Artifacts = load_artifacts(path, precision)
        missing = [str(g.path) for g in self.artifacts.graphs.values() if not g.path.is_file()]
        if missing:
            raise ArtifactError(f"graphs listed in the manifest are missing: {', '.join(missing)}; re-export them")
        self.device = device
        self.strict_device = strict_device
        self.trt_fp16 = trt_fp16
        self.trt_max_batch = trt_max_batch
        #: Root of the TensorRT engine cache (``device="tensorrt"`` only).
        self.trt_cache_dir: Path | None = (Path(trt_cache_dir) if trt_cache_dir is not None
                                           else default_trt_cache_dir() if device == "tensorrt" else None)
        self._plan: ProviderPlan = plan_providers(device)
        self._threads = threads or available_cores()
        self._graphs: dict[str, _Graph] = {}
        self._lock = threading.Lock()
        self._ort_log_severity = ort_log_severity
        if ort_log_severity is not None:
            ort.set_default_logger_severity(ort_log_severity)
        if preload:
            for config in self.configs:
                self.warm_up(config)
        elif strict_device and self._plan.wanted:
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

    def engine_cache(self, channels: "str | ChannelConfig") -> Path | None:
        """The folder holding ``channels``' TensorRT engine (``None`` unless ``device="tensorrt"``).

        One folder per graph checksum, fp16 mode and batch limit: onnxruntime names engines after
        the graph's structure, which the seven configurations' graphs share, and a cached engine
        must never serve another graph or mode.
        """
        if self.trt_cache_dir is None:
            return None
        entry = self.artifacts.entry(ChannelConfig.parse(channels))
        mode = "fp16" if self.trt_fp16 else "fp32"
        return self.trt_cache_dir / f"{entry.sha256[:16]}-{mode}-b{self.trt_max_batch}"

    # --- inference ---------------------------------------------------------------------------

    def preprocess(self, inputs: Inputs, channels: "str | ChannelConfig | None" = None
                   ) -> tuple[np.ndarray, ChannelConfig]:
        """Inputs to the ``N x C x H x W`` float32 batch of the graph they resolve to, and its configuration."""
        images = load_inputs(inputs)
        config = resolve_config(images, channels, self.configs)
        spec = self._graph(config).spec
        return to_model_input(images, config, spec.image_size, spec.mean, spec.std), config

    def run(self, batch: np.ndarray, channels: "str | ChannelConfig") -> np.ndarray:
        """Logits for an already preprocessed batch, in one session call (TensorRT: one per
        ``trt_max_batch`` images, its engine's limit)."""
        graph = self._graph(ChannelConfig.parse(channels))
        step = graph.max_batch
        if step is None or len(batch) <= step:
            return graph.session.run([C.OUTPUT_NAME], {C.INPUT_NAME: batch})[0]
        return np.concatenate([graph.session.run([C.OUTPUT_NAME], {C.INPUT_NAME: batch[i:i + step]})[0]
                               for i in range(0, len(batch), step)])

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
        session, errors = self._create_session(data, config)
        active = session.get_providers()
        self._check_device(active, errors)
        if not self.strict_device:
            # Keep onnxruntime's run-time fallback (a TensorRT engine that fails to build moves to
            # CUDA); under strict_device such a failure raises instead of leaving the device.
            session.enable_fallback()
        spec = graph_spec(session.get_modelmeta().custom_metadata_map, entry)
        _check_signature(session, spec, entry.path)
        if spec.class_names != self.artifacts.class_names:
            raise ArtifactError(f"graph {entry.path} has different class names from its manifest; re-export")
        return _Graph(session, spec, self.trt_max_batch if TENSORRT in active else None)

    def _create_session(self, data: bytes, config: ChannelConfig) -> tuple[ort.InferenceSession, list[str]]:
        """A session on the planned providers; if creating it raises, again without the first one.

        onnxruntime's own retry would print a block to stdout per session; ours is silent, and the
        errors go into the one warning (or DeviceUnavailableError).
        """
        names, errors = list(self._plan.providers), []
        while True:
            try:
                with self._quiet_provider_errors():
                    return ort.InferenceSession(data, self._session_options(), providers=self._providers(names, config),
                                                enable_fallback=0), errors
            except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, EPFail, ...)
                if names == [CPU]:
                    path = self.artifacts.entry(config).path
                    raise ArtifactError(f"onnxruntime {ort.__version__} cannot load {path} with "
                                        f"{', '.join(self._plan.providers)}: {exc}") from None
                errors.append(f"{names[0]}: {exc}")
                names = names[1:]

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1  # these graphs are one chain of ops: nothing to run side by side
        options.log_severity_level = 3
        return options

    def _providers(self, names: list[str], config: ChannelConfig) -> list:
        if TENSORRT not in names:
            return with_provider_options(names)
        cache = self.engine_cache(config)
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceUnavailableError(f"TensorRT's engine cache folder {cache} cannot be created ({exc}); "
                                         "pass trt_cache_dir (--trt-cache-dir) or set ANYCHANNEL_TRT_CACHE") from None
        size = self.artifacts.image_size
        return with_provider_options(names, tensorrt_options(cache, C.INPUT_NAME, (config.num_channels, size, size),
                                                             self.trt_max_batch, fp16=self.trt_fp16))

    @contextlib.contextmanager
    def _quiet_provider_errors(self) -> Iterator[None]:
        """Silence onnxruntime's stderr lines about a provider (CUDA, TensorRT) that does not load.

        Our one warning (or DeviceUnavailableError) reports the same loader error with causes and fixes.
        """
        if self._ort_log_severity is None or not self._plan.accelerated:
            yield
            return
        ort.set_default_logger_severity(4)
        try:
            yield
        finally:
            ort.set_default_logger_severity(self._ort_log_severity)

    def _check_device(self, active: list[str], errors: list[str]) -> None:
        """The device's provider must be in use: else one warning per process, or strict_device's error."""
        wanted = self._plan.wanted
        if wanted is None or wanted in active:
            return
        # Skipped because it failed earlier in this process: that failure's message says why.
        message = (not errors and earlier_failure(wanted)) or unavailable_message(wanted, active, errors)
        if self.strict_device:
            raise DeviceUnavailableError(message)
        if record_failure(wanted, message):  # first time in this process: later ones stay quiet
            log.warning(message)
        # Later sessions go straight to what ran: the failed provider would fail again.
        self._plan = ProviderPlan([p for p in self._plan.providers if p in active or p == CPU], wanted)

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
