"""The graph contract between export and runtime: file names, metadata keys, manifest format.

Export writes these; the runtime reads them. Both import them from here, nowhere else.
"""
from __future__ import annotations

import hashlib
import os

from .channels import ChannelConfig

MANIFEST_NAME = "manifest.json"
#: Bumped when the manifest's or the metadata's meaning changes incompatibly.
CONTRACT_VERSION = 1

INPUT_NAME = "input"    # float32 [batch, C, H, W], normalised per channel identity
OUTPUT_NAME = "logits"  # float32 [batch, num_classes]
BATCH_DIM = "batch"

#: Keys of the ONNX ``metadata_props``; values are strings, JSON where structured.
META_CONTRACT = "anychannel.contract_version"
META_TASK = "anychannel.task"
META_CHANNELS = "anychannel.channels"                 # "RG"
META_CHANNEL_INDICES = "anychannel.channel_indices"   # JSON [0, 1]
META_CLASS_NAMES = "anychannel.class_names"           # JSON ["goldfish", ...]
META_MEAN = "anychannel.mean"                         # JSON per input channel
META_STD = "anychannel.std"                           # JSON per input channel
META_IMAGE_SIZE = "anychannel.image_size"             # "32"
META_RESIZE = "anychannel.resize"                     # runtime.preprocess.RESIZE_MODE
META_INTERPOLATION = "anychannel.interpolation"       # runtime.preprocess.INTERPOLATION
META_MODEL = "anychannel.model"                       # "anychannel" (see RENAMED_MODELS)
META_MODEL_VERSION = "anychannel.model_version"       # the project's version
META_DATA_FINGERPRINT = "anychannel.data_fingerprint"  # sha256 of the training pixels and labels
META_EXPORTER = "anychannel.exporter"                 # JSON {"torch": ..., "onnx": ..., ...}
META_PRECISION = "anychannel.precision"               # "fp32", "int8" or "fp16"

#: Models renamed since checkpoints, manifests or graphs were first written with their old name:
#: old name -> current name. The one place an old name is known: the model registry, checkpoints
#: (train.checkpoint), manifests (runtime.artifacts, export.manifest), run folders and the option
#: checks all read through it. Here, not in train/, because the runtime reads it and never imports
#: torch. ``adaptive`` became ``anychannel`` (issue 28: one name for our model everywhere).
RENAMED_MODELS: dict[str, str] = {"adaptive": "anychannel"}


def current_model_name(name: str) -> str:
    """``name``, or the name it was renamed to (:data:`RENAMED_MODELS`)."""
    return RENAMED_MODELS.get(name, name)


def renamed_model_note(name: str) -> str | None:
    """``model 'adaptive' was renamed to anychannel`` for an old name; None for any other."""
    new = RENAMED_MODELS.get(name)
    return None if new is None else f"model {name!r} was renamed to {new}"


#: ``manifest.json`` (JSON object), written by export and read by the runtime. Top level:
#: ``contract_version`` (int, :data:`CONTRACT_VERSION`), ``task``, ``model``, ``model_version``,
#: ``class_names`` (list), ``image_size`` (int), ``input_name``, ``output_name``, and ``graphs``:
#: an object keyed by configuration name ("RGB", ..., "B"), each entry holding
#: :data:`MANIFEST_ENTRY_KEYS` (``file`` is relative to the manifest's folder; ``input_shape`` is
#: ``["batch", C, H, W]``; ``parity`` holds ``max_abs_diff``, ``atol``, ``batch_sizes``,
#: ``top1_agreement``, ``inputs``). An entry may add variants ``int8`` and ``fp16``: objects with
#: ``file``, ``sha256``, ``size``, ``precision`` and ``accuracy`` (``fp32_top1``, ``<precision>_top1``,
#: ``change`` on the validation split, ``validated_on``); the fp32 graph stays the entry's main ``file``.
MANIFEST_GRAPHS = "graphs"
#: Precisions a graph may come in; fp32 is the entry itself, the others are optional variants.
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
VARIANT_PRECISIONS: tuple[str, ...] = PRECISIONS[1:]
MANIFEST_TOP_KEYS: tuple[str, ...] = (
    "contract_version", "task", "model", "model_version", "class_names", "image_size",
    "input_name", "output_name", MANIFEST_GRAPHS,
)
MANIFEST_ENTRY_KEYS: tuple[str, ...] = (
    "file", "sha256", "size", "opset", "input_shape", "output_shape", "channels", "channel_indices",
    "mean", "std", "precision", "simplified", "simplify_note", "parity", "versions", "data_fingerprint",
    "exported_at",
)


def graph_filename(task: str, config: ChannelConfig, model: str | None = None, precision: str = "fp32") -> str:
    """``task1-RG.onnx``; with ``model`` (a non-default model of the task) ``task2-resnet34-RGB.onnx``;
    a reduced-precision variant adds its precision: ``task1-RG.int8.onnx``, ``task1-RG.fp16.onnx``."""
    stem = f"{task}-{model}-{config.name}" if model else f"{task}-{config.name}"
    return f"{stem}.onnx" if precision == "fp32" else f"{stem}.{precision}.onnx"


def sha256_file(path: "str | os.PathLike[str]", chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
