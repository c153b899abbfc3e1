import pytest
import torch

from runtime.channels import ChannelConfig
from train.data import SplitTensors
from train.data.cache import Dataset, Split
from train.distill import distillation_loss, distillation_loss_fn
from train.engine import RunSpec, TrainConfig, evaluate, fit
from train.models import create_model
from train.models.shallow import RepConv, count_weight_layers

RGB = ChannelConfig("RGB")


LAYOUTS = [{"downsample": "stride"}, {"downsample": "maxpool", "widths": (16, 32, 64)}]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shallow_net_has_four_weight_layers_in_inference_form(layout):
    model = create_model("shallow", num_classes=10, **layout)
    assert model.weight_layer_count() == 4
    assert count_weight_layers(model.resolve(RGB)) == 4
    # The training form has more convolutions (RepVGG branches): they must fold away.
    assert count_weight_layers(model) > 4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_folded_shallow_net_computes_what_the_training_form_computes(layout):
    torch.manual_seed(0)
    model = create_model("shallow", num_classes=10, **layout).train()
    for _ in range(3):  # non-trivial batch-norm statistics
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model.reparameterize()(x), model(x), rtol=1e-4, atol=1e-4)


def test_shallow_net_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="downsample must be one of"):
        create_model("shallow", num_classes=10, downsample="avgpool")


@pytest.mark.parametrize("in_ch,out_ch,stride", [(8, 8, 1), (8, 16, 2), (8, 16, 1)])
def test_repconv_fuses_exactly(in_ch, out_ch, stride):
    torch.manual_seed(0)
    block = RepConv(in_ch, out_ch, stride)
    block.train()
    for _ in range(3):  # give the batch norms non-trivial running statistics
        block(torch.randn(16, in_ch, 10, 10) * 2 + 1)
    block.eval()
    x = torch.randn(4, in_ch, 10, 10)
    expected = block(x)
    block.fuse()
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


class _RecordingTeacher(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.seen = logits, []
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, config=None):
        self.seen.append(x)
        return self.logits * self.scale


def test_distillation_uses_the_teachers_logits_on_the_same_batch():
    torch.manual_seed(0)
    student = torch.randn(6, 5, requires_grad=True)
    labels = torch.randint(0, 5, (6,))
    inputs = torch.randn(6, 3, 8, 8)
    teacher_a = _RecordingTeacher(torch.randn(6, 5) * 3)
    loss_a = distillation_loss_fn(teacher_a)(student, labels, inputs, RGB)
    assert teacher_a.seen and teacher_a.seen[0] is inputs
    assert not teacher_a.scale.requires_grad  # the teacher is frozen
    torch.testing.assert_close(loss_a, distillation_loss(student, teacher_a.logits, labels))
    teacher_b = _RecordingTeacher(-teacher_a.logits)
    assert not torch.allclose(loss_a, distillation_loss_fn(teacher_b)(student, labels, inputs, RGB))
    # With alpha=1 only the teacher matters: matching the teacher exactly gives zero loss.
    zero = distillation_loss(teacher_a.logits, teacher_a.logits, labels, alpha=1.0)
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    loss_a.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def _train_tiny_shallow(out, dataset, epochs: int, downsample: str = "stride"):
    """A narrow shallow net trained for ``epochs`` on ``dataset``; its checkpoints in ``out``."""
    torch.manual_seed(0)
    kwargs = {"widths": (16, 32, 64), "downsample": downsample}
    model = create_model("shallow", num_classes=dataset.num_classes, **kwargs)
    fit(model, RunSpec("shallow", "shallow", kwargs, (RGB,)), dataset, out,
        TrainConfig(epochs=epochs, batch_size=64), "task2", log=lambda _: None)
    return model


def test_tiny_shallow_run_beats_chance(tmp_path, synthetic_dataset):
    model = _train_tiny_shallow(tmp_path / "shallow", synthetic_dataset, epochs=3)
    _, acc = evaluate(model, SplitTensors(synthetic_dataset.splits["val"]), RGB)
    assert acc > 3 / synthetic_dataset.num_classes


def _small(dataset):
    s = dataset.splits
    cut = lambda sp, n: Split(sp.images[:n], sp.labels[:n])  # noqa: E731
    return Dataset("tiny", dataset.class_names, 16,
                   {"train": cut(s["train"], 256), "val": cut(s["val"], 64), "test": cut(s["test"], 64)}, "fp")


def test_run_task2_end_to_end_reports_ratio_latency_and_distils(tmp_path, synthetic_dataset):
    from train.task2 import run_task2

    logs: list[str] = []
    results = run_task2(_small(synthetic_dataset), ["shallow", "resnet34", "naive"], tmp_path,
                        TrainConfig(epochs=1, batch_size=64), train_eval_samples=64, log=logs.append)
    assert list(results["models"]) == ["naive", "resnet34", "shallow"]  # the teachers train first
    assert results["teacher"] == "naive"
    assert any(f"distilling from {tmp_path / 'naive' / 'best.pt'}" in line for line in logs)
    assert results["models"]["shallow"]["weight_layers"] == 4
    # The layout is written out in full, so a later change of the class defaults cannot misread it.
    from train.checkpoint import load_checkpoint
    from train.task2 import SHALLOW_KWARGS

    assert load_checkpoint(tmp_path / "shallow" / "best.pt", "task2")["model_kwargs"] == SHALLOW_KWARGS
    assert results["models"]["shallow"]["params"] < results["models"]["resnet34"]["params"]
    assert results["models"]["resnet34"]["cpu_latency_ms_batch1"] > 0
    for entry in results["models"].values():
        assert 0 <= entry["configs"]["RGB"]["test_acc_flip"] <= 1
    assert 0 <= results["shallow_to_resnet34_test_acc"]
    md = (tmp_path / "results.md").read_text()
    assert "Shallow / ResNet34 test accuracy" in md
    assert (tmp_path / "curves-shallow.png").stat().st_size > 0


def test_task2_teacher_choice(tmp_path, synthetic_dataset):
    from train.task2 import check_teacher, run_task2

    small, cfg = _small(synthetic_dataset), TrainConfig(epochs=1, batch_size=64)
    with pytest.raises(ValueError, match="unknown teacher 'vgg'"):
        check_teacher("vgg")
    # A teacher that is neither trained here nor on disk: a named error before any training.
    with pytest.raises(ValueError, match=r"distil from naive, but .*naive/best.pt does not exist"):
        run_task2(small, ["shallow"], tmp_path / "a", cfg, train_eval_samples=64, log=lambda _: None)
    logs: list[str] = []
    run_task2(small, ["shallow"], tmp_path / "b", cfg, train_eval_samples=64, log=logs.append, teacher=None)
    assert not any("distilling" in line for line in logs)  # labels only
    # A teacher trained by an earlier run, found through teacher_dir; ResNet34 may be the student.
    run_task2(small, ["naive"], tmp_path / "t", cfg, train_eval_samples=64, log=lambda _: None)
    logs.clear()
    run_task2(small, ["resnet34"], tmp_path / "c", cfg, train_eval_samples=64, log=logs.append,
              teacher_dir=tmp_path / "t", students=("resnet34",))
    assert any(f"[resnet34] distilling from {tmp_path / 't' / 'naive' / 'best.pt'}" in line for line in logs)
    # A teacher made from other data (here: other decoded content) is refused by name.
    from dataclasses import replace

    from train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="teacher .*naive/best.pt was trained on other data"):
        run_task2(replace(small, fingerprint="other"), ["shallow"], tmp_path / "e", cfg, train_eval_samples=64,
                  log=lambda _: None, teacher_dir=tmp_path / "t")
    # A teacher trained in this run trains first and is read from this run, whatever teacher_dir says.
    logs.clear()
    results = run_task2(small, ["naive", "resnet34"], tmp_path / "d", cfg, train_eval_samples=64, log=logs.append,
                        teacher="resnet34", teacher_dir=tmp_path / "t", students=("naive",))
    assert list(results["models"]) == ["resnet34", "naive"]
    assert any(f"[naive] distilling from {tmp_path / 'd' / 'resnet34' / 'best.pt'}" in line for line in logs)


def test_flip_evaluation_averages_the_logits_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, config=None):
            return self.net(x)

    split = SplitTensors(Split(torch.randint(0, 255, (12, 8, 8, 3), dtype=torch.uint8).numpy(),
                               torch.randint(0, 5, (12,), dtype=torch.int64).numpy()))
    wrapped = Wrapped()
    x, y, _ = next(split.batches(12, RGB))
    with torch.no_grad():
        logits = (model(x) + model(x.flip(3))) / 2
    loss, acc = evaluate(wrapped, split, RGB, flip=True)
    assert acc == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_shallow_net_exports_with_four_weight_layers_and_runs_in_the_runtime(tmp_path, synthetic_dataset,
                                                                             downsample):
    import numpy as np
    import onnx

    from export.pipeline import export_task
    from runtime import Classifier

    model = _train_tiny_shallow(tmp_path / "shallow", synthetic_dataset, epochs=1, downsample=downsample)
    result = export_task("task2", checkpoint=tmp_path / "shallow" / "best.pt", out=tmp_path / "onnx")
    graph = onnx.load(str(result.out_dir / "task2-RGB.onnx"))
    weight_ops = [n.op_type for n in graph.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
    assert len(weight_ops) == 4, weight_ops

    clf = Classifier(result.out_dir, device="cpu")
    images = synthetic_dataset.splits["val"].images[:8]
    logits = clf.predict_logits(images)
    expected = model.eval()(SplitTensors(synthetic_dataset.splits["val"]).batches(8, RGB).__next__()[0])
    np.testing.assert_allclose(logits, expected.detach().numpy(), atol=1e-4)
    assert clf.predict(images[0], top_k=1)[0][0].label in synthetic_dataset.class_names


@pytest.mark.parametrize("task,args,message", [
    ("task2", ["--teacher", "vgg"], "unknown teacher 'vgg': choose one of naive, resnet34, or none"),
    ("task1", ["--teacher", "naive"], "--teacher applies to task2"),
])
def test_train_refuses_a_bad_teacher_before_loading_data(task, args, message, tmp_path):
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, ["train", task, "--data", str(tmp_path / "missing"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
