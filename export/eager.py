"""PyTorch eager beside an exported graph: the reference ``cli.py bench`` times the runtime against."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.channels import ChannelConfig

if TYPE_CHECKING:
    from runtime.artifacts import Artifacts
    from runtime.bench import EagerForward


def eager_forward(artifacts: "Artifacts", config: ChannelConfig, checkpoint: Path | None = None
                  ) -> tuple["EagerForward | None", str]:
    """``(forward(x, threads) -> logits, note)`` for the checkpoint the graphs came from, or ``(None, why)``."""
    try:
        import torch
    except ImportError:
        return None, "skipped: torch is not installed"
    from export.pipeline import default_checkpoint, load_target
    from train.checkpoint import CheckpointError, check_renamed_run

    # Beside the graphs' folder, in the run folder export reads by default (naive-R/ for naive R).
    run = default_checkpoint(artifacts.task, artifacts.model, config, Path(".")).parent.name
    path = checkpoint or artifacts.root.parent / run / "best.pt"
    try:
        if checkpoint is None:
            check_renamed_run(path)
        target = load_target(path, artifacts.task, artifacts.model)  # export's own check of the model
        graph = artifacts.manifest.get("graphs", {}).get(config.name, {})
        if graph.get("data_fingerprint") and target.info.data_fingerprint != graph["data_fingerprint"]:
            raise CheckpointError(f"checkpoint {path} was trained on other data than the graphs in {artifacts.root}")
        model = target.net
    except CheckpointError as exc:
        if checkpoint is not None:  # asked for by name: an error, not a silent skip
            raise
        return None, f"skipped: {exc} (pass --checkpoint)"
    # The resolved module is what export traced: the same computation as the graph.
    module = model.resolve(config).eval() if hasattr(model, "resolve") else model

    def forward(x, threads: int):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return forward, f"{path}, torch {torch.__version__}"
