"""anychannel's command line: train, summary, export, predict, evaluate, bench, doctor.

Each command parses its options into a library request (``train.request``, ``export.request``,
``runtime.request``), calls the library and prints what it returns; the options' defaults are the
requests' field defaults. Only light modules load here: torch, onnx and onnxruntime wait for a command.
"""
from __future__ import annotations

import functools
import inspect
import json
import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Protocol, Sequence, TypeVar

import typer

from export.request import ExportRequest
from runtime.errors import AnyChannelError
from runtime.request import DEFAULT_ARTIFACTS, BenchRequest, EvaluateRequest, PredictRequest, RuntimeOptions
from train.request import DEFAULT_EPOCHS, TASKS, TrainRequest

if TYPE_CHECKING:
    from types import ModuleType

T = TypeVar("T")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, export and run image classifiers for any subset of R, G and B.")


def _choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A str Enum of ``values``: typer lists them as the option's choices and refuses others."""
    return Enum(name, {v: v for v in values}, type=str)


Task = _choices("Task", TASKS)
#: ``train --device``: torch's devices.
Device = _choices("Device", ("auto", "cpu", "cuda"))
#: ``Classifier(device=...)`` (runtime.device.DEVICES): TensorRT and CoreML only when asked for.
RuntimeDevice = _choices("RuntimeDevice", ("auto", "cpu", "cuda", "tensorrt", "coreml"))


class Report(Protocol):
    """A library result the runtime's commands print: as JSON with --json, else as text."""

    def to_json(self) -> str: ...

    def to_text(self) -> str: ...


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``; a bad option or input (AnyChannelError, ValueError) is one error line, exit 2."""
    try:
        return function(*args, **kwargs)
    except (AnyChannelError, ValueError) as exc:
        _fail(str(exc))


def _request(cls: type[T], options: dict[str, Any], **given: Any) -> T:
    """A ``cls`` dataclass from a command's options named as its fields (enums by their values), and ``given``."""
    values = {f.name: options[f.name] for f in fields(cls) if f.name in options} | given
    return cls(**{name: v.value if isinstance(v, Enum) else v for name, v in values.items()})


def _show(report: Report, json_out: bool) -> None:
    typer.echo(report.to_json() if json_out else report.to_text())


@app.command()
def train(
    task: Task = typer.Argument(..., help="task1: any-channel model vs baselines; task2: shallow vs ResNet34."),
    data: Optional[str] = typer.Option(TrainRequest.data, help="Dataset folder (file lists or ImageFolder); "
                                                               "default: embedded synthetic set."),
    epochs: Optional[int] = typer.Option(TrainRequest.epochs, min=1, help=f"Epochs per model (default: "
                                         f"{DEFAULT_EPOCHS['task1']} for task1, {DEFAULT_EPOCHS['task2']} for task2)."),
    image_size: Optional[int] = typer.Option(
        TrainRequest.image_size, min=1, help="Input side in pixels (default: 32 for the embedded set, 64 for a "
                                             "dataset folder)."),
    batch_size: int = typer.Option(TrainRequest.batch_size, min=2, help="Views (image x configuration) per step; "
                                                                        "batch norm needs 2."),
    lr: float = typer.Option(TrainRequest.lr, help="Peak learning rate of the one-cycle schedule."),
    models: Optional[str] = typer.Option(TrainRequest.models, help="Comma list; task1: anychannel,naive,course; "
                                                                   "task2: naive,resnet34,shallow."),
    out: Optional[Path] = typer.Option(TrainRequest.out, help="Output folder (default artifacts/<task>/)."),
    device: Device = typer.Option(Device(TrainRequest.device), help="auto picks CUDA when torch sees one."),
    seed: int = typer.Option(TrainRequest.seed),
    resume: bool = typer.Option(TrainRequest.resume, help="Continue each run from its last.pt."),
    train_eval_samples: int = typer.Option(TrainRequest.train_eval_samples, min=1,
                                           help="Training images used for the final train accuracy."),
    strategy: str = typer.Option(TrainRequest.strategy, help="task1, our model: 'joint' (several configurations "
                                                             "every step) or 'sampled' (one drawn per batch, the "
                                                             "earlier recipe)."),
    configs_per_step: int = typer.Option(TrainRequest.configs_per_step, help="joint: configurations per step (7 = "
                                         "all; fewer are drawn by the sandwich rule: RGB, a one-channel one, the "
                                         "rest at random; N/7 of the compute; for half the compute --width 0.7 "
                                         "scores better)."),
    share_images: bool = typer.Option(TrainRequest.share_images, "--share-images/--split-images",
                                      help="joint: all configurations of a step see the same images, or each "
                                           "its own (--batch-size counts views: images x configurations)."),
    distill: bool = typer.Option(TrainRequest.distill, "--distill/--no-distill",
                                 help="joint with --share-images: subsets also learn from the RGB logits of the "
                                      "same images (in-place distillation)."),
    allocation: str = typer.Option(TrainRequest.allocation, help="joint: how a step's views are split between the "
                                   "seven configurations: 'uniform' (18 each of 128) or 'inverse-channels' (in "
                                   "proportion to 1/channels: RGB 9, two channels 13, one channel 26 each), which "
                                   "trades RGB accuracy for one-channel accuracy at the same compute, or "
                                   "'inverse-sqrt-channels' (1/sqrt(channels): RGB 13, two channels 15-16, one "
                                   "channel 22 each), half way between."),
    body: Optional[str] = typer.Option(TrainRequest.body, help="task1, --backbone compact's body: 'plain' (the "
                                       "naive CNN's stages, the default) or 'residual' (wider, 2.5x the FLOPs)."),
    width: float = typer.Option(TrainRequest.width, help="task1: multiply the width of every layer of our compact "
                                "network (FLOPs grow about as its square: 0.7 trains in under half the naive set's "
                                "compute); the naive CNNs keep theirs."),
    backbone: str = typer.Option(TrainRequest.backbone, help="task1, the anychannel model's backbone: 'compact' "
                                 "(ours) or a torchvision classification CNN, e.g. resnet18, resnet50, "
                                 "mobilenet_v3_small, efficientnet_b0, convnext_tiny. See docs/backbones.md."),
    init: Optional[Path] = typer.Option(TrainRequest.init, help="With a torchvision --backbone: start from this "
                                        "torchvision state dict file (what torchvision's weights API downloads)."),
    pretrained: bool = typer.Option(TrainRequest.pretrained, "--pretrained", help="With a torchvision --backbone: "
                                    "start from torchvision's DEFAULT ImageNet weights (downloaded into the torch "
                                    "hub cache, or read from it)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (runs torchrun "
                                                       "for you; one GPU each on CUDA). --batch-size stays the "
                                                       "global batch. See docs/training-at-scale.md."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="With --nproc: restart the processes this "
                                                                      "often after a failure, resuming from the "
                                                                      "last finished epoch."),
    amp: bool = typer.Option(TrainRequest.amp, "--amp/--no-amp", help="bfloat16 autocast on CUDA (no effect on the "
                                                                      "CPU)."),
    mix: str = typer.Option(TrainRequest.mix, help="Every model's recipe: 'mixup' or 'cutmix' mixes the images of "
                            "each configuration group and trains on the mixed labels (torchvision's MixUp and "
                            "CutMix), or 'none'. See docs/training.md."),
    mix_alpha: float = typer.Option(TrainRequest.mix_alpha, help="With --mix: the Beta(alpha, alpha) distribution "
                                                                 "of mixing ratios."),
    compile: str = typer.Option(TrainRequest.compile, "--compile", help="torch.compile the training step: "
                                "'none' (eager), 'default', 'reduce-overhead' (adds CUDA graphs) or "
                                "'max-autotune'. Slower on the CPU; see docs/training-at-scale.md."),
    teacher: Optional[str] = typer.Option(TrainRequest.teacher, help="task2: the shallow net's distillation "
                                          "teacher: naive (task 1's CNN on RGB, the default), resnet34, or none "
                                          "(labels only). It trains first when it is in --models."),
) -> None:
    """Train a task's models and write results.json, results.md and curves under --out."""
    from train import distributed
    from train.request import launch, reports_text, run_process

    request = _request(TrainRequest, locals())
    if nproc > 1 and not distributed.launched_by_torchrun():
        # The same command, once per process, under torchrun (which also does --max-restarts).
        raise typer.Exit(_call(launch, request, nproc, max_restarts, [str(Path(__file__).resolve()), *sys.argv[1:]]))
    try:
        is_main = _call(run_process, request, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the last finished epoch is saved; rerun with --resume to continue", err=True)
        raise typer.Exit(code=130)
    if is_main:
        typer.echo(reports_text(request.out_dir))


@app.command()
def summary(
    task: Task = typer.Argument(Task.task1),
    image_size: int = typer.Option(32, min=1),
    num_classes: int = typer.Option(10, min=2),
) -> None:
    """Print each model's layers, parameters and FLOPs per channel configuration."""
    from train.summary import summarize

    typer.echo(_call(summarize, task.value, image_size, num_classes))


@app.command("export")
def export_graphs(
    task: Task = typer.Option(Task(ExportRequest.task), help="Whose checkpoint to export."),
    channels: str = typer.Option(ExportRequest.channels, help="'all' (every configuration the model supports), one "
                                                              "configuration such as R, or a comma list such as "
                                                              "RGB,R."),
    model: Optional[str] = typer.Option(ExportRequest.model, help="Model to export (default: anychannel for task1, "
                                                                  "shallow for task2)."),
    checkpoint: Optional[Path] = typer.Option(ExportRequest.checkpoint, help="Checkpoint (default "
                                                                             "artifacts/<task>/<model>/best.pt)."),
    out: Optional[Path] = typer.Option(ExportRequest.out, help="Output folder (default artifacts/<task>/onnx/; "
                                                               "onnx-<model>/ for a non-default model)."),
    opset: int = typer.Option(ExportRequest.opset, help="ONNX opset, 17 or newer."),
    images: Optional[Path] = typer.Option(ExportRequest.images, help="Folder of real images for the parity check "
                                          "(default: the shared tiny-imagenet-50 photos, else synthetic images)."),
    int8: bool = typer.Option(ExportRequest.int8, "--int8", help="Also write a static QDQ int8 graph per "
                              "configuration, checked by its top-1 change on the validation split."),
    fp16: bool = typer.Option(ExportRequest.fp16, "--fp16", help="Also write a float16 graph per configuration "
                              "(float32 input and output), checked by its top-1 change on the validation split, on "
                              "CUDA when onnxruntime has it."),
    data: Optional[str] = typer.Option(ExportRequest.data, help="For --int8/--fp16: the training data (default: "
                                       "the checkpoint's own, if it is the synthetic set or beside the shared data)."),
    max_drop: float = typer.Option(ExportRequest.max_drop, "--max-drop", "--int8-max-drop", min=0.0, max=1.0,
                                   help="For --int8/--fp16: largest accepted top-1 loss (0.02 = 2 points)."),
    lower: bool = typer.Option(ExportRequest.lower, "--lower", help="Write convolutions with output maps of at "
                               "most 4 pixels as a gather and one matmul: same results, faster in batches on CPU, "
                               "can be slower at batch 1."),
    web: Optional[Path] = typer.Option(ExportRequest.web, "--web", help="Also write a static browser bundle (page, "
                                       "graphs, onnxruntime-web) to this folder; an up-to-date export in --out is "
                                       "bundled as it is. With --int8 it holds the int8 graphs too. See docs/web.md."),
) -> None:
    """Export one verified ONNX graph per channel configuration and update manifest.json."""
    from export import request as export_request

    try:
        export_request.run(_request(ExportRequest, locals()), echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: graphs already listed are installed; no partial graph was written", err=True)
        raise typer.Exit(code=130)
    except AnyChannelError as exc:
        # Some messages quote torch's multi-line ones (state_dict mismatches); the first line says it.
        _fail(str(exc).strip().splitlines()[0].rstrip(":"))


# --- runtime commands: predict, evaluate, bench, doctor (torch only where stated) ---------------

ARTIFACTS_OPTION = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json.")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
#: RuntimeOptions' fields as options: type, option name, help.
RUNTIME_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "device": (RuntimeDevice, "--device", "auto (CUDA, else CPU), cuda, tensorrt (TensorRT, then CUDA, then CPU), "
                                          "coreml (CoreML, then CPU) or cpu."),
    "precision": (str, "--precision", "fp32, or a variant exported with --int8 / --fp16."),
    "trt_fp16": (bool, "--trt-fp16", "With --device tensorrt: let TensorRT use float16 kernels (check its top-1 "
                                     "with `evaluate --trt-fp16`)."),
    "trt_cache_dir": (Optional[Path], "--trt-cache-dir", "With --device tensorrt: engine cache folder (default "
                                                         "$ANYCHANNEL_TRT_CACHE or ~/.cache/anychannel/tensorrt)."),
}


def runtime_options(**help_overrides: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: the command's ``runtime: RuntimeOptions`` parameter becomes RUNTIME_OPTIONS, in its place
    and with RuntimeOptions' defaults (``help_overrides``: another help by field name), and reaches the
    command as one RuntimeOptions again. Declared once here for predict, evaluate and bench."""
    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        place = signature.parameters["runtime"]
        options = []
        for f in fields(RuntimeOptions):
            kind, flag, help_text = RUNTIME_OPTIONS[f.name]
            default = kind(f.default) if kind is RuntimeDevice else f.default
            options.append(place.replace(name=f.name, annotation=kind, default=typer.Option(
                default, flag, help=help_overrides.get(f.name, help_text))))
        parameters = [q for p in signature.parameters.values() for q in (options if p is place else [p])]

        @functools.wraps(command)
        def with_runtime(**values: Any) -> None:
            runtime = _request(RuntimeOptions, values)
            command(**{k: v for k, v in values.items() if k not in RUNTIME_OPTIONS}, runtime=runtime)

        with_runtime.__signature__ = signature.replace(parameters=parameters)  # what typer reads
        with_runtime.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_runtime
    return decorate


@app.command()
@runtime_options()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (any format Pillow reads)."),
    artifacts: Path = ARTIFACTS_OPTION,
    channels: Optional[str] = typer.Option(PredictRequest.channels, help="What the images hold, e.g. RG: their R "
                                                                         "and G planes are used. Default: RGB."),
    top_k: int = typer.Option(PredictRequest.top_k, min=1, help="Classes to list per image."),
    runtime: RuntimeOptions = RuntimeOptions(),
    json_out: bool = JSON_OPTION,
) -> None:
    """Classify image files with the graph for --channels (all images in one batch)."""
    from runtime import request as runtime_request

    _show(_call(runtime_request.predict, _request(PredictRequest, locals())), json_out)


@app.command()
@runtime_options(trt_fp16="With --device tensorrt: TensorRT's fp16 mode, validated against the fp32 graphs on "
                          "the CPU: exits with an error if top-1 drops more than --max-drop.")
def evaluate(
    artifacts: Path = ARTIFACTS_OPTION,
    data: Optional[str] = typer.Option(EvaluateRequest.data, help="Dataset folder (file lists or ImageFolder); "
                                                                  "default: the embedded synthetic set."),
    channels: str = typer.Option(EvaluateRequest.channels, help="'all' (every exported graph) or a list such as "
                                                                "RGB,R."),
    batch_size: int = typer.Option(EvaluateRequest.batch_size, min=1),
    runtime: RuntimeOptions = RuntimeOptions(),
    max_drop: float = typer.Option(EvaluateRequest.max_drop, "--max-drop", help="For --trt-fp16: largest accepted "
                                                                                "top-1 loss (0.02 = 2 points)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Top-1 accuracy of the ONNX graphs on the test split, per channel configuration."""
    from runtime import request as runtime_request
    from train.data import load_dataset

    _show(_call(runtime_request.evaluate, _request(EvaluateRequest, locals()), load_dataset), json_out)


@app.command()
@runtime_options()
def bench(
    artifacts: Path = ARTIFACTS_OPTION,
    channels: str = typer.Option(BenchRequest.channels, help="The configuration to measure."),
    batch_sizes: str = typer.Option(",".join(map(str, BenchRequest.batch_sizes)), help="Comma list of batch sizes."),
    runs: int = typer.Option(BenchRequest.runs, min=1, help="Timed calls per batch size."),
    warmup: int = typer.Option(BenchRequest.warmup, min=0, help="Untimed calls before timing."),
    checkpoint: Optional[Path] = typer.Option(None, help="PyTorch checkpoint for the eager comparison (default: "
                                                         "the one export reads, beside the graphs' folder: "
                                                         "<artifacts>/../<model>/best.pt, naive-R/ for naive R); "
                                                         "one given here must be the graphs' own."),
    runtime: RuntimeOptions = RuntimeOptions(),
    json_out: bool = JSON_OPTION,
) -> None:
    """Latency (first call, p50/p90/p99) and throughput of one graph, beside PyTorch eager."""
    from export.eager import eager_forward
    from runtime import request as runtime_request

    request = _request(BenchRequest, locals(), batch_sizes=_call(runtime_request.parse_batch_sizes, batch_sizes))
    _show(_call(runtime_request.bench, request, lambda clf, config: eager_forward(clf.artifacts, config, checkpoint)),
          json_out)


def _torch_if_installed() -> "ModuleType | None":
    """The torch module, or None where it is not installed (the runtime never imports it itself)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@app.command()
def doctor(
    artifacts: Optional[Path] = typer.Option(None, help="Also create a session on this folder's first graph with "
                                                        "each --device value and report the provider that ran "
                                                        "(TensorRT may build an engine: slow once)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Check the onnxruntime install: which package for this platform, providers, CUDA/cuDNN/TensorRT
    libraries, torch's CUDA."""
    from runtime.doctor import format_report, report

    found = report(artifacts, load_torch=_torch_if_installed)
    typer.echo(json.dumps(found, indent=2) if json_out else format_report(found))


if __name__ == "__main__":
    sys.exit(app())
