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
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default: 15 for task1, 12 for task2)."),
    image_size: Optional[int] = typer.Option(None, help="Input side in pixels (default 32)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the one-cycle schedule."),
    models: Optional[str] = typer.Option(None, help="Comma list; task1: adaptive,naive,course; task2: resnet34,shallow."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/<task>/)."),
    device: Device = typer.Option(Device.cpu, help="auto picks CUDA when torch sees one."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue each run from its last.pt."),
    train_eval_samples: int = typer.Option(2500, help="Training images used for the final train accuracy."),
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
            from train.task1 import MODELS, run_task1

            cfg = TrainConfig(epochs=epochs or 15, batch_size=batch_size, lr=lr, seed=seed, device=device.value)
            results = run_task1(dataset, _split_models(models or ",".join(MODELS), MODELS), out, cfg,
                                resume=resume, train_eval_samples=train_eval_samples)
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


if __name__ == "__main__":
    sys.exit(app())
