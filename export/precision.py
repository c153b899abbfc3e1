"""Reduced-precision targets: int8 (static QDQ) and fp16 variants of a verified fp32 graph.

Their logits legitimately differ from the fp32 ones, so the 1e-4 parity gate does not apply;
instead a variant must keep its top-1 accuracy on the validation split within ``max_drop`` of
the fp32 graph's, and the change is recorded in the manifest. One converter per target
(:data:`CONVERTERS`); :func:`export_variant` validates and installs any of them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort

from runtime.channels import ChannelConfig
from runtime.contract import sha256_file
from runtime.device import CUDA, plan_providers, with_provider_options
from runtime.preprocess import uint8_batch_to_input
from runtime.validation import DEFAULT_MAX_DROP, compare_top1

from .atomic import staged, write_synced
from .checks import STANDARD_DOMAINS, check_graph
from .errors import ExportError, ExportValidationError
from .images import REAL_IMAGES_DIR
from .metadata import ModelInfo, graph_metadata, set_metadata
from .parity import cpu_session, run_session

CALIBRATION_IMAGES = 256
BATCH = 64


@dataclass(frozen=True)
class LabelledImages:
    """``N x H x W x 3`` uint8 RGB images with their labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str


def _batches(images: np.ndarray, config: ChannelConfig) -> Iterator[np.ndarray]:
    for i in range(0, len(images), BATCH):
        yield uint8_batch_to_input(images[i:i + BATCH], config)


def top1_accuracy(model: "str | os.PathLike[str]", data: LabelledImages, config: ChannelConfig,
                  session: ort.InferenceSession | None = None) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of a graph on ``data`` seen through ``config``, and its logits."""
    session = session or cpu_session(model)
    logits = np.concatenate([run_session(session, x) for x in _batches(data.images, config)])
    return float(np.mean(logits.argmax(1) == data.labels)), logits


def fp16_session(model: "str | os.PathLike[str]") -> ort.InferenceSession:
    """Where fp16 is meant to run: CUDA (TF32 off) when it can start here, else the CPU."""
    plan = plan_providers("auto")
    if CUDA not in plan.providers:  # no CUDA build, or no driver: do not even try
        return cpu_session(model)
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from their pip packages, where that is how they are installed
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a CUDA provider that fails to load falls back to CPU; recorded below
    return ort.InferenceSession(os.fspath(model), options, providers=with_provider_options(plan.providers))


#: Only these are quantised (MatMul: the lowered convolutions, see export.lowering): they hold
#: nearly all the compute, and leaving the dynamic stem's softmax, weighting and batch norm in
#: float keeps its attention exact.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: np.ndarray, config: ChannelConfig) -> dict:
    """Static QDQ quantisation calibrated on ``calibration`` (uint8 RGB images): per-channel int8
    weights, uint8 activations, min-max ranges (what onnxruntime's x86 VNNI/AMX kernels run)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from runtime.contract import INPUT_NAME

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = _batches(calibration, config)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {INPUT_NAME: x}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(prepared, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=list(QUANTIZED_OPS),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, calibration_providers=["CPUExecutionProvider"])
    return {"quantization": {"format": "QDQ", "ops": list(QUANTIZED_OPS), "weights": "int8 per channel",
                             "activations": "uint8", "calibration": "minmax",
                             "calibration_images": len(calibration)}}


def convert_fp16(fp32_path: Path, out_path: Path, calibration: np.ndarray, config: ChannelConfig) -> dict:
    """Weights and compute in float16; input and output stay float32, so the runtime's
    preprocessing and the graph contract are unchanged."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = OnnxModel(convert_float_to_float16(onnx.load(fp32_path), keep_io_types=True))
    half.topological_sort()  # the converter appends the input casts last; the checker wants nodes in order
    onnx.save(half.model, out_path)
    return {"conversion": {"tool": "onnxruntime.transformers.float16", "io": "float32", "weights": "float16"}}


Converter = Callable[[Path, Path, np.ndarray, ChannelConfig], dict]
#: Target -> converter from the verified fp32 graph; each returns its manifest details.
CONVERTERS: dict[str, Converter] = {"int8": quantize_qdq, "fp16": convert_fp16}
#: Where each target's accuracy is validated: int8 QDQ is a CPU format; fp16 is a GPU format.
SESSIONS: dict[str, Callable[[Path], ort.InferenceSession]] = {"int8": cpu_session, "fp16": fp16_session}


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """The quantisation tools declare many domains; keep the ones nodes use (the standard one)."""
    used = {n.domain for n in model.graph.node} | STANDARD_DOMAINS
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def export_variant(precision: str, fp32_path: "str | os.PathLike[str]", config: ChannelConfig,
                   path: "str | os.PathLike[str]", info: ModelInfo, calibration: LabelledImages,
                   validation: LabelledImages, max_drop: float = DEFAULT_MAX_DROP,
                   fp32_result: tuple[float, np.ndarray] | None = None) -> dict:
    """Convert the verified fp32 graph at ``fp32_path`` to ``precision`` ("int8" or "fp16") into
    ``path``; return its manifest sub-entry.

    ``fp32_result`` is the fp32 graph's :func:`top1_accuracy` on ``validation``, when the caller
    already has it (several variants of one graph); otherwise it is computed here.

    Raises :class:`ExportValidationError` (``path`` untouched) if top-1 on ``validation`` drops
    by more than ``max_drop``.
    """
    path = Path(path)
    input_shape = (config.num_channels, info.image_size, info.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / f"{precision}.onnx"
        try:
            details = CONVERTERS[precision](Path(fp32_path), raw, calibration.images, config)
        except Exception as exc:  # the converters raise assorted types
            raise ExportError(f"{config}: {precision} conversion failed: {type(exc).__name__}: {exc}") from exc
        graph = onnx.load(raw)
    _drop_unused_opsets(graph)
    set_metadata(graph, graph_metadata(info, config, precision=precision))
    check_graph(graph, config.name, input_shape, info.num_classes)

    with staged(path) as tmp:
        write_synced(tmp, graph.SerializeToString())
        fp32_top1, fp32_logits = (fp32_result if fp32_result is not None
                                  else top1_accuracy(fp32_path, validation, config))
        session = SESSIONS[precision](tmp)
        _, logits = top1_accuracy(tmp, validation, config, session)
        check = compare_top1(fp32_logits, logits, validation.labels, split=validation.source, max_drop=max_drop,
                             validated_on=session.get_providers()[0])
        if not check.passed:
            raise ExportValidationError(config.name, f"{precision} graph loses {-check.change:.1%} top-1 on "
                                                     f"{validation.source} ({fp32_top1:.1%} -> {check.top1:.1%}), "
                                                     f"more than {max_drop:.1%}")
        entry = {
            "file": path.name, "sha256": sha256_file(tmp), "size": tmp.stat().st_size, "precision": precision,
            **details, "accuracy": check.to_dict(precision),
        }
        if precision == "int8":
            entry["quantization"]["calibration_source"] = calibration.source
    return entry


def variant_data(info: ModelInfo, data: "str | os.PathLike[str] | None" = None,
              dataset=None) -> tuple[LabelledImages, LabelledImages]:
    """Calibration images (a fixed sample of the training split) and the validation split.

    ``dataset`` (a loaded ``train.data.Dataset``) or ``data`` (a folder) names the data; by
    default the model's own training data when it can be found: the embedded synthetic set,
    or a folder of that name beside the shared tiny-imagenet-50. It must be the data the model
    was trained on (same fingerprint), or the accuracy change would mean nothing.
    """
    from train.data import SYNTHETIC, load_dataset

    if dataset is None:
        if data is None and info.dataset != SYNTHETIC:
            guess = REAL_IMAGES_DIR.parent / info.dataset
            if not info.dataset or not guess.is_dir():
                raise ExportError(f"--int8/--fp16 need the validation split of the training data "
                                  f"({info.dataset!r}): pass --data")
            data = guess
        dataset = load_dataset(data, info.image_size)
    if dataset.fingerprint != info.data_fingerprint:
        raise ExportError(f"--int8/--fp16: dataset {dataset.name!r} at {info.image_size} px is not the data the "
                          f"model was trained on (fingerprint differs); pass the training data with --data")
    train, val = dataset.splits["train"], dataset.splits["val"]
    pick = np.random.default_rng(0).choice(len(train), min(CALIBRATION_IMAGES, len(train)), replace=False)
    return (LabelledImages(train.images[pick], train.labels[pick], f"{dataset.name} train"),
            LabelledImages(val.images, val.labels, f"{dataset.name} val"))
