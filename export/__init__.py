"""Export: one verified, self-contained ONNX graph per channel configuration, and a manifest.

One function per target (:func:`export_onnx`), validation with named errors
(:class:`ExportValidationError` and its subclasses), and :func:`export_task` for the CLI.
"""
from .errors import ExportError, ExportValidationError, GraphCheckError, OutputDirError, ParityError
from .manifest import GraphRecord
from .metadata import ModelInfo
from .onnx import DEFAULT_OPSET, export_onnx
from .pipeline import ExportResult, export_task

__all__ = [
    "DEFAULT_OPSET", "ExportError", "ExportResult", "ExportValidationError", "GraphCheckError", "GraphRecord",
    "ModelInfo", "OutputDirError", "ParityError", "export_onnx", "export_task",
]
