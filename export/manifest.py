"""``manifest.json``: the index of a folder of graphs, updated entry by entry and written atomically.

Its layout is defined in :mod:`runtime.contract` (``MANIFEST_TOP_KEYS``, ``MANIFEST_ENTRY_KEYS``),
which the runtime reads to find graphs and to refuse files whose sha256 does not match.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from runtime import contract
from runtime.channels import CONFIG_NAMES

from .atomic import write_atomic

log = logging.getLogger(__name__)

#: Top-level fields that must match for an existing entry to stay: graphs of another model,
#: class list or input size cannot share a manifest with the new ones.
_COMPATIBILITY_KEYS = ("contract_version", "task", "model", "class_names", "image_size")


#: The table ``cli.py export`` prints, a row per installed graph (:meth:`GraphRecord.table_rows`).
GRAPH_TABLE_HEADER = "| channels | file | size | parity max diff | simplified |\n|---|---|---|---|---|"


@dataclass
class GraphRecord:
    """One graph's manifest entry (keys: ``runtime.contract.MANIFEST_ENTRY_KEYS``)."""

    file: str
    sha256: str
    size: int
    opset: int
    input_shape: list[Any]
    output_shape: list[Any]
    channels: str
    channel_indices: list[int]
    mean: list[float]
    std: list[float]
    precision: str
    simplified: bool
    simplify_note: str
    parity: dict[str, Any]
    versions: dict[str, str]
    data_fingerprint: str
    exported_at: str
    extra: dict[str, Any] = field(default_factory=dict)  # optional variants: "int8", "fp16"

    def to_dict(self) -> dict[str, Any]:
        entry = asdict(self)
        entry.update(entry.pop("extra"))
        return entry

    def table_rows(self) -> list[str]:
        """This graph's row of :data:`GRAPH_TABLE_HEADER`'s table, then one per variant (int8, fp16)."""
        simplified = "yes" if self.simplified else "no: " + self.simplify_note
        rows = [f"| {self.channels} | {self.file} | {self.size / 1024:.1f} KiB | {self.parity['max_abs_diff']:.2e} | "
                f"{simplified} |"]
        for precision, variant in self.extra.items():
            accuracy = variant["accuracy"]
            rows.append(f"| {self.channels} {precision} | {variant['file']} | {variant['size'] / 1024:.1f} KiB | "
                        f"val top-1 {100 * accuracy['change']:+.2f} pt ({accuracy['validated_on']}) | - |")
        return rows


def manifest_header(task: str, model: str, model_version: str, class_names: Sequence[str],
                    image_size: int) -> dict[str, Any]:
    return {
        "contract_version": contract.CONTRACT_VERSION,
        "task": task,
        "model": model,
        "model_version": model_version,
        "class_names": list(class_names),
        "image_size": int(image_size),
        "input_name": contract.INPUT_NAME,
        "output_name": contract.OUTPUT_NAME,
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when absent or unreadable (it is then rebuilt, not trusted)."""
    path = folder / contract.MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) and isinstance(data.get(contract.MANIFEST_GRAPHS), dict) else None


def _entry_is_intact(folder: Path, entry: Any) -> bool:
    """The entry's file still exists and still has the recorded sha256."""
    try:
        path = folder / entry["file"]
        return path.is_file() and contract.sha256_file(path) == entry["sha256"]
    except (KeyError, TypeError, OSError):
        return False


def start_manifest(folder: Path, header: dict[str, Any]) -> dict[str, Any]:
    """``header`` plus the existing entries worth keeping: same model and classes, files intact.

    Entries whose file was deleted or changed are dropped, so the manifest never vouches for a
    file it has not hashed.
    """
    manifest = {**header, contract.MANIFEST_GRAPHS: {}}
    old = read_manifest(folder)
    if old is None:
        return manifest
    old["model"] = contract.current_model_name(str(old.get("model")))  # graphs exported under an old name stay
    if any(old.get(k) != header[k] for k in _COMPATIBILITY_KEYS):
        log.warning("%s describes another model (%s); its entries are dropped", folder / contract.MANIFEST_NAME,
                    ", ".join(f"{k}={old.get(k)!r}" for k in ("task", "model", "image_size")))
        return manifest
    for name, entry in old[contract.MANIFEST_GRAPHS].items():
        if not _entry_is_intact(folder, entry):
            log.warning("dropping manifest entry %s: its file is missing or changed", name)
            continue
        for precision in contract.VARIANT_PRECISIONS:
            if precision in entry and not _entry_is_intact(folder, entry[precision]):
                log.warning("dropping the %s variant of %s: its file is missing or changed", precision, name)
                entry = {k: v for k, v in entry.items() if k != precision}
        manifest[contract.MANIFEST_GRAPHS][name] = entry
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` atomically, graphs in the canonical configuration order."""
    graphs = manifest[contract.MANIFEST_GRAPHS]
    order = sorted(graphs, key=lambda n: CONFIG_NAMES.index(n) if n in CONFIG_NAMES else len(CONFIG_NAMES))
    manifest = {**manifest, contract.MANIFEST_GRAPHS: {n: graphs[n] for n in order}}
    path = folder / contract.MANIFEST_NAME
    write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path
