"""Export's exceptions, under the project's :class:`~runtime.errors.AnyChannelError`.

Validation failures are named (in the manner of Hugging Face Optimum's ``AtolError`` and
``ShapeError``) so that callers and tests can tell a parity failure from a malformed graph.
"""
from __future__ import annotations

from runtime.errors import AnyChannelError


class ExportError(AnyChannelError, RuntimeError):
    """An export that could not be completed; no unverified file was installed."""


class OutputDirError(ExportError):
    """The output folder cannot be created or written."""


class ExportValidationError(ExportError):
    """An exported graph failed a check; ``config`` names the channel configuration."""

    def __init__(self, config: str, message: str) -> None:
        super().__init__(f"{config}: {message}")
        self.config = config


class GraphCheckError(ExportValidationError):
    """The graph breaks the contract: static batch, ``If`` nodes, non-standard ops, external data..."""


class ParityError(ExportValidationError):
    """onnxruntime's logits or top-1 differ from PyTorch's beyond the tolerance."""

    def __init__(self, config: str, max_abs_diff: float, atol: float, detail: str) -> None:
        super().__init__(config, f"parity check failed: max |logits diff| {max_abs_diff:.3g} "
                                 f"(tolerance {atol:g}); {detail}")
        self.max_abs_diff = max_abs_diff
        self.atol = atol
