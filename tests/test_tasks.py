"""A task owns the loss and the metrics: a second task, added in this file alone, drives the
trainer's logging, best value, targets, plateau and results the way classification does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from helpers import read_jsonl

from optbench.errors import UserError
from optbench.run import build_run
from optbench.tasks import TASKS
from optbench.train import checkpoint
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train


@dataclass(frozen=True)
class Brier:
    """Squared error between the predicted distribution and the one-hot label: lower is better."""

    name: str = "brier"
    directions: dict[str, str] = field(default_factory=lambda: {"brier": "min"})
    main_metric: str = "brier"

    @classmethod
    def from_config(cls, cfg) -> Brier:
        return cls()

    def _per_sample(self, outputs, targets):
        one_hot = F.one_hot(targets, outputs.shape[1]).float()
        return ((outputs.float().softmax(dim=1) - one_hot) ** 2).sum(dim=1)

    def loss(self, outputs, targets):
        return self._per_sample(outputs, targets).mean()

    def sums(self, outputs, targets):
        return {"brier": self._per_sample(outputs, targets).sum()}

    def metrics(self, sums, samples):
        return {"brier": sums["brier"] / samples}


@pytest.fixture
def brier(monkeypatch):
    monkeypatch.setitem(TASKS, "brier", Brier.from_config)


def test_a_second_task_drives_logging_best_targets_and_results(brier, fast_cfg, tmp_path):
    cfg = fast_cfg("dataset.task=brier", "trainer.epochs=3", "trainer.targets=[1.5,0.0]",
                   "scheduler=plateau", "scheduler.metric=val_brier")  # fmt: skip
    results = train(cfg, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert {"train_brier", "val_brier", "test_brier"} <= records[0].keys()
    assert not any(k.endswith("_acc") for r in records for k in r)
    assert results["task"] == "brier" and results["metric"] == "val_brier"
    assert results["higher_is_better"] is False
    values = [r["val_brier"] for r in records]
    assert results["best_val_brier"] == min(values) and values[0] > values[-1]  # it learns
    assert results["best_epoch"] == values.index(min(values)) + 1
    assert results["time_to_target"]["1.5"]["epoch"] == 1  # reached: at or below the target
    assert results["time_to_target"]["0.0"] is None

    # The logged metric is the task's own, recomputed by hand from the saved weights.
    run = build_run(cfg)
    run.model.load_state_dict(checkpoint.load_latest(tmp_path)[1]["model"])
    run.model.eval()
    with torch.no_grad():
        by_hand = [Brier()._per_sample(run.model(x), y) for x, y in run.data.test_batches.epoch(0)]
    assert torch.cat(by_hand).mean().item() == pytest.approx(results["final_test_brier"], rel=1e-5)


def test_the_plateau_metric_must_be_one_of_the_tasks(brier, fast_cfg):
    with pytest.raises(
        UserError, match=r"scheduler\.metric must be one of val_brier, got 'val_loss'"
    ):
        check_train_config(fast_cfg("dataset.task=brier", "scheduler=plateau"))  # val_loss


def test_an_unknown_task_is_a_user_error(fast_cfg):
    with pytest.raises(UserError, match="unknown task 'ranking'; choose from classification"):
        check_train_config(fast_cfg("dataset.task=ranking"))
