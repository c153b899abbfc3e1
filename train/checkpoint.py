"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked before use."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from runtime.contract import RENAMED_MODELS, current_model_name, renamed_model_note
from runtime.errors import AnyChannelError

from .config import EXECUTION_ONLY, TrainConfig

if TYPE_CHECKING:
    from .data import Dataset

#: Bumped when a checkpoint's layout or a model's parameters change incompatibly.
CHECKPOINT_FORMAT = 2  # 2: the anychannel model's body is a choice (plain by default)


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
    """Load a checkpoint safely and check that it is ours, of this format, and for ``task``.

    A model saved under an earlier name (``runtime.contract.RENAMED_MODELS``) reads as its current
    one, so what is built, exported and resumed from it is named as today.
    """
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
    if "model" in ckpt:
        ckpt["model"] = current_model_name(ckpt["model"])
    return ckpt


def check_renamed_run(path: Path, remedy: str = "") -> None:
    """Refuse a run folder's checkpoint ``path`` that is missing because its model was renamed: the
    folder of the old name beside it holds the file. ``remedy``: the other way out, for the message."""
    if path.exists():
        return
    for old, new in RENAMED_MODELS.items():
        old_run = path.parent.with_name(old)
        if path.parent.name == new and (old_run / path.name).exists():
            raise CheckpointError(f"found {old_run / path.name} but no {path}: {renamed_model_note(old)}; "
                                  f"move {old_run} to {path.parent}" + (f" {remedy}" if remedy else ""))


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    from .models import create_model

    try:
        model = create_model(ckpt["model"], num_classes=len(ckpt["class_names"]), **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint does not match model {ckpt.get('model')!r}: {exc}") from None
    return model.eval()


# --- compatibility: which checkpoint a run may resume from -----------------------------------


def data_meta(dataset: "Dataset") -> dict[str, Any]:
    """The data a checkpoint was trained on: its set's name, image size and content fingerprint."""
    return {"image_size": dataset.image_size, "dataset": dataset.name, "data_fingerprint": dataset.fingerprint}


def saved_recipe(saved: dict[str, Any]) -> dict[str, Any]:
    """A recipe written by an earlier run (a checkpoint's or results.json's ``train_config``), with
    the options added since it was written at their defaults."""
    return {**asdict(TrainConfig()), **saved}


def training_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` without the fields that only change how steps run (``--compile``): what resume compares."""
    return {k: v for k, v in recipe.items() if k not in EXECUTION_ONLY}


#: What identifies the data a checkpoint was trained on: its decoded content and image size
#: (not the folder's name, so moved or renamed data still resumes).
_DATA_KEYS = ("image_size", "data_fingerprint")


def _describe_data(meta: dict[str, Any]) -> str:
    return f"{meta.get('dataset')} at {meta.get('image_size')} px, fingerprint {str(meta.get('data_fingerprint'))[:12]}"


def check_same_data(meta: dict[str, Any], dataset: "Dataset", what: str) -> None:
    """Refuse ``meta`` (a checkpoint's) made from other data than ``dataset``: another image size or content."""
    wanted = data_meta(dataset)
    if any(meta.get(k) != wanted[k] for k in _DATA_KEYS):
        raise CheckpointError(f"{what} was trained on other data ({_describe_data(meta)}), not "
                              f"{_describe_data(wanted)}; use the same data and --image-size, or a fresh --out")


def check_resumable(state: dict[str, Any], path: Path, cfg: TrainConfig, meta: dict[str, Any],
                    dataset: "Dataset") -> None:
    """Refuse to resume ``state`` (``path``'s) into a run of recipe ``cfg`` described by ``meta``
    (``engine.checkpoint_meta`` plus ``strategy``): another recipe, strategy, network, starting
    weights or data would continue a different training under this run's name."""
    if (training_recipe(saved_recipe(state["train_config"])) != training_recipe(asdict(cfg))
            or state["model"] != meta["model"]
            or state.get("strategy") != meta["strategy"]):
        raise CheckpointError(
            f"{path} was written with different settings ({state['train_config']}, "
            f"{state.get('strategy')}), not ({asdict(cfg)}, {meta['strategy']}); resume with the "
            "same options or use a fresh --out"
        )
    # Another network (--backbone, --body) or other starting weights (--init, --pretrained).
    if state.get("model_kwargs") != meta["model_kwargs"] or state.get("init") != meta["init"]:
        raise CheckpointError(
            f"{path} was written for model options {state.get('model_kwargs')} starting from "
            f"{state.get('init') or 'random weights'}, not {meta['model_kwargs']} from "
            f"{meta['init'] or 'random weights'}; resume with the same options or use a fresh --out"
        )
    check_same_data(state, dataset, str(path))
