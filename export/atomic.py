"""Atomic file replacement: nothing half-written or unverified ever sits at the final path."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputDirError


def temp_path_for(path: Path) -> Path:
    """A hidden sibling of ``path``: same folder, so ``os.replace`` is an atomic rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` and fsync it, so a crash after the rename cannot expose an empty file."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def staged(path: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit rename it over ``path``.

    On any exception (a failed check, ``KeyboardInterrupt``) the temporary file is removed
    and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: "str | os.PathLike[str]", data: bytes) -> None:
    with staged(path) as tmp:
        write_synced(tmp, data)


def ensure_writable_dir(path: "str | os.PathLike[str]") -> Path:
    """Create ``path`` if needed and prove a file can be written there, before any slow work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_path_for(path / "probe")
        write_synced(probe, b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputDirError(f"output folder {path} is not writable: {reason}") from None
    return path
