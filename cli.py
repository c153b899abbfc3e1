"""anychannel's command line: train, summary, export, predict, evaluate, bench, doctor."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from types import ModuleType


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, export and run image classifiers for any subset of R, G and B.")


class Task(str, Enum):
    task1 = "task1"
    task2 = "task2"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class RuntimeDevice(str, Enum):
    """``Classifier(device=...)``: TensorRT and CoreML only when asked for."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    coreml = "coreml"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    task: Task = typer.Argument(..., help="task1: any-channel model vs baselines; task2: shallow vs ResNet34."),
    data: Optional[str] = typer.Option(None, help="Dataset folder (file lists or ImageFolder); default: embedded synthetic set."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per model (default: 6 for task1, 12 for task2)."),
    image_size: Optional[int] = typer.Option(
        None, min=1, help="Input side in pixels (default: 32 for the embedded set, 64 for a dataset folder)."),
    batch_size: int = typer.Option(128, min=2, help="Views (image x configuration) per step; batch norm needs 2."),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the one-cycle schedule."),
    models: Optional[str] = typer.Option(None, help="Comma list; task1: adaptive,naive,course; "
                                                    "task2: naive,resnet34,shallow."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/<task>/)."),
    device: Device = typer.Option(Device.cpu, help="auto picks CUDA when torch sees one."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue each run from its last.pt."),
    train_eval_samples: int = typer.Option(2500, min=1, help="Training images used for the final train accuracy."),
    strategy: str = typer.Option("joint", help="task1, our model: 'joint' (several configurations every step) or "
                                               "'sampled' (one drawn per batch, the earlier recipe)."),
    configs_per_step: int = typer.Option(7, help="joint: configurations per step (7 = all; fewer are drawn by "
                                                 "the sandwich rule: RGB, a one-channel one, the rest at random; "
                                                 "N/7 of the compute; for half the compute --width 0.7 scores better)."),
    share_images: bool = typer.Option(False, "--share-images/--split-images",
                                      help="joint: all configurations of a step see the same images, or each "
                                           "its own (--batch-size counts views: images x configurations)."),
    distill: bool = typer.Option(False, "--distill/--no-distill",
                                 help="joint with --share-images: subsets also learn from the RGB logits of the "
                                      "same images (in-place distillation)."),
    allocation: str = typer.Option("uniform", help="joint: how a step's views are split between the seven "
                                                   "configurations: 'uniform' (18 each of 128) or "
                                                   "'inverse-channels' (in proportion to 1/channels: RGB 9, two "
                                                   "channels 13, one channel 26 each), which trades RGB accuracy "
                                                   "for one-channel accuracy at the same compute, or "
                                                   "'inverse-sqrt-channels' (1/sqrt(channels): RGB 13, two channels "
                                                   "15-16, one channel 22 each), half way between."),
    body: Optional[str] = typer.Option(None, help="task1, --backbone compact's body: 'plain' (the naive CNN's "
                                                  "stages, the default) or 'residual' (wider, 2.5x the FLOPs)."),
    width: float = typer.Option(1.0, help="task1: multiply the width of every layer of our compact network (FLOPs "
                                          "grow about as its square: 0.7 trains in under half the naive set's "
                                          "compute); the naive CNNs keep theirs."),
    backbone: str = typer.Option("compact", help="task1, our model's network: 'compact' (our own small one) or a "
                                                 "torchvision classification CNN, e.g. resnet18, resnet50, "
                                                 "mobilenet_v3_small, efficientnet_b0, convnext_tiny. See "
                                                 "docs/backbones.md."),
    init: Optional[Path] = typer.Option(None, help="With a torchvision --backbone: start from this torchvision "
                                                   "state dict file (what torchvision's weights API downloads)."),
    pretrained: bool = typer.Option(False, "--pretrained", help="With a torchvision --backbone: start from "
                                                                "torchvision's DEFAULT ImageNet weights (downloaded "
                                                                "into the torch hub cache, or read from it)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (runs torchrun "
                                                       "for you; one GPU each on CUDA). --batch-size stays the "
                                                       "global batch. See docs/training-at-scale.md."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="With --nproc: restart the processes this "
                                                                      "often after a failure, resuming from the "
                                                                      "last finished epoch."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bfloat16 autocast on CUDA (no effect on the CPU)."),
    mix: str = typer.Option("none", help="Every model's recipe: 'mixup' or 'cutmix' mixes the images of each "
                                         "configuration group and trains on the mixed labels (torchvision's "
                                         "MixUp and CutMix), or 'none'. See docs/training.md."),
    mix_alpha: float = typer.Option(1.0, help="With --mix: the Beta(alpha, alpha) distribution of mixing ratios."),
    teacher: Optional[str] = typer.Option(None, help="task2: the shallow net's distillation teacher: naive (task "
                                                     "1's CNN on RGB, the default), resnet34, or none (labels "
                                                     "only). It trains first when it is in --models."),
) -> None:
    """Train a task's models and write results.json, results.md and curves under --out."""
    from runtime.errors import AnyChannelError
    from train import distributed
    from train.request import TrainRequest, run

    request = TrainRequest(task.value, data, epochs, image_size, batch_size, lr, models, out, device.value, seed,
                           resume, train_eval_samples, strategy, configs_per_step, share_images, distill,
                           allocation, body, width, backbone, init, pretrained, amp, mix, mix_alpha, teacher)
    if nproc > 1 and not distributed.launched_by_torchrun():
        try:  # a bad option is one error here, not one per rank and torchrun's traceback
            request.check(world=nproc)
        except (AnyChannelError, ValueError) as exc:
            _fail(str(exc))
        # The same command, once per process, under torchrun (which also does --max-restarts).
        argv = distributed.strip_option(distributed.strip_option(sys.argv[1:], "--nproc"), "--max-restarts")
        raise typer.Exit(distributed.launch(nproc, [str(Path(__file__).resolve()), *argv], max_restarts))
    ctx = distributed.DistContext()
    try:
        ctx = distributed.setup(device.value)
        if ctx.distributed:
            distributed.set_single_thread_count()
        run(request, ctx, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the last finished epoch is saved; rerun with --resume to continue", err=True)
        raise typer.Exit(code=130)
    except (AnyChannelError, ValueError, RuntimeError) as exc:
        if not ctx.distributed and not isinstance(exc, (AnyChannelError, ValueError)):
            raise
        # Under torchrun every rank reports; the rank says which process failed.
        _fail(f"rank {ctx.rank}: {exc}" if ctx.distributed and not str(exc).startswith("rank ") else str(exc))
    finally:
        distributed.teardown()
    if not ctx.is_main:
        return
    out = request.out_dir
    typer.echo("")
    typer.echo((out / "results.md").read_text())
    typer.echo(f"reports: {out / 'results.json'}, {out / 'results.md'}, {out}/curves-*.png")


@app.command()
def summary(
    task: Task = typer.Argument(Task.task1),
    image_size: int = typer.Option(32, min=1),
    num_classes: int = typer.Option(10, min=2),
) -> None:
    """Print each model's layers, parameters and FLOPs per channel configuration."""
    from train.summary import summarize

    try:
        typer.echo(summarize(task.value, image_size, num_classes))
    except ValueError as exc:
        _fail(str(exc))


@app.command("export")
def export_graphs(
    task: Task = typer.Option(Task.task1, help="Whose checkpoint to export."),
    channels: str = typer.Option("all", help="'all' (every configuration the model supports), one configuration "
                                             "such as R, or a comma list such as RGB,R."),
    model: Optional[str] = typer.Option(None, help="Model to export (default: adaptive for task1, shallow for task2)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (default artifacts/<task>/<model>/best.pt)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/<task>/onnx/; onnx-<model>/ "
                                                  "for a non-default model)."),
    opset: int = typer.Option(18, help="ONNX opset, 17 or newer."),
    images: Optional[Path] = typer.Option(None, help="Folder of real images for the parity check (default: the "
                                                     "shared tiny-imagenet-50 photos, else synthetic images)."),
    int8: bool = typer.Option(False, "--int8", help="Also write a static QDQ int8 graph per configuration, "
                                                    "checked by its top-1 change on the validation split."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write a float16 graph per configuration (float32 input "
                                                    "and output), checked by its top-1 change on the validation "
                                                    "split, on CUDA when onnxruntime has it."),
    data: Optional[str] = typer.Option(None, help="For --int8/--fp16: the training data (default: the checkpoint's "
                                                  "own, if it is the synthetic set or beside the shared data)."),
    max_drop: float = typer.Option(0.02, "--max-drop", "--int8-max-drop", min=0.0, max=1.0,
                                   help="For --int8/--fp16: largest accepted top-1 loss (0.02 = 2 points)."),
    lower: bool = typer.Option(False, "--lower", help="Write convolutions with output maps of at most 4 pixels "
                                                      "as a gather and one matmul: same results, faster in "
                                                      "batches on CPU, can be slower at batch 1."),
    web: Optional[Path] = typer.Option(None, "--web", help="Also write a static browser bundle (page, graphs, "
                                                           "onnxruntime-web) to this folder; an up-to-date export "
                                                           "in --out is bundled as it is. With --int8 it holds the "
                                                           "int8 graphs too. See docs/web.md."),
) -> None:
    """Export one verified ONNX graph per channel configuration and update manifest.json."""
    from export import export_task
    from export import web as web_bundle
    from runtime.errors import AnyChannelError

    shown: list[str] = []

    def row(r) -> None:  # printed as each graph is installed; the header only once one is
        if not shown:
            typer.echo("| channels | file | size | parity max diff | simplified |\n|---|---|---|---|---|")
        shown.append(r.channels)
        typer.echo(f"| {r.channels} | {r.file} | {r.size / 1024:.1f} KiB | {r.parity['max_abs_diff']:.2e} | "
                   f"{'yes' if r.simplified else 'no: ' + r.simplify_note} |")
        for precision, q in r.extra.items():
            typer.echo(f"| {r.channels} {precision} | {q['file']} | {q['size'] / 1024:.1f} KiB | val top-1 "
                       f"{100 * q['accuracy']['change']:+.2f} pt ({q['accuracy']['validated_on']}) | - |")

    try:
        reused = web and web_bundle.up_to_date_export(task.value, channels, model, checkpoint, out, int8)
        if reused:
            typer.echo(f"bundling the existing export in {reused} (no checkpoint is newer; --checkpoint exports again)")
        else:
            result = export_task(task.value, channels, model, checkpoint, out, opset, images, int8=int8, fp16=fp16,
                                 data=data, max_drop=max_drop, lower=lower, on_graph=row)
            typer.echo(f"{len(result.records)} graph(s) in {result.out_dir}; manifest {result.manifest}")
        if web:
            bundle = web_bundle.build_web_bundle(reused or result.out_dir, web, channels=channels, int8=int8)
            typer.echo(f"web bundle in {bundle.path}: {len(bundle.graphs)} graph(s), {len(bundle.files)} files, "
                       f"{bundle.size / 2**20:.1f} MiB; serve it with `python -m http.server -d {bundle.path}` and "
                       "open http://localhost:8000/ (#selftest checks it against the Python runtime)")
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: graphs already listed are installed; no partial graph was written", err=True)
        raise typer.Exit(code=130)
    except AnyChannelError as exc:
        # Some messages quote torch's multi-line ones (state_dict mismatches); the first line says it.
        _fail(str(exc).strip().splitlines()[0].rstrip(":"))


# --- runtime commands: predict, evaluate, bench, doctor (torch only where stated) ---------------

DEFAULT_ARTIFACTS = Path("artifacts/task1/onnx")
# Shared by predict, evaluate and bench.
DEVICE_OPTION = typer.Option(RuntimeDevice.auto, help="auto (CUDA, else CPU), cuda, tensorrt (TensorRT, then CUDA, "
                                                      "then CPU), coreml (CoreML, then CPU) or cpu.")
PRECISION_OPTION = typer.Option("fp32", help="fp32, or a variant exported with --int8 / --fp16.")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
TRT_FP16_OPTION = typer.Option(False, "--trt-fp16", help="With --device tensorrt: let TensorRT use float16 kernels "
                                                         "(check its top-1 with `evaluate --trt-fp16`).")
TRT_CACHE_OPTION = typer.Option(None, "--trt-cache-dir", help="With --device tensorrt: engine cache folder (default "
                                                              "$ANYCHANNEL_TRT_CACHE or ~/.cache/anychannel/tensorrt).")


def _classifier(artifacts: Path, device: RuntimeDevice, precision: str = "fp32", preload: bool = False,
                trt_fp16: bool = False, trt_cache_dir: Optional[Path] = None):
    from runtime import AnyChannelError, Classifier

    try:
        return Classifier(artifacts, device=device.value, preload=preload, precision=precision,
                          trt_fp16=trt_fp16, trt_cache_dir=trt_cache_dir)
    except (AnyChannelError, ValueError) as exc:
        _fail(str(exc))


def _echo_json(obj: object) -> None:
    import json

    typer.echo(json.dumps(obj, indent=2))


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (any format Pillow reads)."),
    artifacts: Path = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json."),
    channels: Optional[str] = typer.Option(None, help="What the images hold, e.g. RG: their R and G planes are "
                                                      "used. Default: RGB."),
    top_k: int = typer.Option(5, min=1, help="Classes to list per image."),
    device: RuntimeDevice = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    trt_fp16: bool = TRT_FP16_OPTION,
    trt_cache_dir: Optional[Path] = TRT_CACHE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Classify image files with the graph for --channels (all images in one batch)."""
    from dataclasses import asdict

    from runtime import AnyChannelError

    clf = _classifier(artifacts, device, precision, trt_fp16=trt_fp16, trt_cache_dir=trt_cache_dir)
    try:
        batch, config = clf.preprocess([str(p) for p in images], channels)
        results = clf.top_k(clf.run(batch, config), top_k)
    except AnyChannelError as exc:
        _fail(str(exc))
    if json_out:
        _echo_json([{"image": str(p), "channels": config.name, "predictions": [asdict(r) for r in preds]}
                    for p, preds in zip(images, results)])
        return
    for path, preds in zip(images, results):
        typer.echo(f"{path} [{config.name}]: " + ", ".join(f"{r.label} {r.probability:.3f}" for r in preds))


def _first_names(names: "tuple[str, ...] | list[str]", shown: int = 3) -> str:
    """``cat, dog (2 classes)`` or ``a, b, c, ... (50 classes)``."""
    head = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    return f"{head} ({len(names)} classes)"


@app.command()
def evaluate(
    artifacts: Path = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json."),
    data: Optional[str] = typer.Option(None, help="Dataset folder (file lists or ImageFolder); default: the "
                                                  "embedded synthetic set."),
    channels: str = typer.Option("all", help="'all' (every exported graph) or a list such as RGB,R."),
    batch_size: int = typer.Option(256, min=1),
    device: RuntimeDevice = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    trt_fp16: bool = typer.Option(False, "--trt-fp16", help="With --device tensorrt: TensorRT's fp16 mode, "
                                                            "validated against the fp32 graphs on the CPU: exits "
                                                            "with an error if top-1 drops more than --max-drop."),
    max_drop: float = typer.Option(0.02, "--max-drop", help="For --trt-fp16: largest accepted top-1 loss "
                                                            "(0.02 = 2 points)."),
    trt_cache_dir: Optional[Path] = TRT_CACHE_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Top-1 accuracy of the ONNX graphs on the test split, per channel configuration."""
    from runtime import AnyChannelError, parse_channel_list
    from runtime.validation import accuracy_rows
    from train.data import DatasetError, load_dataset

    clf = _classifier(artifacts, device, precision, trt_fp16=trt_fp16, trt_cache_dir=trt_cache_dir)
    try:
        configs = clf.configs if channels.strip().lower() == "all" else parse_channel_list(channels)
        dataset = load_dataset(data, clf.artifacts.image_size)
        if tuple(dataset.class_names) != tuple(clf.class_names):
            # Label indices from another class list would be scored against the wrong classes.
            raise DatasetError(f"{dataset.name} has classes {_first_names(dataset.class_names)}, but the graphs "
                               f"in {artifacts} were trained on {_first_names(clf.class_names)}; evaluate them "
                               "on data with the same classes")
        test = dataset.splits["test"]
        # --trt-fp16 is validated like export's fp16 graphs: top-1 against fp32 on the CPU, same images.
        reference = _classifier(artifacts, RuntimeDevice.cpu) if trt_fp16 else None
        rows = accuracy_rows(clf, test.images, test.labels, configs, batch_size=batch_size, reference=reference,
                             split=f"{dataset.name} test", max_drop=max_drop)
    except (AnyChannelError, DatasetError) as exc:
        _fail(str(exc))
    if json_out:
        _echo_json({"artifacts": str(artifacts), "data": dataset.name, "split": "test",
                    "providers": clf.providers, "trt_fp16": trt_fp16, "results": rows})
        return
    typer.echo(f"{dataset.name} test split, {len(test)} images, graphs in {artifacts} ({', '.join(clf.providers)}"
               f"{', TensorRT fp16' if trt_fp16 else ''})")
    if trt_fp16:
        typer.echo("| channels | top-1 accuracy | fp32 (CPU) | change | top-1 agreement | max logit diff |\n"
                   "|---|---|---|---|---|---|")
        for row in rows:
            c = row["fp32"]
            typer.echo(f"| {row['channels']} | {100 * row['accuracy']:.2f}% | {100 * c['fp32_top1']:.2f}% | "
                       f"{100 * c['change']:+.2f} pt | {c['top1_agreement_with_fp32']:.4f} | "
                       f"{c['max_abs_logit_diff']:.2e} |")
        return
    typer.echo("| channels | top-1 accuracy |\n|---|---|")
    for row in rows:
        typer.echo(f"| {row['channels']} | {100 * row['accuracy']:.2f}% |")


@app.command()
def bench(
    artifacts: Path = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json."),
    channels: str = typer.Option("RGB", help="The configuration to measure."),
    batch_sizes: str = typer.Option("1,32", help="Comma list of batch sizes."),
    runs: int = typer.Option(100, min=1, help="Timed calls per batch size."),
    warmup: int = typer.Option(5, min=0, help="Untimed calls before timing."),
    checkpoint: Optional[Path] = typer.Option(None, help="PyTorch checkpoint for the eager comparison (default: "
                                                         "the one export reads, beside the graphs' folder: "
                                                         "<artifacts>/../<model>/best.pt, naive-R/ for naive R); "
                                                         "one given here must be the graphs' own."),
    device: RuntimeDevice = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    trt_fp16: bool = TRT_FP16_OPTION,
    trt_cache_dir: Optional[Path] = TRT_CACHE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Latency (first call, p50/p90/p99) and throughput of one graph, beside PyTorch eager."""
    from export.eager import eager_forward
    from runtime import AnyChannelError, ChannelConfig
    from runtime.bench import benchmark

    try:
        sizes = sorted({int(b) for b in batch_sizes.split(",") if b.strip()})
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        _fail(f"--batch-sizes {batch_sizes!r}: expected positive integers such as 1,32")
    try:
        config = ChannelConfig.parse(channels)
        result = benchmark(lambda: _classifier(artifacts, device, precision, trt_fp16=trt_fp16,
                                               trt_cache_dir=trt_cache_dir),
                           config, sizes, runs, warmup, lambda clf: eager_forward(clf.artifacts, config, checkpoint))
    except AnyChannelError as exc:
        _fail(str(exc))
    eager_threads = result.pop("eager_threads")
    report = {"artifacts": str(artifacts), "precision": precision, "device": device.value, **result}
    rows, threads, tensorrt = report["results"], report["threads"], report["tensorrt"]
    if json_out:
        _echo_json(report)
        return
    typer.echo(f"{config.name} graph from {artifacts}, {report['image_size']} px, device {device.value}: ran on "
               f"{report['provider']} (providers {', '.join(report['providers'])}), {threads} cores")
    if tensorrt is not None:
        typer.echo(f"TensorRT engine cache {tensorrt['engine_cache']} ({'engine found: loaded' if tensorrt['engine_was_cached'] else 'empty: engine built'}"
                   f" in the first inference), fp16 {'on' if trt_fp16 else 'off'}")
    typer.echo(f"first inference (load, verify, create session, run 1 image): {report['first_inference_ms']:.1f} ms")
    typer.echo(f"PyTorch eager: {report['torch_eager']} (best of {eager_threads} threads)")
    typer.echo("| runtime | batch | threads | p50 ms | p90 ms | p99 ms | images/s |\n|---|---|---|---|---|---|---|")
    for row in rows:
        for name in ("onnxruntime", "torch_eager"):
            if name in row:
                r = row[name]
                typer.echo(f"| {name} | {r['batch_size']} | {r.get('threads', threads)} | {r['p50_ms']:.3f} | "
                           f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['images_per_s']:.0f} |")
        if "max_abs_logit_diff" in row:
            typer.echo(f"  batch {row['batch_size']}: max |logit difference| onnxruntime vs eager "
                       f"{row['max_abs_logit_diff']:.2e}")


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
    from runtime.doctor import report as doctor_report  # the module's name is this command's

    report = doctor_report(artifacts, load_torch=_torch_if_installed)
    if json_out:
        _echo_json(report)
        return
    ort_info = report["onnxruntime"]
    typer.echo(f"onnxruntime {ort_info['version']} (built for CUDA {ort_info['built_for_cuda'] or '-'}); "
               f"installed: {', '.join(f'{n} {v}' for n, v in ort_info['distributions'])}")
    install = report["install"]
    typer.echo(f"platform {install['platform']}{' (Jetson)' if install['jetson'] else ''}: `pip install .` brings "
               f"{install['expected']}; installed: {', '.join(install['installed']) or 'none found'}: {install['case']}")
    typer.echo(f"available providers: {', '.join(report['available_providers'])}; "
               f"cores available: {report['available_cores']}")
    for device, plan in report["devices"].items():
        ran = report.get("sessions", {}).get(device)
        ran_text = "" if ran is None else f"; ran on: {ran if isinstance(ran, str) else ', '.join(ran)}"
        typer.echo(f"  --device {device:<8} requests {', '.join(plan['providers'])}"
                   f"{' (wants ' + plan['wanted'] + ')' if plan['wanted'] else ''}{ran_text}")
    if "preload_dlls" in report:
        typer.echo(f"onnxruntime.preload_dlls(): {report['preload_dlls']}")
    for name, lib in report["libraries"].items():
        state = {"at start": "loads", "after preload_dlls": "loads only after onnxruntime.preload_dlls()",
                 None: f"MISSING: {lib['error']}"}[lib["loads"]]
        typer.echo(f"  {lib['component']:<12} {name:<20} {state}")
    lib = report["cuda_provider_library"]
    typer.echo(f"  CUDA provider library: {'loads' if lib['error'] is None else 'FAILS: ' + lib['error']}")
    if trt := report.get("tensorrt"):
        typer.echo(f"  TensorRT     {trt['library']:<20} {'loads' if trt['error'] is None else 'MISSING: ' + trt['error']}")
        typer.echo(f"  TensorRT provider library: "
                   f"{'loads' if trt['provider_library_error'] is None else 'FAILS: ' + trt['provider_library_error']}"
                   f"; engine cache {trt['engine_cache']}")
    torch_info = report["torch"]
    typer.echo("torch: not installed" if torch_info is None else
               f"torch {torch_info['version']}, CUDA {torch_info['cuda'] or 'none (CPU build)'}, "
               f"GPU visible: {torch_info['cuda_available']}")
    found = report["problems"]
    typer.echo("problems:\n" + "\n".join(f"  - {p}" for p in found) if found else "no problems found")


if __name__ == "__main__":
    sys.exit(app())
