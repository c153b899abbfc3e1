"""Export: one verified ONNX graph per configuration of a tiny trained model, and the manifest.

The seven graphs are exported once per session with the real exporter. Tests of failure
paths re-export single configurations; they reuse the traced graph of identical weights
(``cached_tracing``) because what they test comes after tracing, which takes seconds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import SHARED_DATA, first_body_norm
from export import ExportValidationError, GraphCheckError, ParityError, export_onnx, export_task
from export import onnx as onnx_target
from export.atomic import staged, write_synced
from export.checks import check_graph, dims
from export.metadata import ModelInfo, exporter_versions, project_version
from export.parity import cpu_session, run_session
from export.pipeline import default_checkpoint, default_out_dir, graph_name
from runtime import contract
from runtime.channels import ALL_CONFIGS, ChannelConfig
from runtime.preprocess import INTERPOLATION, RESIZE_MODE, load_rgb, uint8_batch_to_input
from train.checkpoint import load_checkpoint, model_from_checkpoint

R, RGB = ChannelConfig("R"), ChannelConfig("RGB")


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def cached_tracing():
    """Memoise ``to_onnx_proto`` by (configuration, size, opset, weights) for the whole session."""
    real, cache = onnx_target.to_onnx_proto, {}

    def traced(module, config, image_size, opset):
        key = (config.name, image_size, opset, _weights_digest(module))
        if key not in cache:
            cache[key] = real(module, config, image_size, opset)
        copy = onnx.ModelProto()
        copy.CopyFrom(cache[key])
        return copy

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_target, "to_onnx_proto", traced)
        yield cache


@pytest.fixture(scope="session")
def checkpoint(task1_run) -> Path:
    return task1_run / "anychannel" / "best.pt"


@pytest.fixture(scope="session")
def net(checkpoint):
    return model_from_checkpoint(load_checkpoint(checkpoint, "task1"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoint, cached_tracing):
    """All seven graphs of the tiny model, through the same function the CLI calls."""
    out = tmp_path_factory.mktemp("export") / "onnx"
    return export_task("task1", "all", checkpoint=checkpoint, out=out)


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    """A private copy of the exported folder, for tests that modify it."""
    return Path(shutil.copytree(exported.out_dir, tmp_path / "onnx"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / contract.MANIFEST_NAME).read_text())


def _graph(folder: Path, config: ChannelConfig) -> onnx.ModelProto:
    return onnx.load(folder / contract.graph_filename("task1", config))


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- every configuration, the graph contract -------------------------------------------------

def test_every_configuration_is_exported_with_a_manifest_entry(exported):
    manifest = _manifest(exported.out_dir)
    assert set(contract.MANIFEST_TOP_KEYS) <= set(manifest)
    assert manifest["contract_version"] == contract.CONTRACT_VERSION
    assert (manifest["task"], manifest["model"], manifest["image_size"]) == ("task1", "anychannel", 16)
    assert list(manifest["graphs"]) == [c.name for c in ALL_CONFIGS]
    for config in ALL_CONFIGS:
        entry = manifest["graphs"][config.name]
        assert set(contract.MANIFEST_ENTRY_KEYS) <= set(entry)
        path = exported.out_dir / entry["file"]
        assert entry["file"] == contract.graph_filename("task1", config)
        assert entry["sha256"] == contract.sha256_file(path) and entry["size"] == path.stat().st_size
        assert entry["input_shape"] == [contract.BATCH_DIM, config.num_channels, 16, 16]
        assert entry["channel_indices"] == list(config.indices) and entry["opset"] == 18
        assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["top1_agreement"] == 1.0
        assert entry["parity"]["batch_sizes"] == [1, 2, 7, 32]
        assert entry["parity"]["reference_evaluator_top1"] is True
        assert entry["simplified"] is True and entry["simplify_note"] == ""
        assert {"torch", "onnx", "onnxruntime"} <= set(entry["versions"])
    # One self-contained file per graph: no external-data sidecars, no leftovers.
    assert sorted(p.name for p in exported.out_dir.iterdir()) == sorted(
        [contract.MANIFEST_NAME] + [contract.graph_filename("task1", c) for c in ALL_CONFIGS])


def test_graphs_meet_the_contract(exported):
    for config in ALL_CONFIGS:
        graph = _graph(exported.out_dir, config)
        check_graph(graph, config.name, (config.num_channels, 16, 16), 10)  # full checker included
        assert dims(graph.graph.input[0]) == [contract.BATCH_DIM, config.num_channels, 16, 16]
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == contract.BATCH_DIM
        ops = {n.op_type for n in graph.graph.node}
        assert not ops & {"If", "Loop", "Scan"}
        assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"} and not graph.functions
        assert all(t.data_location == onnx.TensorProto.DEFAULT for t in graph.graph.initializer)


@pytest.mark.parametrize("batch", [1, 2, 7, 32])
def test_dynamic_batch_runs_at_any_size(exported, net, batch):
    rng = np.random.default_rng(batch)
    for config in ALL_CONFIGS:
        session = cpu_session(exported.out_dir / contract.graph_filename("task1", config))
        x = rng.standard_normal((batch, config.num_channels, 16, 16), dtype=np.float32)
        got = run_session(session, x)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x), config).numpy()
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared tiny-imagenet-50 photos not present")
def test_parity_on_real_photos(exported, net):
    lines = (SHARED_DATA / "val.txt").read_text().splitlines()[::250][:8]
    images = np.stack([load_rgb(SHARED_DATA / ln.split()[0], 16) for ln in lines])
    for config in (RGB, ChannelConfig("GB"), R):
        x = uint8_batch_to_input(images, config)
        got = run_session(cpu_session(exported.out_dir / contract.graph_filename("task1", config)), x)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x), config).numpy()
        assert np.abs(got - expected).max() <= 1e-4
        assert np.array_equal(got.argmax(1), expected.argmax(1))
    inputs = _manifest(exported.out_dir)["graphs"]["R"]["parity"]["inputs"]
    assert inputs == ["random", "images: tiny-imagenet-50 (32)"]


def test_reference_evaluator_agrees_with_onnxruntime(exported):
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    for config in (RGB, ChannelConfig("RB"), R):
        graph = _graph(exported.out_dir, config)
        x = rng.standard_normal((3, config.num_channels, 16, 16), dtype=np.float32)
        reference = ReferenceEvaluator(graph).run(None, {contract.INPUT_NAME: x})[0]
        ort_logits = run_session(cpu_session(graph.SerializeToString()), x)
        assert np.array_equal(reference.argmax(1), ort_logits.argmax(1))
        assert np.abs(reference - ort_logits).max() < 1e-4


# --- the branch is resolved: R's graph holds R's weights and nobody else's --------------------

def _initializers(graph: onnx.ModelProto) -> list[np.ndarray]:
    return [onnx.numpy_helper.to_array(t) for t in graph.graph.initializer]


def _contains(arrays: list[np.ndarray], wanted: torch.Tensor) -> bool:
    """Whether some initializer holds ``wanted``'s values (in any shape: the exporter reshapes some)."""
    target = wanted.detach().numpy().ravel()
    return any(a.size == target.size and np.allclose(a.ravel(), target, rtol=0, atol=1e-7) for a in arrays)


def test_r_graph_holds_only_r_weights(exported, net):
    r_graph, rgb_graph = _graph(exported.out_dir, R), _graph(exported.out_dir, RGB)
    r_arrays = _initializers(r_graph)
    assert sum(a.nbytes for a in r_arrays) < sum(a.nbytes for a in _initializers(rgb_graph))
    stem = net.stem
    # Positive control first: R's own attention bias is there, recognisably. (Its kernel slice
    # and batch norm are folded into one convolution by simplification, so they are not.)
    assert _contains(r_arrays, stem.attention.fc2.bias + stem.config_bias[R.index])
    for other in ALL_CONFIGS:
        if other == R:
            continue
        assert not torch.allclose(stem.norm.norms[other.index].running_mean, stem.norm.norms[R.index].running_mean)
        assert not _contains(r_arrays, stem.norm.norms[other.index].running_mean), other
        assert not _contains(r_arrays, stem.norm.norms[other.index].running_var), other
        assert not _contains(r_arrays, stem.attention.fc2.bias + stem.config_bias[other.index]), other
        body_norm = first_body_norm(net)  # per-configuration batch norm deep in the body too
        assert not _contains(r_arrays, body_norm.select(other).running_mean), other
        if other.num_channels == 1:  # same shape as R's stem kernel, different plane
            assert not _contains(r_arrays, stem._weight_for(other)), other


# --- metadata, readable without the onnx package ----------------------------------------------

def test_metadata_is_readable_through_onnxruntime(exported, checkpoint):
    ckpt = load_checkpoint(checkpoint, "task1")
    for config in (RGB, ChannelConfig("GB"), R):
        session = cpu_session(exported.out_dir / contract.graph_filename("task1", config))
        meta = session.get_modelmeta().custom_metadata_map
        assert meta[contract.META_CONTRACT] == str(contract.CONTRACT_VERSION)
        assert meta[contract.META_TASK] == "task1" and meta[contract.META_CHANNELS] == config.name
        assert json.loads(meta[contract.META_CHANNEL_INDICES]) == list(config.indices)
        assert json.loads(meta[contract.META_CLASS_NAMES]) == ckpt["class_names"]
        assert json.loads(meta[contract.META_MEAN]) == list(config.mean)
        assert json.loads(meta[contract.META_STD]) == list(config.std)
        assert meta[contract.META_IMAGE_SIZE] == "16"
        assert (meta[contract.META_RESIZE], meta[contract.META_INTERPOLATION]) == (RESIZE_MODE, INTERPOLATION)
        assert meta[contract.META_MODEL] == "anychannel" and meta[contract.META_MODEL_VERSION] == project_version()
        assert meta[contract.META_DATA_FINGERPRINT] == ckpt["data_fingerprint"]
        assert meta[contract.META_PRECISION] == "fp32"
        assert json.loads(meta[contract.META_EXPORTER]) == exporter_versions()
        assert not [k for k in meta if k.startswith("onnxsim")]  # tool notes are not part of the contract


# --- manifest updates and atomic replacement --------------------------------------------------

def test_single_configuration_export_updates_the_manifest(export_copy, checkpoint):
    before = _manifest(export_copy)
    (export_copy / "task1-G.onnx").unlink()  # a deleted graph's entry must go
    with open(export_copy / "task1-B.onnx", "ab") as fh:  # and so must a tampered one's
        fh.write(b"\0")
    result = export_task("task1", "R", checkpoint=checkpoint, out=export_copy)
    after = _manifest(export_copy)
    assert [r.channels for r in result.records] == ["R"]
    assert list(after["graphs"]) == ["RGB", "RG", "GB", "RB", "R"]
    for name in ("RGB", "RG", "GB", "RB"):
        assert after["graphs"][name] == before["graphs"][name]
    assert after["graphs"]["R"]["sha256"] == contract.sha256_file(export_copy / "task1-R.onnx")
    assert not _leftovers(export_copy)


def test_manifest_of_another_model_is_not_merged(export_copy, checkpoint):
    manifest = _manifest(export_copy)
    manifest["image_size"] = 64
    (export_copy / contract.MANIFEST_NAME).write_text(json.dumps(manifest))
    export_task("task1", "R", checkpoint=checkpoint, out=export_copy)
    assert list(_manifest(export_copy)["graphs"]) == ["R"]


def _resolved_r(net) -> tuple[torch.nn.Module, ModelInfo]:
    info = ModelInfo("task1", "anychannel", tuple(f"c{i}" for i in range(10)), 16, "fp")
    return net.resolve(R).eval(), info


def test_parity_failure_names_the_configuration_and_keeps_the_good_graph(export_copy, net, cached_tracing):
    path = export_copy / "task1-R.onnx"
    good = contract.sha256_file(path)
    module, info = _resolved_r(net)
    with pytest.raises(ParityError, match=r"^R: parity check failed: max \|logits diff\| 0\.00[12]") as err:
        export_onnx(module, R, path, info, reference=lambda x: module(x) + 1.5e-3)
    assert err.value.config == "R" and err.value.max_abs_diff > 1e-4
    # A different winner with every logit inside the (here loosened) tolerance: the top-1 check fails.
    with pytest.raises(ParityError, match="top-1 agrees on 0/"):
        export_onnx(module, R, path, info, reference=lambda x: _swap_top2(module(x)), atol=100.0)
    assert contract.sha256_file(path) == good and not _leftovers(export_copy)


def _swap_top2(logits: torch.Tensor) -> torch.Tensor:
    """The same logits with each row's best and second-best values exchanged."""
    top2 = logits.topk(2, dim=1)
    return logits.scatter(1, top2.indices, top2.values.flip(1))


def test_interrupted_export_leaves_the_previous_graph(export_copy, net, cached_tracing, monkeypatch):
    path = export_copy / "task1-R.onnx"
    good = contract.sha256_file(path)
    module, info = _resolved_r(net)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_target, "validate_parity", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(module, R, path, info)
    assert contract.sha256_file(path) == good and not _leftovers(export_copy)


def test_staged_write_is_all_or_nothing(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with staged(path) as tmp:
            write_synced(tmp, b"half")
            raise RuntimeError("validation failed")
    assert path.read_bytes() == b"good" and not _leftovers(tmp_path)
    with staged(path) as tmp:
        write_synced(tmp, b"new")
    assert path.read_bytes() == b"new" and not _leftovers(tmp_path)


# --- simplification fallbacks -----------------------------------------------------------------

def test_failed_simplification_keeps_the_unsimplified_graph(net, tmp_path, cached_tracing, monkeypatch):
    import onnxsim

    module, info = _resolved_r(net)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    record = export_onnx(module, R, tmp_path / "r.onnx", info, reference_check=False)
    assert record.simplified is False and "onnxsim failed: RuntimeError: boom" in record.simplify_note
    assert record.parity["max_abs_diff"] <= 1e-4


def test_simplification_that_changes_outputs_is_rejected(net, tmp_path, cached_tracing, monkeypatch):
    import onnxsim

    module, info = _resolved_r(net)
    real = onnxsim.simplify

    def perturbing(model, *args, **kwargs):
        simplified, ok = real(model, *args, **kwargs)
        bias = next(t for t in simplified.graph.initializer if onnx.numpy_helper.to_array(t).shape == (10,))
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 0.01, bias.name))
        return simplified, ok

    monkeypatch.setattr(onnxsim, "simplify", perturbing)
    record = export_onnx(module, R, tmp_path / "r.onnx", info, reference_check=False)
    assert record.simplified is False and "changed the logits" in record.simplify_note


# --- structural checks on hand-made graphs ----------------------------------------------------

def _tiny_graph(batch: "int | str" = contract.BATCH_DIM, op: str = "Relu", domain: str = "") -> onnx.ModelProto:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.FLOAT, [batch, 1, 4, 4])
    y = helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, [batch, 16])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 16])
    nodes = [helper.make_node(op, [contract.INPUT_NAME], ["h"], domain=domain),
             helper.make_node("Reshape", ["h", "shape"], [contract.OUTPUT_NAME])]
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [shape]), opset_imports=opsets)


def test_check_graph_accepts_a_good_graph_and_names_each_breach():
    check_graph(_tiny_graph(), "R", (1, 4, 4), 16)
    with pytest.raises(GraphCheckError, match="^R: input has batch dimension \\[1\\]"):
        check_graph(_tiny_graph(batch=1), "R", (1, 4, 4), 16)
    with pytest.raises(GraphCheckError, match="non-standard operators.*com.example::Relu"):
        check_graph(_tiny_graph(domain="com.example"), "R", (1, 4, 4), 16)
    with pytest.raises(GraphCheckError, match="expected input"):
        check_graph(_renamed(), "R", (1, 4, 4), 16)
    with pytest.raises(GraphCheckError, match="shape"):
        check_graph(_tiny_graph(), "R", (3, 4, 4), 16)
    old = _tiny_graph()
    old.opset_import[0].version = 16
    with pytest.raises(GraphCheckError, match="opset 16"):
        check_graph(old, "R", (1, 4, 4), 16)
    external = _tiny_graph()
    external.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    with pytest.raises(GraphCheckError):
        check_graph(external, "R", (1, 4, 4), 16)


def _renamed() -> onnx.ModelProto:
    graph = _tiny_graph()
    graph.graph.input[0].name = "images"
    graph.graph.node[0].input[0] = "images"
    return graph


def test_check_graph_refuses_control_flow():
    from onnx import TensorProto, helper

    def branch(name: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("Identity", ["h"], [name])], name, [], [out])

    graph = _tiny_graph()
    graph.graph.initializer.append(helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
    graph.graph.node.insert(1, helper.make_node("If", ["cond"], ["h2"], then_branch=branch("t"),
                                                else_branch=branch("e")))
    graph.graph.node[2].input[0] = "h2"
    with pytest.raises(GraphCheckError, match="control-flow nodes \\['If'\\]"):
        check_graph(graph, "R", (1, 4, 4), 16)


# --- default locations ------------------------------------------------------------------------

def test_default_locations_and_names():
    assert default_out_dir("task1", "anychannel") == Path("artifacts/task1/onnx")
    assert default_out_dir("task1", "course") == Path("artifacts/task1/onnx-course")
    assert default_out_dir("task2", "shallow") == Path("artifacts/task2/onnx")
    assert graph_name("task1", "anychannel", R) == "task1-R.onnx"
    assert graph_name("task2", "resnet34", RGB) == "task2-resnet34-RGB.onnx"
    assert default_checkpoint("task1", "anychannel") == Path("artifacts/task1/anychannel/best.pt")
    assert default_checkpoint("task1", "naive", R) == Path("artifacts/task1/naive-R/best.pt")
    assert default_checkpoint("task2", "naive", RGB) == Path("artifacts/task2/naive/best.pt")  # the teacher: one run


def test_lower_writes_tiny_map_convolutions_as_a_matmul(exported, export_copy, checkpoint):
    """At 16 px the plain body's last stage runs on a 2x2 map: its 3x3 convolution exports as Gather + MatMul."""
    plain = Counter(n.op_type for n in _graph(exported.out_dir, R).graph.node)  # the default: no lowering
    export_task("task1", "R", checkpoint=checkpoint, out=export_copy, lower=True)
    lowered = Counter(n.op_type for n in _graph(export_copy, R).graph.node)
    assert lowered["MatMul"] == 1 and plain["MatMul"] == 0
    assert lowered["Conv"] == plain["Conv"] - 1
    assert _manifest(export_copy)["graphs"]["R"]["parity"]["max_abs_diff"] <= 1e-4  # both pass the gate


def test_opset_17_is_honoured(net, tmp_path):
    """The dynamo exporter starts at opset 18, so 17 takes the TorchScript path: same contract."""
    module, info = _resolved_r(net)
    record = export_onnx(module, R, tmp_path / "r17.onnx", info, opset=17)
    graph = onnx.load(tmp_path / "r17.onnx")
    assert record.opset == 17 and graph.opset_import[0].version == 17
    check_graph(graph, "R", (1, 16, 16), 10)
    assert record.parity["max_abs_diff"] <= 1e-4 and record.simplified


# --- optional int8 ----------------------------------------------------------------------------

def test_int8_graph_is_written_checked_and_recorded(export_copy, checkpoint, synthetic_dataset):
    fp32_before = _manifest(export_copy)["graphs"]["RGB"]
    export_task("task1", "R", checkpoint=checkpoint, out=export_copy, int8=True, dataset=synthetic_dataset)
    manifest = _manifest(export_copy)
    assert manifest["graphs"]["RGB"] == fp32_before and "int8" not in manifest["graphs"]["RGB"]
    entry = manifest["graphs"]["R"]["int8"]
    path = export_copy / "task1-R.int8.onnx"
    assert entry["file"] == path.name == contract.graph_filename("task1", R, precision="int8")
    assert entry["sha256"] == contract.sha256_file(path) and entry["size"] == path.stat().st_size
    assert entry["precision"] == "int8" and entry["quantization"]["format"] == "QDQ"
    accuracy = entry["accuracy"]
    assert accuracy["split"] == "synthetic val" and accuracy["images"] == len(synthetic_dataset.splits["val"])
    assert accuracy["change"] == pytest.approx(accuracy["int8_top1"] - accuracy["fp32_top1"])
    assert accuracy["change"] >= -0.02
    graph = onnx.load(path)
    check_graph(graph, "R", (1, 16, 16), 10)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    session = cpu_session(path)
    assert session.get_modelmeta().custom_metadata_map[contract.META_PRECISION] == "int8"
    for batch in (1, 7):
        assert run_session(session, np.zeros((batch, 1, 16, 16), np.float32)).shape == (batch, 10)
    # Re-exporting R without --int8 keeps nothing stale: the new fp32 entry has no int8 part.
    export_task("task1", "R", checkpoint=checkpoint, out=export_copy)
    assert "int8" not in _manifest(export_copy)["graphs"]["R"]


def test_int8_accuracy_loss_is_refused(export_copy, checkpoint, synthetic_dataset, monkeypatch):
    import export.precision as precision

    def top1_accuracy(model, data, config, session=None):  # logits right on 90% (fp32) or 50% (int8) of images
        predicted = data.labels.copy()
        wrong = int(len(predicted) * (0.5 if ".int8." in str(model) else 0.1))
        predicted[:wrong] = (predicted[:wrong] + 1) % 10
        return float(np.mean(predicted == data.labels)), np.eye(10, dtype=np.float32)[predicted]

    monkeypatch.setattr(precision, "top1_accuracy", top1_accuracy)
    with pytest.raises(ExportValidationError, match="^R: int8 graph loses 40.0% top-1 on synthetic val"):
        export_task("task1", "R", checkpoint=checkpoint, out=export_copy, int8=True, dataset=synthetic_dataset)
    assert not (export_copy / "task1-R.int8.onnx").exists() and not _leftovers(export_copy)
    assert "int8" not in _manifest(export_copy)["graphs"]["R"]  # the fp32 graph is listed, verified


def test_fp16_graph_is_written_validated_and_runs(export_copy, checkpoint, synthetic_dataset):
    from runtime import ArtifactError, Classifier, ConfigurationNotExportedError

    export_task("task1", "R", checkpoint=checkpoint, out=export_copy, fp16=True, dataset=synthetic_dataset)
    entry = _manifest(export_copy)["graphs"]["R"]["fp16"]
    path = export_copy / "task1-R.fp16.onnx"
    assert entry["file"] == path.name and entry["sha256"] == contract.sha256_file(path)
    accuracy = entry["accuracy"]
    assert accuracy["change"] == pytest.approx(accuracy["fp16_top1"] - accuracy["fp32_top1"])
    assert accuracy["top1_agreement_with_fp32"] >= 0.99 and accuracy["max_abs_logit_diff"] < 0.05
    expected_provider = "CUDAExecutionProvider" if torch.cuda.is_available() else "CPUExecutionProvider"
    assert accuracy["validated_on"] == expected_provider
    graph = onnx.load(path)
    check_graph(graph, "R", (1, 16, 16), 10)
    weights = [i for i in graph.graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # contract unchanged
    assert path.stat().st_size < 0.6 * (export_copy / "task1-R.onnx").stat().st_size

    # The runtime runs the variant on request, only for the configurations that have it.
    half = Classifier(export_copy, device="cpu", precision="fp16")
    full = Classifier(export_copy, device="cpu")
    assert [c.name for c in half.configs] == ["R"]
    images = synthetic_dataset.splits["val"].images[:32]
    agree = (half.predict_logits(images, "R").argmax(1) == full.predict_logits(images, "R").argmax(1)).mean()
    assert agree >= 0.9 and half.spec("R").metadata[contract.META_PRECISION] == "fp16"
    with pytest.raises(ConfigurationNotExportedError, match="fp16 graph of RGB was not exported.*--fp16"):
        half.predict_logits(images, "RGB")
    with pytest.raises(ArtifactError, match="lists no int8 graphs"):
        Classifier(export_copy, precision="int8")
    with pytest.raises(ArtifactError, match="unknown precision 'fp8'"):
        Classifier(export_copy, precision="fp8")


def test_variant_whose_metadata_disagrees_is_refused(export_copy):
    """A manifest that lists an fp32 file as the fp16 variant (checksum and all) is caught."""
    from runtime import ArtifactError, Classifier

    manifest = _manifest(export_copy)
    r = manifest["graphs"]["R"]
    r["fp16"] = {"file": r["file"], "sha256": r["sha256"], "size": r["size"], "precision": "fp16"}
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="holds a fp32 graph, but the manifest lists it as fp16"):
        Classifier(export_copy, device="cpu", precision="fp16").predict_logits(np.zeros((16, 16, 3), np.uint8), "R")


def test_int8_needs_the_training_data(export_copy, checkpoint, synthetic_dataset):
    from dataclasses import replace

    from export import ExportError

    other = replace(synthetic_dataset, fingerprint="0" * 64)
    with pytest.raises(ExportError, match="not the data the model was trained on"):
        export_task("task1", "R", checkpoint=checkpoint, out=export_copy, int8=True, dataset=other)


def test_a_model_with_per_configuration_layers_exports_each_configurations_own_copy(tmp_path):
    """``config_layers``: each configuration's graph holds its own copy of the per-configuration layer,
    verified against the unresolved model on that configuration (the copies differ, so a wrong copy fails)."""
    from train.models import create_model
    from train.models.layers import ConfigLayer

    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=10, stem_width=8, widths=(8, 16, 32), config_layers=1).eval()
    (layer,) = [m for m in model.modules() if isinstance(m, ConfigLayer)]
    with torch.no_grad():
        for i, conv in enumerate(layer.layers):
            conv.weight.mul_(1 + 0.5 * i)
    info = ModelInfo("task1", "anychannel", tuple(f"c{i}" for i in range(10)), 16, "fp")
    for config in (R, RGB):
        record = export_onnx(model.resolve(config).eval(), config, tmp_path / f"{config.name}.onnx", info,
                             reference=lambda x, c=config: model(x, c))
        assert record is not None and (tmp_path / f"{config.name}.onnx").is_file()
