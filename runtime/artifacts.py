"""Reading exported artifacts: the manifest, checksummed graphs, and each graph's metadata.

The layout is the export contract (:mod:`runtime.contract`): ``<dir>/manifest.json`` lists one
graph per channel configuration with its file name and sha256; every graph carries its
preprocessing parameters in its ONNX ``metadata_props``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import contract as C
from .channels import ChannelConfig
from .errors import ArtifactError, ConfigurationNotExportedError, InvalidChannelsError
from .preprocess import INTERPOLATION, RESIZE_MODE


@dataclass(frozen=True)
class GraphEntry:
    """One graph as the manifest lists it."""

    config: ChannelConfig
    path: Path
    sha256: str
    precision: str = "fp32"


@dataclass(frozen=True)
class Artifacts:
    """A manifest and the graphs it lists, keyed by configuration name (widest first)."""

    root: Path
    task: str
    #: The manifest's model, by its current name (one written as ``adaptive`` reads ``anychannel``).
    model: str
    class_names: tuple[str, ...]
    image_size: int
    graphs: dict[str, GraphEntry]
    manifest: dict[str, Any]
    precision: str = "fp32"

    @property
    def configs(self) -> list[ChannelConfig]:
        return [g.config for g in self.graphs.values()]

    def entry(self, config: ChannelConfig) -> GraphEntry:
        """The graph for ``config``, or :class:`ConfigurationNotExportedError` naming those there are."""
        try:
            return self.graphs[config.name]
        except KeyError:
            flag = "" if self.precision == "fp32" else f" --{self.precision}"
            what = "configuration" if self.precision == "fp32" else f"{self.precision} graph of"
            hint = (f"export it with `python cli.py export --task {self.task} --channels {config.name}{flag}`, "
                    f"if the model takes {config.name}")
            raise ConfigurationNotExportedError(
                f"{what} {config.name} was not exported to {self.root}; exported: "
                f"{', '.join(self.graphs) or 'none'} ({hint})"
            ) from None


@dataclass(frozen=True)
class GraphSpec:
    """What a graph's metadata says about its input: the preprocessing to apply, and its labels."""

    config: ChannelConfig
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str
    interpolation: str
    metadata: dict[str, str]


def manifest_path(path: "str | os.PathLike[str]") -> Path:
    """``path`` itself if it names a file, else ``path/manifest.json``."""
    path = Path(path)
    return path if path.suffix == ".json" or path.is_file() else path / C.MANIFEST_NAME


def load_artifacts(path: "str | os.PathLike[str]", precision: str = "fp32") -> Artifacts:
    """Read and check a manifest (an artifacts folder or its ``manifest.json``); graphs are not read yet.

    ``precision`` ("fp32", "int8" or "fp16") picks which graph of each configuration to use;
    configurations exported without that variant are left out.
    """
    if precision not in C.PRECISIONS:
        raise ArtifactError(f"unknown precision {precision!r}; choose one of {', '.join(C.PRECISIONS)}")
    mpath = manifest_path(path)
    if not mpath.is_file():
        where = "folder does not exist" if not mpath.parent.exists() else f"no {C.MANIFEST_NAME} there"
        raise ArtifactError(f"no exported artifacts at {path} ({where}); export them with `python cli.py export`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not a readable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath} is not an anychannel manifest (expected a JSON object)")
    version = manifest.get("contract_version")
    if version != C.CONTRACT_VERSION:
        raise ArtifactError(f"{mpath} has contract version {version!r}; this runtime reads version "
                            f"{C.CONTRACT_VERSION} (re-export with this version of anychannel)")
    try:
        graphs = _graph_entries(manifest["graphs"], mpath.parent, precision)
        artifacts = Artifacts(root=mpath.parent, task=str(manifest["task"]),
                              model=C.current_model_name(str(manifest.get("model", ""))),
                              class_names=tuple(manifest["class_names"]), image_size=int(manifest["image_size"]),
                              graphs=graphs, manifest=manifest, precision=precision)
    except (KeyError, TypeError, ValueError, InvalidChannelsError) as exc:
        raise ArtifactError(f"{mpath} is malformed: {type(exc).__name__}: {exc}") from None
    if not artifacts.graphs:
        raise ArtifactError(f"{mpath} lists no {precision} graphs; export them with "
                            f"`python cli.py export --{precision}`")
    return artifacts


def _graph_entries(graphs: Any, root: Path, precision: str) -> dict[str, GraphEntry]:
    """The manifest's ``precision`` graphs (a mapping keyed by configuration, or a list), widest first."""
    items = list(graphs.values()) if isinstance(graphs, Mapping) else list(graphs)
    if not items:
        raise ValueError("it lists no graphs")
    entries = {}
    for item in items:
        config = ChannelConfig.parse(item["channels"])
        graph = item if precision == "fp32" else item.get(precision)
        if graph is None:
            continue
        # A manifest names files relative to itself; never let it point outside its folder.
        name = Path(graph["file"]).name
        entries[config.name] = GraphEntry(config, root / name, str(graph["sha256"]).lower(), precision)
    return dict(sorted(entries.items(), key=lambda kv: kv[1].config.index))


def read_verified(entry: GraphEntry) -> bytes:
    """The graph's bytes, after checking them against the manifest's sha256.

    The session is built from these very bytes, so a file swapped after the check cannot be loaded.
    """
    try:
        data = entry.path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"graph {entry.path} listed in the manifest is missing") from None
    except OSError as exc:
        raise ArtifactError(f"graph {entry.path} cannot be read: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ArtifactError(f"graph {entry.path} does not match its manifest checksum (sha256 {digest[:12]}..., "
                            f"expected {entry.sha256[:12]}...): it is truncated, damaged or was modified; re-export it")
    return data


def graph_spec(metadata: Mapping[str, str], entry: GraphEntry) -> GraphSpec:
    """Parse and check a graph's ``metadata_props`` against its manifest entry and this runtime."""
    where = entry.path
    try:
        config = ChannelConfig.parse(metadata[C.META_CHANNELS])
        spec = GraphSpec(
            config=config,
            class_names=tuple(json.loads(metadata[C.META_CLASS_NAMES])),
            image_size=int(metadata[C.META_IMAGE_SIZE]),
            mean=tuple(float(v) for v in json.loads(metadata[C.META_MEAN])),
            std=tuple(float(v) for v in json.loads(metadata[C.META_STD])),
            resize=metadata[C.META_RESIZE],
            interpolation=metadata[C.META_INTERPOLATION],
            metadata=dict(metadata),
        )
    except KeyError as exc:
        raise ArtifactError(f"graph {where} lacks metadata {exc.args[0]!r}; re-export it") from None
    except (TypeError, ValueError, InvalidChannelsError) as exc:
        raise ArtifactError(f"graph {where} has malformed metadata: {exc}") from None
    problems = []
    if metadata.get(C.META_CONTRACT, str(C.CONTRACT_VERSION)) != str(C.CONTRACT_VERSION):
        problems.append(f"contract version {metadata[C.META_CONTRACT]}, this runtime reads {C.CONTRACT_VERSION}")
    if config != entry.config:
        problems.append(f"it is for {config.name}, but the manifest lists it for {entry.config.name}")
    if metadata.get(C.META_PRECISION, "fp32") != entry.precision:
        problems.append(f"it holds a {metadata[C.META_PRECISION]} graph, but the manifest lists it as "
                        f"{entry.precision}")
    if len(spec.mean) != config.num_channels or len(spec.std) != config.num_channels:
        problems.append(f"mean/std have {len(spec.mean)}/{len(spec.std)} values for {config.num_channels} channels")
    if spec.image_size <= 0:
        problems.append(f"image size {spec.image_size}")
    if (spec.resize, spec.interpolation) != (RESIZE_MODE, INTERPOLATION):
        problems.append(f"it expects {spec.resize}/{spec.interpolation} resizing; this runtime implements "
                        f"{RESIZE_MODE}/{INTERPOLATION}")
    if problems:
        raise ArtifactError(f"graph {where} cannot be used: " + "; ".join(problems))
    return spec
