"""``export``, as a library call: one request, then :func:`run`, which exports (or reuses an
up-to-date export) and builds the browser bundle.

``python cli.py export`` parses its options into an :class:`ExportRequest` and calls :func:`run`;
the CLI's defaults are the fields' defaults. This module imports nothing heavy (no torch, no onnx)
so the CLI can read them when it starts; :func:`run` imports the exporter when it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.request import DEFAULT_MAX_DROP

#: The ONNX opset graphs are written in unless told otherwise (17 or newer: ``export.checks``).
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportRequest:
    """What ``python cli.py export`` is asked to do (the arguments of :func:`export.pipeline.export_task`,
    plus ``web``: also build a browser bundle in that folder)."""

    task: str = "task1"
    channels: str = "all"
    model: str | None = None
    checkpoint: Path | None = None
    out: Path | None = None
    opset: int = DEFAULT_OPSET
    images: Path | None = None
    int8: bool = False
    fp16: bool = False
    data: str | None = None
    max_drop: float = DEFAULT_MAX_DROP
    lower: bool = False
    web: Path | None = None


def run(request: ExportRequest, echo: Callable[[str], None] = print) -> Path:
    """Export the request's graphs and update their manifest, then (with ``web``) bundle them; returns
    the export folder.

    ``echo`` gets a markdown table row per graph as it is installed (the header before the first),
    then a line on the export and one on the bundle. With ``web``, an up-to-date export in the
    output folder is bundled as it is (:func:`export.web.up_to_date_export`).
    """
    from . import web
    from .manifest import GRAPH_TABLE_HEADER
    from .pipeline import export_task

    def show(record) -> None:  # printed as each graph is installed; the header only once one is
        if not shown:
            echo(GRAPH_TABLE_HEADER)
        shown.append(record.channels)
        echo("\n".join(record.table_rows()))

    shown: list[str] = []
    folder = request.web and web.up_to_date_export(request.task, request.channels, request.model,
                                                     request.checkpoint, request.out, request.int8)
    if folder:
        echo(f"bundling the existing export in {folder} (no checkpoint is newer; --checkpoint exports again)")
    else:
        result = export_task(request.task, request.channels, request.model, request.checkpoint, request.out,
                             request.opset, request.images, int8=request.int8, fp16=request.fp16, data=request.data,
                             max_drop=request.max_drop, lower=request.lower, on_graph=show)
        echo(f"{len(result.records)} graph(s) in {result.out_dir}; manifest {result.manifest}")
        folder = result.out_dir
    if request.web:
        bundle = web.build_web_bundle(folder, request.web, channels=request.channels, int8=request.int8)
        echo(bundle.summary())
    return folder
