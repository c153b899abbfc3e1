"""What a graph says about itself: metadata_props per the contract, and tool versions."""
from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from typing import Any

import onnx

from runtime import contract
from runtime.channels import ChannelConfig
from runtime.preprocess import INTERPOLATION, RESIZE_MODE

#: Used when the project is run from a source tree that is not pip-installed.
FALLBACK_VERSION = "0.1.0"


def _version(dist: str, fallback: str = "unknown") -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def project_version() -> str:
    return _version("anychannel", FALLBACK_VERSION)


def exporter_versions() -> dict[str, str]:
    """Versions of the tools that made and checked a graph (recorded in graph and manifest)."""
    import onnxruntime
    import onnxsim
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxsim": str(getattr(onnxsim, "__version__", _version("onnxsim"))).lstrip("v"),
        "onnxscript": _version("onnxscript"),
    }


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about the model, repeated in every graph made from it."""

    task: str
    model: str
    class_names: tuple[str, ...]
    image_size: int
    data_fingerprint: str
    dataset: str = ""  # the training data's name ("synthetic", "tiny-imagenet-50")

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "ModelInfo":
        return cls(ckpt["task"], ckpt["model"], tuple(ckpt["class_names"]), int(ckpt["image_size"]),
                   str(ckpt.get("data_fingerprint", "")), str(ckpt.get("dataset", "")))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def graph_metadata(info: ModelInfo, config: ChannelConfig, precision: str = "fp32") -> dict[str, str]:
    """The contract's ``metadata_props``: everything a runtime needs to preprocess and label."""
    return {
        contract.META_CONTRACT: str(contract.CONTRACT_VERSION),
        contract.META_TASK: info.task,
        contract.META_CHANNELS: config.name,
        contract.META_CHANNEL_INDICES: json.dumps(list(config.indices)),
        contract.META_CLASS_NAMES: json.dumps(list(info.class_names)),
        contract.META_MEAN: json.dumps(list(config.mean)),
        contract.META_STD: json.dumps(list(config.std)),
        contract.META_IMAGE_SIZE: str(info.image_size),
        contract.META_RESIZE: RESIZE_MODE,
        contract.META_INTERPOLATION: INTERPOLATION,
        contract.META_MODEL: info.model,
        contract.META_MODEL_VERSION: project_version(),
        contract.META_DATA_FINGERPRINT: info.data_fingerprint,
        contract.META_EXPORTER: json.dumps(exporter_versions(), sort_keys=True),
        contract.META_PRECISION: precision,
    }


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace ``metadata_props`` with ``metadata`` (dropping tool notes such as onnxsim's)."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
