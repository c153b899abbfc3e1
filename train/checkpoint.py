"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked before use."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from runtime.errors import AnyChannelError

#: Bumped when a checkpoint's layout or a model's parameters change incompatibly.
CHECKPOINT_FORMAT = 2  # 2: the adaptive model's body is a choice (plain by default)


class CheckpointError(AnyChannelError, ValueError):
    """A checkpoint that is missing, corrupt, or made for another task or model version."""


def save_atomic(obj: Any, path: "str | os.PathLike[str]") -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: "str | os.PathLike[str]", task: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely and check that it is ours, of this format, and for ``task``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        # torch's own message runs to several lines of advice; the type is enough to say what broke.
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch file ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "format" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not an anychannel checkpoint")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {ckpt['format']}, this version reads format {CHECKPOINT_FORMAT}"
        )
    if task is not None and ckpt.get("task") != task:
        raise CheckpointError(f"checkpoint {path} is from {ckpt.get('task')!r}, not {task!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    from .models import create_model

    try:
        model = create_model(ckpt["model"], num_classes=len(ckpt["class_names"]), **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint does not match model {ckpt.get('model')!r}: {exc}") from None
    return model.eval()
