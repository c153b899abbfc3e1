"""Export: one verified, self-contained ONNX graph per channel configuration, and a manifest.

One function per target (:func:`export_onnx`), validation with named errors
(:class:`ExportValidationError` and its subclasses), and :func:`export_task` for the CLI.

The names below are imported on first use, so that :mod:`export.request` (the CLI's defaults)
loads without torch or onnx.
"""
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import ExportError, ExportValidationError, GraphCheckError, OutputDirError, ParityError
    from .manifest import GraphRecord
    from .metadata import ModelInfo
    from .onnx import export_onnx
    from .pipeline import ExportResult, export_task
    from .request import DEFAULT_OPSET

#: Each public name and the submodule that defines it.
_HOMES = {
    "DEFAULT_OPSET": "request", "ExportError": "errors", "ExportResult": "pipeline",
    "ExportValidationError": "errors", "GraphCheckError": "errors", "GraphRecord": "manifest",
    "ModelInfo": "metadata", "OutputDirError": "errors", "ParityError": "errors", "export_onnx": "onnx",
    "export_task": "pipeline",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
