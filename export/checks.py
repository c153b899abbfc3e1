"""Structural checks on an exported graph: the parts of the contract visible without running it."""
from __future__ import annotations

import onnx

from runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME

from .errors import ExportError, GraphCheckError

#: The oldest opset we emit: 17 has every op we use with its current semantics.
MIN_OPSET = 17
#: The default ONNX domain, under its two spellings; anything else is a vendor extension.
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
#: Control flow means a branch was left unresolved.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


def check_opset(opset: int) -> None:
    """Refuse an opset outside what the contract needs and the installed onnx package knows."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the graph contract needs opset {MIN_OPSET} or newer")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ExportError(f"opset {opset} is newer than onnx {onnx.__version__} knows (up to {newest})")


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS)


def dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """A value's shape: ints for fixed dims, the name for symbolic ones, None if unknown."""
    out: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def check_graph(model: onnx.ModelProto, config: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Raise :class:`GraphCheckError` unless ``model`` meets the graph contract.

    Checks: onnx's full checker; a single file (no external data, under 2 GB); standard
    operators only at opset >= 17, with no control flow or local functions; one input and one
    output with the contract's names, a *symbolic* batch dimension and fixed other dims.
    """
    def fail(message: str) -> None:
        raise GraphCheckError(config, message)

    if model.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF:
        fail("graph exceeds 2 GB and cannot be a single self-contained file")
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        fail(f"onnx checker rejected the graph: {exc}")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        fail(f"initializers stored as external data: {external[:3]}")
    opset = opset_of(model)
    if opset < MIN_OPSET:
        fail(f"opset {opset} is older than {MIN_OPSET}")
    nonstandard = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if nonstandard or model.functions:
        fail(f"non-standard operators or local functions: {nonstandard or [f.name for f in model.functions]}")
    control = sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW_OPS})
    if control:
        fail(f"control-flow nodes {control}: the channel branch was not resolved")
    _check_io(model, config, input_shape, num_classes)


def _check_io(model: onnx.ModelProto, config: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise GraphCheckError(config, f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got "
                                      f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}")
    for value, rest, batch in ((inputs[0], list(input_shape), BATCH_DIM), (graph.output[0], [num_classes], None)):
        shape = dims(value)
        # The dynamo exporter can turn a declared-dynamic axis static; only dim_param proves it is not.
        # The input's must be named as the contract says; the output's only needs to be symbolic.
        if not shape or not isinstance(shape[0], str) or (batch and shape[0] != batch):
            raise GraphCheckError(config, f"{value.name} has batch dimension {shape[:1]}, not a symbolic "
                                          f"{BATCH_DIM!r} (shape {shape})")
        if shape[1:] != rest:
            raise GraphCheckError(config, f"{value.name} has shape {shape}, expected [{BATCH_DIM!r}, *{rest}]")
