"""Export a task's trained model: one verified graph per requested configuration, plus the manifest.

This is what ``python cli.py export`` runs. It resolves defaults (model, checkpoint, output
folder), fails fast on bad input before any slow work, then exports configuration by
configuration, updating the manifest after each graph is installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch.nn as nn

from runtime.channels import ChannelConfig, parse_channel_list
from runtime.contract import MANIFEST_GRAPHS, MANIFEST_NAME, graph_filename, renamed_model_note
from train import task1, task2
from train.checkpoint import CheckpointError, check_renamed_run, load_checkpoint, model_from_checkpoint

from .atomic import ensure_writable_dir
from .checks import check_opset
from .errors import ExportError
from .images import ImageSet, parity_images
from .manifest import GraphRecord, manifest_header, start_manifest, write_manifest
from .metadata import ModelInfo, project_version
from .onnx import export_onnx
from . import precision as variant_targets
from .precision import export_variant, variant_data
from .request import ExportRequest

ARTIFACTS = Path("artifacts")
#: The model each task exports unless told otherwise (its graphs go to ``<task>/onnx/``).
DEFAULT_MODELS = {"task1": task1.PRIMARY_MODEL, "task2": task2.PRIMARY_MODEL}
#: Model families that run may hold: task 1's ``anychannel/`` run is our model on its compact
#: backbone or on a torchvision one, exported alike (same folder, same file names).
DEFAULT_FAMILIES = {"task1": task1.PRIMARY_FAMILIES, "task2": (task2.PRIMARY_MODEL,)}
#: Per task, models trained once per configuration, in run folders ``<model>-<CONFIG>`` (task 2's
#: naive CNN, the shallow net's teacher, is one RGB run in ``naive/``).
PER_CONFIG_MODELS = {"task1": frozenset({"naive"}), "task2": frozenset()}


@dataclass
class Target:
    """A loaded checkpoint and the model rebuilt from it."""

    path: Path
    net: nn.Module
    info: ModelInfo
    configs: tuple[str, ...]


@dataclass
class ExportResult:
    out_dir: Path
    manifest: Path
    records: list[GraphRecord] = field(default_factory=list)


def default_model(task: str) -> str:
    if task not in DEFAULT_MODELS:
        raise ExportError(f"unknown task {task!r}: expected one of {', '.join(DEFAULT_MODELS)}")
    return DEFAULT_MODELS[task]


def is_default_family(task: str, model: str) -> bool:
    """Whether ``model`` is what the task's default run holds (its graphs need no model prefix)."""
    default_model(task)  # validates the task name
    return model in DEFAULT_FAMILIES[task]


def default_checkpoint(task: str, model: str, config: ChannelConfig | None = None, root: Path = ARTIFACTS) -> Path:
    """Where export reads ``model``'s checkpoint when given none: ``<root>/<task>/<run>/best.pt``."""
    if is_default_family(task, model):
        run = default_model(task)
    else:
        run = f"{model}-{config.name}" if model in PER_CONFIG_MODELS[task] and config is not None else model
    return root / task / run / "best.pt"


def default_out_dir(task: str, model: str, root: Path = ARTIFACTS) -> Path:
    return root / task / ("onnx" if is_default_family(task, model) else f"onnx-{model}")


def graph_name(task: str, model: str, config: ChannelConfig, precision: str = "fp32") -> str:
    return graph_filename(task, config, None if is_default_family(task, model) else model, precision)


def load_default_target(task: str, model: str, config: ChannelConfig | None = None,
                        root: Path = ARTIFACTS) -> Target:
    """:func:`load_target` on the default checkpoint; a run folder left under its model's old name
    is refused with the rename, not reported missing."""
    path = default_checkpoint(task, model, config, root)
    check_renamed_run(path, "or pass --checkpoint")
    return load_target(path, task, model)


def load_target(path: Path, task: str, model: str | None) -> Target:
    """Load a checkpoint (``weights_only``), check it is ``task``'s ``model``, and rebuild the model."""
    ckpt = load_checkpoint(path, task)
    if model is not None and ckpt.get("model") != model:
        # The default run may hold any of the task's default families.
        if not (model == default_model(task) and is_default_family(task, str(ckpt.get("model")))):
            raise CheckpointError(f"checkpoint {path} holds model {ckpt.get('model')!r}, not {model!r}")
    try:
        info = ModelInfo.from_checkpoint(ckpt)
        configs = tuple(ckpt["configs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} lacks export information: {exc}") from None
    return Target(path, model_from_checkpoint(ckpt), info, configs)


def plan(task: str, channels: str, model: str | None, checkpoint: Path | None,
         root: Path = ARTIFACTS) -> tuple[str, list[tuple[ChannelConfig, Target]]]:
    """Which configuration comes from which checkpoint. ``channels="all"`` means all the model supports."""
    if model is not None and (note := renamed_model_note(model)):
        raise ExportError(f"--model {model}: {note}")
    everything = channels.strip().lower() == "all"
    wanted = None if everything else parse_channel_list(channels)
    if checkpoint is not None:
        target = load_target(Path(checkpoint), task, model)
        pairs = [(c, target) for c in (wanted or parse_channel_list(list(target.configs)))]
    else:
        model = model or default_model(task)
        known = (task1 if task == "task1" else task2).MODELS
        if model not in known:
            raise ExportError(f"unknown model {model!r} for {task}; choose from {', '.join(known)}")
        if model in PER_CONFIG_MODELS[task]:
            pairs = [(c, load_default_target(task, model, c, root)) for c in (wanted or parse_channel_list("all"))]
        else:
            target = load_default_target(task, model, root=root)
            pairs = [(c, target) for c in (wanted or parse_channel_list(list(target.configs)))]
    for config, target in pairs:
        if config.name not in target.configs:
            raise ExportError(f"checkpoint {target.path} supports {', '.join(target.configs)}, not {config}")
        if target.info != pairs[0][1].info:
            raise ExportError(f"checkpoints {pairs[0][1].path} and {target.path} disagree on task, classes, "
                              f"image size or training data; export them to separate folders")
    return pairs[0][1].info.model, pairs


def export_task(task: str = ExportRequest.task, channels: str = ExportRequest.channels, model: str | None = None,
                checkpoint: "str | Path | None" = None, out: "str | Path | None" = None,
                opset: int = ExportRequest.opset, images: "str | Path | None" = None, int8: bool = False,
                fp16: bool = False, data: "str | Path | None" = None, dataset=None,
                max_drop: float = ExportRequest.max_drop, lower: bool = False,
                root: Path = ARTIFACTS, on_graph: Callable[[GraphRecord], None] | None = None) -> ExportResult:
    """Export and validate one graph per configuration into ``out`` and update its manifest.

    With ``int8`` and/or ``fp16``, each fp32 graph also gets that variant, validated by its
    top-1 change on the validation split (``data``/``dataset``: see
    :func:`export.precision.variant_data`). ``lower``: see :mod:`export.lowering`. Stops at the
    first failure; graphs installed before it stay, and the manifest lists them.
    """
    default_model(task)  # validates the task name
    check_opset(opset)
    model, pairs = plan(task, channels, model, Path(checkpoint) if checkpoint else None, root)
    out_dir = ensure_writable_dir(out if out is not None else default_out_dir(task, model, root))
    info = pairs[0][1].info
    image_set: ImageSet = parity_images(info.image_size, images)
    variants = [p for p, wanted in (("int8", int8), ("fp16", fp16)) if wanted]
    variant_sets = variant_data(info, data, dataset) if variants else None
    manifest = start_manifest(out_dir, manifest_header(task, model, project_version(), info.class_names,
                                                       info.image_size))
    result = ExportResult(out_dir, out_dir / MANIFEST_NAME)
    for config, target in pairs:
        net = target.net
        # The reference is the unresolved model (every model takes ``forward(x, config)``), so
        # parity also proves that resolve() - branch selection, re-parameterisation - is exact.
        record = export_onnx(net.resolve(config).eval(), config, out_dir / graph_name(task, model, config),
                             target.info, opset=opset, reference=lambda x, n=net, c=config: n(x, c),
                             images=image_set, lower=lower)
        manifest[MANIFEST_GRAPHS][config.name] = record.to_dict()
        result.manifest = write_manifest(out_dir, manifest)  # before the variants: the fp32 graph is in place
        # The fp32 graph's validation accuracy, once for all its variants.
        fp32_result = variant_targets.top1_accuracy(out_dir / record.file, variant_sets[1], config) \
            if variants else None
        for precision in variants:
            record.extra[precision] = export_variant(
                precision, out_dir / record.file, config, out_dir / graph_name(task, model, config, precision),
                target.info, *variant_sets, max_drop=max_drop, fp32_result=fp32_result)
            manifest[MANIFEST_GRAPHS][config.name] = record.to_dict()
            result.manifest = write_manifest(out_dir, manifest)
        result.records.append(record)
        if on_graph is not None:
            on_graph(record)
    return result
