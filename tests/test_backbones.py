"""Torchvision backbones made any-channel: probing, resolution and export, --init, --pretrained, the CLI.

Cost: the full gate takes 3-10 s a graph here, so every listed backbone resolves all seven
configurations in torch (exactly, against the unresolved model), exports one configuration
through the full gate (``export_onnx``: contract checks, onnxsim, parity at batches
1/2/7/32, onnx's reference evaluator), each a different one, and the other six through the
TorchScript exporter with onnxruntime parity;
``test_trained_backbone_exports_all_seven_and_predicts`` takes resnet18 from an ``--init``
file through training, ``export_task`` for all seven configurations and the runtime.
"""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from typer.testing import CliRunner

from cli import app
from export import ModelInfo, export_onnx, export_task
from export.onnx import to_onnx_proto
from export.parity import cpu_session, run_session
from runtime.channels import ALL_CONFIGS, ChannelConfig
from train.models import backbone as bb
from train.models import create_model
from train.models.layers import ChannelAdaptiveConv, ConfigNorm, PerConfig

RGB = ChannelConfig("RGB")
#: Each listed backbone and the configuration its test exports through the full gate (resnet18:
#: all seven, in the training test).
LISTED = {"resnet18": None, "resnet50": "GB", "mobilenet_v3_small": "RB", "mobilenet_v3_large": "R",
          "efficientnet_b0": "G", "convnext_tiny": "B"}
SIZE, CLASSES = 32, 5


def _calibrated(name: str) -> nn.Module:
    """A fresh backbone in a state a trained one resembles, in eval mode.

    Each configuration's batch norms hold that configuration's exact statistics (so resolving
    picks visibly different ones), and their scales are cut by a tenth: at full gain a random
    resnet50 is chaotic (a 1e-7 change of its input moves its logits by 2.7e-4, beyond the
    parity tolerance, in torch itself). The classifier is scaled to logits of about 2.
    """
    torch.manual_seed(0)
    model = create_model("backbone", num_classes=CLASSES, backbone=name).train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # exact averages of the calibration batch, not a tenth of the way there
    with torch.no_grad():
        for config in ALL_CONFIGS:
            model(torch.randn(32, config.num_channels, SIZE, SIZE), config)
        for m in norms:
            m.weight.mul_(0.9)
        model.eval()
        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        scale = 2 / model(torch.randn(8, 3, SIZE, SIZE), RGB).abs().max()
        classifier.weight.mul_(scale)
        classifier.bias.mul_(scale)
    return model


def _save_torchvision(path: Path, name: str, num_classes: int, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name, weights=None, num_classes=num_classes).state_dict()
    torch.save(state, path)
    return state


# --- which models qualify --------------------------------------------------------------------

def test_probe_takes_the_listed_cnns_and_refuses_the_others():
    for name in LISTED:
        probe = bb.probe_backbone(name)
        assert probe.problem is None and probe.stem, probe
    assert bb.probe_backbone("resnet18").stem == "conv1"
    assert bb.probe_backbone("convnext_tiny").stem == "features.0.0"
    refused = {name: bb.probe_backbone(name).problem for name in ("vit_b_16", "maxvit_t", "googlenet", "inception_v3")}
    assert "before its first layer" in refused["vit_b_16"]  # checks the image size before conv_proj
    assert "does not run on 64 px" in refused["maxvit_t"]
    assert "not plain logits" in refused["googlenet"]  # auxiliary classifiers in training
    assert refused["inception_v3"]
    assert bb.probe_backbone("nope").problem == "not a torchvision classification model"
    with pytest.raises(bb.BackboneError, match="alexnet at --image-size 32: it does not run on 32 px"):
        bb.check_backbone("alexnet", 32)  # qualifies at 64 px, but its pooling leaves nothing of 32 px images


@pytest.fixture
def small_registry(monkeypatch):
    """torchvision's registry cut to a few models, so listing the valid names probes only those."""
    monkeypatch.setattr(bb, "torchvision_classifiers", lambda: ["googlenet", "mobilenet_v3_small", "resnet18",
                                                                "vit_b_16"])
    bb.available_backbones.cache_clear()
    yield
    bb.available_backbones.cache_clear()


@pytest.mark.parametrize("name,why", [("resnet1000", "unknown backbone 'resnet1000'"),
                                      ("vit_b_16", "torchvision's vit_b_16 cannot be an any-channel backbone")])
def test_cli_refuses_a_bad_backbone_before_loading_data(name, why, small_registry, tmp_path):
    # A --data folder that does not exist: reaching data loading would fail with another message.
    result = CliRunner().invoke(app, ["train", "task1", "--backbone", name, "--data", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert why in result.output
    assert "choose from compact, mobilenet_v3_small, resnet18" in result.output
    assert "vit_b_16," not in result.output.split("choose from")[1] and not (tmp_path / "out").exists()


# --- every listed backbone: all seven configurations resolve, one exports through the gate -----

@pytest.mark.parametrize("name", LISTED)
def test_backbone_resolves_every_configuration_and_exports(name, tmp_path):
    model = _calibrated(name)
    for config in ALL_CONFIGS:
        resolved = model.resolve(config).eval()
        assert not any(isinstance(m, PerConfig) for m in resolved.modules())
        x = torch.randn(3, config.num_channels, SIZE, SIZE)
        with torch.no_grad():
            expected = model(x, config)
            assert expected.shape == (3, CLASSES) and expected.std(0).mean() > 1e-3  # depends on the input
            torch.testing.assert_close(resolved(x), expected, rtol=1e-5, atol=1e-5)
    if LISTED[name] is None:
        return
    config = ChannelConfig(LISTED[name])
    info = ModelInfo("task1", "backbone", tuple(f"c{i}" for i in range(CLASSES)), SIZE, "test")
    record = export_onnx(model.resolve(config).eval(), config, tmp_path / f"{name}.onnx", info,
                         reference=lambda x: model(x, config))
    assert record.parity["top1_agreement"] == 1.0 and record.parity["max_abs_diff"] <= 1e-4
    # The other six export too and match in onnxruntime: through the TorchScript exporter (opset 17,
    # the pipeline's fastest path), without the gate's simplification and evaluator checks above.
    for other in ALL_CONFIGS:
        if other == config:
            continue
        x = torch.randn(2, other.num_channels, SIZE, SIZE)
        session = cpu_session(to_onnx_proto(model.resolve(other).eval(), other, SIZE, opset=17).SerializeToString())
        with torch.no_grad():
            np.testing.assert_allclose(run_session(session, x.numpy()), model(x, other).numpy(), rtol=0, atol=1e-4,
                                       err_msg=f"{name} {other}")


def test_resolved_graph_holds_only_its_configuration():
    model = create_model("backbone", num_classes=CLASSES, backbone="mobilenet_v3_small")
    norms = sum(1 for m in model.modules() if isinstance(m, ConfigNorm))
    plain_norms = sum(1 for m in model.resolve(ChannelConfig("G")).modules() if isinstance(m, nn.BatchNorm2d))
    assert norms == plain_norms > 10
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(model.resolve(ChannelConfig("G"))) < params(model.resolve(RGB)) < params(model)


def test_channel_adaptive_conv_seeded_from_a_conv_equals_it_on_rgb():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel_size=4, stride=4, bias=True)  # ConvNeXt's patchify stem: bias, no padding
    dynamic = ChannelAdaptiveConv.from_conv(conv)
    state = {}
    for name, tensor in conv.state_dict().items():
        state.update(dynamic.expand_plain(name, tensor))
    dynamic.load_state_dict(state, strict=False)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x, RGB), conv(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dynamic.resolve(RGB)(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geometry", [dict(kernel_size=7, stride=2, padding=3),  # ResNet's stem
                                      dict(kernel_size=4, stride=4, bias=True),  # ConvNeXt's
                                      dict(kernel_size=(3, 5), stride=(1, 2), padding=(2, 1), dilation=2)], ids=str)
def test_channel_adaptive_conv_training_form_equals_the_exported_one(geometry):
    torch.manual_seed(0)
    dynamic = ChannelAdaptiveConv.from_conv(nn.Conv2d(3, 6, **geometry))
    with torch.no_grad():
        dynamic.config_bias.normal_()
        if dynamic.bias is not None:
            dynamic.bias.normal_()
        for config in ALL_CONFIGS:
            x = torch.randn(2, config.num_channels, 15, 17)
            # Training runs im2col; eval and the resolved graph the stacked-input convolution.
            trained_form = dynamic.train()(x, config)
            torch.testing.assert_close(dynamic.eval()(x, config), trained_form, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(dynamic.resolve(config)(x), trained_form, rtol=1e-5, atol=1e-5)


# --- --init and --pretrained -----------------------------------------------------------------

def test_init_loads_a_torchvision_state_dict(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = _save_torchvision(path, "resnet18", num_classes=1000)
    model = create_model("backbone", num_classes=CLASSES, backbone="resnet18")
    report = model.initialise_from(path)
    assert sorted(report.reinitialised) == ["fc.bias", "fc.weight"]  # another class count
    assert len(report.loaded) == len(state) - 2 and not report.absent
    assert set(report.new) == {"conv1.config_bias"} | {f"conv1.attention.{n}" for n in
                                                       ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
    assert "re-initialised): fc." in report.summary()
    resolved = model.resolve(RGB).state_dict()
    for key, tensor in state.items():
        if not key.startswith(("conv1.", "fc.")):
            assert torch.equal(resolved[key], tensor), key  # every norm (RGB's copy) and conv from the file
    stem = model.net.conv1
    for k in range(stem.weight.shape[0]):
        assert torch.equal(stem.weight[k], state["conv1.weight"])  # each of the K kernels, all three planes
    # The resolved R stem is R's slice of conv1, rescaled by 3/1.
    r_weight = model.resolve(ChannelConfig("R")).conv1.weight
    torch.testing.assert_close(r_weight[:, :1], 3 * state["conv1.weight"][:, :1])
    for config in ALL_CONFIGS:  # every configuration's norm starts from the pretrained one
        assert torch.equal(model.net.bn1.select(config).running_var, state["bn1.running_var"])


def test_init_with_the_same_class_count_reproduces_torchvision_on_rgb(tmp_path):
    path = tmp_path / "mobilenet.pth"
    _save_torchvision(path, "mobilenet_v3_small", num_classes=CLASSES)
    reference = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=CLASSES)
    reference.load_state_dict(torch.load(path, weights_only=True))
    model = create_model("backbone", num_classes=CLASSES, backbone="mobilenet_v3_small")
    report = model.initialise_from(path)
    assert not report.reinitialised
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        # All K stem kernels equal conv1's: whatever the attention, RGB is the pretrained network.
        torch.testing.assert_close(model.eval()(x, RGB), reference.eval()(x), rtol=1e-4, atol=1e-5)


def test_init_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "mobilenet.pth"
    _save_torchvision(path, "mobilenet_v3_small", num_classes=1000)
    model = create_model("backbone", num_classes=CLASSES, backbone="resnet18")
    with pytest.raises(bb.InitWeightsError, match="not a state dict of torchvision's resnet18") as info:
        model.initialise_from(path)
    assert "features.0.0.weight (not in resnet18)" in str(info.value)
    assert "conv1.weight (missing)" in info.value.mismatched
    # Through the CLI: refused before any data work (the --data folder does not exist).
    result = CliRunner().invoke(app, ["train", "task1", "--backbone", "resnet18", "--init", str(path),
                                      "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "features.0.0.weight (not in resnet18)" in result.output, result.output
    torch.save({"format": 2, "state_dict": {}}, tmp_path / "ours.pt")
    with pytest.raises(bb.InitWeightsError, match="anychannel checkpoint"):
        bb.check_init_file("resnet18", tmp_path / "ours.pt")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and a download that fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def offline(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return calls


def test_pretrained_offline_names_the_cache_file(offline_hub, tmp_path):
    cache_file = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert bb.pretrained_cache_path("resnet18") == cache_file
    result = CliRunner().invoke(app, ["train", "task1", "--backbone", "resnet18", "--pretrained",
                                      "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert str(cache_file) in result.output and "--init PATH" in result.output and offline_hub
    # Once the file is in the cache it loads without the network (the download still fails).
    _save_torchvision(cache_file, "resnet18", num_classes=1000)
    offline_hub.clear()
    assert bb.pretrained_file("resnet18") == cache_file and not offline_hub
    bb.check_init_file("resnet18", cache_file)


def test_pretrained_weights_use_the_runtime_normalisation(monkeypatch):
    for name in LISTED:  # ImageNet's mean and std per plane, as runtime/channels.py normalises
        bb.pretrained_weights(name)

    class OtherStats:
        url = "https://example.invalid/x-0123abcd.pth"

        def transforms(self):
            return torchvision.transforms._presets.ImageClassification(crop_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)

    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: type("E", (), {"DEFAULT": OtherStats()}))
    with pytest.raises(bb.PretrainedUnavailableError, match="normalises with mean"):
        bb.pretrained_weights("resnet18")


# --- training, export of all seven graphs and the runtime, through the real pipeline ----------

@pytest.fixture(scope="module")
def tiny_photos(synthetic_dataset):
    from train.data.cache import Dataset, Split

    s = synthetic_dataset.splits
    cut = lambda sp, n: Split(sp.images[:n], sp.labels[:n])  # noqa: E731
    return Dataset("tiny", synthetic_dataset.class_names, synthetic_dataset.image_size,
                   {"train": cut(s["train"], 252), "val": cut(s["val"], 64), "test": cut(s["test"], 64)}, "fp")


def test_trained_backbone_exports_all_seven_and_predicts(tiny_photos, tmp_path):
    from runtime import Classifier
    from train.engine import TrainConfig
    from train.task1 import Task1Options, run_task1

    init = tmp_path / "init.pth"
    _save_torchvision(init, "resnet18", num_classes=1000)
    lines: list[str] = []
    options = Task1Options(backbone="resnet18", init=str(init))
    results = run_task1(tiny_photos, ["anychannel"], tmp_path / "task1", TrainConfig(epochs=1, batch_size=126),
                        train_eval_samples=64, log=lines.append, options=options)
    assert any("loaded 120 of its 122 tensors" in line and "fc.weight, fc.bias" in line for line in lines), lines
    entry = results["models"]["anychannel"]
    assert entry["runs"]["anychannel"]["model_kwargs"] == {"backbone": "resnet18"}
    assert set(entry["configs"]) == {c.name for c in ALL_CONFIGS}
    checkpoint = tmp_path / "task1" / "anychannel" / "best.pt"
    assert torch.load(checkpoint, weights_only=True)["init"] == str(init)

    exported = export_task("task1", "all", checkpoint=checkpoint, out=tmp_path / "onnx")
    manifest = json.loads(exported.manifest.read_text())
    assert manifest["model"] == "backbone" and list(manifest["graphs"]) == [c.name for c in ALL_CONFIGS]
    assert all(g["parity"]["top1_agreement"] == 1.0 for g in manifest["graphs"].values())
    assert sorted(p.name for p in exported.out_dir.glob("*.onnx"))[0] == "task1-B.onnx"  # default names
    clf = Classifier(exported.out_dir, device="cpu")
    images = tiny_photos.splits["test"].images[:3]
    for config in ("RGB", "GB", "R"):
        planes = images[..., list(ChannelConfig(config).indices)]
        assert clf.predict_logits(list(planes), config).shape == (3, tiny_photos.num_classes)
