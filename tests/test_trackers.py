"""MLflow and W&B hold what the run folder holds: each run read back by the tracker's own
client or file format and compared with results.json, metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST
from helpers import read_jsonl, scalars
from omegaconf import OmegaConf
from test_schema import CONFIGS, assert_same

import optbench.train.trainer as trainer
from optbench.cli import main
from optbench.report.runs import find_run_dirs
from optbench.run.schema import LoggersConfig

QUICK = [*FAST, "trainer.epochs=2"]


def test_train_yaml_documents_the_loggers_schema():
    assert_same(OmegaConf.load(CONFIGS / "train.yaml").loggers, LoggersConfig, "loggers")


def final_and_best(results: dict) -> list[str]:
    return [f"final_{results['metric']}", f"best_{results['metric']}", "final_train_loss"]


def test_a_sweep_is_one_mlflow_experiment_holding_what_each_job_wrote(tmp_path):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient  # the extra optbench[mlflow]

    out, sweep = tmp_path / "out", tmp_path / "sweep"
    code = main(["train", "-m", *QUICK, "optimizer=sgd,adamw", "loggers.mlflow.enabled=true",
                 f"paths.output_dir={out}", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert code == 0
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("optbench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    job_dirs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert sorted(runs) == sorted(d.name for d in job_dirs) and len(runs) == 2
    assert not any("loggers" in d.name for d in job_dirs)  # a tracker does not change a result
    for job in job_dirs:
        run, results = runs[job.name], json.loads((job / "results.json").read_text())
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert run.info.status == "FINISHED"
        assert run.data.params["optimizer.name"] == results["optimizer"]
        assert float(run.data.params["optimizer.lr"]) == config["optimizer"]["lr"]
        assert run.data.params["trainer.batch_size"] == "64"
        for key in final_and_best(results):
            assert run.data.metrics[key] == results[key]
        # Every number of every metrics.jsonl line, at its step.
        for record in read_jsonl(job / "metrics.jsonl"):
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    history = client.get_metric_history(run.info.run_id, key)
                    assert (record["step"], value) in [(m.step, m.value) for m in history], key
        # The per-step loss: TensorBoard's values at its steps (float32 there).
        logged = {
            m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss_step")
        }
        board = dict(scalars(job, "train/loss_step"))
        assert logged and set(logged) <= set(board)
        assert all(logged[s] == pytest.approx(board[s], rel=1e-6) for s in logged)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "results.json"} <= artifacts
        copy = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
        assert Path(copy).read_text() == (job / "config.yaml").read_text()
    # The artifact copies (results.json included) are not taken for runs by the report.
    assert find_run_dirs(out) == [] and len(find_run_dirs(sweep)) == 2


def test_a_run_that_raises_is_closed_as_failed_in_mlflow(fast_cfg, tmp_path, monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient  # the extra optbench[mlflow]

    def crash(record, epochs):
        raise RuntimeError("simulated crash after the first epoch")

    monkeypatch.setattr(trainer, "_log_epoch", crash)
    cfg = fast_cfg(
        "trainer.epochs=2", "loggers.mlflow.enabled=true", f"paths.output_dir={tmp_path}"
    )
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.train(cfg, tmp_path / "run")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("optbench").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["optbench.status"] == "failed"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [8]


def wandb_records(path: Path) -> list:
    """The records of a `.wandb` file: W&B's LevelDB-style log (a 7-byte header, then 32 KiB
    blocks of chunks, each a CRC, a length, a type) of its own protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def items(updates) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}


def test_a_wandb_offline_run_holds_the_config_metrics_and_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # the extra optbench[wandb]
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    assert main(["train", *QUICK, "optimizer=adamw", "loggers.wandb.enabled=true",
                 f"hydra.run.dir={run_dir}"]) == 0  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(next(offline.glob("*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = items(run.config.update)
    assert run.display_name == "run" and run.project == "optbench"
    assert config["optimizer.name"] == "adamw" and config["trainer.epochs"] == 2
    summary: dict = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary |= items(record.summary.update)
    for key in final_and_best(results):
        assert summary[key] == results[key]
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    accuracies = [(h["_step"], h["val_acc"]) for h in history if "val_acc" in h]
    assert accuracies == [(r["step"], r["val_acc"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    files = offline / "files"
    for name in ("config.yaml", "results.json"):
        assert (files / name).read_bytes() == (run_dir / name).read_bytes()


# fmt: off
BAD = [
    (["+loggers.comet.enabled=true"], "unknown key loggers.comet", None),
    (["loggers.mlflow=true"], "loggers.mlflow is a block of keys (enabled, tracking_uri, experiment)", None),
    (["loggers.wandb.enabled=true", "loggers.wandb.mode=sometimes"],
     "loggers.wandb.mode must be offline, online, disabled, got 'sometimes'", None),
    (["loggers.mlflow.enabled=true"],
     "loggers.mlflow.enabled=true needs the mlflow package, which is not installed: "
     "pip install 'optbench[mlflow]'", "mlflow"),
    (["loggers.wandb.enabled=true"], "pip install 'optbench[wandb]'", "wandb"),
]
# fmt: on


@pytest.mark.parametrize(("overrides", "message", "hidden"), BAD, ids=lambda v: str(v)[:40])
def test_a_bad_logger_setting_is_one_line_exit_2_and_writes_nothing(
    overrides, message, hidden, tmp_path, monkeypatch, capsys
):
    if hidden is not None:  # as if not installed: an import of it fails
        monkeypatch.setitem(sys.modules, hidden, None)
    monkeypatch.chdir(tmp_path)
    code = main(["train", *QUICK, *overrides, f"paths.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err
    assert not any(tmp_path.iterdir())
