"""Numerical validation of an exported graph against PyTorch, in the manner of Optimum's exporters.

The gate: onnxruntime on CPU and the PyTorch model in eval mode, fed the same fresh random
inputs and real images at several batch sizes, must agree to ``atol`` on every logit and
exactly on every top-1 class. A failure raises :class:`ParityError` naming the configuration.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from runtime.channels import ChannelConfig
from runtime.contract import INPUT_NAME
from runtime.preprocess import uint8_batch_to_input

from .errors import ExportError, ExportValidationError, ParityError
from .images import ImageSet

DEFAULT_ATOL = 1e-4
#: Odd and even sizes, a prime and the usual serving size: catches a batch baked in anywhere.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 7, 32)
#: onnx's pure-numpy reference evaluator is slow, so it sees one small batch.
REFERENCE_BATCH = 2

Reference = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ParityReport:
    """The parity result written into the manifest."""

    max_abs_diff: float
    atol: float
    batch_sizes: list[int]
    inputs: list[str]
    samples: int
    top1_agreement: float
    reference_evaluator_top1: bool | None = field(default=None)

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_session(model: "str | os.PathLike[str] | bytes") -> ort.InferenceSession:
    """An onnxruntime session pinned to the CPU provider (the GPU build would otherwise try CUDA)."""
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph types, from its C++ layer
        reason = " ".join(str(exc).split())
        raise ExportError(f"onnxruntime {ort.__version__} cannot load the exported graph: {reason}") from None


def run_session(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {INPUT_NAME: x})[0]


def _cycle(images: np.ndarray, n: int) -> np.ndarray:
    """``n`` images, repeating the set when it has fewer."""
    return images[np.arange(n) % len(images)]


def parity_inputs(config: ChannelConfig, image_size: int, batch_sizes: Sequence[int],
                  images: ImageSet | None, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(label, NCHW float32 batch)``: standard-normal inputs (as normalised pixels look), then images."""
    rng = np.random.default_rng(seed)
    for b in batch_sizes:
        yield "random", rng.standard_normal((b, config.num_channels, image_size, image_size), dtype=np.float32)
    if images is not None and len(images.images):
        for b in batch_sizes:
            yield images.label, uint8_batch_to_input(_cycle(images.images, b), config)


@torch.inference_mode()
def torch_logits(reference: Reference, x: np.ndarray) -> np.ndarray:
    return reference(torch.from_numpy(x)).float().numpy()


def validate_parity(session: ort.InferenceSession, reference: Reference, config: ChannelConfig, image_size: int,
                    images: ImageSet | None = None,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, atol: float = DEFAULT_ATOL,
                    seed: int = 0) -> ParityReport:
    """Compare ``session`` with ``reference`` (the eval-mode model for ``config``); raise on disagreement."""
    worst, worst_at = 0.0, ""
    agree = total = 0
    labels: list[str] = []
    for label, x in parity_inputs(config, image_size, batch_sizes, images, seed):
        expected, got = torch_logits(reference, x), run_session(session, x)
        if got.shape != expected.shape:
            raise ParityError(config.name, float("inf"), atol,
                              f"output shape {got.shape} != PyTorch's {expected.shape} at batch {len(x)} ({label})")
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= worst:  # also catches NaN
            worst, worst_at = diff, f"batch {len(x)}, {label} inputs"
        agree += int(np.sum(got.argmax(1) == expected.argmax(1)))
        total += len(x)
        labels += [label] if label not in labels else []
    if not worst <= atol or agree != total:
        raise ParityError(config.name, worst, atol, f"worst at {worst_at}; top-1 agrees on {agree}/{total} inputs")
    return ParityReport(max_abs_diff=worst, atol=atol, batch_sizes=list(batch_sizes), inputs=labels,
                        samples=total, top1_agreement=agree / total)


def check_reference_evaluator(model: onnx.ModelProto, session: ort.InferenceSession, config: ChannelConfig,
                              x: np.ndarray) -> None:
    """onnx's reference implementation must pick the same top-1 as onnxruntime: the graph is portable."""
    from onnx.reference import ReferenceEvaluator

    expected = run_session(session, x).argmax(1)
    try:
        got = ReferenceEvaluator(model).run(None, {INPUT_NAME: x})[0].argmax(1)
    except Exception as exc:  # an op the reference does not implement is itself a portability failure
        raise ExportValidationError(config.name, f"onnx.reference.ReferenceEvaluator cannot run the graph: {exc}")
    if not np.array_equal(got, expected):
        raise ExportValidationError(config.name, f"onnx.reference.ReferenceEvaluator top-1 {got.tolist()} "
                                                 f"!= onnxruntime's {expected.tolist()}")
