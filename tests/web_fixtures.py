"""Small export folders for the browser-bundle tests, made without torch or training.

:func:`contract_export` writes graphs that follow the export contract (metadata, input and output
names and shapes, manifest with sha256) and whose logits depend on every input value, so that any
preprocessing difference shows; :func:`fake_ort_dist` stands in for onnxruntime-web's npm files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.web import ORT_BACKENDS
from runtime import contract
from runtime.channels import ChannelConfig
from runtime.preprocess import INTERPOLATION, RESIZE_MODE

CLASSES = ("cat", "dog", "owl", "fox", "eel")


def contract_graph(config: ChannelConfig, size: int, seed: int, precision: str = "fp32") -> bytes:
    """``input [batch, C, size, size] -> Flatten -> MatMul -> Add -> logits``, with the contract's metadata."""
    rng = np.random.default_rng(seed)
    features = config.num_channels * size * size
    weight = (rng.standard_normal((features, len(CLASSES))) / np.sqrt(features)).astype(np.float32)
    bias = rng.standard_normal(len(CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weight"], ["scores"]),
         helper.make_node("Add", ["scores", "bias"], ["logits"])],
        f"contract-{config.name}",
        [helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.FLOAT,
                                       [contract.BATCH_DIM, config.num_channels, size, size])],
        [helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, [contract.BATCH_DIM, len(CLASSES)])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    helper.set_model_props(model, {
        contract.META_CONTRACT: str(contract.CONTRACT_VERSION),
        contract.META_TASK: "task1",
        contract.META_CHANNELS: config.name,
        contract.META_CHANNEL_INDICES: json.dumps(list(config.indices)),
        contract.META_CLASS_NAMES: json.dumps(list(CLASSES)),
        contract.META_MEAN: json.dumps(list(config.mean)),
        contract.META_STD: json.dumps(list(config.std)),
        contract.META_IMAGE_SIZE: str(size),
        contract.META_RESIZE: RESIZE_MODE,
        contract.META_INTERPOLATION: INTERPOLATION,
        contract.META_MODEL: "anychannel",
        contract.META_PRECISION: precision,
    })
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _entry(path: Path, config: ChannelConfig, size: int, precision: str) -> dict:
    return {"file": path.name, "sha256": contract.sha256_file(path), "size": path.stat().st_size, "opset": 18,
            "input_shape": [contract.BATCH_DIM, config.num_channels, size, size],
            "output_shape": [contract.BATCH_DIM, len(CLASSES)], "channels": config.name,
            "channel_indices": list(config.indices), "mean": list(config.mean), "std": list(config.std),
            "precision": precision, "simplified": True, "simplify_note": "", "parity": {}, "versions": {},
            "data_fingerprint": "test", "exported_at": "2026-01-01T00:00:00+00:00"}


def contract_export(folder: Path, configs: tuple[str, ...] = ("RGB", "RG", "B"), size: int = 8,
                    int8: bool = False, task: str = "task1") -> Path:
    """An export folder: one graph per configuration (and a stand-in ``int8`` variant) plus manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for i, name in enumerate(configs):
        config = ChannelConfig(name)
        path = folder / contract.graph_filename(task, config)
        path.write_bytes(contract_graph(config, size, seed=i))
        graphs[name] = _entry(path, config, size, "fp32")
        if int8:  # an fp32 computation labelled int8: enough to test the bundling of variants
            variant = folder / contract.graph_filename(task, config, precision="int8")
            variant.write_bytes(contract_graph(config, size, seed=100 + i, precision="int8"))
            graphs[name]["int8"] = {k: v for k, v in _entry(variant, config, size, "int8").items()
                                    if k in ("file", "sha256", "size", "precision")} | {"accuracy": {}}
    manifest = {"contract_version": contract.CONTRACT_VERSION, "task": task, "model": "anychannel",
                "model_version": "0.1.0", "class_names": list(CLASSES), "image_size": size,
                "input_name": contract.INPUT_NAME, "output_name": contract.OUTPUT_NAME, "graphs": graphs}
    (folder / contract.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return folder


def fake_ort_dist(folder: Path, version: str = "9.9.9") -> Path:
    """A stand-in for ``node_modules/onnxruntime-web/dist``: the files the bundle copies, with dummy content."""
    dist = folder / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for names in ORT_BACKENDS.values():
        for name in names:
            (dist / name).write_text(f"// stand-in for {name}\n")
    (dist.parent / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": version}))
    return dist
