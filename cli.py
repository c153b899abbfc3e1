"""anychannel's command line: train, summary, export, predict, evaluate, bench, doctor."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, export and run image classifiers for any subset of R, G and B.")


class Task(str, Enum):
    task1 = "task1"
    task2 = "task2"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


#: Epochs for task 1 when --epochs is not given.
DEFAULT_TASK1_EPOCHS = 10


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _split_models(text: str, known: tuple[str, ...]) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        _fail(f"unknown model(s) {unknown or text!r}; choose from {', '.join(known)}")
    return models


@app.command()
def train(
    task: Task = typer.Argument(..., help="task1: any-channel model vs baselines; task2: shallow vs ResNet34."),
    data: Optional[str] = typer.Option(None, help="Dataset folder (file lists or ImageFolder); default: embedded synthetic set."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default: 10 for task1, 12 for task2)."),
    image_size: Optional[int] = typer.Option(None, help="Input side in pixels (default 32)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the one-cycle schedule."),
    models: Optional[str] = typer.Option(None, help="Comma list; task1: adaptive,naive,course; task2: resnet34,shallow."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/<task>/)."),
    device: Device = typer.Option(Device.cpu, help="auto picks CUDA when torch sees one."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue each run from its last.pt."),
    train_eval_samples: int = typer.Option(2500, help="Training images used for the final train accuracy."),
    strategy: str = typer.Option("joint", help="task1, our model: 'joint' (several configurations every step) or "
                                               "'sampled' (one drawn per batch, the earlier recipe)."),
    configs_per_step: int = typer.Option(7, help="joint: configurations per step (7 = all; fewer are drawn by "
                                                 "the sandwich rule: RGB, a one-channel one, the rest at random)."),
    share_images: bool = typer.Option(False, "--share-images/--split-images",
                                      help="joint: all configurations of a step see the same images, or each "
                                           "its own (--batch-size counts views: images x configurations)."),
    distill: bool = typer.Option(False, "--distill/--no-distill",
                                 help="joint with --share-images: subsets also learn from the RGB logits of the "
                                      "same images (in-place distillation)."),
    body: str = typer.Option("plain", help="task1, our model's body: 'plain' (the naive CNN's stages) or "
                                           "'residual' (wider, 2.5x the FLOPs)."),
) -> None:
    """Train a task's models and write results.json, results.md and curves under --out."""
    from runtime.errors import AnyChannelError
    from train.data import load_dataset
    from train.engine import TrainConfig

    out = out or Path("artifacts") / task.value
    try:
        dataset = load_dataset(data, image_size, seed=seed,
                               progress=lambda split, n: typer.echo(f"decoded {n} {split} images"))
        typer.echo(f"dataset {dataset.name}: {dataset.num_classes} classes, "
                   + ", ".join(f"{k} {len(v)}" for k, v in dataset.splits.items())
                   + f", {dataset.image_size} px")
        if task is Task.task1:
            from train.task1 import MODELS, Task1Options, run_task1

            options = Task1Options(strategy, configs_per_step, share_images, distill, body)
            options.adaptive_spec().build_strategy()  # bad combinations fail before any data work
            cfg = TrainConfig(epochs=epochs or DEFAULT_TASK1_EPOCHS, batch_size=batch_size, lr=lr, seed=seed,
                              device=device.value)
            results = run_task1(dataset, _split_models(models or ",".join(MODELS), MODELS), out, cfg,
                                resume=resume, train_eval_samples=train_eval_samples, options=options)
        else:
            from train.task2 import MODELS, run_task2

            cfg = TrainConfig(epochs=epochs or 12, batch_size=batch_size, lr=lr, seed=seed, device=device.value)
            results = run_task2(dataset, _split_models(models or ",".join(MODELS), MODELS), out, cfg,
                                resume=resume, train_eval_samples=train_eval_samples)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: the last finished epoch is saved; rerun with --resume to continue", err=True)
        raise typer.Exit(code=130)
    except (AnyChannelError, ValueError) as exc:
        _fail(str(exc))
    typer.echo("")
    typer.echo((out / "results.md").read_text())
    typer.echo(f"reports: {out / 'results.json'}, {out / 'results.md'}, {out}/curves-*.png")


@app.command()
def summary(
    task: Task = typer.Argument(Task.task1),
    image_size: int = typer.Option(32),
    num_classes: int = typer.Option(10),
) -> None:
    """Print each model's layers, parameters and FLOPs per channel configuration."""
    from train.summary import summarize

    typer.echo(summarize(task.value, image_size, num_classes))


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
    max_drop: float = typer.Option(0.02, "--max-drop", "--int8-max-drop",
                                   help="For --int8/--fp16: largest accepted top-1 loss (0.02 = 2 points)."),
    lower: bool = typer.Option(False, "--lower", help="Write convolutions with output maps of at most 4 pixels "
                                                      "as a gather and one matmul: same results, faster in "
                                                      "batches on CPU, can be slower at batch 1."),
) -> None:
    """Export one verified ONNX graph per channel configuration and update manifest.json."""
    from export import export_task
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
        result = export_task(task.value, channels, model, checkpoint, out, opset, images, int8=int8, fp16=fp16,
                             data=data, max_drop=max_drop, lower=lower, on_graph=row)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: graphs already listed are installed; no partial graph was written", err=True)
        raise typer.Exit(code=130)
    except AnyChannelError as exc:
        # Some messages quote torch's multi-line ones (state_dict mismatches); the first line says it.
        _fail(str(exc).strip().splitlines()[0].rstrip(":"))
    typer.echo(f"{len(result.records)} graph(s) in {result.out_dir}; manifest {result.manifest}")


# --- runtime commands: predict, evaluate, bench, doctor (torch only where stated) ---------------

DEFAULT_ARTIFACTS = Path("artifacts/task1/onnx")


def _classifier(artifacts: Path, device: Device, precision: str = "fp32", preload: bool = False):
    from runtime import AnyChannelError, Classifier

    try:
        return Classifier(artifacts, device=device.value, preload=preload, precision=precision)
    except AnyChannelError as exc:
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
    device: Device = typer.Option(Device.auto),
    precision: str = typer.Option("fp32", help="fp32, or a variant exported with --int8 / --fp16."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Classify image files with the graph for --channels (all images in one batch)."""
    from dataclasses import asdict

    from runtime import AnyChannelError

    clf = _classifier(artifacts, device, precision)
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


@app.command()
def evaluate(
    artifacts: Path = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json."),
    data: Optional[str] = typer.Option(None, help="Dataset folder (file lists or ImageFolder); default: the "
                                                  "embedded synthetic set."),
    channels: str = typer.Option("all", help="'all' (every exported graph) or a list such as RGB,R."),
    batch_size: int = typer.Option(256, min=1),
    device: Device = typer.Option(Device.auto),
    precision: str = typer.Option("fp32", help="fp32, or a variant exported with --int8 / --fp16."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Top-1 accuracy of the ONNX graphs on the test split, per channel configuration."""
    import numpy as np

    from runtime import AnyChannelError, parse_channel_list
    from train.data import DatasetError, load_dataset

    clf = _classifier(artifacts, device, precision)
    try:
        configs = clf.configs if channels.strip().lower() == "all" else parse_channel_list(channels)
        dataset = load_dataset(data, clf.artifacts.image_size)
        test = dataset.splits["test"]
        rows = []
        for config in configs:
            predicted = np.concatenate([clf.predict_logits(test.images[i:i + batch_size], config).argmax(1)
                                        for i in range(0, len(test), batch_size)])
            rows.append({"channels": config.name, "images": len(test),
                         "accuracy": float((predicted == test.labels).mean())})
    except (AnyChannelError, DatasetError) as exc:
        _fail(str(exc))
    if json_out:
        _echo_json({"artifacts": str(artifacts), "data": dataset.name, "split": "test",
                    "providers": clf.providers, "results": rows})
        return
    typer.echo(f"{dataset.name} test split, {len(test)} images, graphs in {artifacts} ({', '.join(clf.providers)})")
    typer.echo("| channels | top-1 accuracy |\n|---|---|")
    for row in rows:
        typer.echo(f"| {row['channels']} | {100 * row['accuracy']:.2f}% |")


def _torch_eager(artifacts, config, checkpoint: Optional[Path]):
    """``(forward(x, threads) -> logits, note)`` for the checkpoint the graphs came from, or ``(None, why)``."""
    try:
        import torch
    except ImportError:
        return None, "skipped: torch is not installed"
    from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    path = checkpoint or artifacts.root.parent / artifacts.model / "best.pt"
    try:
        ckpt = load_checkpoint(path, artifacts.task)
        model = model_from_checkpoint(ckpt)
    except CheckpointError as exc:
        return None, f"skipped: {exc} (pass --checkpoint)"
    # The resolved module is what export traced: the same computation as the graph.
    module = model.resolve(config).eval() if hasattr(model, "resolve") else model

    def forward(x, threads: int):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return forward, f"{path}, torch {torch.__version__}"


@app.command()
def bench(
    artifacts: Path = typer.Option(DEFAULT_ARTIFACTS, help="Exported graphs: a folder or its manifest.json."),
    channels: str = typer.Option("RGB", help="The configuration to measure."),
    batch_sizes: str = typer.Option("1,32", help="Comma list of batch sizes."),
    runs: int = typer.Option(100, min=1, help="Timed calls per batch size."),
    warmup: int = typer.Option(5, min=0, help="Untimed calls before timing."),
    checkpoint: Optional[Path] = typer.Option(None, help="PyTorch checkpoint for the eager comparison "
                                                         "(default <artifacts>/../<model>/best.pt)."),
    device: Device = typer.Option(Device.auto),
    precision: str = typer.Option("fp32", help="fp32, or a variant exported with --int8 / --fp16."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Latency (first call, p50/p90/p99) and throughput of one graph, beside PyTorch eager."""
    import time

    import numpy as np

    from runtime import AnyChannelError, ChannelConfig
    from runtime.bench import latency
    from runtime.device import available_cores

    try:
        sizes = sorted({int(b) for b in batch_sizes.split(",") if b.strip()})
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        _fail(f"--batch-sizes {batch_sizes!r}: expected positive integers such as 1,32")
    try:
        config = ChannelConfig.parse(channels)
        start = time.perf_counter()
        clf = _classifier(artifacts, device, precision)
        image = np.random.default_rng(0).integers(0, 256, (clf.artifacts.image_size,) * 2 + (3,), dtype=np.uint8)
        clf.predict_logits(image, config)
        first_ms = 1e3 * (time.perf_counter() - start)
        spec = clf.spec(config)
    except AnyChannelError as exc:
        _fail(str(exc))
    threads = available_cores()
    eager, eager_note = _torch_eager(clf.artifacts, config, checkpoint)
    # Eager gets its best of 1 thread and all cores: on a busy machine torch's OpenMP threads can
    # stall each other, and a fair comparison should not count that against it.
    eager_threads = sorted({1, threads})
    rng = np.random.default_rng(1)
    rows = []
    for n in sizes:
        images = rng.integers(0, 256, (n, spec.image_size, spec.image_size, 3), dtype=np.uint8)
        x, _ = clf.preprocess(images, config)
        row = {"batch_size": n, "onnxruntime": latency(lambda: clf.run(x, config), n, runs, warmup).to_dict()}
        if eager is not None:
            best = min((latency(lambda: eager(x, t), n, runs, warmup).to_dict() | {"threads": t}
                        for t in eager_threads), key=lambda r: r["p50_ms"])
            row["torch_eager"] = best
            row["max_abs_logit_diff"] = float(np.abs(eager(x, best["threads"]) - clf.run(x, config)).max())
        rows.append(row)
    report = {"artifacts": str(artifacts), "channels": config.name, "precision": precision,
              "image_size": spec.image_size,
              "providers": clf.providers, "threads": threads, "first_inference_ms": first_ms,
              "torch_eager": eager_note, "results": rows}
    if json_out:
        _echo_json(report)
        return
    typer.echo(f"{config.name} graph from {artifacts}, {spec.image_size} px, providers {', '.join(clf.providers)}, "
               f"{threads} cores")
    typer.echo(f"first inference (load, verify, create session, run 1 image): {first_ms:.1f} ms")
    typer.echo(f"PyTorch eager: {eager_note} (best of {eager_threads} threads)")
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


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Check the onnxruntime install: packages, providers, CUDA/cuDNN libraries, torch's CUDA."""
    from runtime.device import diagnose, problems

    report = diagnose()
    try:
        import torch

        torch_cuda = torch.version.cuda
        report["torch"] = {"version": torch.__version__, "cuda": torch_cuda, "cuda_available": torch.cuda.is_available()}
    except ImportError:
        torch_cuda, report["torch"] = None, None
    report["problems"] = problems(report, torch_cuda)
    if json_out:
        _echo_json(report)
        return
    ort_info = report["onnxruntime"]
    typer.echo(f"onnxruntime {ort_info['version']} (built for CUDA {ort_info['built_for_cuda'] or '-'}); "
               f"installed: {', '.join(f'{n} {v}' for n, v in ort_info['distributions'])}")
    typer.echo(f"available providers: {', '.join(report['available_providers'])}; "
               f"cores available: {report['available_cores']}")
    if "preload_dlls" in report:
        typer.echo(f"onnxruntime.preload_dlls(): {report['preload_dlls']}")
    for name, lib in report["libraries"].items():
        state = {"at start": "loads", "after preload_dlls": "loads only after onnxruntime.preload_dlls()",
                 None: f"MISSING: {lib['error']}"}[lib["loads"]]
        typer.echo(f"  {lib['component']:<12} {name:<20} {state}")
    lib = report["cuda_provider_library"]
    typer.echo(f"  CUDA provider library: {'loads' if lib['error'] is None else 'FAILS: ' + lib['error']}")
    torch_info = report["torch"]
    typer.echo("torch: not installed" if torch_info is None else
               f"torch {torch_info['version']}, CUDA {torch_info['cuda'] or 'none (CPU build)'}, "
               f"GPU visible: {torch_info['cuda_available']}")
    found = report["problems"]
    typer.echo("problems:\n" + "\n".join(f"  - {p}" for p in found) if found else "no problems found")


if __name__ == "__main__":
    sys.exit(app())
