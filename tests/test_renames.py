"""Our model's one name, ``anychannel`` (issue 28): what was written under its old name, ``adaptive``,
keeps loading (checkpoints, manifests, graphs), or is refused with a message that names the rename
(an old run folder, ``--models adaptive``, ``--model adaptive``)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from conftest import ROOT
from export import export_task
from export.errors import ExportError
from runtime import contract
from runtime.artifacts import load_artifacts
from runtime.channels import ChannelConfig
from train.checkpoint import CheckpointError, check_resumable, load_checkpoint, model_from_checkpoint
from train.engine import RunSpec, TrainConfig, checkpoint_meta
from train.models import create_model, list_models
from train.models.anychannel import AnyChannelNet

OLD, NEW = "adaptive", "anychannel"


def _as_old(source: Path, path: Path) -> Path:
    """``source`` (a checkpoint of today) as it was written before the rename: model ``adaptive``."""
    ckpt = torch.load(source, weights_only=True)
    assert ckpt["model"] == NEW
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**ckpt, "model": OLD}, path)
    return path


@pytest.fixture
def old_run(task1_run, tmp_path) -> Path:
    """``artifacts/task1/adaptive/`` of a user who trained before the rename (best.pt and last.pt)."""
    run = tmp_path / "artifacts" / "task1" / OLD
    for name in ("best.pt", "last.pt"):
        _as_old(task1_run / NEW / name, run / name)
    return run


def test_the_alias_is_one_entry_of_the_contract():
    assert contract.RENAMED_MODELS == {OLD: NEW}
    assert contract.current_model_name(OLD) == NEW and contract.current_model_name("naive") == "naive"
    assert contract.renamed_model_note(OLD) == "model 'adaptive' was renamed to anychannel"
    assert contract.renamed_model_note(NEW) is None
    assert NEW in list_models() and OLD not in list_models()
    assert isinstance(create_model(OLD, num_classes=3), AnyChannelNet)  # through the alias


# --- (a) checkpoints written as "adaptive" ----------------------------------------------------------

def test_an_old_checkpoint_loads_under_the_new_name(old_run, task1_run):
    ckpt = load_checkpoint(old_run / "best.pt", "task1")
    assert ckpt["model"] == NEW
    model = model_from_checkpoint(ckpt)
    x = torch.rand(2, 3, 16, 16)
    today = model_from_checkpoint(load_checkpoint(task1_run / NEW / "best.pt"))
    assert torch.equal(model(x, ChannelConfig("RGB")), today(x, ChannelConfig("RGB")))
    raw = torch.load(old_run / "best.pt", weights_only=True)  # as a tool reading it by hand would
    assert isinstance(model_from_checkpoint(raw), AnyChannelNet)


def test_an_old_checkpoint_exports_as_anychannel(old_run, tmp_path):
    result = export_task("task1", "R", model=NEW, checkpoint=old_run / "best.pt", out=tmp_path / "onnx")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["model"] == NEW
    graph = onnx.load(result.out_dir / result.records[0].file)
    assert {p.key: p.value for p in graph.metadata_props}[contract.META_MODEL] == NEW


def test_an_old_last_checkpoint_moved_to_the_new_folder_resumes(old_run, synthetic_dataset):
    state = load_checkpoint(old_run / "last.pt", "task1")
    cfg = TrainConfig(**state["train_config"])
    spec = RunSpec(NEW, NEW, state["model_kwargs"])
    meta = {**checkpoint_meta(spec, synthetic_dataset, "task1"), "strategy": state["strategy"]}
    check_resumable(state, old_run / "last.pt", cfg, meta, synthetic_dataset)  # raises on any mismatch


# --- (b) manifests and graphs written as "adaptive" -------------------------------------------------

def _old_export(task1_artifacts: Path, folder: Path) -> Path:
    """The exported folder as an export before the rename wrote it: "adaptive" in the manifest and in
    each graph's metadata (the manifest's checksums updated to match)."""
    shutil.copytree(task1_artifacts, folder)
    manifest = json.loads((folder / contract.MANIFEST_NAME).read_text())
    manifest["model"] = OLD
    for entry in manifest[contract.MANIFEST_GRAPHS].values():
        graph = onnx.load(folder / entry["file"])
        next(p for p in graph.metadata_props if p.key == contract.META_MODEL).value = OLD
        path = folder / entry["file"]
        onnx.save(graph, path)
        entry["sha256"], entry["size"] = contract.sha256_file(path), path.stat().st_size
    (folder / contract.MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_an_old_export_loads_in_the_runtime_without_torch(task1_artifacts, tmp_path):
    folder = _old_export(task1_artifacts, tmp_path / "onnx")
    assert load_artifacts(folder).model == NEW
    code = f"""
import sys
import numpy as np
from runtime import Classifier
clf = Classifier({str(folder)!r}, device="cpu")
assert clf.artifacts.model == "anychannel", clf.artifacts.model
for config in clf.configs:
    assert len(clf.predict(np.zeros((16, 16, config.num_channels), dtype=np.uint8), channels=config)[0]) == 5
print("torch:", "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch: False"


def test_export_into_an_old_folder_keeps_its_graphs(task1_artifacts, task1_run, tmp_path):
    folder = _old_export(task1_artifacts, tmp_path / "onnx")
    (folder / "task1-R.onnx").unlink()
    result = export_task("task1", "R", checkpoint=task1_run / NEW / "best.pt", out=folder)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["model"] == NEW and len(manifest[contract.MANIFEST_GRAPHS]) == 7  # the six old ones stay


# --- (c) a run folder left under the old name -------------------------------------------------------

def test_export_without_a_checkpoint_refuses_an_old_run_folder_naming_the_rename(old_run, tmp_path):
    root = tmp_path / "artifacts"
    message = (f"found {root}/task1/adaptive/best.pt but no {root}/task1/anychannel/best.pt: model 'adaptive' "
               f"was renamed to anychannel; move {root}/task1/adaptive to {root}/task1/anychannel or pass "
               "--checkpoint")
    with pytest.raises(CheckpointError) as caught:
        export_task("task1", "R", root=root, out=tmp_path / "onnx")
    assert str(caught.value) == message
    assert not (tmp_path / "onnx").exists()
    shutil.move(old_run, root / "task1" / NEW)  # what the message says to do
    assert export_task("task1", "R", root=root, out=tmp_path / "onnx").records[0].channels == "R"


def test_bench_beside_an_old_run_folder_names_the_rename(old_run, task1_artifacts):
    from export.eager import eager_forward

    folder = old_run.parent / "onnx"
    shutil.copytree(task1_artifacts, folder)
    forward, note = eager_forward(load_artifacts(folder), ChannelConfig("R"))
    assert forward is None and "model 'adaptive' was renamed to anychannel; move" in note, note


def test_resume_refuses_an_old_run_folder_instead_of_training_afresh(old_run, synthetic_dataset):
    from train.task1 import run_task1

    out = old_run.parent
    with pytest.raises(CheckpointError, match=f"found {out}/adaptive/last.pt but no {out}/anychannel/last.pt: "
                                              "model 'adaptive' was renamed to anychannel; move .* to resume it, "
                                              "or use a fresh --out"):
        run_task1(synthetic_dataset, [NEW], out, TrainConfig(epochs=2), resume=True, log=lambda _: None)
    assert not (out / NEW).exists()


# --- (d) the old name as an option ------------------------------------------------------------------

def test_the_old_name_as_an_option_is_refused_naming_the_new_one():
    from train.request import TrainRequest

    with pytest.raises(ValueError, match="^--models: model 'adaptive' was renamed to anychannel; choose from "
                                         "anychannel, naive, course$"):
        TrainRequest("task1", models="adaptive,naive").check()
    with pytest.raises(ExportError, match="--model adaptive: model 'adaptive' was renamed to anychannel"):
        export_task("task1", "R", model=OLD)
