"""Latency measurement shared by ``python cli.py bench`` and the benchmark scripts (no torch here)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .channels import ChannelConfig
    from .classifier import Classifier

#: ``forward(x, threads) -> logits`` of a reference implementation (PyTorch eager, from ``export.eager``).
EagerForward = Callable[[Any, int], Any]


@dataclass(frozen=True)
class Latency:
    """Per-call latency percentiles (ms) and throughput (images/s at the median) for one batch size."""

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    """Seconds per call of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def latency(fn: Callable[[], Any], batch_size: int, runs: int, warmup: int = 3) -> Latency:
    times = time_calls(fn, runs, warmup)
    p50 = percentile(times, 50)
    return Latency(batch_size, runs, 1e3 * p50, 1e3 * percentile(times, 90), 1e3 * percentile(times, 99),
                   1e3 * sum(times) / len(times), batch_size / p50)


def benchmark(make_classifier: Callable[[], "Classifier"], config: "ChannelConfig", batch_sizes: Sequence[int],
              runs: int, warmup: int,
              eager_for: "Callable[[Classifier], tuple[EagerForward | None, str]] | None" = None,
              threads: int | None = None) -> dict[str, Any]:
    """Latency of ``config``'s graph: the first inference (``make_classifier``: load, verify, session,
    one image), then per batch size the percentiles of ``runs`` calls, beside the reference that
    ``eager_for(classifier)`` gives (a forward and a note) at its best of 1 thread and all cores (on a
    busy machine torch's OpenMP threads can stall each other, and a fair comparison should not count
    that against it). The dict is what ``cli.py bench --json`` prints."""
    import numpy as np

    from .device import TENSORRT, available_cores

    start = time.perf_counter()
    clf = make_classifier()
    # Whether TensorRT finds a built engine: the first inference then loads it instead of building it.
    engine_cache = clf.engine_cache(config)
    engine_cached = engine_cache is not None and any(engine_cache.glob("*.engine"))
    image = np.random.default_rng(0).integers(0, 256, (clf.artifacts.image_size,) * 2 + (3,), dtype=np.uint8)
    clf.predict_logits(image, config)
    first_ms = 1e3 * (time.perf_counter() - start)
    spec = clf.spec(config)
    threads = threads or available_cores()
    eager, eager_note = eager_for(clf) if eager_for is not None else (None, "not asked for")
    eager_threads = sorted({1, threads})
    rng = np.random.default_rng(1)
    rows = []
    for n in batch_sizes:
        images = rng.integers(0, 256, (n, spec.image_size, spec.image_size, 3), dtype=np.uint8)
        x, _ = clf.preprocess(images, config)
        row: dict[str, Any] = {"batch_size": n,
                               "onnxruntime": latency(lambda: clf.run(x, config), n, runs, warmup).to_dict()}
        if eager is not None:
            best = min((latency(lambda: eager(x, t), n, runs, warmup).to_dict() | {"threads": t}
                        for t in eager_threads), key=lambda r: r["p50_ms"])
            row["torch_eager"] = best
            row["max_abs_logit_diff"] = float(np.abs(eager(x, best["threads"]) - clf.run(x, config)).max())
        rows.append(row)
    tensorrt = None
    if engine_cache is not None and TENSORRT in clf.providers:
        tensorrt = {"fp16": clf.trt_fp16, "engine_cache": str(engine_cache), "engine_was_cached": engine_cached,
                    "max_batch": clf.trt_max_batch}
    return {"channels": config.name, "image_size": spec.image_size, "provider": clf.providers[0],
            "providers": clf.providers, "threads": threads, "eager_threads": eager_threads,
            "first_inference_ms": first_ms, "tensorrt": tensorrt, "torch_eager": eager_note, "results": rows}


@dataclass(frozen=True)
class BenchReport:
    """What ``cli.py bench`` reports: :func:`benchmark`'s dict for the graphs in ``artifacts``, run with
    ``precision`` on ``device``."""

    artifacts: str
    precision: str
    device: str
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """``bench --json``'s object: the request, then the measurements (without the eager thread counts tried)."""
        measured = {k: v for k, v in self.result.items() if k != "eager_threads"}
        return {"artifacts": self.artifacts, "precision": self.precision, "device": self.device, **measured}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """Where it ran, the first inference, then a markdown table of latencies per runtime and batch size."""
        r = self.result
        lines = [f"{r['channels']} graph from {self.artifacts}, {r['image_size']} px, device {self.device}: ran on "
                 f"{r['provider']} (providers {', '.join(r['providers'])}), {r['threads']} cores"]
        if (trt := r["tensorrt"]) is not None:
            engine = "engine found: loaded" if trt["engine_was_cached"] else "empty: engine built"
            lines.append(f"TensorRT engine cache {trt['engine_cache']} ({engine} in the first inference), "
                         f"fp16 {'on' if trt['fp16'] else 'off'}")
        lines += [f"first inference (load, verify, create session, run 1 image): {r['first_inference_ms']:.1f} ms",
                  f"PyTorch eager: {r['torch_eager']} (best of {r['eager_threads']} threads)",
                  "| runtime | batch | threads | p50 ms | p90 ms | p99 ms | images/s |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["results"]:
            for name in ("onnxruntime", "torch_eager"):
                if name in row:
                    t = row[name]
                    lines.append(f"| {name} | {t['batch_size']} | {t.get('threads', r['threads'])} | "
                                 f"{t['p50_ms']:.3f} | {t['p90_ms']:.3f} | {t['p99_ms']:.3f} | "
                                 f"{t['images_per_s']:.0f} |")
            if "max_abs_logit_diff" in row:
                lines.append(f"  batch {row['batch_size']}: max |logit difference| onnxruntime vs eager "
                             f"{row['max_abs_logit_diff']:.2e}")
        return "\n".join(lines)
