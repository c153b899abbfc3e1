import json
from dataclasses import replace

import pytest
import torch

from runtime.channels import ALL_CONFIGS
from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from train.data import SplitTensors
from train.engine import RunSpec, TrainConfig, evaluate, fit, sample_config
from train.models import create_model

from conftest import TINY_ANYCHANNEL, first_body_conv, first_body_norm


def test_tiny_run_beats_chance_on_every_configuration(task1_run, synthetic_dataset):
    ckpt = load_checkpoint(task1_run / "anychannel" / "best.pt", "task1")
    model = model_from_checkpoint(ckpt)
    val = SplitTensors(synthetic_dataset.splits["val"])
    chance = 1 / synthetic_dataset.num_classes
    accuracy = {c.name: evaluate(model, val, c)[1] for c in ALL_CONFIGS}
    assert all(acc > 1.5 * chance for acc in accuracy.values()), accuracy
    assert sum(accuracy.values()) / len(accuracy) > 2.5 * chance, accuracy


def test_hierarchical_sampling_covers_all_configs():
    g = torch.Generator().manual_seed(0)
    counts = {}
    for _ in range(900):
        c = sample_config(g).name
        counts[c] = counts.get(c, 0) + 1
    assert set(counts) == {c.name for c in ALL_CONFIGS}
    assert 240 < counts["RGB"] < 360  # a third of draws have three channels
    assert 70 < counts["R"] < 130  # a ninth each for the others


def _train(dataset, out, epochs, resume=False, loss_fn=None, mix="none"):
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=dataset.num_classes, **TINY_ANYCHANNEL)
    spec = RunSpec("anychannel", "anychannel", dict(TINY_ANYCHANNEL))
    fit(model, spec, dataset, out, TrainConfig(epochs=epochs, batch_size=128, mix=mix), "task1", resume=resume,
        loss_fn=loss_fn, log=lambda _: None)
    return load_checkpoint(out / "last.pt")


@pytest.fixture(scope="module")
def small_dataset(synthetic_dataset):
    from train.data.cache import Dataset, Split

    s = synthetic_dataset.splits
    cut = lambda sp, n: Split(sp.images[:n], sp.labels[:n])  # noqa: E731
    return Dataset("tiny", synthetic_dataset.class_names, 16,
                   {"train": cut(s["train"], 256), "val": cut(s["val"], 128), "test": cut(s["test"], 128)}, "fp")


@pytest.mark.parametrize("mix", ["none", "cutmix"])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, small_dataset, mix):
    straight = _train(small_dataset, tmp_path / "a", epochs=3, mix=mix)

    calls = {"n": 0}

    def interrupt_in_epoch_two(logits, y, x, config):
        calls["n"] += 1
        # The default strategy trains all 7 configurations per step on groups of 128 // 7 = 18
        # images: 15 steps, 105 loss calls per epoch; this is inside epoch 2.
        if calls["n"] == 7 * 15 + 10:
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    with pytest.raises(KeyboardInterrupt):
        _train(small_dataset, tmp_path / "b", epochs=3, loss_fn=interrupt_in_epoch_two, mix=mix)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = _train(small_dataset, tmp_path / "b", epochs=3, resume=True, mix=mix)
    assert resumed["epoch"] == 3
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert json.dumps(straight["history"][-1]["val_acc"]) == json.dumps(resumed["history"][-1]["val_acc"])


def test_resume_with_other_settings_is_refused(tmp_path, small_dataset):
    _train(small_dataset, tmp_path / "a", epochs=1)
    with pytest.raises(CheckpointError, match="different settings"):
        _train(small_dataset, tmp_path / "a", epochs=2, resume=True)
    # Another network (--body, --backbone) or other starting weights (--init): refused by name.
    wider = {**TINY_ANYCHANNEL, "widths": (16, 16, 32)}
    for kwargs, init in ((wider, None), (dict(TINY_ANYCHANNEL), "resnet18.pth")):
        model = create_model("anychannel", num_classes=small_dataset.num_classes, **kwargs)
        spec = RunSpec("anychannel", "anychannel", kwargs, init=init)
        with pytest.raises(CheckpointError, match="model options .* starting from random weights"):
            fit(model, spec, small_dataset, tmp_path / "a", TrainConfig(epochs=1, batch_size=128), "task1",
                resume=True, log=lambda _: None)
    # Other data: the same recipe at another image size, or other decoded content.
    for other in (replace(small_dataset, image_size=24), replace(small_dataset, fingerprint="other")):
        with pytest.raises(CheckpointError, match="trained on other data .* use the same data and --image-size"):
            _train(other, tmp_path / "a", epochs=1, resume=True)


def test_checkpoint_errors(tmp_path, task1_run):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="from 'task1', not 'task2'"):
        load_checkpoint(task1_run / "anychannel" / "best.pt", "task2")
    ckpt = load_checkpoint(task1_run / "anychannel" / "best.pt")
    ckpt["model_kwargs"] = {}  # default widths: the weights no longer fit
    with pytest.raises(CheckpointError, match="does not match"):
        model_from_checkpoint(ckpt)
    no_tmp = [p for p in (task1_run / "anychannel").iterdir() if p.name.endswith(".tmp")]
    assert not no_tmp


def test_precise_batch_norm_touches_only_each_configurations_own_statistics(small_dataset):
    from runtime.channels import ChannelConfig
    from train.engine import recalibrate_config_norms

    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=small_dataset.num_classes, **TINY_ANYCHANNEL)
    shared = first_body_conv(model).weight.clone()
    bn_r = first_body_norm(model).select(ChannelConfig("R"))
    bn_rgb = first_body_norm(model).select(ChannelConfig("RGB"))
    rgb_before = bn_rgb.running_mean.clone()
    split = SplitTensors(small_dataset.splits["train"])
    recalibrate_config_norms(model, split, (ChannelConfig("R"),), torch.Generator().manual_seed(0), images=256)
    assert not torch.equal(bn_r.running_mean, torch.zeros_like(bn_r.running_mean))
    assert torch.equal(bn_rgb.running_mean, rgb_before)  # other configurations untouched
    assert torch.equal(first_body_conv(model).weight, shared)  # no weight changes
    assert bn_r.momentum == 0.1 and not model.training


def test_train_request_checks_every_option_combination_before_data_work():
    """train.request is what `cli.py train` calls: bad combinations are one ValueError naming them."""
    from train.request import TrainRequest

    cases = [(TrainRequest("task1", distill=True), "share their images"),
             (TrainRequest("task1", models="naive", width=0.7), "--width: options of our model; add anychannel"),
             (TrainRequest("task2", width=0.7), "apply to task1's model"),
             (TrainRequest("task1", teacher="naive"), "--teacher applies to task2"),
             (TrainRequest("task1", models="nope"), "unknown model"),
             (TrainRequest("task1", batch_size=14), "per step, fewer than the 3 processes"),
             (TrainRequest("task9"), "unknown task 'task9'")]
    for request, message in cases:
        with pytest.raises(ValueError, match=message):
            request.check(world=3 if request.batch_size == 14 else None)
    checked = TrainRequest("task2", models="shallow", teacher="none").check()
    assert checked.models == ["shallow"] and checked.teacher is None
    checked = TrainRequest("task1", models="anychannel,naive", epochs=3).check()
    assert checked.models == ["anychannel", "naive"] and checked.options.strategy == "joint"
    assert TrainRequest("task1").train_config().epochs == 6 and TrainRequest("task2").train_config().epochs == 12


def test_launch_checks_the_request_then_runs_the_command_per_process(monkeypatch):
    """train.request.launch is `train --nproc N`: one check for all processes, then torchrun without --nproc."""
    from train import distributed
    from train.request import TrainRequest, launch

    calls = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv, restarts: calls.append((n, argv, restarts)) or 7)
    command = ["cli.py", "train", "task1", "--nproc", "2", "--max-restarts=1", "--epochs", "1"]
    assert launch(TrainRequest("task1", epochs=1), 2, 1, command) == 7
    assert calls == [(2, ["cli.py", "train", "task1", "--epochs", "1"], 1)]
    with pytest.raises(ValueError, match="fewer than the 20 processes"):
        launch(TrainRequest("task1", batch_size=14), 20, 0, command)
    assert len(calls) == 1  # a bad request starts nothing


def test_run_process_names_the_failing_rank_under_torchrun(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import train.request
    from train import distributed
    from train.request import RankError, TrainRequest, run_process

    torn_down = []
    monkeypatch.setattr(distributed, "teardown", lambda: torn_down.append(True))
    bad = TrainRequest("task1", teacher="naive", data=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="--teacher applies to task2"):  # alone: the error itself
        run_process(bad)
    monkeypatch.setattr(distributed, "setup", lambda device: SimpleNamespace(distributed=True, rank=3, is_main=False))
    monkeypatch.setattr(distributed, "set_single_thread_count", lambda: None)
    for error, message in [(ValueError("bad"), "rank 3: bad"), (RuntimeError("nccl"), "rank 3: nccl"),
                           (RuntimeError("rank 1: x"), "rank 1: x")]:  # the last already names its rank
        monkeypatch.setattr(train.request, "run", lambda *args, e=error, **kwargs: (_ for _ in ()).throw(e))
        with pytest.raises(RankError) as raised:
            run_process(bad)
        assert str(raised.value) == message
    monkeypatch.setattr(train.request, "run", lambda *args, **kwargs: None)
    assert run_process(bad) is False  # not the main process: it does not report
    assert torn_down == [True] * 5


def test_reports_text_is_the_results_table_and_where_the_reports_are(tmp_path):
    from train.request import reports_text

    (tmp_path / "results.md").write_text("| model | top-1 |\n")
    assert reports_text(tmp_path) == (f"\n| model | top-1 |\n\nreports: {tmp_path / 'results.json'}, "
                                      f"{tmp_path / 'results.md'}, {tmp_path}/curves-*.png")


def _train_naive(dataset, out, epochs, compile_mode="none", resume=False, loss_fn=None):
    from runtime.channels import ChannelConfig

    torch.manual_seed(0)
    kwargs = {"channels": "R", "width": 0.25}
    model = create_model("naive", num_classes=dataset.num_classes, **kwargs)
    spec = RunSpec("naive-R", "naive", kwargs, (ChannelConfig.parse("R"),))
    # 256 images in 2 full steps: one step shape, so one compilation.
    fit(model, spec, dataset, out, TrainConfig(epochs=epochs, batch_size=128, compile=compile_mode), "task1",
        resume=resume, loss_fn=loss_fn, log=lambda _: None)
    return load_checkpoint(out / "last.pt")


def test_a_compiled_step_trains_as_the_eager_one_and_resumes_across_modes(tmp_path, small_dataset):
    """``--compile`` changes how a step runs, not what it trains: an eager epoch resumed under
    ``torch.compile`` ends where two eager epochs do, up to the fused kernels' float rounding (as
    measured on this machine: the eager run at 2 threads instead of 1)."""
    import torch._dynamo
    import torch._inductor.config

    from conftest import assert_within_rounding_noise

    torch._dynamo.reset()
    straight = _train_naive(small_dataset, tmp_path / "eager", epochs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        noise_run = _train_naive(small_dataset, tmp_path / "eager-2-threads", epochs=2)
    finally:
        torch.set_num_threads(threads)
    calls = {"n": 0}

    def interrupt_in_epoch_two(logits, y, x, config):
        calls["n"] += 1
        if calls["n"] == 3:  # two steps per epoch
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    with pytest.raises(KeyboardInterrupt):
        _train_naive(small_dataset, tmp_path / "mixed", epochs=2, loss_fn=interrupt_in_epoch_two)
    torch._dynamo.utils.counters.clear()
    fallback_random = torch._inductor.config.fallback_random
    try:
        resumed = _train_naive(small_dataset, tmp_path / "mixed", epochs=2, compile_mode="default", resume=True)
    finally:
        torch._dynamo.reset()  # later tests export with torch.export: no compiled frames left behind
        torch._inductor.config.fallback_random = fallback_random  # compile_step's setting
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert resumed["epoch"] == 2 and resumed["train_config"]["compile"] == "default"
    # Dropout draws from torch's generator under compile too (compile_step), so only rounding differs.
    assert_within_rounding_noise(straight, noise_run, resumed, "compiled and eager training")
    with pytest.raises(ValueError, match="unknown --compile mode 'fast'; choose from none, default"):
        TrainConfig(compile="fast")


def test_the_grouped_joint_step_compiles_as_one_graph_with_the_eager_loss(small_dataset):
    """Dynamo captures anychannel's whole joint step (seven groups, the grouped body, the losses)
    without a graph break; ``aot_eager`` runs the captured forward and backward graphs without
    generating kernels, so this checks the capture, cheaply, not inductor's code."""
    import torch._dynamo

    from train.engine import StepModule
    from train.strategies import JointStrategy

    strategy = JointStrategy()
    groups = next(strategy.steps(SplitTensors(small_dataset.splits["train"]), 126, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=small_dataset.num_classes, **TINY_ANYCHANNEL).train()
    step = StepModule(model, strategy)
    torch.manual_seed(1)  # the same dropout masks in both passes
    eager_loss, eager_logits = step(groups, 0.1)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=False)
        torch.manual_seed(1)
        loss, logits = compiled(groups, 0.1)
        loss.backward()
    finally:
        torch._dynamo.reset()
    # The captured graphs run the eager kernels in the eager order: the same numbers, bit for bit.
    assert len(logits) == 7 and torch.equal(loss, eager_loss)
    assert all(torch.equal(a, b) for a, b in zip(logits, eager_logits))
    assert model.stem.weight.grad is not None and first_body_conv(model).weight.grad is not None


def test_resume_keeps_adamw_fused_when_the_saved_state_was_not(tmp_path, small_dataset):
    """Optimizer state saved before AdamW ran fused resumes fused: loading takes each group's flags
    from the file, which would otherwise turn the fused kernel off for the rest of the run."""
    from train.engine import _resume, make_optimizer

    _train(small_dataset, tmp_path, epochs=1)
    state = load_checkpoint(tmp_path / "last.pt")
    for group in state["optimizer"]["param_groups"]:
        group.update(fused=None, foreach=None)  # as torch's default AdamW saved it
    torch.save(state, tmp_path / "last.pt")
    cfg = TrainConfig(**state["train_config"])
    model = create_model("anychannel", num_classes=small_dataset.num_classes, **TINY_ANYCHANNEL)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=100)
    _resume(tmp_path / "last.pt", "task1", cfg, state, small_dataset, model, optimizer, scheduler)
    assert optimizer.param_groups[0]["fused"] is True
    optimizer.step()  # the fused kernel takes the loaded state
