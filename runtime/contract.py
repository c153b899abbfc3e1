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
META_MODEL = "anychannel.model"                       # "adaptive"
META_MODEL_VERSION = "anychannel.model_version"       # the project's version
META_DATA_FINGERPRINT = "anychannel.data_fingerprint"  # sha256 of the training pixels and labels
META_EXPORTER = "anychannel.exporter"                 # JSON {"torch": ..., "onnx": ..., ...}


def graph_filename(task: str, config: ChannelConfig, model: str | None = None) -> str:
    """``task1-RG.onnx``; with ``model`` (a non-default model of the task) ``task2-resnet34-RGB.onnx``."""
    return f"{task}-{model}-{config.name}.onnx" if model else f"{task}-{config.name}.onnx"


def sha256_file(path: "str | os.PathLike[str]", chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
