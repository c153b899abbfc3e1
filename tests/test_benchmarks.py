"""The benchmark scripts are documented commands: they must at least import and parse options."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main) and module.__doc__


def test_gpu_checks_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_checks.sh")], check=True)


def test_a_benchmark_parses_its_options():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/task2_real.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--epochs" in out and "--image-size" in out


def test_gpu_script_tensorrt_section_runs_on_a_faked_onnxruntime(task1_artifacts, fake_ort, monkeypatch, tmp_path):
    """The TensorRT check cannot run without a GPU; its code path can, on the fake (real CPU numbers)."""
    import argparse

    import numpy as np

    from benchmarks import runtime_gpu
    from runtime import Classifier

    fake_ort(fp16=lambda logits: logits.astype(np.float16).astype(np.float32))
    monkeypatch.chdir(tmp_path)  # the synthetic dataset's cache goes here
    # The fresh process would load the real onnxruntime: time the cached load in this one instead.
    monkeypatch.setattr(runtime_gpu, "engine_times_in_a_new_process", runtime_gpu.engine_times)
    args = argparse.Namespace(artifacts=task1_artifacts, trt_cache_dir=tmp_path / "trt", runs=2)
    cpu = Classifier(task1_artifacts, device="cpu")
    gpu = Classifier(task1_artifacts, device="cuda", strict_device=True)
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    text = "\n".join(runtime_gpu.tensorrt_section(args, cpu, gpu, images))
    assert "| RGB | fp32 |" in text and "| B | fp16 |" in text and "second run (cached)" in text
    assert "TensorRT fp16 against fp32 on the CPU" in text and text.count(" pt |") == 7  # one row per graph
    assert (tmp_path / "trt" / "fp32").is_dir() and (tmp_path / "trt" / "fp16").is_dir()


def test_task2_benchmark_trains_teachers_first_and_reports_the_ratio_per_seed(tmp_path):
    import argparse

    from benchmarks import task2_real

    levels = {row.key: task2_real.level(row) for row in task2_real.ROWS}
    assert levels["resnet34"] == levels["naive"] == 0 and levels[task2_real.OURS] == 1
    assert all(levels[row.teacher] < levels[row.key] for row in task2_real.ROWS if row.teacher)

    def entry(acc: float, seed: int) -> dict:
        return {"configs": {"RGB": {"test_acc": acc, "test_acc_flip": acc + .01, "flops": 8e7, "params": 4e5}},
                "params": 5e5, "weight_layers": 4, "train_seconds": 100.0, "seed": seed}

    rows = {"resnet34": [entry(.40, 0), entry(.38, 1)], "naive": [entry(.45, 0), entry(.44, 1)],
            task2_real.OURS: [entry(.42, 0), entry(.38, 1)], "stride-labels": [entry(.36, 0)]}
    args = argparse.Namespace(epochs=10, image_size=32, seeds=[0, 1], workers=2, out=tmp_path)
    facts = {"resnet34": {"weight_layers": 37, "latency_ms": 1.6},
             task2_real.OURS: {"weight_layers": 4, "latency_ms": .4}}
    text = task2_real.report(rows, args, facts)
    assert "test accuracy: 1.025 (per seed 1.050, 1.000;" in text
    assert "ResNet34 / ours: 4.0×" in text and "Weight layers on our exported graph: 4" in text
    assert "| stride layout, labels only | 0.360 | 0.370 | 0.400 | 0.900 |" in text
    assert "| stride layout, distilled from the naive CNN (teacher lever) | not run |" in text


def _record(folder: str, name: str, needs: str | None, seconds: float) -> None:
    """A fake training job: fails if the job it must follow has not finished, then leaves a marker."""
    import time

    if needs is not None and not (Path(folder) / needs).exists():
        raise AssertionError(f"{name} started before {needs} finished")
    time.sleep(seconds)
    (Path(folder) / name).write_text("done")


def test_train_in_processes_starts_a_student_only_after_its_teacher(tmp_path):
    from benchmarks.common import train_in_processes

    jobs = [(str(tmp_path), "teacher", None, 0.5), (str(tmp_path), "other", None, 0.0),
            (str(tmp_path), "student", "teacher", 0.0)]
    train_in_processes(_record, jobs, workers=2, after={2: 0})
    assert {p.name for p in tmp_path.iterdir()} == {"teacher", "other", "student"}
    # Without the dependency the student would start while the teacher still runs, and fail.
    (tmp_path / "x").mkdir()
    with pytest.raises(AssertionError, match="student started before teacher"):
        train_in_processes(_record, [(str(tmp_path / "x"), "teacher", None, 0.5),
                                     (str(tmp_path / "x"), "student", "teacher", 0.0)], workers=2)


def test_task1_benchmark_keeps_budgets_apart(tmp_path):
    import argparse

    from benchmarks import task1_real, task2_real
    from benchmarks.common import budget_name, budget_section, is_main_budget

    main = argparse.Namespace(epochs=8, image_size=32, out=tmp_path)
    larger = argparse.Namespace(epochs=8, image_size=64, out=tmp_path)
    row = task1_real.ROW_BY_KEY["anychannel"]
    # Another image size resumes from its own folders and keeps its own results (a row of the report's tables).
    assert task1_real.run_dir(main, row, 0) != task1_real.run_dir(larger, row, 0)
    assert task1_real.run_dir(larger, row, 0) == tmp_path / "8ep-64px" / "anychannel-seed0"
    assert is_main_budget(main, task1_real.MAIN_BUDGET) and not is_main_budget(larger, task1_real.MAIN_BUDGET)
    assert budget_name(main) == "8ep-32px" and task1_real.results_dir(larger).name == "8ep-64px"
    assert task2_real.run_dir(larger, "naive", 1) == tmp_path / "8ep-64px" / "naive-seed1"
    assert budget_section("task2-real", larger, task2_real.MAIN_BUDGET) == "task2-real-8ep-64px"


def test_task1_benchmark_rows_build_and_levers_name_rows():
    """Every row's options build its model and strategy (a typo'd row fails here, not an hour into a run),
    and every lever the convergence table lists is a row."""
    from benchmarks import task1_real
    from train.models import create_model

    assert set(task1_real.LEVERS) <= set(task1_real.ROW_BY_KEY)
    assert len(task1_real.ROW_BY_KEY) == len(task1_real.ROWS)
    for row in (r for r in task1_real.ROWS if r.model == "anychannel"):
        spec = row.options.anychannel_spec()
        assert spec.build_strategy().configs == row.options.configs
        create_model(spec.model, num_classes=5, **spec.model_kwargs)


def _row_result(seed: int, flops: float, params: float = 4e5, **acc: float) -> dict:
    """A finished benchmark row as the task-1 report reads it (results.json's model entry)."""
    return {"configs": {c: {"test_acc": a} for c, a in acc.items()}, "seed": seed, "train_flops": flops,
            "train_seconds": 100.0, "train_views": 1000, "params": params}


def _task1_report(rows: dict[str, list[dict]], out: Path) -> str:
    """The headline part of the task-1 report (8 epochs, 32 px) for ``rows``."""
    import argparse

    from benchmarks import task1_real

    args = argparse.Namespace(epochs=8, image_size=32, seeds=[0, 1], rows="all", workers=2, out=out)
    budget = task1_real.Budget("8ep-32px", args, rows)
    return "\n".join(task1_real.headline_section(budget, task1_real.Machines()))


def test_task1_report_compares_both_sides_at_half_width(tmp_path):
    from benchmarks.task1_real import CONFIG_NAMES as names

    entry = _row_result
    full = {"naive": [entry(0, 1e14, 2.8e6, **dict.fromkeys(names, .40))],
            "anychannel": [entry(0, 1e14, 4e5, **dict.fromkeys(names, .50))]}
    small_naive = [entry(s, .25e14, 7 * 1e5, **{c: (.36 if len(c) > 1 else .30) for c in names}) for s in (0, 1)]
    small = [entry(s, .26e14, 1e5, **{c: (.40 if len(c) > 1 else .36) for c in names}) for s in (0, 1)]
    text = _task1_report({**full, "naive-half-width": small_naive, "anychannel-half-width": small}, tmp_path)
    assert ("- Capacity probe, every layer of both at half width (seeds 0,1; 0.10M parameters against 7 × 0.10M, "
            "1.04× their FLOPs, 0.26× the full-width naive set's): mean 0.383 against naive's 0.334, +4.9 points, "
            "≥ naive on 7/7 (+4.0 to +6.0 points); one channel keeps R 90%, G 90%, B 90% of its RGB "
            "(naive: R 83%, G 83%, B 83%).") in text
    assert "| capacity probe: anychannel at half width | 0.400 |" in text


def test_task1_report_gives_the_share_ceiling_and_the_half_compute_variant(tmp_path):
    from benchmarks.task1_real import CONFIG_NAMES as names

    entry = _row_result
    naive = [entry(s, 1e14, **dict.fromkeys(names, .40)) for s in (0, 1)]
    anychannel = [entry(s, 1e14, **{c: (.50 if len(c) > 1 else .45) for c in names}) for s in (0, 1)]
    half = [entry(s, .44e14, **{c: (.44 if c != "R" else .39) for c in names}) for s in (0, 1)]
    rows = {"naive": naive, "anychannel": anychannel, "sandwich-own": half,
            "rgb-only-same-flops": [entry(0, 1e14, RGB=.50)], "b-only-same-flops": [entry(0, 1e14, B=.44)],
            "r-only-same-flops": [entry(0, 1e14, R=.45), entry(1, 1e14, R=.43)]}  # B: seed 0 only
    text = _task1_report(rows, tmp_path)
    assert ("The ceiling of that share (seeds 0,1): our network trained on one plane alone at anychannel's FLOPs "
            "keeps R 88% (0.440 ± 0.010), B 88% (0.440) of the same network trained on RGB alone at anychannel's "
            "FLOPs (0.500)") in text
    assert "anychannel keeps R 90%, B 90% of its own RGB." in text
    assert "+3.3 points, ≥ naive on 6/7 (-1.0 to +4.0 points), 0.44× the naive set's FLOPs" in text
    # The variant and every control appear in the ablation, rows not run do not.
    assert "| variant: sandwich (RGB, one 1-channel, one other per step), each its own images | 0.440 |" in text
    assert "control: our network on R alone" in text and "control: our network on G alone" not in text


def test_train_subset_and_learning_rate_get_budgets_of_their_own(tmp_path):
    import argparse

    from train.engine import TrainConfig

    from benchmarks import task1_real
    from benchmarks.common import budget_name, train_subset

    source = tmp_path / "photos"
    (source / "images").mkdir(parents=True)
    lines = [f"images/{c}_{i}.png {c}" for i in range(3) for c in (0, 1)]  # classes interleaved
    (source / "train.txt").write_text("\n".join(lines) + "\n")
    for split in ("val", "test", "classes"):
        (source / f"{split}.txt").write_text("images/0_0.png 0\n")
    subset = train_subset(source, 2, tmp_path / "subset")
    assert (subset / "train.txt").read_text().splitlines() == [
        "images/0_0.png 0", "images/1_0.png 1", "images/0_1.png 0", "images/1_1.png 1"]
    assert (subset / "images").resolve() == (source / "images").resolve()
    assert (subset / "test.txt").read_text() == "images/0_0.png 0\n"
    with pytest.raises(ValueError, match=r"labels \[0, 1\] have fewer than 4"):
        train_subset(source, 4, tmp_path / "too-many")
    # Rebuilt from another source, every link follows it: no split of the old one stays behind.
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "val", "test", "classes"):
        (other / f"{split}.txt").write_text("a.png 1\nb.png 01\n")
    train_subset(other, 2, subset)
    assert (subset / "test.txt").resolve() == (other / "test.txt").resolve()
    assert (subset / "train.txt").read_text() == "a.png 1\nb.png 01\n"  # 1 and 01: one label
    assert not (subset / "images").exists() or (subset / "images").resolve() != (source / "images").resolve()
    (other / "train.txt").write_text("lonely-path\n")
    with pytest.raises(ValueError, match=r"train.txt:1: expected '<path> <label>'"):
        train_subset(other, 1, subset)

    args = argparse.Namespace(epochs=8, image_size=32, out=tmp_path, train_per_class=150,
                              data="/data/tiny-imagenet-50")
    assert task1_real.dataset_name(args) == "tiny-imagenet-50-150pc"  # results.json's, checked on load
    assert task1_real.training_data(args) == str(tmp_path / "data" / "tiny-imagenet-50-150pc")
    assert (task1_real.run_dir(args, task1_real.ROW_BY_KEY["anychannel"], 0)
            == tmp_path / "8ep-32px-150pc" / "anychannel-seed0")
    assert budget_name(args) == "8ep-32px-150pc"
    args = argparse.Namespace(epochs=8, image_size=32, out=tmp_path, train_per_class=None, lr=0.004)
    assert budget_name(args) == "8ep-32px-lr0.004"
    assert task1_real.learning_rate(args) == 0.004
    assert task1_real.learning_rate(argparse.Namespace()) == TrainConfig().lr
    # --mix: a budget of its own, and every row trains with it.
    args = argparse.Namespace(epochs=8, image_size=32, out=tmp_path, mix="cutmix", mix_alpha=1.0)
    assert budget_name(args) == "8ep-32px-cutmix"
    assert task1_real.recipe(args) == {"lr": TrainConfig().lr, "mix": "cutmix", "mix_alpha": 1.0}
    args.mix, args.mix_alpha = "mixup", 0.2
    assert budget_name(args) == "8ep-32px-mixup0.2"
    assert task1_real.recipe(argparse.Namespace())["mix"] == "none"


# --- the task-1 part of BENCHMARKS.md, folded from every budget's kept rows ---------------------------

def _keep_row(results: Path, budget: str, key: str, seed: int, acc: dict[str, float] | float,
              machine: str | None = None, val: float = .30, train: float = .60, flops: float = 1e14,
              batch_size: int | None = None) -> None:
    """A kept row (benchmarks/results/task1-real/<budget>/<key>-seed<N>.json) as train_row writes it (with
    ``batch_size``, another batch than the row trains with)."""
    import argparse
    import json

    from benchmarks import task1_real
    from benchmarks.task1_real import CONFIG_NAMES as names

    at = task1_real.budget_args(budget, argparse.Namespace(data="/data/tiny-imagenet-50"))
    row = task1_real.ROW_BY_KEY[key]
    accs = acc if isinstance(acc, dict) else dict.fromkeys(names, acc)
    entry = {"configs": {c: {"test_acc": a, "val_acc": val, "train_acc": train} for c, a in accs.items()},
             "train_flops": flops, "train_seconds": 100.0, "train_views": 7 * at.epochs * 2500, "params": 4e5}
    kept = {"dataset": task1_real.dataset_name(at), "epochs": at.epochs * row.epoch_factor,
            "image_size": at.image_size,
            "train_config": {**task1_real.recipe(at), "batch_size": batch_size or task1_real.batch_size(row)},
            "models": {row.model: entry}, **({"machine": machine} if machine else {})}
    (results / budget).mkdir(parents=True, exist_ok=True)
    (results / budget / f"{key}-seed{seed}.json").write_text(json.dumps(kept))


def _fold(tmp_path: Path, monkeypatch) -> tuple[list, str]:
    """Fake kept rows of six budgets (some seeds missing, machines mixed), folded into the task-1 report."""
    import argparse

    from benchmarks import task1_real

    results = tmp_path / "results"
    monkeypatch.setattr(task1_real, "RESULTS", results)
    for seed in (0, 1):
        _keep_row(results, "8ep-32px", "naive", seed, .40, "box A")
        _keep_row(results, "8ep-32px", "anychannel", seed, .50, "box A" if seed == 0 else None)
        _keep_row(results, "8ep-64px", "naive", seed, .42, "box B")
        _keep_row(results, "8ep-64px", "anychannel", seed, {**dict.fromkeys(task1_real.CONFIG_NAMES, .55), "B": .41},
                  "box B")
        _keep_row(results, "8ep-32px-50pc", "naive", seed, .20, "box B", val=.20)
        _keep_row(results, "8ep-32px-50pc", "anychannel", seed, .29, "box B")
        _keep_row(results, "16ep-32px-50pc", "naive", seed, .26, "box B", val=.27)
    _keep_row(results, "16ep-32px-50pc", "anychannel", 0, .31, "box B")  # seed 1 still training
    _keep_row(results, "8ep-32px-lr0.004", "naive", 0, .41, "box A")
    _keep_row(results, "8ep-32px-lr0.004", "anychannel", 0, .49, "box A")
    _keep_row(results, "8ep-32px-mixup0.2", "anychannel", 0, .47, "box A")
    _keep_row(results, "16ep-32px-50pc", "anychannel-naive-updates", 0, .33, "box B")
    _keep_row(results, "16ep-32px-50pc", "anychannel-naive-updates", 1, .99, "box B", batch_size=128)  # not its batch
    (results / "8ep-32px" / "step-time.json").write_text("{}")  # not a row: not read as one
    args = argparse.Namespace(epochs=8, image_size=32, seeds=[0, 1], out=tmp_path / "runs", rows="all",
                              workers=2, data="/data/tiny-imagenet-50", train_per_class=None, lr=None, mix=None,
                              mix_alpha=1.0)
    monkeypatch.setattr(task1_real, "step_time_file", lambda a: tmp_path / "no-step-time.json")
    budgets = task1_real.all_budgets(args)
    return budgets, task1_real.report(budgets)


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_task1_budget_names_round_trip():
    import argparse

    from benchmarks import task1_real
    from benchmarks.common import budget_name

    args = argparse.Namespace(data="/data/tiny-imagenet-50")
    for name in ("8ep-32px", "8ep-64px", "8ep-32px-150pc", "8ep-32px-lr0.004", "8ep-32px-lr1e-05", "8ep-32px-cutmix",
                 "16ep-32px-mixup0.2", "64ep-32px-50pc", "8ep-32px-50pc-lr0.008-mixup"):
        assert budget_name(task1_real.budget_args(name, args)) == name
    for name in ("step-time", "8ep", "8ep-32px-lr", "8ep-32px-blend"):
        assert task1_real.budget_args(name, args) is None


def test_task1_report_folds_the_budgets_one_row_each_with_their_own_machines_and_seeds(tmp_path, monkeypatch):
    from benchmarks.common import machine

    budgets, text = _fold(tmp_path, monkeypatch)
    # Every budget folder is read (the main one first, then other sizes, less data, learning rates, mixing).
    assert [b.name for b in budgets] == ["8ep-32px", "8ep-64px", "8ep-32px-50pc", "16ep-32px-50pc",
                                         "8ep-32px-lr0.004", "8ep-32px-mixup0.2"]
    assert text.count("\n## ") == 3 and text.startswith("## Task 1 on real photos")
    # The machine is the rows' own, never the machine that rebuilds the report.
    assert machine() not in text
    assert "Machine (anychannel and the naive set): box A; not recorded" in text
    settings = _section(text, "## Task 1: the lead under other settings")
    rows = [line for line in settings.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    # One row per budget at 8 epochs with both sides: the headline, 64 px, 50 per class, lr 0.004 (not mixing,
    # which only anychannel ran, nor 16 epochs, which is a row of the epochs table).
    assert [r.split(" | ")[0] for r in rows] == ["| the headline (32 px, all training images, peak lr 0.002)",
                                                  "| 64 px", "| 50 training images per class", "| peak lr 0.004"]
    headline, larger, less_data, lr = rows
    assert "| – | 0,1 | 0.400 | 0.500 | +10.0 | 7/7 |" in headline
    assert "| `--image-size 64` | 0,1 | 0.420 | 0.530 | +11.0 | 6/7 (not B) | B -1.0 to RGB +13.0 |" in larger
    assert "| `--lr 0.004` | 0 only | 0.410 | 0.490 | +8.0 |" in lr
    legend = settings.splitlines()[-1]
    key_of = dict(part.split(": ", 1) for part in legend.removeprefix("Machines: ").rstrip(".").split("; "))
    assert key_of[larger.split(" | ")[-1].rstrip(" |")] == "box B"
    assert headline.endswith("| A, – |") and key_of["A"] == "box A" and key_of["–"].startswith("not recorded")
    epochs = _section(text, "## Task 1: the lead against epochs")
    assert "--budgets 8,16 --image-size 32 --seeds 0,1 --train-per-class 50 --workers 2" in epochs
    assert "| 32 px, 50 training images per class (2,500 images) | 8 | 0,1 | 0.200 | 0.290 | +9.0 |" in epochs
    # A budget with only some seeds says which, and compares both sides on the same seeds.
    assert "| 16 | 0 only; naive also 1 | 0.260 | 0.310 | +5.0 |" in epochs
    assert "not converged by 16 epochs" in epochs
    # The lever's kept row trained with batch 896; one trained at another batch is not its row.
    assert ("lever: anychannel with each naive CNN's updates (groups of 128 images, batch 896: a naive CNN's steps "
            "per epoch) | 16 | 0 only; naive also 1 | 0.260 | 0.330 | +7.0 |") in epochs
    assert "0.990" not in text
    variants = _section(text, "## Task 1: variants of anychannel at other settings")
    assert ("| 8 epochs, 32 px | anychannel, MixUp (α 0.2) | `--rows anychannel --mix mixup --mix-alpha 0.2` | 0 "
            "| 0.470 | " in variants)
    assert "| 0.500 / 0.300 | -3.0 | – | 1.00× |" in variants  # against anychannel at 8 epochs, seed 0


def test_task1_report_replaces_the_per_budget_sections_in_place(tmp_path, monkeypatch):
    import argparse

    from benchmarks import common, task1_real

    _, text = _fold(tmp_path, monkeypatch)
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n\n"
                  "<!-- task1-real:start -->\nold headline\n<!-- task1-real:end -->\n\nA note.\n\n"
                  "<!-- task1-real-8ep-64px:start -->\nold 64 px\n<!-- task1-real-8ep-64px:end -->\n\n"
                  "<!-- gpu:start -->\ngpu\n<!-- gpu:end -->\n\n"
                  "<!-- task1-real-convergence-32px-50pc:start -->\nold\n"
                  "<!-- task1-real-convergence-32px-50pc:end -->\n")
    monkeypatch.setattr(common, "BENCHMARKS_MD", md)
    args = argparse.Namespace(epochs=8, image_size=64, seeds=[0], out=tmp_path / "runs", rows="naive,anychannel",
                              workers=2, data="/data/tiny-imagenet-50", train_per_class=None, lr=None, mix=None,
                              mix_alpha=1.0)
    task1_real.write_report(args)  # a rerun at another budget rewrites the whole folded part
    written = md.read_text()
    assert written == ("# Benchmarks\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n\n"
                       f"<!-- task1-real:start -->\n{text}\n<!-- task1-real:end -->\n\nA note.\n\n"
                       "<!-- gpu:start -->\ngpu\n<!-- gpu:end -->\n")


def test_task1_epochs_table_finds_where_the_naive_set_stops_improving(tmp_path):
    """--budgets: the lead against epochs, with the first budget whose doubling gains under half a point."""
    import argparse

    from benchmarks import task1_real
    from benchmarks.task1_real import CONFIG_NAMES as names

    assert task1_real.converged_budget({8: .30, 16: .36, 32: .362, 64: .35}) == 16
    assert task1_real.converged_budget({8: .30, 16: .36}) is None  # still improving: not converged
    naive_at = {8: (.30, .29), 16: (.36, .35), 32: (.362, .36)}
    anychannel_at = {8: .40, 16: .41, 32: .36}  # at 32 epochs B falls behind

    def entry(seed, epochs, test_acc, val_acc, machine):
        return {"configs": {c: {"test_acc": test_acc(c), "val_acc": val_acc, "train_acc": 0.5} for c in names},
                "seed": seed, "train_flops": 1e14, "train_views": 7 * epochs * 2500, "machine": machine}

    budgets = []
    for epochs, (val, test) in naive_at.items():
        at = argparse.Namespace(epochs=epochs, image_size=32, train_per_class=50, lr=None, mix=None, mix_alpha=1.0)
        budgets.append(task1_real.Budget(f"{epochs}ep-32px-50pc", at, {
            "naive": [entry(s, epochs, lambda c: test, val, "box A") for s in (0, 1)],
            "anychannel": [entry(s, epochs, lambda c: anychannel_at[epochs] - (.02 if c == "B" and epochs == 32 else 0),
                                 0.0, None) for s in (0, 1)]}))
    text = "\n".join(task1_real.epochs_section(budgets, task1_real.Machines()))
    assert "--budgets 8,16,32 --image-size 32 --seeds 0,1 --train-per-class 50 --workers 2" in text
    assert "Machines: A: box A; –: not recorded" in text
    assert ("| 32 px, 50 training images per class (2,500 images) | 8 | 0,1 | 0.290 | 0.400 | +11.0 | 7/7 | "
            "RGB +11.0 to RGB +11.0 | 0.300 / 0.000 | 0.500 / 0.500 |") in text
    assert "| 16 (naive converged) | 0,1 | 0.350 | 0.410 | +6.0 | 7/7 |" in text
    assert "| 32 | 0,1 | 0.360 | 0.357 | -0.3 | 6/7 (not B) | B -2.0 to RGB +0.0 |" in text
    assert "the naive set converges at 16 epochs" in text and "anychannel − naive is +6.0 points" in text


def test_task1_epochs_table_has_the_naive_set_alone_and_the_lever_rows(tmp_path):
    """A budget where only the naive set ran decides its convergence; a lever row gets its own lead."""
    import argparse

    from benchmarks import task1_real
    from benchmarks.task1_real import CONFIG_NAMES as names

    def entry(seed, epochs, test_acc, val_acc):
        return {"configs": {c: {"test_acc": test_acc, "val_acc": val_acc, "train_acc": 0.5} for c in names},
                "seed": seed, "train_flops": 1e14, "train_views": 7 * epochs * 2500, "machine": "box A"}

    def budget(epochs, rows):
        at = argparse.Namespace(epochs=epochs, image_size=32, train_per_class=50, lr=None, mix=None, mix_alpha=1.0)
        return task1_real.Budget(f"{epochs}ep-32px-50pc", at, {
            key: [entry(s, epochs, test, val) for s in (0, 1)] for key, (test, val) in rows.items()})

    budgets = [budget(32, {"naive": (.30, .31), "anychannel": (.31, .32)}),
               budget(64, {"naive": (.31, .32), "anychannel": (.30, .31), "anychannel-naive-updates": (.33, .34)}),
               budget(128, {"naive": (.312, .322)})]  # +0.2 validation points: converged at 64
    text = "\n".join(task1_real.epochs_section(budgets, task1_real.Machines()))
    assert "--budgets 32,64 --image-size 32 --seeds 0,1 --train-per-class 50 --workers 2" in text
    assert "--epochs 128 --rows naive --image-size 32 --seeds 0,1 --train-per-class 50 --workers 2" in text
    assert "--epochs 64 --rows anychannel-naive-updates --image-size 32 --seeds 0,1" in text
    assert "| 64 (naive converged) | 0,1 | 0.310 | 0.300 | -1.0 | 0/7 (not RGB, RG, GB, RB, R, G, B) |" in text
    assert ("images), lever: anychannel with each naive CNN's updates (groups of 128 images, batch 896: a naive "
            "CNN's steps per epoch) | 64 (naive converged) | 0,1 | 0.310 | 0.330 | +2.0 | 7/7 |") in text
    assert "the naive set alone | 128 | 0,1 | 0.312 | not run |" in text
    assert ("converges at 64 epochs" in text and "anychannel − naive is -1.0 points" in text
            and "anychannel-naive-updates − naive is +2.0 points" in text)
    # Each side at its own best budget by validation: anychannel at 32 epochs, the naive set at 128.
    assert ("each side at its best budget by mean validation accuracy (anychannel 32 epochs, the naive set 128, of "
            "those run), anychannel − naive is -0.2 points on test, ≥ naive on 0/7 (-0.2 to -0.2), at 1.00×") in text


def test_task1_step_parts_time_the_parts_the_models_differ_in(synthetic_dataset):
    """--step-time's breakdown: each part runs forward and backward and gives seconds per view."""
    from benchmarks import task1_real
    from train.data import SplitTensors
    from train.engine import TrainConfig
    from train.task1 import run_specs

    split = SplitTensors(synthetic_dataset.splits["train"])
    parts = task1_real.take_turns(task1_real.step_parts(split, TrainConfig(batch_size=14), run_specs("anychannel")[0]),
                                  steps=1, rounds=1, warmup=1)
    assert set(parts) == {"anychannel stem", "naive first layer", "anychannel body, grouped",
                          "anychannel body, one configuration", "naive body"}
    assert all(0 < t < 1 for t in parts.values())


def test_task1_operators_per_step_counts_a_training_step(synthetic_dataset):
    """anychannel's step issues several times the naive CNN's operator calls (its seven groups)."""
    import torch

    from benchmarks import task1_real
    from train.engine import StepModule, TrainConfig, make_optimizer
    from train.models import create_model
    from train.task1 import run_specs
    from train.data import SplitTensors

    split = SplitTensors(synthetic_dataset.splits["train"])
    counts = {}
    for spec in (run_specs("anychannel")[0], run_specs("naive")[0]):
        model = create_model(spec.model, num_classes=synthetic_dataset.num_classes, **spec.model_kwargs).train()
        strategy = spec.build_strategy()
        step, optimizer = StepModule(model, strategy), make_optimizer(model, TrainConfig(), torch.device("cpu"))
        groups = next(strategy.steps(split, 14, torch.Generator().manual_seed(0)))

        def train_step() -> None:
            loss, _ = step(groups, 0.1)
            loss.backward()
            optimizer.step()
        counts[spec.model] = task1_real.operators_per_step(train_step)
    assert 3 * counts["naive"] < counts["anychannel"]


def test_task1_headline_reports_the_step_time_and_its_parts(tmp_path, monkeypatch):
    import json

    from benchmarks import task1_real

    step = {"anychannel_seconds_per_view": 1.1e-3, "naive_seconds_per_view": dict.fromkeys(task1_real.CONFIG_NAMES, 1e-3),
            "ratio": 1.1, "threads": 1, "rounds": 5, "steps": 10, "machine": "box A",
            "parts_seconds_per_view": {"anychannel stem": 4e-4, "naive first layer": 6e-4,
                                       "anychannel body, grouped": 1.4e-3, "anychannel body, one configuration": 1.3e-3,
                                       "naive body": 1.2e-3}}
    (tmp_path / "step-time.json").write_text(json.dumps(step))
    budgets, _ = _fold(tmp_path, monkeypatch)  # which points step_time_file elsewhere
    monkeypatch.setattr(task1_real, "step_time_file", lambda a: tmp_path / "step-time.json")
    text = task1_real.report(budgets)
    assert "anychannel 1100 µs per view, the naive models 1000 µs on average: 1.10× (box A)" in text
    assert ("anychannel's stem 400 against the naive CNN's first layer 600; the shared body over the grouped batch "
            "1400 (as one configuration, without the slices: 1300) against the naive body 1200.") in text


def test_task1_step_time_combines_fresh_processes_by_their_median(tmp_path, monkeypatch):
    """--step-time-processes K: each figure is the median over the processes, each process's ratio is
    kept, and the report gives them beside the median."""
    import json

    from benchmarks import task1_real

    def one(scale: float, ratio: float) -> dict:
        return {"anychannel_seconds_per_view": 1.1e-3 * scale, "anychannel_per_group_seconds_per_view": 1.2e-3 * scale,
                "naive_seconds_per_view": dict.fromkeys(task1_real.CONFIG_NAMES, 1e-3 * scale), "ratio": ratio,
                "threads": 1, "steps": 10, "rounds": 5, "machine": "box A",
                "operators_per_step": {"anychannel": 620, "naive-RGB": 76},
                "parts_seconds_per_view": {"anychannel stem": 4e-4 * scale, "naive first layer": 6e-4,
                                           "anychannel body, grouped": 1.4e-3, "naive body": 1.2e-3,
                                           "anychannel body, one configuration": 1.3e-3}}

    step = task1_real.combine_step_times([one(1.0, 1.10), one(0.8, 0.98), one(1.2, 1.04)])
    assert step["ratio"] == 1.04 and step["ratios"] == [1.10, 0.98, 1.04] and step["processes"] == 3
    assert step["per_group_ratio"] == pytest.approx(1.2 / 1.1)
    assert step["anychannel_seconds_per_view"] == pytest.approx(1.1e-3)
    assert step["naive_seconds_per_view"]["RB"] == pytest.approx(1e-3)
    assert step["parts_seconds_per_view"]["anychannel stem"] == pytest.approx(4e-4)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        task1_real.measure_step_time(None, processes=0)
    (tmp_path / "step-time.json").write_text(json.dumps(step))
    budgets, _ = _fold(tmp_path, monkeypatch)
    monkeypatch.setattr(task1_real, "step_time_file", lambda a: tmp_path / "step-time.json")
    text = task1_real.report(budgets)
    assert ("median round; that in 3 fresh processes, median over them): anychannel 1100 µs per view, the naive "
            "models 1000 µs on average: 1.04×, the median of the processes' ratios (each process: 1.10×, 0.98×, 1.04×); "
            "with the shared body run once per configuration group instead of once per step, 1200 µs, 1.09× anychannel") in text
    assert ("against the naive body 1200; operator calls per step (forward, backward and update: top-level events "
            "in torch's profiler, a proxy for the fixed cost per operation): anychannel 620, the naive RGB CNN 76.") in text


# --- README and docs against BENCHMARKS.md -------------------------------------------------------------

#: A figure: a number with a decimal point, a sign, ×, % or "/7" (see the README test's docstring).
FIGURE = re.compile(r"(?<![\w.,/])(?:[+\-−]\d+(?:\.\d+)?|\d*\.\d+|\d+(?:\.\d+)?(?=[×%])|\d/7)[×%M]?(?![\w.]*\d)")


def _figures(text: str) -> list[str]:
    """The result figures of markdown ``text``, outside code and link targets, normalised (−0.4 → -0.4,
    .489 → 0.489)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return [re.sub(r"^([+\-]?)\.", r"\g<1>0.", f.replace("−", "-")) for f in FIGURE.findall(text)]


def test_every_result_figure_in_the_readme_is_in_benchmarks():
    """Every result figure in README.md also stands in BENCHMARKS.md, where its command is.

    A result figure is a number written with a decimal point (0.540, .489, 1.0001×, 21.31M), a sign
    (+9.2, −1.4), a × or a % (5.3×, 84%), or a count out of the seven configurations (5/7).
    Integers without any of these are settings or counts, not results (seeds 0, 1, 2; 8, 16, 32 and
    64 epochs; 32 px; 2,500 images; 4 weight layers), and are not checked; neither is anything in
    code (commands, install lines, version pins) or in a link's target. The README's own prose may
    write .489 for 0.489 and − for -; the figure is compared in BENCHMARKS.md's form.
    """
    assert _figures("ours .999 (+1.5 points, −0.4), 3.2× and 12%, 4/7, 0.41M; 8 epochs, 32 px, 2,500 images, "
                    "onnxruntime 1.31.1, x86-64, `0.123`, [a](#b-0.5)") == [
        "0.999", "+1.5", "-0.4", "3.2×", "12%", "4/7", "0.41M"]
    readme = (ROOT / "README.md").read_text()
    known = set(_figures((ROOT / "BENCHMARKS.md").read_text()))
    figures = _figures(readme)
    assert len(figures) > 20  # the results section's table and prose are read
    assert sorted(set(f for f in figures if f not in known)) == []


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_into_benchmarks_name_its_sections():
    """README.md and docs/*.md link to BENCHMARKS.md sections by anchor; every anchor must exist."""
    headings = re.findall(r"^#{1,6} (.+)$", (ROOT / "BENCHMARKS.md").read_text(), re.M)
    anchors = {_slug(h) for h in headings}
    links = [(path.name, anchor) for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for anchor in re.findall(r"BENCHMARKS\.md#([\w-]+)", path.read_text())]
    assert links and [link for link in links if link[1] not in anchors] == []
