"""Task 1 on real photos: our model vs the naive per-configuration CNN and the course design.

    python benchmarks/task1_real.py [--epochs 8] [--image-size 32]

Trains all three on ../shared/data/tiny-imagenet-50 with the same budget, then writes the
table and the target checks into BENCHMARKS.md. About 75 minutes on 2 CPU cores.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, real_photo_parser, write_section  # noqa: E402
from runtime.channels import CONFIG_NAMES  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.engine import TrainConfig  # noqa: E402
from train.report import markdown_table  # noqa: E402
from train.task1 import MODELS, run_task1  # noqa: E402

PUBLISHED = {
    "naive": dict(zip(CONFIG_NAMES, (.400, .347, .367, .420, .382, .351, .353))),
    "course": dict(zip(CONFIG_NAMES, (.453, .398, .416, .420, .369, .371, .376))),
}


def main() -> None:
    parser = real_photo_parser(__doc__, "artifacts/bench/task1-real")
    parser.add_argument("--report-only", action="store_true",
                        help="Rewrite the BENCHMARKS.md section from --out/results.json without training.")
    args = parser.parse_args()

    t0 = time.perf_counter()
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
    else:
        dataset = load_dataset(args.data, args.image_size)
        results = run_task1(dataset, list(MODELS), args.out, TrainConfig(epochs=args.epochs), resume=args.resume)
    wall = None if args.report_only else time.perf_counter() - t0

    ours = results["models"]["adaptive"]
    rows = ["| channels | ours (adaptive) | naive, per config | course design | published naive | published course |",
            "|---|---|---|---|---|---|"]
    for c in CONFIG_NAMES:
        rows.append(f"| {c} | {ours['configs'][c]['test_acc']:.3f} | "
                    f"{results['models']['naive']['configs'][c]['test_acc']:.3f} | "
                    f"{results['models']['course']['configs'][c]['test_acc']:.3f} | "
                    f"{PUBLISHED['naive'][c]:.3f} | {PUBLISHED['course'][c]:.3f} |")
    beats = [c for c in CONFIG_NAMES if all(
        ours["configs"][c]["test_acc"] > results["models"][m]["configs"][c]["test_acc"] for m in ("naive", "course"))]
    rgb = ours["configs"]["RGB"]["test_acc"]
    one_channel = {c: ours["configs"][c]["test_acc"] / rgb for c in ("R", "G", "B")}
    speed = ours["images_per_second"] / results["models"]["course"]["images_per_second"]
    checks = [
        f"- Ours beats both baselines on {len(beats)}/7 configurations"
        + (f" (not on {', '.join(c for c in CONFIG_NAMES if c not in beats)})" if len(beats) < 7 else "") + ".",
        "- One-channel accuracy as a share of our RGB accuracy: "
        + ", ".join(f"{c} {v:.0%}" for c, v in one_channel.items()) + " (target ≥ 90%).",
        f"- Parameters: ours {ours['params'] / 1e6:.2f}M, course design "
        f"{results['models']['course']['params'] / 1e6:.2f}M (target < 15.35M).",
        f"- Training throughput in these runs: ours {ours['images_per_second']:.0f} img/s, course "
        f"{results['models']['course']['images_per_second']:.0f} img/s ({speed:.2f}×). Runs that shared the "
        "cores with other jobs are not comparable this way; the interleaved measurement "
        "(`benchmarks/train_throughput.py`, its own section) is the one for the ≥ 2× target.",
    ]
    body = "\n".join([
        "## Task 1 on real photos (tiny-imagenet-50, test split, 2,500 images)",
        "",
        f"Command: `python benchmarks/task1_real.py --epochs {args.epochs} --image-size {args.image_size}`  ",
        f"Machine: {machine()}  ",
        f"Budget: {args.epochs} epochs for every model (AdamW, one-cycle, label smoothing 0.1, crop+flip), "
        f"{args.image_size} px;" + (f" wall time {wall / 60:.0f} min;" if wall else "") + " training seconds per model: "
        + ", ".join(f"{m} {e['train_seconds']:.0f}" for m, e in results["models"].items()) + ".",
        "",
        *rows,
        "",
        "Published numbers are the course's (450 test images, its own budget); they are context, "
        "not a same-budget comparison.",
        "",
        *checks,
        "",
        "Full per-split table (train/val/test accuracy and loss, params, FLOPs):",
        "",
        markdown_table(results).split("\n", 2)[2],
    ])
    write_section("task1-real", body)
    print(body)


if __name__ == "__main__":
    main()
