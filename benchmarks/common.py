"""Helpers for benchmark scripts: machine description and BENCHMARKS.md sections."""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
from pathlib import Path
from typing import Callable

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

# Read by oneDNN when torch loads, so benchmark scripts import this module first. Scripts that
# time several models in one process (interleaved rounds) would otherwise have them evict each
# other's compiled convolutions: with the default cache the naive CNNs measured 1.4x slower
# beside anychannel than alone.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{len(os.sched_getaffinity(0))} CPU cores ({cpu}), no GPU, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name -->`` markers in BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def drop_sections(names: str) -> list[str]:
    """Remove from BENCHMARKS.md every section whose name matches the regular expression ``names``
    (whole name); returns the names removed."""
    if not BENCHMARKS_MD.exists():
        return []
    pattern = re.compile(rf"\n*<!-- (?P<name>{names}):start -->.*?<!-- (?P=name):end -->", re.S)
    text = BENCHMARKS_MD.read_text()
    dropped = [m["name"] for m in pattern.finditer(text)]
    if dropped:
        BENCHMARKS_MD.write_text(pattern.sub("", text))
    return dropped


def real_photo_parser(doc: str, out: str, report_only: str) -> argparse.ArgumentParser:
    """The options every real-photo training benchmark takes; ``report_only`` is the help of
    ``--report-only`` (what it rewrites)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/tiny-imagenet-50"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true", help=report_only)
    return parser


def add_row_options(parser: argparse.ArgumentParser, row_keys: list[str], seeds: str, workers: int,
                    workers_help: str) -> None:
    """``--seeds``, ``--rows`` and ``--workers`` of a benchmark whose rows train per seed (see
    :func:`parse_seeds_and_rows`); ``seeds`` is the help of ``--seeds``."""
    parser.add_argument("--seeds", default="0,1", help=seeds)
    parser.add_argument("--rows", default="all", help=f"Comma list of {', '.join(row_keys)}, or all.")
    parser.add_argument("--workers", type=int, default=workers, help=workers_help)


def add_variation_options(parser: argparse.ArgumentParser) -> None:
    """Options that vary the data or the recipe, to see whether a result holds beyond the main budget."""
    parser.add_argument("--train-per-class", type=int, default=None, metavar="N",
                        help="Train on the first N training images of each class (train.txt's order); "
                             "validation and test are unchanged. Runs and results get a budget of their own.")
    parser.add_argument("--lr", type=float, default=None,
                        help="Peak learning rate of every row (default: the training default). Runs and "
                             "results get a budget of their own.")
    from train.data.mixing import MIX_TRANSFORMS

    parser.add_argument("--mix", choices=tuple(MIX_TRANSFORMS), default=None,
                        help="Every row mixes its images (train --mix). Runs and results get a budget of their own.")
    parser.add_argument("--mix-alpha", type=float, default=1.0, help="With --mix: Beta(alpha, alpha) ratios.")


def mix_name(args: argparse.Namespace) -> str:
    """``--mix`` as it names a budget: ``cutmix``, or ``cutmix0.2`` for another alpha; empty without it."""
    kind, alpha = getattr(args, "mix", None), getattr(args, "mix_alpha", 1.0)
    return "" if kind is None else kind + (f"{alpha:g}" if alpha != 1.0 else "")


def _variations(args: argparse.Namespace) -> str:
    per_class, lr, mix = getattr(args, "train_per_class", None), getattr(args, "lr", None), mix_name(args)
    return ((f"-{per_class}pc" if per_class else "") + (f"-lr{lr:g}" if lr is not None else "")
            + (f"-{mix}" if mix else ""))


def budget_name(args: argparse.Namespace) -> str:
    """``<epochs>ep-<size>px[-<N>pc][-lr<LR>][-<mix>]``: names run folders and kept results, so two budgets
    never share one."""
    return f"{args.epochs}ep-{args.image_size}px" + _variations(args)


def is_main_budget(args: argparse.Namespace, main_budget: tuple[int, int]) -> bool:
    return (args.epochs, args.image_size) == main_budget and not _variations(args)


def train_subset(source: Path, per_class: int, target: Path) -> Path:
    """A file-list dataset at ``target`` whose train.txt keeps the first ``per_class`` lines of each
    label in ``source``'s; val.txt, test.txt, classes.txt and the images are ``source``'s (linked).

    The first N in list order, not a random draw, so anyone rebuilds the same subset.
    """
    from export.atomic import write_atomic
    from train.data.sources import filelist_lines

    if per_class < 1:
        raise ValueError(f"--train-per-class must be at least 1, got {per_class}")
    source = Path(source).resolve()
    if not (source / "train.txt").is_file():
        raise ValueError(f"{source}: --train-per-class needs a file-list dataset (train.txt)")
    kept: list[str] = []
    counts: dict[int, int] = {}
    for _, line, _, label in filelist_lines(source / "train.txt"):  # the loader's own parsing and errors
        if counts.get(label, 0) < per_class:
            kept.append(line)
        counts[label] = counts.get(label, 0) + 1
    short = sorted(label for label, n in counts.items() if n < per_class)
    if short:
        raise ValueError(f"{source}/train.txt: labels {short} have fewer than {per_class} training images")
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.is_symlink():
            old.unlink()  # relinked every time: the source may have moved or changed
    for entry in source.iterdir():
        link = target / entry.name
        if entry.name == "train.txt":
            continue
        if link.exists():
            raise ValueError(f"{link} is not a link this benchmark made; remove it or choose another --out")
        link.symlink_to(entry)
    write_atomic(target / "train.txt", ("\n".join(kept) + "\n").encode())
    return target


def budget_section(base: str, args: argparse.Namespace, main_budget: tuple[int, int]) -> str:
    """The BENCHMARKS.md section for ``args``' budget: ``base`` for the main (epochs, size),
    ``base-<E>ep-<S>px`` for any other, so a run at another budget sits beside the main table
    instead of replacing it."""
    return base if is_main_budget(args, main_budget) else f"{base}-{budget_name(args)}"


def parse_seeds_and_rows(parser: argparse.ArgumentParser, args: argparse.Namespace, row_keys: list[str]) -> list[str]:
    """Turn ``--seeds`` into ints (in ``args``) and return the ``--rows`` asked for, refusing unknown ones."""
    args.seeds = [int(s) for s in args.seeds.split(",")]
    keys = list(row_keys) if args.rows == "all" else args.rows.split(",")
    unknown = [k for k in keys if k not in row_keys]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(row_keys)}")
    return keys


def one_thread() -> None:
    """Worker initialiser: one torch thread per process (see ``--workers`` in the training benchmarks)."""
    import torch

    torch.set_num_threads(1)


def train_in_processes(train: Callable[..., None], jobs: list[tuple], workers: int,
                       after: dict[int, int] | None = None) -> None:
    """``train(*job)`` for every job in ``workers`` one-thread processes; waits for all, re-raising the first error.

    ``after``: job index -> the index of a job that must finish first (a student after its
    teacher); the others start in list order as workers free up.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    after = after or {}
    with ProcessPoolExecutor(workers, initializer=one_thread) as pool:
        running: dict = {}
        finished: set[int] = set()
        waiting = list(range(len(jobs)))
        while waiting or running:
            for i in [i for i in waiting if after.get(i) is None or after[i] in finished]:
                waiting.remove(i)
                running[pool.submit(train, *jobs[i])] = i
            if not running:
                raise ValueError(f"jobs {waiting} wait for jobs that never run")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                finished.add(running.pop(future))


def keep_results_text(text: str, target: Path) -> None:
    """Write ``text`` (a finished row's results) to the committed results folder, atomically."""
    from export.atomic import write_atomic

    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode())


def spread(values: list[float]) -> str:
    """``mean ± standard error`` over seeds, or the one value."""
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"
