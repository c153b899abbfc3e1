"""Top-1 validation of reduced precision against fp32, one rule for every reduced target.

Reduced-precision logits cannot match fp32 to 1e-4, so a reduced target is judged by accuracy:
its top-1 on labelled images may fall at most ``max_drop`` below the fp32 graph's. Export's int8
and fp16 variants (``export.precision``) and TensorRT's fp16 mode (``Classifier(device="tensorrt",
trt_fp16=True)``, checked by ``cli.py evaluate --trt-fp16``) record the same fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .channels import ChannelConfig
from .errors import AnyChannelError
from .request import DEFAULT_MAX_DROP  # beside the commands' defaults; export.precision reads it here

if TYPE_CHECKING:
    from .classifier import Classifier


@dataclass(frozen=True)
class Top1Check:
    """A reduced target's top-1 against the fp32 graph's on the same labelled images."""

    split: str
    images: int
    fp32_top1: float
    top1: float
    max_drop: float
    agreement: float
    max_abs_logit_diff: float
    validated_on: str

    @property
    def change(self) -> float:
        return self.top1 - self.fp32_top1

    @property
    def passed(self) -> bool:
        return self.change >= -self.max_drop

    def to_dict(self, precision: str) -> dict:
        """The manifest's ``accuracy`` fields, with ``<precision>_top1`` for the reduced target."""
        return {"split": self.split, "images": self.images, "fp32_top1": self.fp32_top1,
                f"{precision}_top1": self.top1, "change": self.change, "max_drop": self.max_drop,
                "top1_agreement_with_fp32": self.agreement, "max_abs_logit_diff": self.max_abs_logit_diff,
                "validated_on": self.validated_on}


def compare_top1(fp32_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray, *, split: str,
                 max_drop: float = DEFAULT_MAX_DROP, validated_on: str) -> Top1Check:
    """Top-1 of both logit sets against ``labels``, their agreement and largest difference."""
    labels = np.asarray(labels)
    return Top1Check(split=split, images=len(labels), fp32_top1=float(np.mean(fp32_logits.argmax(1) == labels)),
                     top1=float(np.mean(logits.argmax(1) == labels)), max_drop=max_drop,
                     agreement=float(np.mean(fp32_logits.argmax(1) == logits.argmax(1))),
                     max_abs_logit_diff=float(np.abs(fp32_logits - logits).max()), validated_on=validated_on)


class PrecisionDropError(AnyChannelError, ValueError):
    """A reduced-precision target loses more top-1 than allowed (``check`` has the figures)."""

    def __init__(self, config: str, what: str, check: Top1Check) -> None:
        self.config, self.check = config, check
        super().__init__(f"{config}: {what} loses {-check.change:.1%} top-1 on {check.split} "
                         f"({check.fp32_top1:.1%} -> {check.top1:.1%}), more than {check.max_drop:.1%}")


def batched_logits(clf: "Classifier", images: np.ndarray, config: ChannelConfig, batch_size: int) -> np.ndarray:
    """``clf``'s logits for ``images`` through ``config``, ``batch_size`` images per call."""
    return np.concatenate([clf.predict_logits(images[i:i + batch_size], config)
                           for i in range(0, len(images), batch_size)])


def accuracy_rows(clf: "Classifier", images: np.ndarray, labels: np.ndarray,
                  configs: Iterable["str | ChannelConfig"], *, batch_size: int = 256,
                  reference: "Classifier | None" = None, split: str = "", max_drop: float = DEFAULT_MAX_DROP,
                  ) -> list[dict]:
    """Top-1 of ``clf`` on labelled images, one row per configuration (what ``cli.py evaluate`` prints).

    With ``reference`` (fp32 on the CPU), ``clf`` is a reduced-precision target judged against it by
    :func:`validate_precision`, and each row carries the comparison under ``fp32``.
    """
    configs = [ChannelConfig.parse(c) for c in configs]
    if reference is not None:
        checks = validate_precision(clf, reference, images, labels, configs=configs, split=split,
                                    max_drop=max_drop, batch_size=batch_size)
        return [{"channels": name, "images": len(labels), "accuracy": c.top1, "fp32": c.to_dict("trt_fp16")}
                for name, c in checks.items()]
    return [{"channels": c.name, "images": len(labels),
             "accuracy": float((batched_logits(clf, images, c, batch_size).argmax(1) == labels).mean())}
            for c in configs]


def validate_precision(candidate: "Classifier", reference: "Classifier", images: np.ndarray, labels: np.ndarray,
                       *, configs: Iterable["str | ChannelConfig"] | None = None, split: str = "",
                       max_drop: float = DEFAULT_MAX_DROP, batch_size: int = 256,
                       what: str = "TensorRT fp16") -> dict[str, Top1Check]:
    """Check ``candidate`` (e.g. TensorRT fp16) against ``reference`` (fp32, e.g. ``device="cpu"``)
    on labelled ``N x H x W x 3`` uint8 images, per configuration, as export checks its variants.

    Raises :class:`PrecisionDropError` at the first configuration whose top-1 drops more than ``max_drop``.
    """
    results = {}
    for config in (candidate.configs if configs is None else [ChannelConfig.parse(c) for c in configs]):
        check = compare_top1(batched_logits(reference, images, config, batch_size),
                             batched_logits(candidate, images, config, batch_size),
                             labels, split=split, max_drop=max_drop, validated_on=candidate.providers[0])
        if not check.passed:
            raise PrecisionDropError(config.name, what, check)
        results[config.name] = check
    return results


# --- what ``cli.py evaluate`` reports -------------------------------------------------------------

class ClassMismatchError(AnyChannelError, ValueError):
    """Labelled images whose class list is not the graphs': their label indices mean other classes."""


def first_names(names: Sequence[str], shown: int = 3) -> str:
    """``cat, dog (2 classes)`` or ``a, b, c, ... (50 classes)``."""
    head = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    return f"{head} ({len(names)} classes)"


def check_same_classes(data_name: str, data_classes: Sequence[str], graph_classes: Sequence[str],
                       artifacts: object) -> None:
    """Raise :class:`ClassMismatchError` unless the dataset's classes are the graphs', in the same order."""
    if tuple(data_classes) != tuple(graph_classes):
        raise ClassMismatchError(f"{data_name} has classes {first_names(data_classes)}, but the graphs in "
                                 f"{artifacts} were trained on {first_names(graph_classes)}; evaluate them on "
                                 "data with the same classes")


@dataclass(frozen=True)
class Evaluation:
    """Top-1 of exported graphs on a dataset's test split: :func:`accuracy_rows`' rows and where they came from."""

    artifacts: str
    data: str
    images: int
    providers: list[str]
    trt_fp16: bool
    rows: list[dict]

    def to_json(self) -> str:
        """``evaluate --json``."""
        return json.dumps({"artifacts": self.artifacts, "data": self.data, "split": "test",
                           "providers": self.providers, "trt_fp16": self.trt_fp16, "results": self.rows}, indent=2)

    def to_text(self) -> str:
        """A heading line, then a markdown table: top-1 per configuration (beside fp32's with TensorRT fp16)."""
        lines = [f"{self.data} test split, {self.images} images, graphs in {self.artifacts} "
                 f"({', '.join(self.providers)}{', TensorRT fp16' if self.trt_fp16 else ''})"]
        if not self.trt_fp16:
            lines += ["| channels | top-1 accuracy |", "|---|---|"]
            lines += [f"| {row['channels']} | {100 * row['accuracy']:.2f}% |" for row in self.rows]
            return "\n".join(lines)
        lines += ["| channels | top-1 accuracy | fp32 (CPU) | change | top-1 agreement | max logit diff |",
                  "|---|---|---|---|---|---|"]
        for row in self.rows:
            c = row["fp32"]
            lines.append(f"| {row['channels']} | {100 * row['accuracy']:.2f}% | {100 * c['fp32_top1']:.2f}% | "
                         f"{100 * c['change']:+.2f} pt | {c['top1_agreement_with_fp32']:.4f} | "
                         f"{c['max_abs_logit_diff']:.2e} |")
        return "\n".join(lines)
