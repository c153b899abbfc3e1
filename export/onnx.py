"""ONNX target: one verified, self-contained graph for one channel configuration.

:func:`export_onnx` is the whole pipeline for one graph: trace with the dynamo exporter,
check the contract, simplify (keeping the unsimplified graph when that fails or changes the
outputs), write the metadata, then validate the *written bytes* against PyTorch before they
are renamed into place.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from runtime.channels import ChannelConfig
from runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, sha256_file

from .atomic import staged, write_synced
from .checks import check_graph, check_opset, opset_of
from .errors import ExportError, GraphCheckError
from .images import ImageSet
from .lowering import lower_small_convs
from .manifest import GraphRecord
from .metadata import ModelInfo, exporter_versions, graph_metadata, set_metadata
from .parity import (DEFAULT_ATOL, DEFAULT_BATCH_SIZES, REFERENCE_BATCH, Reference, check_reference_evaluator,
                     cpu_session, parity_inputs, run_session, validate_parity)
from .request import DEFAULT_OPSET  # defined with the CLI's defaults, where no torch is imported


#: The dynamo exporter emits this opset and newer natively; older ones it can only down-convert,
#: and onnx's converter fails on our graphs, so they go through the TorchScript exporter.
DYNAMO_MIN_OPSET = 18


def to_onnx_proto(module: nn.Module, config: ChannelConfig, image_size: int, opset: int) -> onnx.ModelProto:
    """Export ``module`` (its ``forward(x)`` already bound to ``config``) with a dynamic batch.

    We use the dynamo exporter, torch's default and maintained path: it emits a flat graph
    (no Shape/Gather/Concat shape arithmetic, no Identity nodes), so even the unsimplified
    fallback is clean. Opset 17 goes through the TorchScript exporter (see
    :data:`DYNAMO_MIN_OPSET`). The example has batch 2 because a batch of 1 lets tracing
    specialise the axis to a constant.
    """
    example = torch.randn(2, config.num_channels, image_size, image_size)
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    try:
        # The exporters report progress and deprecations; a CLI table should not be interleaved with them.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if opset >= DYNAMO_MIN_OPSET:
                program = torch.onnx.export(module.eval(), (example,), dynamo=True, external_data=False,
                                            verbose=False, dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
                                            **names)
                graph = program.model_proto
            else:
                buffer = io.BytesIO()
                torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, **names,
                                  dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}})
                graph = onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # the exporters raise many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{config}: torch.onnx.export failed: {first}") from exc
    if opset_of(graph) != opset:
        raise ExportError(f"{config}: asked for opset {opset}, the exporter produced {opset_of(graph)}")
    return graph


def _max_output_diff(a: onnx.ModelProto, b: onnx.ModelProto, config: ChannelConfig, image_size: int) -> float:
    """Largest logit difference between two graphs on random inputs at two batch sizes."""
    sa, sb = cpu_session(a.SerializeToString()), cpu_session(b.SerializeToString())
    diffs = [np.max(np.abs(run_session(sa, x) - run_session(sb, x)))
             for _, x in parity_inputs(config, image_size, (1, 7), None, seed=1)]
    return float(max(diffs))


def simplify_graph(model: onnx.ModelProto, config: ChannelConfig, info: ModelInfo,
                   atol: float) -> tuple[onnx.ModelProto, bool, str]:
    """onnxsim with the batch kept symbolic; returns ``(graph, simplified, note)``.

    The unsimplified graph is kept (and the reason noted) if onnxsim fails, breaks the
    contract, or moves any logit by more than a tenth of the parity tolerance.
    """
    import onnxsim

    try:
        # No overwrite_input_shapes: onnxsim then keeps the symbolic batch. We check outputs ourselves.
        simplified, ok = onnxsim.simplify(model, check_n=0, certify=False)
    except Exception as exc:
        return model, False, f"onnxsim failed: {type(exc).__name__}: {str(exc)[:200]}"
    if not ok:
        return model, False, "onnxsim reported that its result is invalid"
    try:
        check_graph(simplified, config.name, (config.num_channels, info.image_size, info.image_size),
                    info.num_classes)
    except GraphCheckError as exc:
        return model, False, f"simplified graph breaks the contract: {exc}"
    diff = _max_output_diff(model, simplified, config, info.image_size)
    if not diff <= atol / 10:
        return model, False, f"simplification changed the logits by {diff:.3g}"
    return simplified, True, ""


def export_onnx(module: nn.Module, config: ChannelConfig, path: "str | os.PathLike[str]", info: ModelInfo, *,
                opset: int = DEFAULT_OPSET, reference: Reference | None = None, images: ImageSet | None = None,
                batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES, atol: float = DEFAULT_ATOL,
                simplify: bool = True, reference_check: bool = True, lower: bool = False) -> GraphRecord:
    """Export ``module`` (``model.resolve(config)``) to ``path`` and return its manifest entry.

    ``reference`` is what the graph must match (default ``module``; pass the unresolved model
    bound to ``config`` to validate the resolution as well). Raises :class:`ExportError` or a
    subclass of :class:`ExportValidationError`; ``path`` is then left exactly as it was.
    ``lower`` writes convolutions with tiny output maps as a gather and one matmul
    (:mod:`export.lowering`): faster in batches on CPU, slower at batch 1 for some models.
    """
    check_opset(opset)
    path = Path(path)
    input_shape = (config.num_channels, info.image_size, info.image_size)
    if lower:
        module, lowered = lower_small_convs(module, torch.zeros(1, *input_shape))
        if not lowered:
            warnings.warn(f"--lower: no convolution of the {config} graph has an output map that small at "
                          f"{info.image_size} px; it is exported as without --lower", stacklevel=2)
    graph = to_onnx_proto(module, config, info.image_size, opset)
    check_graph(graph, config.name, input_shape, info.num_classes)
    simplified, note = False, "not requested"
    if simplify:
        graph, simplified, note = simplify_graph(graph, config, info, atol)
    set_metadata(graph, graph_metadata(info, config))

    with staged(path) as tmp:
        write_synced(tmp, graph.SerializeToString())
        written = onnx.load(tmp)  # check what will be installed, not the in-memory copy
        check_graph(written, config.name, input_shape, info.num_classes)
        session = cpu_session(tmp)
        parity = validate_parity(session, reference or module.eval(), config, info.image_size, images,
                                 batch_sizes, atol)
        if reference_check:
            # The last batch parity_inputs yields: real images when there are any.
            sample = list(parity_inputs(config, info.image_size, (REFERENCE_BATCH,), images, seed=2))[-1][1]
            check_reference_evaluator(written, session, config, sample)
            parity.reference_evaluator_top1 = True
        record = GraphRecord(
            file=path.name, sha256=sha256_file(tmp), size=tmp.stat().st_size, opset=opset_of(written),
            input_shape=[BATCH_DIM, *input_shape], output_shape=[BATCH_DIM, info.num_classes],
            channels=config.name, channel_indices=list(config.indices), mean=list(config.mean),
            std=list(config.std), precision="fp32", simplified=simplified, simplify_note=note,
            parity=parity.to_dict(), versions=exporter_versions(), data_fingerprint=info.data_fingerprint,
            exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    return record
