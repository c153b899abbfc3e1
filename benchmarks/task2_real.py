"""Task 2 on real photos: the four-layer net against torchvision's ResNet34, same data and budget.

    python benchmarks/task2_real.py [--epochs 10] [--image-size 32] [--seeds 0,1] [--workers 2]

Every row trains on ../shared/data/tiny-imagenet-50 with the same epochs and recipe (AdamW,
one-cycle, label smoothing, crop+flip). The reference (ResNet34), the teacher (task 1's naive
CNN on RGB) and our shallow net run once per seed; the ablation rows, one lever each, once.
Each row is its own resumable run folder under --out/<epochs>ep-<size>px/; its results.json
is kept in benchmarks/results/task2-real/<epochs>ep-<size>px/ (committed), so --report-only
rebuilds the BENCHMARKS.md section on any clone. The report also exports ResNet34 and our net
to ONNX, counts the weight layers on the exported graphs and measures onnxruntime CPU latency
at batch 1, interleaved.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (add_row_options, budget_name, budget_section, is_main_budget,  # noqa: E402
                               keep_results_text, machine, parse_seeds_and_rows, real_photo_parser, spread,
                               train_in_processes, write_section)
from train.engine import TrainConfig  # noqa: E402

#: Layer layouts of the shallow net (``train.models.shallow``).
STRIDE: dict[str, Any] = {"downsample": "stride", "widths": [96, 192, 256]}
MAXPOOL: dict[str, Any] = {"downsample": "maxpool", "widths": [64, 128, 256]}
MAXPOOL_WIDE: dict[str, Any] = {"downsample": "maxpool", "widths": [48, 160, 320]}


@dataclass(frozen=True)
class Row:
    """One run: the model it trains, its teacher (another row's key) and the shallow net's layout."""

    key: str
    label: str
    model: str = "shallow"
    teacher: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    every_seed: bool = False


#: The reference, the teacher and ours first (every seed), then one lever per row.
ROWS: tuple[Row, ...] = (
    Row("resnet34", "ResNet34, torchvision, from scratch: the reference", "resnet34", every_seed=True),
    Row("naive", "naive CNN (task 1's, RGB): the teacher", "naive", every_seed=True),
    Row("maxpool-kd-naive", "ours: max-pool layout, distilled from the naive CNN", teacher="naive", kwargs=MAXPOOL,
        every_seed=True),
    Row("stride-kd-resnet34", "previous: stride layout, distilled from ResNet34", teacher="resnet34", kwargs=STRIDE),
    Row("stride-labels", "stride layout, labels only", kwargs=STRIDE),
    Row("stride-kd-naive", "stride layout, distilled from the naive CNN (teacher lever)", teacher="naive",
        kwargs=STRIDE),
    Row("maxpool-labels", "max-pool layout, labels only (layout lever)", kwargs=MAXPOOL),
    Row("maxpool-wide-kd-naive", "max-pool layout, widths 48-160-320, distilled from the naive CNN (width lever)",
        teacher="naive", kwargs=MAXPOOL_WIDE),
    Row("resnet34-kd-naive", "control: ResNet34 distilled from the same naive CNN", "resnet34", teacher="naive"),
)
ROW_BY_KEY = {r.key: r for r in ROWS}
OURS, REFERENCE = "maxpool-kd-naive", "resnet34"
RESULTS = Path(__file__).resolve().parent / "results" / "task2-real"
#: (epochs, image size) of the main BENCHMARKS.md section; other budgets get a section of their own.
MAIN_BUDGET = (10, 32)


def run_dir(args, key: str, seed: int) -> Path:
    """A row's run folder for one seed under its budget (resumable; holds the model's checkpoints
    and results.json; resuming never mixes two budgets)."""
    return args.out / budget_name(args) / f"{key}-seed{seed}"


def kept_results(args, key: str, seed: int) -> Path:
    """Where a finished row's results.json is kept (committed), one folder per budget."""
    return RESULTS / budget_name(args) / f"{key}-seed{seed}.json"


def level(row: Row) -> int:
    """0 for a row without a teacher, else one more than its teacher's: the queue's order."""
    return 0 if row.teacher is None else level(ROW_BY_KEY[row.teacher]) + 1


def train_row(row: Row, seed: int, args, dataset=None) -> None:
    """Train (or resume) one row for one seed, its teacher read from the teacher row's folder."""
    from train.data import load_dataset
    from train.task2 import run_task2

    dataset = dataset or load_dataset(args.data, args.image_size)  # the decoded cache, when in a worker
    t0 = time.perf_counter()
    out = run_dir(args, row.key, seed)
    teacher = ROW_BY_KEY[row.teacher].model if row.teacher else None
    run_task2(dataset, [row.model], out, TrainConfig(epochs=args.epochs, seed=seed), resume=True,
              log=lambda line: print(f"{row.key}-seed{seed} {line}", flush=True), teacher=teacher,
              teacher_dir=run_dir(args, row.teacher, seed) if row.teacher else None,
              model_kwargs={row.model: row.kwargs}, students=(row.model,))
    print(f"== {row.key} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    keep_results_text((out / "results.json").read_text(), kept_results(args, row.key, seed))


def load_rows(args) -> dict[str, list[dict]]:
    """Finished rows: key -> the model's results entry per finished seed (run folder, else the kept copy)."""
    found: dict[str, list[dict]] = {}
    for row in ROWS:
        for seed in args.seeds if row.every_seed else args.seeds[:1]:
            path = run_dir(args, row.key, seed) / "results.json"
            path = path if path.exists() else kept_results(args, row.key, seed)
            if path.exists():
                results = json.loads(path.read_text())
                if (results["epochs"], results["image_size"]) == (args.epochs, args.image_size):
                    found.setdefault(row.key, []).append({**results["models"][row.model], "seed": seed})
    return found


def accuracies(entries: list[dict], key: str = "test_acc") -> list[float]:
    """RGB test accuracy (or ``test_acc_flip``) of each entry, in order."""
    return [e["configs"]["RGB"][key] for e in entries]


def onnx_facts(args, seed: int) -> dict[str, dict[str, float]]:
    """Export ResNet34 and ours (one seed's checkpoints), count weight layers on each exported graph
    and time both in onnxruntime at batch 1, alternating between them so load hits both alike."""
    import onnx
    import onnxruntime as ort

    from export.pipeline import export_task
    from runtime.bench import time_calls
    from runtime.device import available_cores

    facts: dict[str, dict[str, float]] = {}
    sessions = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    for key in (REFERENCE, OURS):
        model = ROW_BY_KEY[key].model
        exported = export_task("task2", model=model, checkpoint=run_dir(args, key, seed) / model / "best.pt",
                               out=args.out / budget_name(args) / f"onnx-{key}-seed{seed}")
        path = exported.out_dir / exported.records[0].file
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        facts[key] = {"weight_layers": sum(op in ("Conv", "Gemm", "MatMul") for op in ops)}
        sessions[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, args.image_size, args.image_size)).astype(np.float32)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(5):
        for key, session in sessions.items():
            samples[key] += time_calls(lambda s=session: s.run(None, {"input": x}), 100, warmup=5)
    for key in sessions:
        facts[key]["latency_ms"] = 1e3 * statistics.median(samples[key])
    return facts


def _ablation_cells(e: dict, reference: dict) -> str:
    """Columns after the row label: shallow acc, its flip acc, ResNet34 acc, ratio, MFLOPs, params, train s."""
    rgb = e["configs"]["RGB"]
    return (f"{rgb['test_acc']:.3f} | {rgb['test_acc_flip']:.3f} | {reference['configs']['RGB']['test_acc']:.3f} | "
            f"{rgb['test_acc'] / reference['configs']['RGB']['test_acc']:.3f} | {rgb['flops'] / 1e6:.0f} | "
            f"{rgb['params'] / 1e6:.2f}M | {e['train_seconds']:.0f} |")


def report(rows: dict[str, list[dict]], args, facts: dict[str, dict[str, float]] | None) -> str:
    """The BENCHMARKS.md section: headline over the seeds both ours and ResNet34 finished, then the ablation."""
    ref_by_seed = {e["seed"]: e for e in rows.get(REFERENCE, [])}
    ours = [e for e in rows.get(OURS, []) if e["seed"] in ref_by_seed]  # paired by seed
    if not ours:
        raise SystemExit(f"no seed has finished both {OURS} and {REFERENCE}: nothing to report yet")
    seeds = [e["seed"] for e in ours]
    ref = [ref_by_seed[s] for s in seeds]
    teacher = [e for e in rows.get("naive", []) if e["seed"] in seeds]
    ratios = [o / r for o, r in zip(accuracies(ours), accuracies(ref))]
    flip_ratios = [o / r for o, r in zip(accuracies(ours, "test_acc_flip"), accuracies(ref, "test_acc_flip"))]
    lines = [
        "## Task 2 on real photos (tiny-imagenet-50, test split, 2,500 images"
        + ("" if is_main_budget(args, MAIN_BUDGET) else f", {args.epochs} epochs, {args.image_size} px") + ")",
        "",
        f"Command: `python benchmarks/task2_real.py --epochs {args.epochs} --image-size {args.image_size} "
        f"--seeds {','.join(map(str, args.seeds))} --workers {args.workers}`  ",
        f"Machine: {machine()}  ",
        f"Budget: {args.epochs} epochs for every model (AdamW, one-cycle, label smoothing 0.1, crop+flip, "
        f"{args.image_size} px); distillation: T=4, α=0.7 on the teacher's logits for the same augmented batch.",
        "",
        f"### Headline (seeds {', '.join(map(str, seeds))}; mean ± standard error)",
        "",
        "| model | weight layers | params (inference) | MFLOPs | test acc | with flip TTA | "
        "ORT CPU latency, batch 1 | train s (this machine) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, entries in ((REFERENCE, ref), ("naive", teacher), (OURS, ours)):
        if not entries:
            continue
        e, fact = entries[0], (facts or {}).get(key, {})
        layers = int(fact["weight_layers"]) if "weight_layers" in fact else e.get("weight_layers", "–")
        latency = f"{fact['latency_ms']:.3f} ms" if "latency_ms" in fact else "–"
        lines.append(f"| {ROW_BY_KEY[key].label} | {layers} | {e['configs']['RGB']['params'] / 1e6:.2f}M | "
                     f"{e['configs']['RGB']['flops'] / 1e6:.0f} | {spread(accuracies(entries))} | "
                     f"{spread(accuracies(entries, 'test_acc_flip'))} | {latency} | "
                     f"{statistics.mean(x['train_seconds'] for x in entries):.0f} |")
    lines += [
        "",
        f"- Ours / ResNet34 test accuracy: {statistics.mean(ratios):.3f} (per seed "
        + ", ".join(f"{r:.3f}" for r in ratios) + "; target ≥ 1.00 over two seeds, stretch ≥ 1.03).",
        "- With flip TTA for both (not the headline): " + ", ".join(f"{r:.3f}" for r in flip_ratios) + ".",
    ]
    if facts:
        speedup = facts[REFERENCE]["latency_ms"] / facts[OURS]["latency_ms"]
        lines.append(f"- Weight layers on our exported graph: {int(facts[OURS]['weight_layers'])} (≤ 4). onnxruntime "
                     f"CPU latency at batch 1, ResNet34 / ours: {speedup:.1f}× (target ≥ 3×, stretch ≥ 4×); "
                     "graphs "
                     f"of seed {args.seeds[0]}, timed by the run that trained them (it varies from run to run).")
    if teacher:
        t_sec, o_sec, r_sec = (statistics.mean(e["train_seconds"] for e in group) for group in (teacher, ours, ref))
        lines.append(f"- Training time, teacher included: ours {o_sec:.0f} s + the naive teacher {t_sec:.0f} s = "
                     f"{o_sec + t_sec:.0f} s, against ResNet34's {r_sec:.0f} s (one thread per run).")
    lines += [
        "",
        f"### Ablation (seed {args.seeds[0]}): one lever per row",
        "",
        "| row | shallow test acc | with flip TTA | ResNet34 test acc | shallow / ResNet34 | MFLOPs "
        "| params (inference) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref0, ours0 = ref_by_seed.get(args.seeds[0]), next((e for e in ours if e["seed"] == args.seeds[0]), None)
    for row in ROWS:
        if row.key in (REFERENCE, "naive"):
            continue
        if row.key not in rows or ref0 is None:
            lines.append(f"| {row.label} | not run | | | | | | |")
        elif row.model == "resnet34" and ours0 is not None:  # the control changes ResNet34's column
            e = rows[row.key][0]
            rgb = e["configs"]["RGB"]
            lines.append(f"| {row.label} | ours: {ours0['configs']['RGB']['test_acc']:.3f} | | "
                         f"{rgb['test_acc']:.3f} (flip {rgb['test_acc_flip']:.3f}) | "
                         f"{ours0['configs']['RGB']['test_acc'] / rgb['test_acc']:.3f} | {rgb['flops'] / 1e6:.0f} | "
                         f"{rgb['params'] / 1e6:.2f}M | {e['train_seconds']:.0f} |")
        else:
            lines.append(f"| {row.label} | " + _ablation_cells(rows[row.key][0], ref0))
    lines += [
        "",
        "Weight layers: convolutions and fully-connected layers; on the exported ONNX graph (Conv, Gemm, MatMul "
        "nodes) for ResNet34 and ours, in PyTorch for the naive CNN. ResNet34's 37 are its 33 main-path "
        "convolutions, 3 shortcut 1×1 convolutions and the classifier. MFLOPs and params: the inference form "
        "(RepVGG branches and batch norms folded), one image. Train seconds: each run in its own one-thread "
        f"process, {args.workers} at a time. ResNet34 is torchvision's, unchanged: at 32 px its ImageNet stem "
        "(7×7 stride 2, then max pooling) leaves 8×8 maps after two operations. The published course numbers "
        "(.218 vs .593) were at another size and budget.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = real_photo_parser(__doc__, "artifacts/bench/task2-real",
                               report_only="Rewrite the BENCHMARKS.md section from the finished rows without training "
                                           "(with the ONNX facts when the run folders are here).")
    parser.set_defaults(epochs=10)
    add_row_options(parser, list(ROW_BY_KEY), seeds="Comma list; the reference, the teacher and ours run for each.",
                    workers=2, workers_help="Runs trained at once, one thread each.")
    args = parser.parse_args()
    keys = parse_seeds_and_rows(parser, args, list(ROW_BY_KEY))
    if not args.report_only:
        from train.data import load_dataset

        load_dataset(args.data, args.image_size)  # decode once into the cache the workers read
        plan = [(ROW_BY_KEY[k], s) for k in keys for s in (args.seeds if ROW_BY_KEY[k].every_seed else args.seeds[:1])]
        plan.sort(key=lambda job: level(job[0]))  # teachers before students in the queue
        index = {(row.key, seed): i for i, (row, seed) in enumerate(plan)}
        # A student starts as soon as its own teacher (same seed) has finished, if that runs too.
        after = {i: index[(row.teacher, seed)] for i, (row, seed) in enumerate(plan) if (row.teacher, seed) in index}
        train_in_processes(train_row, [(row, seed, args) for row, seed in plan], args.workers, after)
    rows = load_rows(args)
    facts_file = kept_results(args, "onnx-facts", args.seeds[0])
    have_graphs = all((run_dir(args, k, args.seeds[0]) / ROW_BY_KEY[k].model / "best.pt").exists()
                      for k in (REFERENCE, OURS))
    if have_graphs and not (args.report_only and facts_file.exists()):  # --report-only keeps the timed figures
        facts = onnx_facts(args, args.seeds[0])
        keep_results_text(json.dumps(facts, indent=1), facts_file)
    else:
        facts = json.loads(facts_file.read_text()) if facts_file.exists() else None
    body = report(rows, args, facts)
    write_section(budget_section("task2-real", args, MAIN_BUDGET), body)
    print(body)


if __name__ == "__main__":
    main()
