"""``predict``, ``evaluate`` and ``bench``, as library calls: one request each, then the call that runs it.

``python cli.py predict|evaluate|bench`` parse their options into these dataclasses and call
:func:`predict`, :func:`evaluate` or :func:`bench`; the CLI's defaults are the fields' defaults.
This module imports only the standard library (the CLI reads the defaults when it starts, before
any command needs numpy or onnxruntime); the calls import the rest when they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .bench import BenchReport, EagerForward
    from .channels import ChannelConfig
    from .classifier import Classifier, FilePredictions
    from .validation import Evaluation

#: Where ``cli.py export`` writes task 1's graphs: what the runtime's commands load unless told otherwise.
DEFAULT_ARTIFACTS = Path("artifacts/task1/onnx")
#: Largest accepted loss of top-1 for a reduced-precision target (absolute: 0.02 = 2 points).
DEFAULT_MAX_DROP = 0.02


@dataclass(frozen=True)
class RuntimeOptions:
    """How the graphs run: the :class:`~runtime.classifier.Classifier` options predict, evaluate and bench share.

    The defaults are the Classifier's own.
    """

    device: str = "auto"
    precision: str = "fp32"
    trt_fp16: bool = False
    trt_cache_dir: Path | None = None

    def classifier(self, artifacts: "str | Path") -> "Classifier":
        """A Classifier on ``artifacts`` (a graphs' folder or its manifest.json) with these options."""
        from .classifier import Classifier

        return Classifier(artifacts, device=self.device, precision=self.precision, trt_fp16=self.trt_fp16,
                          trt_cache_dir=self.trt_cache_dir)


@dataclass(frozen=True)
class PredictRequest:
    """``predict``: classify image files, all in one batch, with the graph for ``channels`` (None: RGB)."""

    images: Sequence["str | Path"]
    artifacts: Path = DEFAULT_ARTIFACTS
    channels: str | None = None
    top_k: int = 5
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass(frozen=True)
class EvaluateRequest:
    """``evaluate``: top-1 of the graphs for ``channels`` ('all' or a list such as RGB,R) on ``data``'s test
    split (None: the embedded synthetic set). With ``runtime.trt_fp16``, each graph's top-1 may fall at
    most ``max_drop`` below the fp32 graph's on the CPU."""

    artifacts: Path = DEFAULT_ARTIFACTS
    data: str | None = None
    channels: str = "all"
    batch_size: int = 256
    max_drop: float = DEFAULT_MAX_DROP
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass(frozen=True)
class BenchRequest:
    """``bench``: latency of the graph for ``channels``, ``runs`` timed calls (after ``warmup``) per batch size."""

    artifacts: Path = DEFAULT_ARTIFACTS
    channels: str = "RGB"
    batch_sizes: tuple[int, ...] = (1, 32)
    runs: int = 100
    warmup: int = 5
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``--batch-sizes``: a comma list of positive integers, sorted, each once."""
    try:
        sizes = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 1:
        raise ValueError(f"--batch-sizes {text!r}: expected positive integers such as 1,32")
    return sizes


def predict(request: PredictRequest) -> "FilePredictions":
    """The ``top_k`` most probable classes of each image file, through one configuration's graph."""
    from .classifier import FilePredictions

    clf = request.runtime.classifier(request.artifacts)
    paths = [str(p) for p in request.images]
    batch, config = clf.preprocess(paths, request.channels)
    return FilePredictions(paths, config.name, clf.top_k(clf.run(batch, config), request.top_k))


def evaluate(request: EvaluateRequest, load_dataset: Callable[[str | None, int], Any]) -> "Evaluation":
    """Top-1 of the graphs on the test split, per configuration.

    ``load_dataset(data, image_size)``: ``train.data.load_dataset``, or anything that returns a dataset
    like it (``name``, ``class_names``, ``splits["test"]`` with ``images`` and ``labels``); the
    runtime does not import the training code itself.
    """
    from .channels import parse_channel_list
    from .validation import Evaluation, accuracy_rows, check_same_classes

    clf = request.runtime.classifier(request.artifacts)
    configs = clf.configs if request.channels.strip().lower() == "all" else parse_channel_list(request.channels)
    dataset = load_dataset(request.data, clf.artifacts.image_size)
    # Label indices from another class list would be scored against the wrong classes.
    check_same_classes(dataset.name, dataset.class_names, clf.class_names, request.artifacts)
    test = dataset.splits["test"]
    # TensorRT's fp16 mode is validated like export's fp16 graphs: top-1 against fp32 on the CPU, same images.
    reference = RuntimeOptions(device="cpu").classifier(request.artifacts) if request.runtime.trt_fp16 else None
    rows = accuracy_rows(clf, test.images, test.labels, configs, batch_size=request.batch_size, reference=reference,
                         split=f"{dataset.name} test", max_drop=request.max_drop)
    return Evaluation(str(request.artifacts), dataset.name, len(test), clf.providers, request.runtime.trt_fp16, rows)


def bench(request: BenchRequest,
          eager_for: "Callable[[Classifier, ChannelConfig], tuple[EagerForward | None, str]] | None" = None,
          ) -> "BenchReport":
    """:func:`runtime.bench.benchmark` on the request's graph, timing the Classifier's creation as part
    of the first inference; ``eager_for(classifier, config)`` gives the reference to compare with
    (``export.eager.eager_forward``'s forward and note), or None for none."""
    from .bench import BenchReport, benchmark
    from .channels import ChannelConfig

    config = ChannelConfig.parse(request.channels)
    result = benchmark(lambda: request.runtime.classifier(request.artifacts), config, request.batch_sizes,
                       request.runs, request.warmup, None if eager_for is None else lambda clf: eager_for(clf, config))
    return BenchReport(str(request.artifacts), request.runtime.precision, request.runtime.device, result)
