"""The doors out: TensorBoard event files, MLflow runs, ONNX models, optuna-dashboard on a ledger.

Each export is read back by the other tool's own reader (TensorBoard's event accumulator, MLflow's
client, onnxruntime, the dashboard's HTTP API) on runs really trained here (tiny: 1-2 epochs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dltricks.cli import main
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.runner.run import train

SMALL = ["data.train_limit=300", "train.epochs=2", "train.batch_size=64", "train.device='cpu'", "train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ledger with one tiny completed MLP run and one run left 'running' (no weights)."""
    root = tmp_path_factory.mktemp("exports")
    ledger = Ledger(url=f"sqlite:///{root / 'ledger.db'}", root=root)
    run = train(Recipe.load("mnist1d-mlp", SMALL + ["model.hidden=[32]"]), ledger=ledger, progress=False)
    running = ledger.start_run(name="unfinished", recipe={"name": "unfinished"}, seed=0, device="cpu")
    return ledger, run.run_id, running


def _cli(ledger: Ledger, *args: str) -> int:
    return main([*args, "--ledger", ledger.url])


def _one_line_error(capsys, code: int, rc: int, *needles: str) -> str:
    captured = capsys.readouterr()
    assert rc == code, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---- TensorBoard -------------------------------------------------------------------------------------------

def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_export_is_read_by_tensorboards_reader(trained, tmp_path, capsys):
    ledger, run_id, _ = trained
    rec = ledger.get(run_id)
    assert _cli(ledger, "runs", "export", run_id, "--tensorboard", str(tmp_path / "tb")) == 0
    (folder,) = [p for p in (tmp_path / "tb").iterdir()]
    assert folder.name == f"mnist1d-mlp-{run_id}"
    acc = _events(folder)
    scalars = acc.Tags()["scalars"]
    assert "train_loss" in scalars and "final/test_accuracy" in scalars
    points = acc.Scalars("train_loss")
    assert [p.step for p in points] == [1, 2]  # one per epoch
    assert [p.value for p in points] == pytest.approx(rec.curves["train_loss"], rel=1e-6)
    assert acc.Scalars("final/test_accuracy")[0].value == pytest.approx(rec.metrics["test_accuracy"], rel=1e-6)
    recipe_text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "hidden = [" in recipe_text and "mnist1d" in recipe_text
    # a re-export replaces the file: still two points per epoch curve, not four
    assert _cli(ledger, "runs", "export", run_id, "--tensorboard", str(tmp_path / "tb")) == 0
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert [p.step for p in _events(folder).Scalars("train_loss")] == [1, 2]


def test_train_tensorboard_writes_events_while_training(tmp_path):
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}", root=tmp_path)
    r = train(Recipe.load("mnist1d-mlp", SMALL + ["model.hidden=[16]", "train.tensorboard=true"]), ledger=ledger,
              progress=False)
    acc = _events(r.run_dir / "tensorboard")
    assert [p.step for p in acc.Scalars("train_loss")] == [1, 2]
    assert [p.value for p in acc.Scalars("val_loss")] == pytest.approx(r.history.curves["val_loss"], rel=1e-6)


def test_tensorboard_export_refuses_bad_input(trained, tmp_path, capsys):
    ledger, run_id, _ = trained
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = _cli(ledger, "runs", "export", run_id, "--tensorboard", str(blocker))
    _one_line_error(capsys, 2, rc, str(blocker), "not a folder")
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder refuses only other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        rc = _cli(ledger, "runs", "export", run_id, "--tensorboard", str(ro / "tb"))
        _one_line_error(capsys, 2, rc, str(ro))
    rc = _cli(ledger, "runs", "export", "abcdef123456", "--tensorboard", str(tmp_path / "tb"))
    _one_line_error(capsys, 2, rc, "no run 'abcdef123456'")
    rc = _cli(ledger, "runs", "export")
    _one_line_error(capsys, 2, rc, "--tensorboard DIR", "--mlflow URI")


# ---- MLflow ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_mlflow_export_reads_back_and_is_idempotent(trained, tmp_path, capsys, store):
    from mlflow.tracking import MlflowClient

    ledger, run_id, _ = trained
    rec = ledger.get(run_id)
    uri = f"file://{tmp_path / 'mlruns'}" if store == "file" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    for attempt in range(2):
        assert _cli(ledger, "runs", "export", run_id, "--mlflow", uri) == 0
        said = capsys.readouterr().out
        assert ("1 runs written" if attempt == 0 else "1 unchanged") in said, said
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("dltricks/mnist1d-mlp")
        (got,) = client.search_runs([exp.experiment_id])  # one MLflow run after two exports
        assert got.data.tags["dltricks.run_id"] == run_id
        assert got.data.tags["git_dirty"] in ("true", "false")
        assert got.data.tags["git_commit"] == (rec.git_commit or "")
        assert got.data.params["model.hidden"] == "[32]"
        assert got.data.params["train.epochs"] == "2"
        assert got.data.metrics["test_accuracy"] == pytest.approx(rec.metrics["test_accuracy"])
        history = client.get_metric_history(got.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2]  # per epoch, and not doubled by the second export
        assert [m.value for m in history] == pytest.approx(rec.curves["train_loss"])
        assert got.info.status == "FINISHED"


def test_mlflow_export_tags_a_studys_variant_and_verdict(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    from dltricks.search.ablate import ablate

    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}", root=tmp_path)
    recipe = Recipe.load("mnist1d-mlp", ["data.train_limit=200", "train.epochs=1", "model.hidden=[16]",
                                         "train.device='cpu'", "train.threads=1"])
    result = ablate(recipe, ["label_smoothing"], seeds=2, ledger=ledger, progress=False, study="tiny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _cli(ledger, "runs", "export", "--study", "tiny", "--mlflow", uri) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("dltricks/tiny").experiment_id])
    assert len(runs) == 4  # 2 variants x 2 seeds
    by_variant = {r.data.tags["variant"]: r.data.tags.get("dltricks.verdict") for r in runs}
    assert by_variant == result.verdicts


def test_mlflow_export_refuses_bad_input(trained, tmp_path, capsys):
    ledger, run_id, _ = trained
    rc = _cli(ledger, "runs", "export", "abcdef123456", "--mlflow", f"sqlite:///{tmp_path / 'm.db'}")
    _one_line_error(capsys, 2, rc, "no run")
    rc = _cli(ledger, "runs", "export", run_id, "--mlflow", "nosuchscheme://x")
    _one_line_error(capsys, 2, rc, "nosuchscheme://x")


# ---- ONNX --------------------------------------------------------------------------------------------------

def test_onnx_export_matches_pytorch_on_the_test_inputs(trained, tmp_path, capsys):
    import numpy as np
    import onnxruntime as ort
    import torch

    from dltricks.runner.onnx_export import run_model

    ledger, run_id, _ = trained
    path = tmp_path / "out" / "model.onnx"
    assert _cli(ledger, "export", run_id, "--onnx", str(path)) == 0
    said = capsys.readouterr().out
    print(said)  # the max abs difference, in the test log
    assert "max abs difference" in said and "within the tolerance" in said
    # checked here again, independently: onnxruntime against torch on every test input
    _, model, x = run_model(ledger, run_id)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    diff = float(np.max(np.abs(got - want)))
    print(f"max abs diff onnxruntime vs torch on {len(x)} test inputs: {diff:.3g}")
    assert got.shape == want.shape and diff < 1e-4
    assert not list(path.parent.glob("*.part"))


def test_onnx_exports_a_pruned_variant_and_refuses_an_int8_one(trained, tmp_path, capsys):
    from dltricks.compress import compress_run
    from dltricks.recipe import CompressSpec

    ledger, run_id, _ = trained
    specs = [CompressSpec(prune=0.5, prune_mode="structured"), CompressSpec(quantize="dynamic")]
    result = compress_run(ledger, run_id, specs, progress=False, rounds=1, out=tmp_path / "report")
    runs = {r["variant"]: r["run"] for r in result.rows}
    assert set(runs) == {"source", "prune-s0.5", "dynamic"}
    pruned = tmp_path / "pruned.onnx"
    assert _cli(ledger, "export", runs["prune-s0.5"], "--onnx", str(pruned)) == 0  # a smaller float model
    assert "within the tolerance" in capsys.readouterr().out and pruned.stat().st_size > 0
    path = tmp_path / "q.onnx"
    rc = _cli(ledger, "export", runs["dynamic"], "--onnx", str(path))
    _one_line_error(capsys, 2, rc, "ONNX cannot express this model", "int8 layers")
    assert not path.exists() and not list(tmp_path.glob("*.part"))


def test_onnx_exporter_failure_reads_as_one_line(tmp_path, capfd):
    import torch

    from dltricks.runner.onnx_export import _export, _reason

    class DataDependent(torch.nn.Module):  # control flow on values: torch.export cannot trace it
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(Exception) as info:
        _export(DataDependent(), torch.randn(2, 3), tmp_path / "dd.onnx")
    why = _reason(info.value)
    assert "\n" not in why and "\x1b" not in why and "data-dependent" in why
    captured = capfd.readouterr()
    assert "GraphModule" not in captured.out + captured.err  # the exporter's printed graphs stay hidden


def test_onnx_refuses_bad_input(trained, tmp_path, capsys):
    ledger, run_id, running = trained
    rc = _cli(ledger, "export", "abcdef123456", "--onnx", str(tmp_path / "m.onnx"))
    _one_line_error(capsys, 2, rc, "no run 'abcdef123456'")
    rc = _cli(ledger, "export", running, "--onnx", str(tmp_path / "m.onnx"))
    _one_line_error(capsys, 2, rc, f"run {running} is running, not completed")
    rc = _cli(ledger, "export", run_id, "--onnx", str(tmp_path / "m.txt"))
    _one_line_error(capsys, 2, rc, "must end in .onnx")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    rc = _cli(ledger, "export", run_id, "--onnx", str(blocker / "m.onnx"))
    _one_line_error(capsys, 2, rc, str(blocker))
    # a completed run whose weights file is gone
    rec = ledger.get(run_id)
    moved = Path(rec.checkpoint).with_suffix(".moved")
    os.replace(rec.checkpoint, moved)
    try:
        rc = _cli(ledger, "export", run_id, "--onnx", str(tmp_path / "m.onnx"))
        _one_line_error(capsys, 2, rc, "has no weights file")
    finally:
        os.replace(moved, rec.checkpoint)


# ---- optuna-dashboard --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard() -> str:
    here = Path(sys.executable).parent / "optuna-dashboard"
    found = str(here) if here.exists() else shutil.which("optuna-dashboard")
    assert found, "optuna-dashboard is installed by dltricks[export] (setup.sh installs it)"
    return found


def test_optuna_dashboard_serves_a_study_of_the_ledger(tmp_path):
    import json

    import optuna

    from dltricks.search import study as st

    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}", root=tmp_path)
    study = optuna.create_study(study_name="live-view", storage=st.storage(ledger), direction="maximize")
    for x in (0.1, 0.5):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=x))
    port = _free_port()
    proc = subprocess.Popen([_dashboard(), ledger.url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body, deadline = None, time.monotonic() + 60
        while body is None and time.monotonic() < deadline:  # bounded: 60 s for the server to answer
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, "optuna-dashboard did not answer within 60 s"
        studies = {s["study_name"]: s for s in body["study_summaries"]}
        assert "live-view" in studies
        sid = studies["live-view"]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}", timeout=10) as r:
            detail = json.loads(r.read())
        assert sorted(t["values"][0] for t in detail["trials"]) == [0.1, 0.5]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_exports_from_no_ledger_refuse_and_create_nothing(ledger_home, capsys):
    rc = main(["runs", "export", "--tensorboard", "tb", "--mlflow", "sqlite:///m.db"])
    _one_line_error(capsys, 2, rc, "no ledger at", "no runs to export")
    rc = main(["export", "abcdef", "--onnx", "m.onnx"])
    _one_line_error(capsys, 2, rc, "no run 'abcdef'", "no ledger at")
    assert not any(ledger_home.iterdir())  # no ledger, no folders, no files
