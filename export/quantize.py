"""INT8 target: static QDQ quantisation of a verified fp32 graph, re-validated by accuracy.

Logits of an int8 graph legitimately differ from the fp32 ones, so the parity gate does not
apply; instead the int8 graph must keep its top-1 accuracy on the validation split within
``max_drop`` of the fp32 graph's, and the change is recorded in the manifest.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from runtime.channels import ChannelConfig
from runtime.contract import sha256_file
from runtime.preprocess import uint8_batch_to_input

from .atomic import staged, write_synced
from .checks import STANDARD_DOMAINS, check_graph
from .errors import ExportError, ExportValidationError
from .images import REAL_IMAGES_DIR
from .metadata import ModelInfo, graph_metadata, set_metadata
from .parity import cpu_session, run_session

#: Largest accepted loss of validation top-1 (absolute, 0.02 = 2 points) from quantisation.
DEFAULT_MAX_DROP = 0.02
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


def top1_accuracy(model: "str | os.PathLike[str]", data: LabelledImages,
                  config: ChannelConfig) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of a graph on ``data`` seen through ``config``, and its predictions."""
    session = cpu_session(model)
    predicted = np.concatenate([run_session(session, x).argmax(1) for x in _batches(data.images, config)])
    return float(np.mean(predicted == data.labels)), predicted


#: Only these are quantised: they hold nearly all the compute, and leaving the dynamic stem's
#: softmax, weighting and batch norm in float keeps its attention exact.
QUANTIZED_OPS = ("Conv", "Gemm")


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: np.ndarray, config: ChannelConfig) -> None:
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


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """The quantisation tools declare many domains; keep the ones nodes use (the standard one)."""
    used = {n.domain for n in model.graph.node} | STANDARD_DOMAINS
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def export_onnx_int8(fp32_path: "str | os.PathLike[str]", config: ChannelConfig, path: "str | os.PathLike[str]",
                     info: ModelInfo, calibration: LabelledImages, validation: LabelledImages,
                     max_drop: float = DEFAULT_MAX_DROP) -> dict:
    """Quantise the verified fp32 graph at ``fp32_path`` into ``path``; return its manifest sub-entry.

    Raises :class:`ExportValidationError` (``path`` untouched) if top-1 on ``validation`` drops
    by more than ``max_drop``.
    """
    path = Path(path)
    input_shape = (config.num_channels, info.image_size, info.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "int8.onnx"
        try:
            quantize_qdq(Path(fp32_path), raw, calibration.images, config)
        except Exception as exc:  # onnxruntime.quantization raises assorted types
            raise ExportError(f"{config}: int8 quantisation failed: {type(exc).__name__}: {exc}") from exc
        graph = onnx.load(raw)
    _drop_unused_opsets(graph)
    set_metadata(graph, graph_metadata(info, config, precision="int8"))
    check_graph(graph, config.name, input_shape, info.num_classes)

    with staged(path) as tmp:
        write_synced(tmp, graph.SerializeToString())
        fp32_top1, fp32_pred = top1_accuracy(fp32_path, validation, config)
        int8_top1, int8_pred = top1_accuracy(tmp, validation, config)
        change = int8_top1 - fp32_top1
        if change < -max_drop:
            raise ExportValidationError(config.name, f"int8 graph loses {-change:.1%} top-1 on {validation.source} "
                                                     f"({fp32_top1:.1%} -> {int8_top1:.1%}), more than {max_drop:.1%}")
        entry = {
            "file": path.name, "sha256": sha256_file(tmp), "size": tmp.stat().st_size, "precision": "int8",
            "quantization": {"format": "QDQ", "ops": list(QUANTIZED_OPS), "weights": "int8 per channel",
                             "activations": "uint8",
                             "calibration": "minmax", "calibration_images": len(calibration.images),
                             "calibration_source": calibration.source},
            "accuracy": {"split": validation.source, "images": len(validation.images), "fp32_top1": fp32_top1,
                         "int8_top1": int8_top1, "change": change, "max_drop": max_drop,
                         "top1_agreement_with_fp32": float(np.mean(fp32_pred == int8_pred))},
        }
    return entry


def int8_data(info: ModelInfo, data: "str | os.PathLike[str] | None" = None,
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
                raise ExportError(f"--int8 needs the validation split of the training data ({info.dataset!r}): "
                                  f"pass --data")
            data = guess
        dataset = load_dataset(data, info.image_size)
    if dataset.fingerprint != info.data_fingerprint:
        raise ExportError(f"--int8: dataset {dataset.name!r} at {info.image_size} px is not the data the model was "
                          f"trained on (fingerprint differs); pass the training data with --data")
    train, val = dataset.splits["train"], dataset.splits["val"]
    pick = np.random.default_rng(0).choice(len(train), min(CALIBRATION_IMAGES, len(train)), replace=False)
    return (LabelledImages(train.images[pick], train.labels[pick], f"{dataset.name} train"),
            LabelledImages(val.images, val.labels, f"{dataset.name} val"))
